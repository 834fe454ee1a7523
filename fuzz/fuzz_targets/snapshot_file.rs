//! Bytes as a snapshot file. Checks: whatever decodes re-encodes to exactly the input.
//!
//! The input is tried as given, and again with its checksum fixed up (when its length fields
//! make sense), so the fuzzer also reaches metadata decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftkv_core::snapfile;

fn check(bytes: &[u8]) {
    if let Ok(file) = snapfile::decode(bytes) {
        assert_eq!(
            snapfile::encode(&file),
            bytes,
            "decoded snapshot re-encodes identically"
        );
        let name = snapfile::file_name(file.meta.term, file.meta.index);
        assert_eq!(snapfile::decode_named(&name, bytes), Ok(file));
    }
}

/// The input with the crc field recomputed, if the length fields place one inside it.
fn with_fixed_crc(data: &[u8]) -> Option<Vec<u8>> {
    let meta_len = u32::from_le_bytes(data.get(12..16)?.try_into().ok()?) as usize;
    let at = 16usize.checked_add(meta_len)?;
    let data_len = u64::from_le_bytes(data.get(at..at.checked_add(8)?)?.try_into().ok()?);
    let end = at
        .checked_add(8)?
        .checked_add(usize::try_from(data_len).ok()?)?;
    let mut fixed = data.to_vec();
    let crc = crc32fast::hash(data.get(..end)?);
    fixed
        .get_mut(end..end.checked_add(4)?)?
        .copy_from_slice(&crc.to_le_bytes());
    Some(fixed)
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(fixed) = with_fixed_crc(data) {
        check(&fixed);
    }
});
