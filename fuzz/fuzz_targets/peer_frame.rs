//! Bytes from the network as a peer frame (the transport's length prefix removed).
//!
//! Checks: decoding never panics; the input is tried as given and again with its checksum fixed
//! up, so the fuzzer reaches the body decoder; a decoded raft message re-encodes (same sender,
//! recipient and incarnations) to a frame that decodes to the same message and header, and so
//! does a snapshot chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftkv_core::msgcodec::{self, Body, Sender};

fn check(bytes: &[u8]) {
    let Ok(env) = msgcodec::decode(bytes) else {
        return;
    };
    if let Body::Raft(m) = &env.body {
        let sender = Sender {
            cluster_id: env.cluster_id,
            id: env.from,
            incarnation: env.from_incarnation,
            addr: &env.from_addr,
        };
        let again = msgcodec::decode(&msgcodec::encode(&sender, env.to_incarnation, m))
            .expect("a re-encoded frame decodes");
        assert_eq!(
            (
                again.cluster_id,
                again.from,
                again.from_incarnation,
                again.to,
                again.to_incarnation
            ),
            (
                env.cluster_id,
                env.from,
                env.from_incarnation,
                env.to,
                env.to_incarnation
            )
        );
        match again.body {
            Body::Raft(m2) => assert_eq!(&m2, m),
            other => panic!("re-encoded raft message decoded as {other:?}"),
        }
    }
}

/// A decoded snapshot chunk re-encodes to a frame that decodes to the same chunk.
fn check_chunk(bytes: &[u8]) {
    let Ok(env) = msgcodec::decode(bytes) else {
        return;
    };
    if let Body::SnapshotChunk {
        message,
        key,
        offset,
        bytes,
    } = &env.body
    {
        let sender = Sender {
            cluster_id: env.cluster_id,
            id: env.from,
            incarnation: env.from_incarnation,
            addr: &env.from_addr,
        };
        let frame =
            msgcodec::encode_chunk(&sender, env.to_incarnation, message, *key, *offset, bytes.clone());
        match msgcodec::decode(&frame).expect("a re-encoded chunk decodes").body {
            Body::SnapshotChunk {
                message: m2,
                key: k2,
                offset: o2,
                bytes: b2,
            } => assert_eq!((&m2, k2, o2, &b2), (message, *key, *offset, bytes)),
            other => panic!("re-encoded chunk decoded as {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check_chunk(data);
    check(data);
    if data.len() >= 8 {
        let mut fixed = data.to_vec();
        let crc = crc32fast::hash(&data[8..]);
        fixed[4..8].copy_from_slice(&crc.to_le_bytes());
        check(&fixed);
        check_chunk(&fixed);
    }
});
