//! WAL frames: self-delimiting, 8-byte aligned, checksummed with a chained CRC.
//!
//! ```text
//! offset  size  field
//! 0       4     payload_len   u32 LE, at most MAX_PAYLOAD_BYTES
//! 4       1     record_type   1 SegmentHeader, 2 Entry, 3 HardState, 4 Snapshot
//! 5       1     pad_len       zero bytes after the payload so the frame is a multiple of 8
//! 6       2     reserved      must be zero
//! 8       len   payload       postcard encoding of the record
//! 8+len   pad   padding       must be zero
//! end-8   4     crc           crc32(seed = previous frame's crc, header[0..8] ++ payload)
//! end-4   4     magic         FRAME_MAGIC, every byte non-zero
//! ```
//!
//! Why this shape:
//! - The chained CRC binds every frame to its predecessor, so a frame cannot be moved, dropped,
//!   replayed from a recycled/preallocated file, or spliced in from another segment without the
//!   next check failing. The segment header frame is seeded with `segment_seed(seq)`, so stale
//!   bytes from a segment with another sequence number never validate either.
//! - The checksum sits in a trailer, and the trailer's magic has no zero byte: a whole, valid
//!   frame never ends in zeros. A frame whose bytes end in zeros at a sector boundary is
//!   therefore evidence of an unwritten (torn) sector rather than of bit rot. See `reader`.
//! - An all-zero header is how preallocated space reads: it marks the end of the data.

use super::record::{Record, RecordType};

pub const HEADER_BYTES: usize = 8;
pub const TRAILER_BYTES: usize = 8;
/// Upper bound on one record's payload. Larger lengths are rejected as corrupt before allocation.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 20;
/// "RKVF" with no zero byte, so a valid frame never ends in a zero byte.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"RKVF");
/// Sector size assumed by the torn-write rule (the common logical block size).
pub const SECTOR_BYTES: u64 = 512;

/// Seed of the chained CRC for the header frame of segment `seq`.
pub fn segment_seed(seq: u64) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(0x5241_4654);
    h.update(&seq.to_le_bytes());
    h.finalize()
}

fn pad_for(len: usize) -> usize {
    (8 - len % 8) % 8
}

/// Total frame size for a payload of `payload_len` bytes.
pub fn frame_len(payload_len: usize) -> usize {
    HEADER_BYTES + payload_len + pad_for(payload_len) + TRAILER_BYTES
}

fn frame_crc(seed: u32, header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(seed);
    h.update(header);
    h.update(payload);
    h.finalize()
}

/// Encodes `record` as one frame chained on `prev_crc`; returns the frame's own crc.
pub fn encode_frame(record: &Record, prev_crc: u32, out: &mut Vec<u8>) -> u32 {
    // Encode the payload in place after a placeholder header, then fill the header in: the
    // same bytes as `encode_raw_frame` without an intermediate payload buffer.
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    record.encode_payload_into(out);
    let len = out.len() - start - HEADER_BYTES;
    assert!(len <= MAX_PAYLOAD_BYTES, "WAL record too large");
    let pad = pad_for(len);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4] = record.record_type() as u8;
    out[start + 5] = pad as u8;
    let crc = frame_crc(
        prev_crc,
        &out[start..start + HEADER_BYTES],
        &out[start + HEADER_BYTES..],
    );
    out.extend(std::iter::repeat_n(0u8, pad));
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    debug_assert_eq!((out.len() - start) % 8, 0);
    crc
}

/// Frames an already-encoded payload. Exposed for fuzzing and format tests.
pub fn encode_raw_frame(record_type: u8, payload: &[u8], prev_crc: u32, out: &mut Vec<u8>) -> u32 {
    assert!(payload.len() <= MAX_PAYLOAD_BYTES, "WAL record too large");
    let pad = pad_for(payload.len());
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.push(record_type);
    out.push(pad as u8);
    out.extend_from_slice(&[0, 0]);
    let crc = frame_crc(prev_crc, &out[start..start + HEADER_BYTES], payload);
    out.extend_from_slice(payload);
    out.extend(std::iter::repeat_n(0u8, pad));
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    debug_assert_eq!((out.len() - start) % 8, 0);
    crc
}

/// A frame that decoded and verified.
#[derive(Debug)]
pub struct Frame {
    pub record: Record,
    pub crc: u32,
    /// Offset one past the frame's last byte.
    pub end: u64,
}

