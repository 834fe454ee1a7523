//! WAL reader: segment bytes in, records out, with three distinct endings. Segments are read
//! through a `ReadAt` a piece at a time (`read_segments_at`), or given whole (`read_segments`);
//! the outcome is the same.
//!
//! 1. Clean end: the last segment's data ends and only zeros (preallocated space) follow.
//! 2. Torn tail: the last segment ends in a frame that fails to verify *and* shows the signature
//!    of a write that never reached the disk (see `frame::shows_unwritten_sector`), or runs past
//!    the end of the file. Only unsynced writes can be torn, and nothing unsynced was ever
//!    acknowledged, so recovery truncates at the frame's start (`TornTail::offset`).
//! 3. Corruption: anything else: a bad frame in a sealed segment, a bad frame in the last segment
//!    without that signature, a broken chain between segments, a gap in sequence numbers. This
//!    is an error naming the segment and offset; nothing is truncated.
//!
//! A known limit, shared with etcd: bit rot that happens to zero the last eight bytes of a
//! frame's part of a sector in the last segment is indistinguishable from a torn write.

use super::frame::{
    decode_frame, frame_len, segment_seed, shows_unwritten_sector_in, BadFrame, Decoded,
    HEADER_BYTES, MAX_PAYLOAD_BYTES,
};
use super::record::{EntryRec, HardStateRec, Record, SegmentHeader, SnapshotMarker};
use super::segment::SegmentName;
use crate::fileop::{slice_at, ReadAt, ReadFailure};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WalError {
    #[error("WAL corrupt in {segment} at offset {offset}: {defect}")]
    Corrupt {
        segment: String,
        offset: u64,
        defect: SegmentDefect,
    },
    #[error("WAL has no segments")]
    Empty,
    #[error("WAL cannot be replayed from snapshot index {index}: {gap}")]
    Gap { index: u64, gap: ReplayGap },
    #[error("WAL belongs to cluster {found_cluster:#x} node {found_node}, expected cluster {cluster:#x} node {node}")]
    WrongMember {
        cluster: u64,
        node: u64,
        found_cluster: u64,
        found_node: u64,
    },
}

/// What is wrong with a segment that makes it damage, not a torn write to repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum SegmentDefect {
    #[error("not a WAL segment name")]
    NotASegmentName,
    #[error("segment {seq} is missing")]
    Missing { seq: u64 },
    #[error("first record is not a segment header")]
    FirstRecordNotHeader,
    #[error("segment has no header")]
    NoHeader,
    #[error("bad segment header: {0:?}")]
    BadHeader(BadFrame),
    #[error("header disagrees with file name")]
    HeaderDisagreesWithName,
    #[error("unsupported format version {0}")]
    UnsupportedFormat(u32),
    #[error("segment belongs to another member")]
    AnotherMember,
    #[error("chain broken: previous segment was altered")]
    ChainBroken,
    #[error("segment header in the middle")]
    HeaderInTheMiddle,
    #[error("bad frame that is not a torn write: {0:?}")]
    BadFrameNotTorn(BadFrame),
    #[error("bad frame in a sealed segment: {0:?}")]
    BadFrameInSealed(BadFrame),
}

/// Why the log after a snapshot index cannot be rebuilt from the WAL's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ReplayGap {
    #[error("entry {index} follows {previous}")]
    Hole { index: u64, previous: u64 },
    #[error("log replaced by snapshot {0}")]
    ReplacedBySnapshot(u64),
    #[error("log replaced by received snapshot {0}")]
    ReplacedByReceivedSnapshot(u64),
}

/// Where a torn last segment must be truncated.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TornTail {
    pub segment: String,
    pub offset: u64,
    /// What the bytes at `offset` are (traces record it as it prints).
    #[serde(serialize_with = "serialize_debug")]
    pub reason: BadFrame,
}

fn serialize_debug<S: serde::Serializer, T: std::fmt::Debug>(
    value: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{value:?}"))
}

/// A record and where it was found.
#[derive(Clone, Debug)]
pub struct Located {
    pub seq: u64,
    pub offset: u64,
    pub record: Record,
}

/// What a writer needs to continue the last segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalTail {
    pub name: String,
    pub seq: u64,
    pub first_index: u64,
    /// End of the last valid frame: where the next frame goes.
    pub end_offset: u64,
    /// The chained crc of the last valid frame.
    pub crc: u32,
    /// Length of the segment file as read.
    pub file_len: u64,
}

