//! WAL writer: a sans-IO state machine that turns records into `FileOp`s.
//!
//! It owns the position of the next frame and the chained crc; it never reads or writes files.
//! The caller executes the returned ops in order. Frames appended back to back are coalesced into
//! one `WriteAt` so a batch costs one write and one sync.
//!
//! A segment is cut when the next frame would not fit: the old segment is synced, the new one is
//! prepared as a temp file (header, current HardState and latest snapshot marker, so a purged
//! prefix never takes them along), synced, renamed into place, and the directory synced.
//!
//! The temp file is a *spare* when one is ready: a file of the segment size whose zeros were
//! written and synced off the WAL's lane (see `node::spare`). Otherwise the cut creates it,
//! preallocated. The spare is what makes the WAL's syncs cheap: an fdatasync into preallocated
//! (unwritten) extents must also commit the file system's journal to record them as written,
//! one into written zeros flushes only data. So a segment that was created (a new WAL's first,
//! or a cut that found no spare ready) is cut as soon as a spare is ready, full or not: a new
//! node's syncs are slow for the time one spare takes to write, not for a whole segment. After
//! a restart the writer cannot tell which kind its last segment is, and cuts it only when full.

use super::frame::{encode_frame, segment_seed};
use super::reader::{WalContents, WalTail};
use super::record::{HardStateRec, Record, SegmentHeader, SnapshotMarker, FORMAT_VERSION};
use super::segment::{SegmentName, TEMP_SUFFIX};
use crate::fileop::FileOp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalConfig {
    /// Size each segment is preallocated to; also the size that triggers a cut.
    pub segment_size_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_size_bytes: 64 << 20,
        }
    }
}

/// Identity stamped into every segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalIdentity {
    pub cluster_id: u64,
    pub node_id: u64,
}

/// A live segment, for purge planning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub seq: u64,
    pub first_index: u64,
    pub name: String,
}

#[derive(Debug)]
pub struct WalWriter {
    id: WalIdentity,
    cfg: WalConfig,
    seq: u64,
    name: String,
    /// Offset of the next frame in the current segment.
    offset: u64,
    /// Offset where the current segment's header frames end: a segment is never cut before
    /// holding at least one record of its own.
    body_start: u64,
    crc: u32,
    last_index: u64,
    last_hs: Option<HardStateRec>,
    last_marker: Option<SnapshotMarker>,
    segments: Vec<SegmentInfo>,
    /// (snapshot index, seq of the segment holding its marker), in write order.
    marker_segments: Vec<(u64, u64)>,
    /// Encoded frames not yet handed out as a `WriteAt`, starting at `pending_offset`.
    pending: Vec<u8>,
    pending_offset: u64,
    /// A zero-filled, synced file of `segment_size_bytes` the next cut renames into place.
    spare: Option<String>,
    /// The current segment was created preallocated (unwritten extents), not taken from a
    /// spare: the next append cuts to a spare as soon as one is ready, so that a new WAL's
    /// syncs are slow only until its first spare is written, not for a whole segment.
    on_unwritten: bool,
}

impl WalWriter {
    /// Starts a brand-new WAL whose first entry will be `first_index`.
    pub fn create(
        id: WalIdentity,
        cfg: WalConfig,
        first_index: u64,
        ops: &mut Vec<FileOp>,
    ) -> Self {
        assert!(first_index >= 1, "raft indexes start at 1");
        let mut w = WalWriter {
            id,
            cfg,
            seq: 0,
            name: String::new(),
            offset: 0,
            body_start: 0,
            crc: 0,
            last_index: first_index - 1,
            last_hs: None,
            last_marker: None,
            segments: Vec::new(),
            marker_segments: Vec::new(),
            pending: Vec::new(),
            pending_offset: 0,
            spare: None,
            on_unwritten: false,
        };
        w.open_segment(0, 0, ops);
        w
    }

