//! Raw bytes as a WAL segment: read as the only (last) segment, then as the sealed first of two.
//!
//! Checks: whatever the reader accepts re-encodes to exactly the input bytes up to the last valid
//! frame (so every accepted byte is covered by a frame and its chained crc); the rest is zeros
//! (clean end) or a torn tail at that offset; and the same bytes as a sealed segment are accepted
//! only if they ended cleanly, else rejected at the same offset. Read a few bytes at a time, as
//! recovery reads segments in pieces, the same bytes give the same outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftkv_core::wal::frame::{encode_frame, segment_seed};
use raftkv_core::fileop::slice_at;
use raftkv_core::wal::{
    read_segments, read_segments_at, ReadSegmentsError, Record, SegmentHeader, WalError,
};

const SEG0: &str = "0000000000000000-0000000000000000.wal";
const SEG1: &str = "0000000000000001-0000000000000000.wal";

fn second_segment(h: &SegmentHeader, prev_crc: u32) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(
        &Record::SegmentHeader(SegmentHeader {
            seq: 1,
            first_index: 0,
            prev_crc,
            ..h.clone()
        }),
        segment_seed(1),
        &mut out,
    );
    out.extend_from_slice(&[0u8; 64]);
    out
}

fuzz_target!(|data: &[u8]| {
    let single = read_segments(&[(SEG0.to_string(), data.to_vec())]);
    // The piece size comes from the input, so the fuzzer moves piece boundaries around frames.
    let piece = 1 + data.first().copied().unwrap_or(0) as usize % 61;
    let mut read = |_: &str, offset: u64, max: usize| Ok(slice_at(data, offset, max));
    match (&single, read_segments_at(&[SEG0.to_string()], &mut read, piece, 0)) {
        (Ok(a), Ok(b)) => {
            let records = |c: &raftkv_core::wal::WalContents| {
                c.records
                    .iter()
                    .map(|l| (l.seq, l.offset, l.record.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(records(a), records(&b));
            assert_eq!((&a.tail, &a.torn), (&b.tail, &b.torn));
        }
        (Err(a), Err(ReadSegmentsError::Wal(b))) => assert_eq!(a, &b),
        (a, b) => panic!("whole: {:?}; in pieces of {piece}: {:?}", a.as_ref().map(|c| &c.torn), b.map(|c| c.torn)),
    }
    match single {
        Ok(c) => {
            // Re-encode every decoded record, chained the same way.
            let mut again = Vec::new();
            let mut crc = segment_seed(0);
            for l in &c.records {
                assert_eq!(l.seq, 0);
                assert_eq!(
                    l.offset,
                    again.len() as u64,
                    "record offsets are contiguous"
                );
                crc = encode_frame(&l.record, crc, &mut again);
            }
            let end = c.tail.end_offset as usize;
            assert_eq!(again.len(), end);
            assert_eq!(crc, c.tail.crc);
            assert_eq!(
                &data[..end],
                &again[..],
                "decoded frames re-encode to the input"
            );
            assert_eq!(c.tail.file_len, data.len() as u64);
            match &c.torn {
                None => assert!(data[end..].iter().all(|&b| b == 0), "clean end is zeros"),
                Some(t) => {
                    assert_eq!(t.segment, SEG0);
                    assert_eq!(t.offset, c.tail.end_offset);
                }
            }
            // The same bytes followed by a correctly chained second segment.
            let two = [
                (SEG0.to_string(), data.to_vec()),
                (SEG1.to_string(), second_segment(&c.header, c.tail.crc)),
            ];
            match (read_segments(&two), &c.torn) {
                (Ok(c2), None) => {
                    assert!(c2.torn.is_none());
                    assert_eq!(c2.records.len(), c.records.len() + 1);
                    for (a, b) in c.records.iter().zip(&c2.records) {
                        assert_eq!((a.seq, a.offset, &a.record), (b.seq, b.offset, &b.record));
                    }
                    assert_eq!(c2.tail.name, SEG1);
                }
                (
                    Err(WalError::Corrupt {
                        segment, offset, ..
                    }),
                    Some(t),
                ) => {
                    assert_eq!(segment, SEG0, "a torn sealed segment is corruption");
                    assert_eq!(offset, t.offset);
                }
                (other, torn) => panic!("as sealed segment: {other:?}, as last: torn {torn:?}"),
            }
        }
        Err(e) => {
            let WalError::Corrupt {
                segment, offset, ..
            } = &e
            else {
                panic!("unexpected error {e:?}");
            };
            assert_eq!(segment, SEG0);
            // Rejected as the last segment: rejected as a sealed one too, at the same spot.
            let h = SegmentHeader {
                format_version: 1,
                cluster_id: 0,
                node_id: 0,
                seq: 0,
                first_index: 0,
                prev_crc: 0,
            };
            let two = [
                (SEG0.to_string(), data.to_vec()),
                (SEG1.to_string(), second_segment(&h, 0)),
            ];
            match read_segments(&two) {
                Err(WalError::Corrupt {
                    segment: s2,
                    offset: o2,
                    ..
                }) => assert_eq!((&s2, o2), (segment, *offset)),
                other => panic!("rejected as last ({e}), as sealed: {other:?}"),
            }
        }
    }
});