/// Everything decoded from a WAL directory.
#[derive(Clone, Debug)]
pub struct WalContents {
    pub header: SegmentHeader,
    /// Segment (name, seq, first_index) in order.
    pub segments: Vec<(String, u64, u64)>,
    pub records: Vec<Located>,
    pub tail: WalTail,
    pub torn: Option<TornTail>,
}

/// Why segments could not be read: the WAL is damaged, or the shell could not read a file.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReadSegmentsError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("cannot read {name}: {reason}")]
    Read { name: String, reason: ReadFailure },
}

/// Reads every segment, given as (file name, bytes). Names that are not segment names are an
/// error for the caller to avoid; order does not matter.
pub fn read_segments(files: &[(String, Vec<u8>)]) -> Result<WalContents, WalError> {
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let mut read = |name: &str, offset: u64, max_bytes: usize| {
        let (_, bytes) = files
            .iter()
            .find(|(n, _)| n == name)
            .expect("a listed name");
        Ok(slice_at(bytes, offset, max_bytes))
    };
    read_segments_at(&names, &mut read, DEFAULT_PIECE_BYTES, 0).map_err(|e| match e {
        ReadSegmentsError::Wal(e) => e,
        ReadSegmentsError::Read { .. } => unreachable!("memory reads do not fail"),
    })
}

/// Pieces a segment is read in at recovery. A frame larger than a piece is read whole.
pub const DEFAULT_PIECE_BYTES: usize = 1 << 20;