/// Why the bytes at an offset are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadFrame {
    /// Fewer than a header's worth of bytes remain and they are not all zero.
    TruncatedHeader,
    /// A zero header (end of data) but non-zero bytes follow it.
    ZeroHeaderThenData,
    /// Header fields are impossible (type, padding, reserved bytes, length bound).
    BadHeader,
    /// The frame runs past the end of the file.
    PastEof { declared_end: u64 },
    /// Padding, magic or checksum do not verify.
    BadChecksum { declared_end: u64 },
    /// The checksum verifies but the payload is not a valid record: never a torn write.
    BadPayload,
}

/// Outcome of decoding at one offset.
#[derive(Debug)]
pub enum Decoded {
    Frame(Frame),
    /// Clean end: the rest of the file (possibly nothing) is zeros.
    End,
    Bad(BadFrame),
}

/// Decodes the frame at `offset` of `bytes`, chained on `prev_crc`.
pub fn decode_frame(bytes: &[u8], offset: u64, prev_crc: u32) -> Decoded {
    let at = offset as usize;
    debug_assert!(at <= bytes.len());
    let rest = &bytes[at..];
    if rest.len() < HEADER_BYTES {
        return if rest.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Bad(BadFrame::TruncatedHeader)
        };
    }
    let header = &rest[..HEADER_BYTES];
    if header.iter().all(|&b| b == 0) {
        return if rest.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Bad(BadFrame::ZeroHeaderThenData)
        };
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let kind = RecordType::from_u8(header[4]);
    let pad = header[5] as usize;
    if kind.is_none() || len > MAX_PAYLOAD_BYTES || pad != pad_for(len) || header[6..8] != [0, 0] {
        return Decoded::Bad(BadFrame::BadHeader);
    }
    let total = frame_len(len);
    let declared_end = offset + total as u64;
    if rest.len() < total {
        return Decoded::Bad(BadFrame::PastEof { declared_end });
    }
    let payload = &rest[HEADER_BYTES..HEADER_BYTES + len];
    let padding = &rest[HEADER_BYTES + len..HEADER_BYTES + len + pad];
    let trailer = &rest[total - TRAILER_BYTES..total];
    let stored_crc = u32::from_le_bytes(trailer[0..4].try_into().expect("4 bytes"));
    let magic = u32::from_le_bytes(trailer[4..8].try_into().expect("4 bytes"));
    if padding.iter().any(|&b| b != 0)
        || magic != FRAME_MAGIC
        || stored_crc != frame_crc(prev_crc, header, payload)
    {
        return Decoded::Bad(BadFrame::BadChecksum { declared_end });
    }
    match Record::decode_payload(kind.expect("checked above"), payload) {
        Some(record) => Decoded::Frame(Frame {
            record,
            crc: stored_crc,
            end: declared_end,
        }),
        None => Decoded::Bad(BadFrame::BadPayload),
    }
}

/// True if the bytes `[start, end)` show the signature of a write that never reached the disk:
/// within some 512-byte sector, the part of the range inside that sector ends in at least eight
/// zero bytes (or is shorter than eight bytes and all zero). Unwritten sectors of preallocated
/// space read as zeros, and a torn sector keeps a prefix of the new data; a whole valid frame
/// never ends in zeros because of its magic.
pub fn shows_unwritten_sector(bytes: &[u8], start: u64, end: u64) -> bool {
    shows_unwritten_sector_in(bytes, 0, start, end)
}

/// [`shows_unwritten_sector`] where `bytes` are the file's bytes from offset `base` (at or
/// below `start`); sectors are the file's.
pub fn shows_unwritten_sector_in(bytes: &[u8], base: u64, start: u64, end: u64) -> bool {
    debug_assert!(base <= start);
    let end = end.min(base + bytes.len() as u64);
    let mut sector_start = start - start % SECTOR_BYTES;
    while sector_start < end {
        let a = start.max(sector_start);
        let b = end.min(sector_start + SECTOR_BYTES);
        let tail_from = a.max(b.saturating_sub(8));
        if b > a
            && bytes[(tail_from - base) as usize..(b - base) as usize]
                .iter()
                .all(|&x| x == 0)
        {
            return true;
        }
        sector_start += SECTOR_BYTES;
    }
    false
}
