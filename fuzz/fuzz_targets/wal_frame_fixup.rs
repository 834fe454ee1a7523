//! Record type + payload, framed with a correct chained crc by `encode_raw_frame`, so the fuzzer
//! reaches payload decoding instead of stopping at the checksum.
//!
//! Input: byte 0 record type, bytes 1..5 the previous crc (LE), the rest the payload.
//! Checks: a payload that decodes re-encodes to the same bytes (no two encodings of one record,
//! so the crc covers exactly one meaning), and the frame re-encodes identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftkv_core::wal::frame::{decode_frame, encode_frame, encode_raw_frame, BadFrame, Decoded};
use raftkv_core::wal::record::RecordType;
use raftkv_core::wal::Record;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let record_type = data[0];
    let prev = u32::from_le_bytes(data[1..5].try_into().unwrap());
    let payload = &data[5..];
    let mut frame = Vec::new();
    let crc = encode_raw_frame(record_type, payload, prev, &mut frame);
    let frame_end = frame.len() as u64;
    // Preallocated space after it.
    frame.extend_from_slice(&[0u8; 16]);
    let kind = RecordType::from_u8(record_type);
    match decode_frame(&frame, 0, prev) {
        Decoded::Frame(f) => {
            let kind = kind.expect("decoded a frame of an unknown type");
            assert_eq!(f.record.record_type(), kind);
            assert_eq!(f.crc, crc);
            assert_eq!(f.end, frame_end);
            assert_eq!(
                f.record.encode_payload(),
                payload,
                "payload re-encodes identically"
            );
            let mut again = Vec::new();
            assert_eq!(encode_frame(&f.record, prev, &mut again), crc);
            assert_eq!(&again[..], &frame[..frame_end as usize]);
            // The payload decoder agrees on its own.
            assert_eq!(Record::decode_payload(kind, payload), Some(f.record));
        }
        Decoded::Bad(BadFrame::BadPayload) => {
            let kind = kind.expect("bad payload of an unknown type");
            assert_eq!(Record::decode_payload(kind, payload), None);
        }
        Decoded::Bad(BadFrame::BadHeader) => assert!(kind.is_none()),
        // Type 0 with an empty payload is an all-zero header: the end-of-data marker.
        Decoded::Bad(BadFrame::ZeroHeaderThenData) => {
            assert!(record_type == 0 && payload.is_empty())
        }
        other => panic!("a correctly framed record decoded as {other:?}"),
    }
});
