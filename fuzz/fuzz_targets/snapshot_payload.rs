//! Bytes as a state-machine snapshot payload (what a follower decodes from a leader's chunks).
//! Checks: a format-3 payload that decodes re-encodes to exactly the input, and a decoder fed the
//! same bytes in two pieces (split where the input says) agrees with one fed them whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftkv_core::kv::{KvState, SnapshotDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let whole = KvState::decode_snapshot(bytes);
    if let (Ok(kv), Some(3)) = (&whole, bytes.first()) {
        assert_eq!(kv.encode_snapshot(), bytes, "decoded payload re-encodes identically");
    }
    if bytes.first() == Some(&3) {
        let cut = (split as usize * bytes.len()) / 255;
        let mut d = SnapshotDecoder::default();
        let pieces = d.feed(&bytes[..cut]).and_then(|()| d.feed(&bytes[cut..]));
        let streamed = pieces.and_then(|()| d.finish());
        assert_eq!(streamed.ok(), whole.ok(), "pieces and whole agree");
    }
});