/// Reads every segment named in `names` through `read`, one at a time and `piece_bytes` at a
/// time, so recovery holds the records it decodes and never a segment file (segments are
/// preallocated: most of a young one is zeros). The result does not depend on `piece_bytes`.
///
/// Entries at or below `needed_above` are kept without their bytes, and of a run of them only
/// the last: what the log after any snapshot at or above `needed_above` is built from, and what
/// resuming the writer needs (see `take_entries`). 0 keeps every entry whole.
pub fn read_segments_at(
    names: &[String],
    read: &mut ReadAt<'_>,
    piece_bytes: usize,
    needed_above: u64,
) -> Result<WalContents, ReadSegmentsError> {
    assert!(piece_bytes > 0, "a piece holds at least a byte");
    let mut segs: Vec<(SegmentName, &str)> = Vec::with_capacity(names.len());
    for name in names {
        let parsed = SegmentName::parse(name).ok_or_else(|| WalError::Corrupt {
            segment: name.clone(),
            offset: 0,
            defect: SegmentDefect::NotASegmentName,
        })?;
        segs.push((parsed, name));
    }
    segs.sort_by_key(|(n, _)| n.seq);
    if segs.is_empty() {
        return Err(WalError::Empty.into());
    }
    let corrupt = |segment: &str, offset: u64, defect: SegmentDefect| WalError::Corrupt {
        segment: segment.to_string(),
        offset,
        defect,
    };

    let mut records = Vec::new();
    let mut segments = Vec::new();
    let mut first_header: Option<SegmentHeader> = None;
    let mut prev: Option<(u64, u32)> = None; // (seq, last crc) of the previous segment
    let mut torn = None;
    let mut tail = None;
    let count = segs.len();
    for (i, (sname, name)) in segs.into_iter().enumerate() {
        let is_last = i + 1 == count;
        if let Some((pseq, _)) = prev {
            if sname.seq != pseq + 1 {
                return Err(corrupt(name, 0, SegmentDefect::Missing { seq: pseq + 1 }).into());
            }
        }
        let mut file = Window::new(name, &mut *read, piece_bytes);
        // The header frame.
        let header = match file.decode(0, segment_seed(sname.seq))? {
            Decoded::Frame(f) => match f.record {
                Record::SegmentHeader(h) => (h, f.crc, f.end),
                _ => return Err(corrupt(name, 0, SegmentDefect::FirstRecordNotHeader).into()),
            },
            Decoded::End => return Err(corrupt(name, 0, SegmentDefect::NoHeader).into()),
            Decoded::Bad(b) => return Err(corrupt(name, 0, SegmentDefect::BadHeader(b)).into()),
        };
        let (h, mut crc, mut offset) = header;
        if h.seq != sname.seq || h.first_index != sname.first_index {
            return Err(corrupt(name, 0, SegmentDefect::HeaderDisagreesWithName).into());
        }
        if h.format_version != super::record::FORMAT_VERSION {
            return Err(
                corrupt(name, 0, SegmentDefect::UnsupportedFormat(h.format_version)).into(),
            );
        }
        if let Some(fh) = &first_header {
            if (fh.cluster_id, fh.node_id, fh.format_version)
                != (h.cluster_id, h.node_id, h.format_version)
            {
                return Err(corrupt(name, 0, SegmentDefect::AnotherMember).into());
            }
        }
        if let Some((_, pcrc)) = prev {
            if h.prev_crc != pcrc {
                return Err(corrupt(name, 0, SegmentDefect::ChainBroken).into());
            }
        }
        if first_header.is_none() {
            first_header = Some(h.clone());
        }
        records.push(Located {
            seq: h.seq,
            offset: 0,
            record: Record::SegmentHeader(h.clone()),
        });
        loop {
            match file.decode(offset, crc)? {
                Decoded::Frame(f) => {
                    if matches!(f.record, Record::SegmentHeader(_)) {
                        return Err(corrupt(name, offset, SegmentDefect::HeaderInTheMiddle).into());
                    }
                    let located = Located {
                        seq: h.seq,
                        offset,
                        record: f.record,
                    };
                    push_record(&mut records, located, needed_above);
                    crc = f.crc;
                    offset = f.end;
                }
                Decoded::End => break,
                Decoded::Bad(bad) => {
                    let looks_torn = match bad {
                        BadFrame::TruncatedHeader
                        | BadFrame::ZeroHeaderThenData
                        | BadFrame::PastEof { .. } => true,
                        // A header is 8 aligned bytes inside one sector, and sectors are
                        // written whole or not at all (an unwritten header reads as zeros):
                        // a non-zero impossible header is damage, not a torn write.
                        BadFrame::BadHeader => false,
                        BadFrame::BadChecksum { declared_end } => {
                            file.shows_unwritten_sector(offset, declared_end)
                        }
                        BadFrame::BadPayload => false,
                    };
                    let planted =
                        crate::planted::active(crate::planted::PlantedBug::CorruptMiddleAsTornTail);
                    if (is_last && looks_torn) || planted {
                        torn = Some(TornTail {
                            segment: name.to_string(),
                            offset,
                            reason: bad,
                        });
                        break;
                    }
                    let defect = if is_last {
                        SegmentDefect::BadFrameNotTorn(bad)
                    } else {
                        SegmentDefect::BadFrameInSealed(bad)
                    };
                    return Err(corrupt(name, offset, defect).into());
                }
            }
        }
        segments.push((name.to_string(), h.seq, h.first_index));
        // (Planted bug only: a "torn tail" in a sealed segment ends the log there.)
        if is_last || torn.is_some() {
            tail = Some(WalTail {
                name: name.to_string(),
                seq: h.seq,
                first_index: h.first_index,
                end_offset: offset,
                crc,
                file_len: file.len()?,
            });
        }
        prev = Some((h.seq, crc));
        if torn.is_some() {
            break;
        }
    }
    Ok(WalContents {
        header: first_header.expect("at least one segment"),
        segments,
        records,
        tail: tail.expect("last segment visited"),
        torn,
    })
}

/// Appends a record; an entry at or below `needed_above` loses its bytes and replaces the one
/// before it if that one is such an entry too.
fn push_record(records: &mut Vec<Located>, mut located: Located, needed_above: u64) {
    if let Record::Entry(e) = &mut located.record {
        if e.index <= needed_above {
            e.data = Vec::new();
            e.context = Vec::new();
            if let Some(Located {
                record: Record::Entry(prev),
                ..
            }) = records.last()
            {
                if prev.index <= needed_above {
                    *records.last_mut().expect("checked") = located;
                    return;
                }
            }
        }
    }
    records.push(located);
}

/// The part of one segment file recovery is looking at: `buf` holds the file's bytes from
/// `start`, read a piece at a time as decoding moves forward, and bytes before the frame being
/// decoded are dropped. Holds one piece, or one frame where a frame is larger.
struct Window<'r, 'a> {
    name: &'r str,
    read: &'r mut ReadAt<'a>,
    piece_bytes: usize,
    buf: Vec<u8>,
    start: u64,
    /// The file ends at `start + buf.len()`.
    eof: bool,
}