    /// Continues the WAL that `contents` was read from. If the last segment had a torn tail,
    /// the returned ops first cut it off and zero the space after it.
    pub fn resume(
        id: WalIdentity,
        cfg: WalConfig,
        contents: &WalContents,
        ops: &mut Vec<FileOp>,
    ) -> Self {
        let tail: &WalTail = &contents.tail;
        let mut last_index = tail.first_index.saturating_sub(1);
        let mut last_hs = None;
        let mut last_marker = None;
        let mut marker_segments = Vec::new();
        for l in &contents.records {
            match &l.record {
                Record::Entry(e) => last_index = e.index,
                Record::HardState(h) => last_hs = Some(*h),
                Record::Snapshot(m) => {
                    if m.log_reset || m.index > last_index {
                        last_index = m.index;
                    }
                    marker_segments.push((m.index, l.seq));
                    last_marker = Some(m.clone());
                }
                Record::SegmentHeader(_) => {}
            }
        }
        if contents.torn.is_some() {
            // Truncate to the last whole frame, then restore the preallocated size so the
            // space after it reads as zeros again (stale bytes could never verify, but zeros
            // keep the torn-write rule exact).
            ops.push(FileOp::SetLen {
                name: tail.name.clone(),
                len: tail.end_offset,
            });
            let size = tail.file_len.max(cfg.segment_size_bytes);
            ops.push(FileOp::SetLen {
                name: tail.name.clone(),
                len: size,
            });
            if !crate::planted::active(crate::planted::PlantedBug::TornTailTruncateWithoutSync) {
                ops.push(FileOp::SyncFile {
                    name: tail.name.clone(),
                });
            }
        }
        let segments = contents
            .segments
            .iter()
            .map(|(name, seq, first_index)| SegmentInfo {
                seq: *seq,
                first_index: *first_index,
                name: name.clone(),
            })
            .collect();
        WalWriter {
            id,
            cfg,
            seq: tail.seq,
            name: tail.name.clone(),
            offset: tail.end_offset,
            body_start: 0,
            crc: tail.crc,
            last_index,
            last_hs,
            last_marker,
            segments,
            marker_segments,
            pending: Vec::new(),
            pending_offset: tail.end_offset,
            spare: None,
            // Unknown after a restart (a spare or a created file): cut only when full, as
            // before, rather than leave a short segment behind every restart.
            on_unwritten: false,
        }
    }

    fn open_segment(&mut self, seq: u64, prev_crc: u32, ops: &mut Vec<FileOp>) {
        let first_index = self.last_index + 1;
        let name = SegmentName { seq, first_index }.file_name();
        let tmp = format!("{name}{TEMP_SUFFIX}");
        let header = SegmentHeader {
            format_version: FORMAT_VERSION,
            cluster_id: self.id.cluster_id,
            node_id: self.id.node_id,
            seq,
            first_index,
            prev_crc,
        };
        let mut buf = Vec::new();
        let mut crc = encode_frame(&Record::SegmentHeader(header), segment_seed(seq), &mut buf);
        if let Some(hs) = self.last_hs {
            crc = encode_frame(&Record::HardState(hs), crc, &mut buf);
        }
        if let Some(m) = &self.last_marker {
            // The copy restates the latest snapshot; it is not a new event. A received
            // snapshot's reset already happened where its marker was first written, and replaying
            // it again here would discard the entries appended since (and move `last_index` back
            // on resume). So a copy never carries `log_reset`.
            let copy = SnapshotMarker {
                log_reset: false,
                ..m.clone()
            };
            crc = encode_frame(&Record::Snapshot(copy), crc, &mut buf);
            self.marker_segments.push((m.index, seq));
        }
        let size = self.cfg.segment_size_bytes.max(buf.len() as u64);
        // A spare is exactly one segment long: headers that outgrow it (a tiny segment size and
        // a large membership) take a created file, and the spare waits for the next cut.
        let tmp = match self.spare.take() {
            Some(spare) if size == self.cfg.segment_size_bytes => {
                self.on_unwritten = false;
                spare
            }
            unused => {
                // A spare too short for these headers would be cut to again at once: only a
                // segment created while no spare is ready waits for one.
                self.on_unwritten = unused.is_none();
                self.spare = unused;
                ops.push(FileOp::Create {
                    name: tmp.clone(),
                    size_bytes: size,
                });
                tmp
            }
        };
        self.offset = buf.len() as u64;
        ops.push(FileOp::WriteAt {
            name: tmp.clone(),
            offset: 0,
            bytes: buf,
        });
        ops.push(FileOp::SyncFile { name: tmp.clone() });
        ops.push(FileOp::Rename {
            from: tmp,
            to: name.clone(),
        });
        if !crate::planted::active(crate::planted::PlantedBug::SegmentCutWithoutDirSync) {
            ops.push(FileOp::SyncDir);
        }
        self.seq = seq;
        self.crc = crc;
        self.body_start = self.offset;
        self.pending_offset = self.offset;
        self.segments.push(SegmentInfo {
            seq,
            first_index,
            name: name.clone(),
        });
        self.name = name;
    }

