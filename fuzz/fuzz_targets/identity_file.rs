//! Bytes as a data directory's identity file. Checks: decoding never panics, and whatever
//! decodes re-encodes to exactly the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftkv_core::identity::Identity;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = Identity::decode(data) {
        assert_eq!(id.encode(), data, "decoded identity re-encodes identically");
    }
    // With the checksum fixed up, so the body decoder is reached too.
    if data.len() >= 16 {
        let mut fixed = data.to_vec();
        let crc = crc32fast::hash(&data[16..]);
        fixed[8..12].copy_from_slice(&crc.to_le_bytes());
        if let Ok(id) = Identity::decode(&fixed) {
            assert_eq!(id.encode(), fixed);
        }
    }
});