impl<'r, 'a> Window<'r, 'a> {
    fn new(name: &'r str, read: &'r mut ReadAt<'a>, piece_bytes: usize) -> Self {
        Window {
            name,
            read,
            piece_bytes,
            buf: Vec::new(),
            start: 0,
            eof: false,
        }
    }

    fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Reads the next piece onto the end of the window; false at the end of the file.
    fn read_more(&mut self) -> Result<bool, ReadSegmentsError> {
        if self.eof {
            return Ok(false);
        }
        let end = self.end();
        let piece = (self.read)(self.name, end, self.piece_bytes).map_err(|reason| {
            ReadSegmentsError::Read {
                name: self.name.to_string(),
                reason,
            }
        })?;
        if piece.is_empty() {
            self.eof = true;
            return Ok(false);
        }
        self.buf.extend_from_slice(&piece);
        Ok(true)
    }

    /// The file's bytes `[offset, offset + len)`, fewer where the file ends. Bytes before
    /// `offset` are forgotten when the next piece is read (decoding only moves forward), so the
    /// window is moved once a piece, not once a frame.
    fn cover(&mut self, offset: u64, len: usize) -> Result<&[u8], ReadSegmentsError> {
        debug_assert!(offset >= self.start, "decoding moves forward");
        loop {
            let rel = usize::try_from(offset - self.start).unwrap_or(usize::MAX);
            if rel > self.buf.len() && self.eof {
                // The offset lies beyond the end of the file.
                return Ok(&[]);
            }
            if rel <= self.buf.len() && (self.buf.len() - rel >= len || self.eof) {
                let end = rel.saturating_add(len).min(self.buf.len());
                return Ok(&self.buf[rel..end]);
            }
            let forget = rel.min(self.buf.len());
            self.buf.drain(..forget);
            self.start += forget as u64;
            // At the end of the file, the next turn returns what is left.
            self.read_more()?;
        }
    }

    /// True if every byte from `offset` to the end of the file is zero.
    fn zeros_to_end(&mut self, offset: u64) -> Result<bool, ReadSegmentsError> {
        let mut at = offset;
        loop {
            let piece_bytes = self.piece_bytes;
            let bytes = self.cover(at, piece_bytes)?;
            if bytes.is_empty() {
                return Ok(true);
            }
            if bytes.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += bytes.len() as u64;
        }
    }

    /// The frame at `offset` chained on `prev_crc`, as `decode_frame` would find it in the
    /// whole file.
    fn decode(&mut self, offset: u64, prev_crc: u32) -> Result<Decoded, ReadSegmentsError> {
        let header = self.cover(offset, HEADER_BYTES)?;
        if header.iter().all(|&b| b == 0) {
            // Preallocated space, or the start of a torn write: what follows tells them apart.
            let short = header.len() < HEADER_BYTES;
            let zeros = self.zeros_to_end(offset)?;
            return Ok(match (zeros, short) {
                (true, _) => Decoded::End,
                (false, true) => Decoded::Bad(BadFrame::TruncatedHeader),
                (false, false) => Decoded::Bad(BadFrame::ZeroHeaderThenData),
            });
        }
        if header.len() < HEADER_BYTES {
            return Ok(Decoded::Bad(BadFrame::TruncatedHeader));
        }
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        // An impossible length is refused by the header check before any payload is read.
        let want = if len <= MAX_PAYLOAD_BYTES {
            frame_len(len)
        } else {
            HEADER_BYTES
        };
        let frame = self.cover(offset, want)?;
        Ok(match decode_frame(frame, 0, prev_crc) {
            Decoded::Frame(mut f) => {
                f.end += offset;
                Decoded::Frame(f)
            }
            Decoded::Bad(BadFrame::PastEof { declared_end }) => Decoded::Bad(BadFrame::PastEof {
                declared_end: declared_end + offset,
            }),
            Decoded::Bad(BadFrame::BadChecksum { declared_end }) => {
                Decoded::Bad(BadFrame::BadChecksum {
                    declared_end: declared_end + offset,
                })
            }
            other => other,
        })
    }

    /// `frame::shows_unwritten_sector` over the file's bytes `[start, end)`, which the last
    /// `decode` left in the window.
    fn shows_unwritten_sector(&self, start: u64, end: u64) -> bool {
        debug_assert!(start >= self.start);
        shows_unwritten_sector_in(&self.buf, self.start, start, end)
    }