    fn flush_pending(&mut self, ops: &mut Vec<FileOp>) {
        if !self.pending.is_empty() {
            let bytes = std::mem::take(&mut self.pending);
            ops.push(FileOp::WriteAt {
                name: self.name.clone(),
                offset: self.pending_offset,
                bytes,
            });
        }
        self.pending_offset = self.offset;
    }

    /// Appends one record. Ops are emitted lazily: call `sync` (or `flush`) to get the writes.
    pub fn append(&mut self, record: &Record, ops: &mut Vec<FileOp>) {
        assert!(
            !matches!(record, Record::SegmentHeader(_)),
            "headers are written by cuts"
        );
        // Encode straight into the pending write; take it back if the segment must be cut first.
        let before = self.pending.len();
        let mut crc = encode_frame(record, self.crc, &mut self.pending);
        let mut frame_len = (self.pending.len() - before) as u64;
        let full = self.offset + frame_len > self.cfg.segment_size_bytes;
        let leave_unwritten = self.on_unwritten && self.spare.is_some();
        if (full || leave_unwritten) && self.offset > self.body_start {
            self.pending.truncate(before);
            self.cut(ops);
            // The chain restarted in the new segment: encode again on its crc.
            let before = self.pending.len();
            crc = encode_frame(record, self.crc, &mut self.pending);
            frame_len = (self.pending.len() - before) as u64;
        }
        self.offset += frame_len;
        self.crc = crc;
        self.note_record(record);
    }

    fn note_record(&mut self, record: &Record) {
        match record {
            Record::Entry(e) => self.last_index = e.index,
            Record::HardState(h) => self.last_hs = Some(*h),
            Record::Snapshot(m) => {
                if m.log_reset || m.index > self.last_index {
                    self.last_index = m.index;
                }
                self.marker_segments.push((m.index, self.seq));
                self.last_marker = Some(m.clone());
            }
            Record::SegmentHeader(_) => unreachable!(),
        }
    }

    fn cut(&mut self, ops: &mut Vec<FileOp>) {
        self.flush_pending(ops);
        ops.push(FileOp::SyncFile {
            name: self.name.clone(),
        });
        let (seq, crc) = (self.seq + 1, self.crc);
        self.open_segment(seq, crc, ops);
    }

    /// Emits pending writes without a sync.
    pub fn flush(&mut self, ops: &mut Vec<FileOp>) {
        self.flush_pending(ops);
    }

    /// Emits pending writes and an fdatasync of the current segment.
    pub fn sync(&mut self, ops: &mut Vec<FileOp>) {
        self.flush_pending(ops);
        ops.push(FileOp::SyncFile {
            name: self.name.clone(),
        });
    }

    /// Removes every segment with a sequence number below `keep_from_seq` (never the current).
    pub fn purge_before(&mut self, keep_from_seq: u64, ops: &mut Vec<FileOp>) -> usize {
        let keep_from_seq = keep_from_seq.min(self.seq);
        let before = self.segments.len();
        // Oldest first, each removal made durable before the next: directory operations may
        // persist in any order, and a crash that kept a later removal but not an earlier one
        // would leave a gap in the segment chain, which recovery rightly calls corruption
        // (found by `raftkv-sim crash-states`).
        self.segments.retain(|s| {
            if s.seq < keep_from_seq {
                ops.push(FileOp::Remove {
                    name: s.name.clone(),
                });
                ops.push(FileOp::SyncDir);
                false
            } else {
                true
            }
        });
        self.marker_segments
            .retain(|&(_, seq)| seq >= keep_from_seq);
        before - self.segments.len()
    }

    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// (snapshot index, segment seq) of every marker still on disk.
    pub fn marker_segments(&self) -> &[(u64, u64)] {
        &self.marker_segments
    }

    /// Hands the writer a spare for its next cut: `name` holds `segment_size_bytes` of zeros,
    /// written and synced, and is a temp name (recovery removes it if no cut took it).
    pub fn set_spare(&mut self, name: String) {
        assert!(self.spare.is_none(), "one spare at a time");
        self.spare = Some(name);
    }

    /// The spare the next cut will take, if one is ready.
    pub fn spare(&self) -> Option<&str> {
        self.spare.as_deref()
    }

    pub fn segment_size_bytes(&self) -> u64 {
        self.cfg.segment_size_bytes
    }

    pub fn current_seq(&self) -> u64 {
        self.seq
    }

    pub fn last_index(&self) -> u64 {
        self.last_index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{EntryKind, EntryRec};

    const ID: WalIdentity = WalIdentity {
        cluster_id: 7,
        node_id: 1,
    };

    fn entry(index: u64) -> Record {
        Record::Entry(EntryRec {
            index,
            term: 1,
            kind: EntryKind::Normal,
            data: vec![0xab; 100],
            context: Vec::new(),
        })
    }

    /// The spare files the ops rename into place.
    fn spares_taken(ops: &[FileOp]) -> Vec<String> {
        ops.iter()
            .filter_map(|op| match op {
                FileOp::Rename { from, .. } if crate::wal::is_spare_name(from) => {
                    Some(from.clone())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_created_segment_is_left_for_the_first_spare_and_a_spare_is_filled() {
        let cfg = WalConfig {
            segment_size_bytes: 64 << 10,
        };
        let mut ops = Vec::new();
        let mut w = WalWriter::create(ID, cfg, 1, &mut ops);
        let mut index = 1;
        let mut append = |w: &mut WalWriter| {
            let mut ops = Vec::new();
            w.append(&entry(index), &mut ops);
            w.sync(&mut ops);
            index += 1;
            ops
        };
        // No spare yet: the created segment goes on taking appends.
        for _ in 0..3 {
            assert!(spares_taken(&append(&mut w)).is_empty());
        }
        assert_eq!(w.segments().len(), 1);
        // The first spare is taken by the next append, long before the segment is full.
        let first = crate::wal::spare_name(0);
        w.set_spare(first.clone());
        assert_eq!(spares_taken(&append(&mut w)), vec![first]);
        assert_eq!(w.segments().len(), 2);
        // A segment that came from a spare is filled before the next spare is taken.
        let second = crate::wal::spare_name(1);
        w.set_spare(second.clone());
        let mut written_bytes = 0;
        loop {
            let ops = append(&mut w);
            if !spares_taken(&ops).is_empty() {
                break;
            }
            for op in &ops {
                if let FileOp::WriteAt { bytes, .. } = op {
                    written_bytes += bytes.len() as u64;
                }
            }
            assert!(written_bytes <= cfg.segment_size_bytes, "never cut");
        }
        assert!(
            written_bytes > cfg.segment_size_bytes * 9 / 10,
            "cut after {written_bytes} bytes of a {} byte segment",
            cfg.segment_size_bytes
        );
    }
}