    /// The file's length (reads on to its end).
    fn len(&mut self) -> Result<u64, ReadSegmentsError> {
        while !self.eof {
            self.start = self.end();
            self.buf.clear();
            self.read_more()?;
        }
        Ok(self.end())
    }
}

impl WalContents {
    /// Snapshot markers in the order they were written, with the segment seq holding each.
    pub fn markers(&self) -> impl Iterator<Item = (u64, &SnapshotMarker)> {
        self.records.iter().filter_map(|l| match &l.record {
            Record::Snapshot(m) => Some((l.seq, m)),
            _ => None,
        })
    }

    /// The last HardState written, if any.
    pub fn hard_state(&self) -> Option<HardStateRec> {
        self.records.iter().rev().find_map(|l| match &l.record {
            Record::HardState(h) => Some(*h),
            _ => None,
        })
    }

    /// The log after a snapshot at `snap_index`: entries with larger indexes, where a later entry
    /// at an index already seen replaces that entry and everything after it (raft's conflict
    /// truncation; an entry at or below `snap_index` therefore discards every entry after
    /// `snap_index` written before it). A received snapshot's marker drops what raft discarded
    /// (entries after it), and a marker past the end of the rebuilt log means the log was
    /// replaced by a newer snapshot, which makes replay from `snap_index` impossible.
    pub fn entries_after(&self, snap_index: u64) -> Result<Vec<EntryRec>, WalError> {
        let positions = self.entry_positions_after(snap_index)?;
        Ok(positions
            .iter()
            .map(|&p| match &self.records[p].record {
                Record::Entry(e) => e.clone(),
                _ => unreachable!("positions are of entries"),
            })
            .collect())
    }

    /// Where in `records` the entries [`Self::entries_after`] returns are, in log order.
    pub fn entry_positions_after(&self, snap_index: u64) -> Result<Vec<usize>, WalError> {
        let mut out: Vec<usize> = Vec::new();
        let gap = |gap: ReplayGap| WalError::Gap {
            index: snap_index,
            gap,
        };
        for (at, l) in self.records.iter().enumerate() {
            match &l.record {
                Record::Entry(e) if e.index > snap_index => {
                    let next = snap_index + out.len() as u64 + 1;
                    if e.index > next {
                        return Err(gap(ReplayGap::Hole {
                            index: e.index,
                            previous: next - 1,
                        }));
                    }
                    out.truncate((e.index - snap_index - 1) as usize);
                    out.push(at);
                }
                // An entry at or below the snapshot index truncated the log below it, so
                // everything after the snapshot index seen so far was discarded too.
                Record::Entry(_) => out.clear(),
                Record::Snapshot(m) if m.index > snap_index + out.len() as u64 => {
                    return Err(gap(ReplayGap::ReplacedBySnapshot(m.index)));
                }
                // A received snapshot past our starting point replaced entries up to it with the
                // leader's state; our own entries below it may have been conflicting ones, so
                // replay from an older snapshot cannot be trusted.
                Record::Snapshot(m) if m.log_reset && m.index > snap_index => {
                    return Err(gap(ReplayGap::ReplacedByReceivedSnapshot(m.index)));
                }
                Record::Snapshot(m) if m.log_reset => out.clear(),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Moves the entries at `positions` (from [`Self::entry_positions_after`]) out, so a
    /// restart holds each entry's bytes once, and thins `records` to what resuming the WAL
    /// needs: every record but entries, and of each run of entries the last, without its data.
    pub fn take_entries(&mut self, positions: &[usize]) -> Vec<EntryRec> {
        let mut out = Vec::with_capacity(positions.len());
        for &p in positions {
            let Record::Entry(e) = &mut self.records[p].record else {
                unreachable!("positions are of entries")
            };
            out.push(EntryRec {
                data: std::mem::take(&mut e.data),
                context: std::mem::take(&mut e.context),
                ..e.clone()
            });
        }
        let is_entry = |l: Option<&Located>| matches!(l.map(|l| &l.record), Some(Record::Entry(_)));
        let keep: Vec<bool> = (0..self.records.len())
            .map(|i| !is_entry(self.records.get(i)) || !is_entry(self.records.get(i + 1)))
            .collect();
        let mut keep = keep.into_iter();
        self.records
            .retain(|_| keep.next().expect("one flag per record"));
        for l in &mut self.records {
            if let Record::Entry(e) = &mut l.record {
                e.data = Vec::new();
                e.context = Vec::new();
            }
        }
        self.records.shrink_to_fit();
        out
    }
}
