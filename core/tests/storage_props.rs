//! Property tests of the sans-IO storage layer: WAL frames and segments, snapshot files, the
//! crash model, purge planning and recovery. Every WAL here is produced by `WalWriter` and
//! materialised by executing its `FileOp`s on a `MemDir`, exactly as a shell would.
//!
//! Expected values come from an independent model (`Model`) of what was appended; where a
//! damaged WAL is compared with the undamaged one, the undamaged read is first checked against
//! that model. Frame boundaries come from walking length fields (`frame_spans`), not from the
//! reader. `PROPTEST_CASES` scales every block (the default counts keep the file well under a
//! minute in debug builds).

use proptest::collection::vec;
use proptest::prelude::*;
use raftkv_core::compaction::{plan_purge, CompactionConfig, SnapshotOnDisk};
use raftkv_core::fileop::FileOp;
use raftkv_core::memdir::{CrashKind, MemDir};
use raftkv_core::recovery::{recover, Recovered, RecoveryError};
use raftkv_core::snapfile::{self, SnapFileError, SnapshotFile, SnapshotMeta};
use raftkv_core::wal::frame::{
    decode_frame, encode_frame, encode_raw_frame, frame_len, segment_seed, BadFrame, Decoded,
    FRAME_MAGIC, HEADER_BYTES,
};
use raftkv_core::wal::record::{RecordType, FORMAT_VERSION};
use raftkv_core::wal::{
    read_segments, read_segments_at, ConfStateRec, EntryKind, EntryRec, HardStateRec,
    ReadSegmentsError, Record, SegmentHeader, SegmentName, SnapshotMarker, WalConfig, WalContents,
    WalError, WalIdentity, WalWriter,
};

const ID: WalIdentity = WalIdentity {
    cluster_id: 0xC1u64 << 40 | 7,
    node_id: 3,
};

/// Case count: `PROPTEST_CASES` if set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Shrinking a WAL scenario is slow in debug builds; keep it bounded.
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Record strategies
// ---------------------------------------------------------------------------------------------

/// u64s that exercise every varint width, not just the uniform (mostly 10-byte) ones.
fn varint_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..0x80,
        0x80u64..0x4000,
        (0u32..64).prop_flat_map(|bits| 0u64..=u64::MAX >> bits),
        Just(u64::MAX),
    ]
}

fn varint_u32() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..0x80, any::<u32>(), Just(u32::MAX)]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(any::<u8>(), 0..max),
        // Runs of zeros: the torn-write rule looks at zero bytes, so payloads full of them
        // are the interesting case for it.
        1 => (0..max).prop_map(|n| vec![0u8; n]),
    ]
}

fn arb_kind() -> impl Strategy<Value = EntryKind> {
    prop_oneof![
        Just(EntryKind::Normal),
        Just(EntryKind::ConfChange),
        Just(EntryKind::ConfChangeV2)
    ]
}

fn arb_conf_state() -> impl Strategy<Value = ConfStateRec> {
    (
        vec(varint_u64(), 0..5),
        vec(varint_u64(), 0..3),
        vec(varint_u64(), 0..3),
        vec(varint_u64(), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(voters, learners, voters_outgoing, learners_next, auto_leave)| ConfStateRec {
                voters,
                learners,
                voters_outgoing,
                learners_next,
                auto_leave,
            },
        )
}

fn arb_entry() -> impl Strategy<Value = EntryRec> {
    (
        varint_u64(),
        varint_u64(),
        arb_kind(),
        bytes(300),
        bytes(20),
    )
        .prop_map(|(index, term, kind, data, context)| EntryRec {
            index,
            term,
            kind,
            data,
            context,
        })
}

fn arb_hard_state() -> impl Strategy<Value = HardStateRec> {
    (varint_u64(), varint_u64(), varint_u64()).prop_map(|(term, vote, commit)| HardStateRec {
        term,
        vote,
        commit,
    })
}

fn arb_marker() -> impl Strategy<Value = SnapshotMarker> {
    (varint_u64(), varint_u64(), arb_conf_state(), any::<bool>()).prop_map(
        |(index, term, conf_state, log_reset)| SnapshotMarker {
            index,
            term,
            conf_state,
            log_reset,
        },
    )
}

fn arb_header() -> impl Strategy<Value = SegmentHeader> {
    (
        varint_u32(),
        varint_u64(),
        varint_u64(),
        varint_u64(),
        varint_u64(),
        varint_u32(),
    )
        .prop_map(
            |(format_version, cluster_id, node_id, seq, first_index, prev_crc)| SegmentHeader {
                format_version,
                cluster_id,
                node_id,
                seq,
                first_index,
                prev_crc,
            },
        )
}

fn arb_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        arb_header().prop_map(Record::SegmentHeader),
        arb_entry().prop_map(Record::Entry),
        arb_hard_state().prop_map(Record::HardState),
        arb_marker().prop_map(Record::Snapshot),
    ]
}

fn arb_snapshot_file() -> impl Strategy<Value = SnapshotFile> {
    (varint_u64(), varint_u64(), arb_conf_state(), bytes(2000)).prop_map(
        |(index, term, conf_state, data)| SnapshotFile {
            meta: SnapshotMeta {
                index,
                term,
                conf_state,
            },
            data,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// A model of a raft log as the storage layer sees it, and WAL scenarios built on it
// ---------------------------------------------------------------------------------------------

/// One abstract step; `Model::resolve` turns it into a record that is valid for the log so far.
#[derive(Clone, Debug)]
enum Step {
    /// Append the next entry, or (rewind > 0) overwrite a suffix above the commit index the way
    /// a follower does when a new leader's entries conflict with its own.
    Entry { rewind: u8, data: Vec<u8> },
    /// A HardState advancing commit by up to `bump` (never past the last entry).
    Hard { bump: u8, vote: u64 },
    /// A snapshot marker. `recv: None` is a snapshot of our own log at or below commit;
    /// `recv: Some(ahead)` one received from a leader (log_reset), `ahead` past our last entry
    /// (0 = inside our log; > 0 only when jumps are allowed).
    Snap {
        back: u8,
        recv: Option<u8>,
        voters: Vec<u64>,
    },
    /// End of a write batch: `WalWriter::sync`.
    Sync,
    /// A spare segment is written (zeros, synced, as the node's prepare job does) and handed to
    /// the writer, if it has none: the next cut renames it into place instead of creating one.
    Spare,
}

/// `allow_received`: include snapshots received from a leader. The power-loss property replays
/// from the WAL alone (no snapshot files), which a received snapshot forbids.
fn arb_step(allow_received: bool) -> impl Strategy<Value = Step> {
    let max_ahead = if allow_received { 4u8 } else { 0 };
    prop_oneof![
        8 => (prop_oneof![4 => Just(0u8), 1 => 1u8..4, 1 => 4u8..12], bytes(160))
            .prop_map(|(rewind, data)| Step::Entry { rewind, data }),
        3 => (0u8..6, 0u64..5).prop_map(|(bump, vote)| Step::Hard { bump, vote }),
        1 => (
            0u8..4,
            proptest::option::weighted(0.3, 0..=max_ahead),
            vec(1u64..9, 1..4),
        )
            .prop_map(move |(back, recv, voters)| Step::Snap {
                back,
                recv: recv.filter(|_| allow_received),
                voters,
            }),
        3 => Just(Step::Sync),
        1 => Just(Step::Spare),
    ]
}

#[derive(Clone, Debug, Default)]
struct Model {
    /// Every record appended, in order (no segment headers, no cut copies).
    records: Vec<Record>,
    /// The raft log: `log[i]` has index `base + 1 + i`.
    log: Vec<EntryRec>,
    base: u64,
    /// A received snapshot moved the log past its end: replay from 0 is impossible.
    jumped: bool,
    term: u64,
    commit: u64,
    /// `WalWriter::last_index` by the writer's own rule (it names the next segment).
    writer_last: u64,
    last_hs: Option<HardStateRec>,
    last_marker: Option<SnapshotMarker>,
}

impl Model {
    fn from_records(records: &[Record]) -> Model {
        let mut m = Model::default();
        for r in records {
            m.apply(r);
        }
        m
    }

    fn last_index(&self) -> u64 {
        self.base + self.log.len() as u64
    }

    /// Entries may only be rewritten above this index (commit, snapshot, reset base).
    fn floor(&self) -> u64 {
        let marker = self.last_marker.as_ref().map_or(0, |m| m.index);
        self.commit.max(self.base).max(marker)
    }

    fn apply(&mut self, r: &Record) {
        match r {
            Record::Entry(e) => {
                assert!(e.index > self.base && e.index <= self.last_index() + 1);
                self.log.truncate((e.index - self.base - 1) as usize);
                self.log.push(e.clone());
                self.term = self.term.max(e.term);
                self.writer_last = e.index;
            }
            Record::HardState(h) => {
                self.commit = h.commit;
                self.term = self.term.max(h.term);
                self.last_hs = Some(*h);
            }
            Record::Snapshot(m) => {
                if m.log_reset {
                    if m.index > self.last_index() {
                        self.log.clear();
                        self.base = m.index;
                        self.jumped = true;
                    } else {
                        self.log.truncate((m.index - self.base) as usize);
                        // Our own entries below a received snapshot may be ones the leader
                        // never had: replay from before it is refused as a gap.
                        self.jumped = true;
                    }
                    self.commit = self.commit.max(m.index);
                }
                if m.log_reset || m.index > self.writer_last {
                    self.writer_last = m.index;
                }
                self.last_marker = Some(m.clone());
            }
            Record::SegmentHeader(_) => panic!("headers are not appended"),
        }
        self.records.push(r.clone());
    }

    fn term_at(&self, index: u64) -> u64 {
        if index == self.base || index == 0 {
            return self.last_marker.as_ref().map_or(0, |m| m.term);
        }
        self.log[(index - self.base - 1) as usize].term
    }

    fn resolve(&self, step: &Step) -> Option<Record> {
        let last = self.last_index();
        match step {
            Step::Entry { rewind, data } => {
                let rewind = u64::from(*rewind);
                let (index, term) = if rewind > 0 && last + 1 - rewind.min(last) > self.floor() {
                    (last + 1 - rewind.min(last), self.term + 1)
                } else {
                    (last + 1, self.term.max(1))
                };
                let kind = match data.first().map_or(0, |b| b % 8) {
                    0 => EntryKind::ConfChange,
                    1 => EntryKind::ConfChangeV2,
                    _ => EntryKind::Normal,
                };
                Some(Record::Entry(EntryRec {
                    index,
                    term,
                    kind,
                    context: data.iter().take(data.len() % 5).copied().collect(),
                    data: data.clone(),
                }))
            }
            Step::Hard { bump, vote } => Some(Record::HardState(HardStateRec {
                term: self.term,
                vote: *vote,
                commit: (self.commit + u64::from(*bump)).min(last).max(self.commit),
            })),
            Step::Snap {
                back,
                recv: None,
                voters,
            } => {
                let lo = self
                    .base
                    .max(self.last_marker.as_ref().map_or(0, |m| m.index));
                if self.commit <= lo {
                    return None;
                }
                let index = self.commit.saturating_sub(u64::from(*back)).max(lo + 1);
                Some(Record::Snapshot(SnapshotMarker {
                    index,
                    term: self.term_at(index),
                    conf_state: ConfStateRec {
                        voters: voters.clone(),
                        ..ConfStateRec::default()
                    },
                    log_reset: false,
                }))
            }
            Step::Snap {
                back,
                recv: Some(ahead),
                voters,
            } => {
                let lo = self.floor();
                let index = if *ahead == 0 {
                    // Inside our log: raft discards what follows it.
                    if lo >= last {
                        return None;
                    }
                    last.saturating_sub(u64::from(*back)).max(lo + 1)
                } else {
                    last + u64::from(*ahead)
                };
                let term = if index <= last {
                    self.term_at(index)
                } else {
                    self.term.max(1)
                };
                Some(Record::Snapshot(SnapshotMarker {
                    index,
                    term,
                    conf_state: ConfStateRec {
                        voters: voters.clone(),
                        ..ConfStateRec::default()
                    },
                    log_reset: true,
                }))
            }
            Step::Sync | Step::Spare => None,
        }
    }
}

fn apply_ops(dir: &mut MemDir, ops: &[FileOp]) {
    for op in ops {
        dir.apply(op)
            .unwrap_or_else(|e| panic!("applying {op:?}: {e}"));
    }
}

/// Segment files in the directory (what recovery hands the reader).
fn segment_files(dir: &MemDir) -> Vec<(String, Vec<u8>)> {
    dir.list()
        .into_iter()
        .filter(|n| SegmentName::parse(n).is_some())
        .map(|n| {
            let b = dir.read(&n).expect("listed").to_vec();
            (n, b)
        })
        .collect()
}

/// Walks frame boundaries by their length fields alone (no checksum): the independent map of
/// where each frame of an *undamaged* segment starts and ends.
fn frame_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + HEADER_BYTES <= bytes.len() && bytes[at..at + HEADER_BYTES] != [0u8; 8] {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let end = at + frame_len(len);
        assert!(end <= bytes.len(), "frame at {at} runs past the file");
        out.push((at, end));
        at = end;
    }
    assert!(
        bytes[at..].iter().all(|&b| b == 0),
        "non-zero bytes after the last frame"
    );
    out
}

/// The records a reader returned, minus segment headers and the HardState / marker copies that a
/// cut writes at the head of each new segment. Panics if a copy is missing or wrong, or if a
/// segment's first index disagrees with the writer's last index at the cut.
fn strip_copies(contents: &WalContents) -> Vec<Record> {
    let mut out = Vec::new();
    let mut last_hs: Option<HardStateRec> = None;
    let mut last_marker: Option<SnapshotMarker> = None;
    let mut writer_last: Option<u64> = None;
    let mut it = contents.records.iter().peekable();
    while let Some(l) = it.next() {
        match &l.record {
            Record::SegmentHeader(h) => {
                assert_eq!(l.offset, 0);
                match writer_last {
                    None => writer_last = Some(h.first_index - 1),
                    Some(wl) => {
                        assert_eq!(h.first_index, wl + 1, "segment {} first index", h.seq);
                        if let Some(hs) = last_hs {
                            let c = it.next().expect("HardState copy after a cut");
                            assert_eq!(c.record, Record::HardState(hs), "HardState copy");
                        }
                        if let Some(m) = &last_marker {
                            let c = it.next().expect("marker copy after a cut");
                            // A copy restates the marker; it never resets the log again.
                            let copy = SnapshotMarker {
                                log_reset: false,
                                ..m.clone()
                            };
                            assert_eq!(&c.record, &Record::Snapshot(copy), "marker copy");
                        }
                    }
                }
            }
            r => {
                match r {
                    Record::Entry(e) => writer_last = Some(e.index),
                    Record::HardState(h) => last_hs = Some(*h),
                    Record::Snapshot(m) => {
                        let wl = writer_last.expect("header first");
                        if m.log_reset || m.index > wl {
                            writer_last = Some(m.index);
                        }
                        last_marker = Some(m.clone());
                    }
                    Record::SegmentHeader(_) => unreachable!(),
                }
                out.push(r.clone());
            }
        }
    }
    out
}

/// Checks everything a reader can say about a WAL against the model of what was appended.
fn check_contents(contents: &WalContents, model: &Model) {
    assert_eq!(contents.header.cluster_id, ID.cluster_id);
    assert_eq!(contents.header.node_id, ID.node_id);
    assert_eq!(contents.header.format_version, FORMAT_VERSION);
    assert_eq!(strip_copies(contents), model.records, "records read back");
    // Cut copies follow their marker (same index and term, never log_reset); the model never
    // writes the same snapshot twice in a row, so dropping such repeats leaves the originals.
    let mut markers: Vec<SnapshotMarker> = contents.markers().map(|(_, m)| m.clone()).collect();
    markers.dedup_by(|later, earlier| {
        !later.log_reset
            && (later.index, later.term, &later.conf_state)
                == (earlier.index, earlier.term, &earlier.conf_state)
    });
    let expected_markers: Vec<SnapshotMarker> = model
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Snapshot(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(markers, expected_markers, "markers");
    assert_eq!(contents.hard_state(), model.last_hs, "last hard state");
    if model.jumped {
        assert!(
            matches!(contents.entries_after(0), Err(WalError::Gap { .. })),
            "replay from 0 across a received snapshot must be a gap"
        );
    } else {
        assert_eq!(contents.entries_after(0).expect("replay from 0"), model.log);
    }
    if let Some(m) = &model.last_marker {
        let after: Vec<EntryRec> = model
            .log
            .iter()
            .filter(|e| e.index > m.index)
            .cloned()
            .collect();
        assert_eq!(
            contents.entries_after(m.index).expect("replay from marker"),
            after,
            "entries after the last marker {}",
            m.index
        );
    }
}

/// Appends `steps` through `w` into `dir`, syncing at `Sync` steps and at the end.
fn run_steps(w: &mut WalWriter, dir: &mut MemDir, model: &mut Model, steps: &[Step]) {
    let mut ops = Vec::new();
    for s in steps {
        if let Step::Sync = s {
            w.sync(&mut ops);
        } else if let Step::Spare = s {
            if w.spare().is_none() {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let name = raftkv_core::wal::spare_name(
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                );
                ops.extend(raftkv_core::wal::spare_ops(&name, w.segment_size_bytes()));
                // The node's spare job leaves its name to the cut's directory sync; here the
                // name is made durable at once, so that "everything synced is clean" still
                // holds of a directory with a spare no cut has taken yet. (Crash states with a
                // spare whose name is not durable are enumerated by `raftkv-sim crash-states`.)
                ops.push(FileOp::SyncDir);
                w.set_spare(name);
            }
        } else if let Some(r) = model.resolve(s) {
            w.append(&r, &mut ops);
            model.apply(&r);
        }
    }
    w.sync(&mut ops);
    apply_ops(dir, &ops);
}

fn build_wal(segment_size: u64, steps: &[Step]) -> (MemDir, Model, WalWriter) {
    let mut dir = MemDir::new();
    let mut model = Model::default();
    let mut ops = Vec::new();
    let cfg = WalConfig {
        segment_size_bytes: segment_size,
    };
    let mut w = WalWriter::create(ID, cfg, 1, &mut ops);
    apply_ops(&mut dir, &ops);
    run_steps(&mut w, &mut dir, &mut model, steps);
    (dir, model, w)
}

fn wal_scenario() -> impl Strategy<Value = (u64, Vec<Step>)> {
    (
        prop_oneof![Just(1024u64), Just(2048), Just(4096)],
        vec(arb_step(true), 10..70),
    )
}

/// Index (into the records of `contents`-order) of the first record located at or after
/// (seg, offset): the number of records strictly before that position.
fn records_before(all: &WalContents, seg_idx: usize, offset: u64) -> usize {
    let seqs: Vec<u64> = all.segments.iter().map(|s| s.1).collect();
    all.records
        .iter()
        .filter(|l| {
            let i = seqs.iter().position(|&s| s == l.seq).unwrap();
            i < seg_idx || (i == seg_idx && l.offset < offset)
        })
        .count()
}

fn records_of(c: &WalContents) -> Vec<Record> {
    c.records.iter().map(|l| l.record.clone()).collect()
}

/// `read_segments`, checked against reading the same files a few bytes at a time, as recovery
/// reads them in pieces: the outcome (records, tail, torn tail, or the error) must not depend on
/// the piece size, whatever the damage.
fn read_checked(files: &[(String, Vec<u8>)]) -> Result<WalContents, WalError> {
    let whole = read_segments(files);
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    for piece in [1usize, 7, 8, 512, 1000] {
        let mut longest = 0;
        let mut read = |name: &str, offset: u64, max: usize| {
            longest = longest.max(max);
            let (_, bytes) = files.iter().find(|(n, _)| n == name).unwrap();
            Ok(raftkv_core::fileop::slice_at(bytes, offset, max))
        };
        let pieces = read_segments_at(&names, &mut read, piece, 0).map_err(|e| match e {
            ReadSegmentsError::Wal(e) => e,
            other => panic!("{other}"),
        });
        assert_eq!(longest, piece, "asked for more than a piece");
        match (&whole, &pieces) {
            (Ok(a), Ok(b)) => {
                assert_eq!(records_of(a), records_of(b), "records, pieces of {piece}");
                assert_eq!(a.tail, b.tail, "tail, pieces of {piece}");
                assert_eq!(a.torn, b.torn, "torn tail, pieces of {piece}");
                assert_eq!(a.segments, b.segments, "segments, pieces of {piece}");
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "error, pieces of {piece}"),
            (a, b) => panic!(
                "whole: {:?}, pieces of {piece}: {:?}",
                a.as_ref().map(|c| &c.torn),
                b.as_ref().map(|c| &c.torn)
            ),
        }
    }
    whole
}

/// A tiny deterministic generator for the crash model.
struct XorShift(u64);
impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n
    }
}

// ---------------------------------------------------------------------------------------------
// (a) Round trips
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(cases(256)))]

    #[test]
    fn record_frames_round_trip(records in vec(arb_record(), 1..8), seed in any::<u32>()) {
        // Frames back to back, chained, as in a segment.
        let mut buf = Vec::new();
        let mut crcs = Vec::new();
        let mut crc = seed;
        for r in &records {
            let start = buf.len();
            crc = encode_frame(r, crc, &mut buf);
            crcs.push(crc);
            prop_assert_eq!((buf.len() - start) % 8, 0);
            prop_assert_eq!(&buf[buf.len() - 4..], &FRAME_MAGIC.to_le_bytes()[..]);
            // The payload alone round-trips and rejects trailing bytes.
            let mut payload = r.encode_payload();
            prop_assert_eq!(Record::decode_payload(r.record_type(), &payload), Some(r.clone()));
            payload.push(0);
            prop_assert_eq!(Record::decode_payload(r.record_type(), &payload), None);
        }
        buf.extend_from_slice(&[0u8; 24]); // preallocated space
        let mut at = 0u64;
        let mut prev = seed;
        for (r, want_crc) in records.iter().zip(&crcs) {
            // The wrong chain seed never verifies.
            let wrong_seed = decode_frame(&buf, at, prev ^ 0x8000_0000);
            let rejected = matches!(wrong_seed, Decoded::Bad(BadFrame::BadChecksum { .. }));
            prop_assert!(rejected, "wrong chain seed accepted at {}", at);
            match decode_frame(&buf, at, prev) {
                Decoded::Frame(f) => {
                    prop_assert_eq!(&f.record, r);
                    prop_assert_eq!(f.crc, *want_crc);
                    prop_assert_eq!(f.end, at + frame_len(r.encode_payload().len()) as u64);
                    at = f.end;
                    prev = f.crc;
                }
                other => prop_assert!(false, "decode at {}: {:?}", at, other),
            }
        }
        prop_assert!(matches!(decode_frame(&buf, at, prev), Decoded::End));
    }

    #[test]
    fn raw_frames_match_record_frames(r in arb_record(), seed in any::<u32>()) {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let ca = encode_frame(&r, seed, &mut a);
        let cb = encode_raw_frame(r.record_type() as u8, &r.encode_payload(), seed, &mut b);
        prop_assert_eq!(ca, cb);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn snapshot_files_round_trip(file in arb_snapshot_file(), flip in any::<prop::sample::Index>()) {
        let bytes = snapfile::encode(&file);
        prop_assert_eq!(snapfile::decode(&bytes), Ok(file.clone()));
        let name = snapfile::file_name(file.meta.term, file.meta.index);
        prop_assert_eq!(snapfile::parse_name(&name), Some((file.meta.term, file.meta.index)));
        prop_assert_eq!(snapfile::decode_named(&name, &bytes), Ok(file.clone()));
        let other = snapfile::file_name(file.meta.term, file.meta.index ^ 1);
        let wrong_name = matches!(
            snapfile::decode_named(&other, &bytes),
            Err(SnapFileError::NameMismatch { .. })
        );
        prop_assert!(wrong_name);
        // Every single bit flip and every truncation is rejected.
        let bit = flip.index(bytes.len() * 8);
        let mut bad = bytes.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(snapfile::decode(&bad).is_err(), "flip of bit {} accepted", bit);
        let cut = flip.index(bytes.len());
        prop_assert!(snapfile::decode(&bytes[..cut]).is_err(), "truncation to {} accepted", cut);
    }
}

/// LEB128 varint as postcard writes it, padded with `extra` redundant continuation bytes.
fn varint(mut v: u64, extra: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    for _ in 0..extra {
        *out.last_mut().unwrap() |= 0x80;
        out.push(0);
    }
    out
}

proptest! {
    #![proptest_config(config(cases(256)))]

    /// Each record has exactly one accepted encoding: an over-long varint (which postcard alone
    /// would accept) is rejected even though the frame's crc covers it.
    #[test]
    fn non_canonical_payloads_are_rejected(
        hs in arb_hard_state(),
        field in 0usize..3,
        extra in 1usize..3,
        prev in any::<u32>(),
    ) {
        let fields = [hs.term, hs.vote, hs.commit];
        // A u64 varint is at most 10 bytes; stay within what postcard can read.
        prop_assume!(varint(fields[field], 0).len() + extra <= 10);
        let canonical: Vec<u8> = fields.iter().flat_map(|&v| varint(v, 0)).collect();
        prop_assert_eq!(&canonical, &Record::HardState(hs).encode_payload());
        let long: Vec<u8> = fields
            .iter()
            .enumerate()
            .flat_map(|(i, &v)| varint(v, if i == field { extra } else { 0 }))
            .collect();
        prop_assert_eq!(Record::decode_payload(RecordType::HardState, &long), None);
        let mut frame = Vec::new();
        encode_raw_frame(RecordType::HardState as u8, &long, prev, &mut frame);
        let bad_payload = matches!(decode_frame(&frame, 0, prev), Decoded::Bad(BadFrame::BadPayload));
        prop_assert!(bad_payload);
    }

    #[test]
    fn non_canonical_snapshot_meta_is_rejected(file in arb_snapshot_file(), extra in 1usize..3) {
        prop_assume!(varint(file.meta.index, 0).len() + extra <= 10);
        let good = snapfile::encode(&file);
        let meta_len = u32::from_le_bytes(good[12..16].try_into().unwrap()) as usize;
        let index_len = varint(file.meta.index, 0).len();
        // Same file with the meta's first field (index) over-long, and every length and the
        // crc made consistent: only the canonical-encoding rule can reject it.
        let mut meta = varint(file.meta.index, extra);
        meta.extend_from_slice(&good[16 + index_len..16 + meta_len]);
        let mut bad = good[..12].to_vec();
        bad.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        bad.extend_from_slice(&meta);
        bad.extend_from_slice(&good[16 + meta_len..good.len() - 8]);
        let crc = crc32fast::hash(&bad);
        bad.extend_from_slice(&crc.to_le_bytes());
        bad.extend_from_slice(&snapfile::SNAP_END_MAGIC);
        prop_assert_eq!(snapfile::decode(&bad), Err(SnapFileError::BadMeta));
    }
}

/// The case the `wal_frame_fixup` fuzzer found: vote 0x7a written as `[0xfa, 0x00]`.
#[test]
fn fuzz_found_overlong_vote_is_rejected() {
    assert_eq!(
        Record::decode_payload(RecordType::HardState, &[0x12, 0xfa, 0x00, 0x72]),
        None
    );
    assert_eq!(
        Record::decode_payload(RecordType::HardState, &[0x12, 0x7a, 0x72]),
        Some(Record::HardState(HardStateRec {
            term: 0x12,
            vote: 0x7a,
            commit: 0x72
        }))
    );
}

/// FORMAT.md quotes this frame byte for byte; keep them in step.
#[test]
fn format_md_example_frame() {
    let mut buf = Vec::new();
    let crc = encode_frame(
        &Record::HardState(HardStateRec {
            term: 2,
            vote: 1,
            commit: 300,
        }),
        0x1234_5678,
        &mut buf,
    );
    let expect: [u8; 24] = [
        0x04, 0x00, 0x00, 0x00, 0x03, 0x04, 0x00, 0x00, // len 4, type 3, pad 4, reserved
        0x02, 0x01, 0xac, 0x02, 0x00, 0x00, 0x00, 0x00, // term 2, vote 1, commit 300, pad
        0x4d, 0x46, 0x07, 0x14, 0x52, 0x4b, 0x56, 0x46, // crc, magic "RKVF"
    ];
    assert_eq!(buf, expect, "{buf:02x?}");
    assert_eq!(crc, 0x1407_464d);
    assert_eq!(segment_seed(0), 0x1542_2774, "{:#x}", segment_seed(0));
    assert_eq!(segment_seed(1), 0xd9e8_27ea, "{:#x}", segment_seed(1));

    // The header frame of segment 0 of cluster 0x2a, node 1, first index 1.
    let mut buf = Vec::new();
    let crc = encode_frame(
        &Record::SegmentHeader(SegmentHeader {
            format_version: FORMAT_VERSION,
            cluster_id: 0x2a,
            node_id: 1,
            seq: 0,
            first_index: 1,
            prev_crc: 0,
        }),
        segment_seed(0),
        &mut buf,
    );
    let expect: [u8; 24] = [
        0x06, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, // len 6, type 1, pad 2, reserved
        0x01, 0x2a, 0x01, 0x00, 0x01, 0x00, 0x00,
        0x00, // version, cluster, node, seq, first, prev
        0xf8, 0xf3, 0xf0, 0x37, 0x52, 0x4b, 0x56, 0x46, // crc, magic "RKVF"
    ];
    assert_eq!(buf, expect, "{buf:02x?} {crc:#x}");
    assert_eq!(crc, 0x37f0_f3f8);
}

// ---------------------------------------------------------------------------------------------
// (b) bit flips, (c) truncations of the last segment, (d) damage to sealed segments
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(cases(128)))]

    /// A single bit flip inside any frame of any segment is reported: as corruption at exactly
    /// the flipped frame, or, in the last segment only, as a torn tail at exactly that frame with
    /// every earlier record intact. Never `Ok` with the damage unnoticed.
    #[test]
    fn any_bit_flip_is_detected(
        (segment_size, steps) in wal_scenario(),
        flips in vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 1..24),
    ) {
        let (dir, model, _w) = build_wal(segment_size, &steps);
        let files = segment_files(&dir);
        let all = read_checked(&files).expect("undamaged WAL reads");
        check_contents(&all, &model);
        let all_records = records_of(&all);
        for (seg_sel, bit_sel) in flips {
            let si = seg_sel.index(files.len());
            let spans = frame_spans(&files[si].1);
            let data_end = spans.last().unwrap().1;
            let bit = bit_sel.index(data_end * 8);
            let frame_start = spans.iter().find(|(a, b)| *a <= bit / 8 && bit / 8 < *b).unwrap().0 as u64;
            let mut damaged = files.clone();
            damaged[si].1[bit / 8] ^= 1 << (bit % 8);
            let is_last = si + 1 == files.len();
            match read_checked(&damaged) {
                Err(WalError::Corrupt { segment, offset, .. }) => {
                    prop_assert_eq!(&segment, &files[si].0);
                    prop_assert_eq!(offset, frame_start, "bit {} of {}", bit, segment);
                }
                Ok(c) if is_last => {
                    let torn = c.torn.clone();
                    prop_assert!(torn.is_some(), "flip of bit {} in the last segment went unnoticed", bit);
                    let torn = torn.unwrap();
                    prop_assert_eq!(&torn.segment, &files[si].0);
                    prop_assert_eq!(torn.offset, frame_start);
                    prop_assert_eq!(c.tail.end_offset, frame_start);
                    let n = records_before(&all, si, frame_start);
                    prop_assert_eq!(records_of(&c), all_records[..n].to_vec());
                }
                other => prop_assert!(false, "flip of bit {} in sealed segment {}: {:?}", bit, si, other.map(|c| c.torn)),
            }
        }
    }

    /// Cutting the last segment at any length loses exactly the frames that do not fit: the
    /// reader stops at the last whole frame (torn tail or clean end), and nothing before it is
    /// lost. Cuts inside the segment header frame (which a writer syncs before the segment gets
    /// its name) are corruption.
    #[test]
    fn truncating_the_last_segment_keeps_every_whole_frame(
        (segment_size, steps) in wal_scenario(),
        cuts in vec(any::<prop::sample::Index>(), 1..16),
    ) {
        let (dir, model, _w) = build_wal(segment_size, &steps);
        let files = segment_files(&dir);
        let all = read_checked(&files).expect("undamaged WAL reads");
        check_contents(&all, &model);
        let last = files.len() - 1;
        let spans = frame_spans(&files[last].1);
        let all_records = records_of(&all);
        for cut in cuts {
            let len = cut.index(files[last].1.len() + 1);
            let mut damaged = files.clone();
            damaged[last].1.truncate(len);
            let res = read_checked(&damaged);
            if len < spans[0].1 {
                prop_assert!(
                    matches!(&res, Err(WalError::Corrupt { segment, offset: 0, .. }) if *segment == files[last].0),
                    "cut at {} inside the header: {:?}", len, res.map(|c| c.torn)
                );
                continue;
            }
            let c = res.unwrap_or_else(|e| panic!("cut at {len}: {e}"));
            let whole_end = spans.iter().map(|s| s.1).filter(|&e| e <= len).max().unwrap() as u64;
            prop_assert_eq!(c.tail.end_offset, whole_end, "cut at {}", len);
            if let Some(t) = &c.torn {
                prop_assert_eq!(t.offset, whole_end);
                prop_assert_eq!(&t.segment, &files[last].0);
            }
            let n = records_before(&all, last, whole_end);
            prop_assert_eq!(records_of(&c), all_records[..n].to_vec(), "cut at {}", len);
        }
    }

    /// Truncating, flipping a bit in, or removing a sealed (non-last) segment is always a
    /// corruption error, never a silently shorter log.
    #[test]
    fn damage_to_sealed_segments_is_corruption(
        (segment_size, steps) in wal_scenario(),
        more in vec(arb_step(true), 30..60),
        damage in vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0u8..3), 1..16),
    ) {
        let mut steps = steps;
        steps.extend(more);
        let (dir, model, _w) = build_wal(segment_size, &steps);
        let files = segment_files(&dir);
        prop_assume!(files.len() >= 2);
        let all = read_checked(&files).expect("undamaged WAL reads");
        check_contents(&all, &model);
        for (seg_sel, pos_sel, how) in damage {
            let si = seg_sel.index(files.len() - 1);
            let spans = frame_spans(&files[si].1);
            let data_end = spans.last().unwrap().1;
            let mut damaged = files.clone();
            let res;
            let what;
            match how {
                0 => {
                    let len = pos_sel.index(files[si].1.len() + 1);
                    damaged[si].1.truncate(len);
                    what = format!("truncate to {len}");
                    res = read_checked(&damaged);
                    if len >= data_end {
                        // Only preallocated zeros were cut: nothing is lost.
                        let c = res.expect("cut in the zero tail");
                        prop_assert_eq!(records_of(&c), records_of(&all));
                        prop_assert!(c.torn.is_none());
                        continue;
                    }
                }
                1 => {
                    let bit = pos_sel.index(data_end * 8);
                    damaged[si].1[bit / 8] ^= 1 << (bit % 8);
                    what = format!("flip bit {bit}");
                    res = read_checked(&damaged);
                }
                _ => {
                    if si == 0 {
                        continue; // dropping a prefix is what a purge does
                    }
                    damaged.remove(si);
                    what = "remove".to_string();
                    res = read_checked(&damaged);
                }
            }
            match res {
                Err(WalError::Corrupt { segment, .. }) => {
                    // The damaged segment, or (a cut exactly at a frame boundary, a removed
                    // segment) the next one, whose header no longer chains.
                    prop_assert!(
                        segment == files[si].0 || segment == files[si + 1].0,
                        "{} of {}: error names {}", what, files[si].0, segment
                    );
                }
                other => prop_assert!(false, "{} of sealed {}: {:?}", what, files[si].0, other.map(|c| c.torn)),
            }
        }
    }

    /// Flipping a bit in the preallocated zeros after the last frame of the last segment loses no
    /// record (the reader calls it a torn tail at the end of the data).
    #[test]
    fn damage_in_the_zero_tail_loses_nothing(
        (segment_size, steps) in wal_scenario(),
        pos in any::<prop::sample::Index>(),
    ) {
        let (dir, model, _w) = build_wal(segment_size, &steps);
        let files = segment_files(&dir);
        let last = files.len() - 1;
        let data_end = frame_spans(&files[last].1).last().unwrap().1;
        prop_assume!(data_end < files[last].1.len());
        let all = read_segments(&files).unwrap();
        check_contents(&all, &model);
        let bit = data_end * 8 + pos.index((files[last].1.len() - data_end) * 8);
        let mut damaged = files.clone();
        damaged[last].1[bit / 8] ^= 1 << (bit % 8);
        // Either a torn tail at the end of the data (nothing lost) or, when the flipped bit
        // lands where a frame header would be, a refusal naming that spot. Never fewer records.
        match read_segments(&damaged) {
            Ok(c) => {
                prop_assert_eq!(records_of(&c), records_of(&all));
                prop_assert_eq!(c.tail.end_offset, data_end as u64);
            }
            Err(WalError::Corrupt { segment, offset, .. }) => {
                prop_assert_eq!(&segment, &files[last].0);
                prop_assert_eq!(offset, data_end as u64);
            }
            Err(e) => prop_assert!(false, "{}", e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (e) writer -> MemDir -> reader, across cuts and resume
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(cases(256)))]

    #[test]
    fn written_records_read_back_exactly(
        (segment_size, steps) in wal_scenario(),
        rounds in vec(vec(arb_step(true), 0..40), 1..4),
    ) {
        let (mut dir, mut model, w) = build_wal(segment_size, &steps);
        let c = read_segments(&segment_files(&dir)).expect("read");
        prop_assert!(c.torn.is_none());
        check_contents(&c, &model);
        prop_assert_eq!(c.segments.len(), w.segments().len());
        drop(w);
        // Resume on what was read, append more, read again: as after a clean restart.
        let cfg = WalConfig { segment_size_bytes: segment_size };
        for more in rounds {
            let c = read_segments(&segment_files(&dir)).expect("read before resume");
            let mut ops = Vec::new();
            let mut w = WalWriter::resume(ID, cfg, &c, &mut ops);
            prop_assert!(ops.is_empty(), "clean WAL needs no repair: {:?}", ops);
            prop_assert_eq!(w.last_index(), model.writer_last);
            run_steps(&mut w, &mut dir, &mut model, &more);
            prop_assert!(dir.is_clean());
            let c = read_segments(&segment_files(&dir)).expect("read after resume");
            prop_assert!(c.torn.is_none());
            check_contents(&c, &model);
            let names: Vec<&str> = c.segments.iter().map(|s| s.0.as_str()).collect();
            let writer_names: Vec<&str> = w.segments().iter().map(|s| s.name.as_str()).collect();
            prop_assert_eq!(names, writer_names);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (f) power loss
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(cases(256)))]

    /// Rounds of: synced batches, a final batch of which only a prefix of the ops ran, a crash
    /// (power loss, or now and then a process crash), recovery, resume. Recovery must always
    /// succeed, every synced record must survive, and what survives beyond them must be a prefix
    /// of the unsynced batch: no garbage, no reordering.
    #[test]
    fn power_loss_keeps_every_synced_record(
        segment_size in prop_oneof![Just(1024u64), Just(2048)],
        rounds in vec(
            (
                vec(arb_step(false), 0..40),
                vec(arb_step(false), 0..12),
                any::<prop::sample::Index>(),
                any::<u64>(),
                prop_oneof![4 => Just(CrashKind::PowerLoss), 1 => Just(CrashKind::Process)],
            ),
            1..5,
        ),
    ) {
        let cfg = WalConfig { segment_size_bytes: segment_size };
        let mut dir = MemDir::new();
        let mut ops = Vec::new();
        let mut w = WalWriter::create(ID, cfg, 1, &mut ops);
        apply_ops(&mut dir, &ops);
        let mut model = Model::default();
        for (round, (synced, unsynced, cut_sel, seed, kind)) in rounds.into_iter().enumerate() {
            run_steps(&mut w, &mut dir, &mut model, &synced);
            let durable = model.records.len();
            // The final batch: its ops end in a sync, but the crash may come anywhere in them.
            let mut ops = Vec::new();
            for s in &unsynced {
                if let Some(r) = model.resolve(s) {
                    w.append(&r, &mut ops);
                    model.apply(&r);
                }
            }
            w.sync(&mut ops);
            let cut = cut_sel.index(ops.len() + 1);
            apply_ops(&mut dir, &ops[..cut]);
            let all_ops_ran = cut == ops.len();
            let mut rng = XorShift(seed | 1);
            dir.crash(kind, &mut |n| rng.below(n));

            let names = dir.list();
            // Recovery keeps of the WAL's records only what resuming it needs: read them all.
            let seen = read_checked(&segment_files(&dir));
            let rec = recover(&names, ID, &mut |n, at, max| dir.read_at(n, at, max));
            let rec: Recovered = match rec {
                Ok(Some(r)) => r,
                other => {
                    return Err(TestCaseError::fail(format!(
                        "round {round}: recovery after {kind:?} failed: {:?}",
                        other.map(|r| r.map(|r| r.report))
                    )));
                }
            };
            let seen = seen.expect("recovery read it");
            let got = strip_copies(&seen);
            prop_assert!(
                got.len() >= durable && got[..durable] == model.records[..durable],
                "round {}: synced records lost after {:?} ({} of {} survive)", round, kind, got.len(), durable
            );
            prop_assert!(
                got.len() <= model.records.len() && got[..] == model.records[..got.len()],
                "round {}: records read are not a prefix of those written", round
            );
            if all_ops_ran {
                prop_assert_eq!(got.len(), model.records.len(), "round {}: the final sync completed", round);
            }
            if kind == CrashKind::Process {
                prop_assert!(rec.report.torn_tail.is_none(), "a process crash tears nothing");
            }
            // What survived is now the log.
            model = Model::from_records(&got);
            prop_assert_eq!(&rec.entries, &model.log);
            prop_assert_eq!(rec.hard_state, model.last_hs.unwrap_or_default());
            check_contents(&seen, &model);

            // Repair and continue, as a node restart does.
            apply_ops(&mut dir, &rec.ops);
            let mut ops = Vec::new();
            w = WalWriter::resume(ID, cfg, &rec.wal, &mut ops);
            prop_assert_eq!(ops.is_empty(), rec.report.torn_tail.is_none());
            apply_ops(&mut dir, &ops);
            let again = read_segments(&segment_files(&dir)).expect("read after repair");
            prop_assert!(again.torn.is_none(), "repair left a torn tail");
            check_contents(&again, &model);
        }
        // A last clean batch on top of all the crashes.
        run_steps(&mut w, &mut dir, &mut model, &[Step::Entry { rewind: 0, data: vec![7; 40] }]);
        let c = read_segments(&segment_files(&dir)).expect("final read");
        prop_assert!(c.torn.is_none());
        check_contents(&c, &model);
    }
}

// ---------------------------------------------------------------------------------------------
// (g) purge never removes what recovery from a retained snapshot needs
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum GStep {
    /// Append n entries, persist commit = last index, sync.
    Entries(u8),
    /// Snapshot our own log `back` entries below commit: file, then marker.
    OwnSnap(u8),
    /// Receive a snapshot `ahead` entries past our log (log_reset): file, HardState, marker.
    RecvSnap(u8),
    /// Plan and execute a purge.
    Purge,
}

fn arb_gstep() -> impl Strategy<Value = GStep> {
    prop_oneof![
        6 => (1u8..12).prop_map(GStep::Entries),
        3 => (0u8..6).prop_map(GStep::OwnSnap),
        1 => (1u8..5).prop_map(GStep::RecvSnap),
        2 => Just(GStep::Purge),
    ]
}

struct Purger {
    dir: MemDir,
    w: WalWriter,
    model: Model,
    /// Snapshot files on disk: (name, term, index).
    snaps: Vec<SnapshotOnDisk>,
    cfg: CompactionConfig,
}

/// Recovery as if every snapshot newer than `upto` had been set aside (or with all, for None).
fn recover_upto(
    dir: &MemDir,
    upto: Option<&SnapshotOnDisk>,
) -> Result<Option<Recovered>, RecoveryError> {
    let names: Vec<String> = dir
        .list()
        .into_iter()
        .filter(|n| match (snapfile::parse_name(n), upto) {
            (Some((term, index)), Some(u)) => (index, term) <= (u.index, u.term),
            _ => true,
        })
        .collect();
    recover(&names, ID, &mut |n, at, max| dir.read_at(n, at, max))
}

/// What recovery from exactly `s` yields, if it recovers from `s` at all.
fn recovered_from(
    dir: &MemDir,
    s: &SnapshotOnDisk,
) -> Option<(Vec<EntryRec>, HardStateRec, ConfStateRec)> {
    match recover_upto(dir, Some(s)) {
        Ok(Some(r)) if r.report.snapshot == Some((s.term, s.index)) => {
            assert!(r.report.set_aside.is_empty());
            Some((r.entries, r.hard_state, r.conf_state))
        }
        _ => None,
    }
}

impl Purger {
    fn new(segment_size: u64, max_snapshots: usize) -> Purger {
        let mut dir = MemDir::new();
        let mut ops = Vec::new();
        let w = WalWriter::create(
            ID,
            WalConfig {
                segment_size_bytes: segment_size,
            },
            1,
            &mut ops,
        );
        apply_ops(&mut dir, &ops);
        Purger {
            dir,
            w,
            model: Model::default(),
            snaps: Vec::new(),
            cfg: CompactionConfig {
                max_snapshots,
                ..CompactionConfig::default()
            },
        }
    }

    fn append(&mut self, r: Record, ops: &mut Vec<FileOp>) {
        self.w.append(&r, ops);
        self.model.apply(&r);
    }

    fn hard_state(&self, commit: u64) -> Record {
        Record::HardState(HardStateRec {
            term: self.model.term,
            vote: 1,
            commit,
        })
    }

    fn write_snapshot(&mut self, marker: &SnapshotMarker, ops: &mut Vec<FileOp>) {
        let file = SnapshotFile {
            meta: SnapshotMeta {
                index: marker.index,
                term: marker.term,
                conf_state: marker.conf_state.clone(),
            },
            // Recovery decodes the state as it reads the file: a real payload, of that index.
            data: {
                let mut kv = raftkv_core::kv::KvState::default();
                kv.advance(marker.index);
                kv.encode_snapshot()
            },
        };
        let name = snapfile::write_ops(&file, ops);
        self.snaps.push(SnapshotOnDisk {
            name,
            index: marker.index,
            term: marker.term,
        });
    }

    fn step(&mut self, s: &GStep) {
        let mut ops = Vec::new();
        let last = self.model.last_index();
        match s {
            GStep::Entries(n) => {
                for i in 1..=u64::from(*n) {
                    let term = self.model.term.max(1);
                    self.append(
                        Record::Entry(EntryRec {
                            index: last + i,
                            term,
                            kind: EntryKind::Normal,
                            data: vec![(last + i) as u8; 20],
                            context: Vec::new(),
                        }),
                        &mut ops,
                    );
                }
                let hs = self.hard_state(self.model.last_index());
                self.append(hs, &mut ops);
            }
            GStep::OwnSnap(back) => {
                let lo = self
                    .model
                    .last_marker
                    .as_ref()
                    .map_or(0, |m| m.index)
                    .max(self.model.base);
                let commit = self.model.commit;
                if commit <= lo {
                    return;
                }
                let index = commit.saturating_sub(u64::from(*back)).max(lo + 1);
                let marker = SnapshotMarker {
                    index,
                    term: self.model.term_at(index),
                    conf_state: ConfStateRec {
                        voters: vec![1, 2, 3],
                        ..ConfStateRec::default()
                    },
                    log_reset: false,
                };
                self.write_snapshot(&marker, &mut ops);
                self.append(Record::Snapshot(marker), &mut ops);
            }
            GStep::RecvSnap(ahead) => {
                let marker = SnapshotMarker {
                    index: last + u64::from(*ahead),
                    term: self.model.term + 1,
                    conf_state: ConfStateRec {
                        voters: vec![1, 2, 3],
                        learners: vec![4],
                        ..ConfStateRec::default()
                    },
                    log_reset: true,
                };
                self.write_snapshot(&marker, &mut ops);
                let hs = Record::HardState(HardStateRec {
                    term: marker.term,
                    vote: 1,
                    commit: marker.index,
                });
                self.append(hs, &mut ops);
                self.append(Record::Snapshot(marker), &mut ops);
            }
            GStep::Purge => return self.purge(),
        }
        self.w.sync(&mut ops);
        apply_ops(&mut self.dir, &ops);
    }

    fn purge(&mut self) {
        let plan = plan_purge(
            &self.cfg,
            &self.snaps,
            self.w.segments(),
            self.w.marker_segments(),
        );
        let retained: Vec<SnapshotOnDisk> = self
            .snaps
            .iter()
            .filter(|s| !plan.remove_snapshots.contains(&s.name))
            .cloned()
            .collect();
        assert!(retained.len() <= self.cfg.max_snapshots.max(1));
        // Before: what recovery from each retained snapshot gives.
        let before: Vec<_> = retained
            .iter()
            .map(|s| recovered_from(&self.dir, s))
            .collect();
        if let Some(newest) = retained.iter().max_by_key(|s| (s.index, s.term)) {
            let r = recovered_from(&self.dir, newest).expect("the newest snapshot recovers");
            let want: Vec<EntryRec> = self
                .model
                .log
                .iter()
                .filter(|e| e.index > newest.index)
                .cloned()
                .collect();
            assert_eq!(r.0, want, "entries after the newest snapshot");
        }
        let mut ops = Vec::new();
        for name in &plan.remove_snapshots {
            ops.push(FileOp::Remove { name: name.clone() });
        }
        let segs_before = self.w.segments().len();
        let removed = self.w.purge_before(plan.keep_wal_from_seq, &mut ops);
        ops.push(FileOp::SyncDir);
        apply_ops(&mut self.dir, &ops);
        assert_eq!(self.w.segments().len(), segs_before - removed);
        self.snaps = retained.clone();
        // After: the same, for every snapshot that recovered before.
        for (s, b) in retained.iter().zip(before) {
            if let Some(b) = b {
                let a = recovered_from(&self.dir, s).unwrap_or_else(|| {
                    panic!(
                        "purge (keep from seq {}) broke recovery from {}: {:?}",
                        plan.keep_wal_from_seq,
                        s.name,
                        recover_upto(&self.dir, Some(s)).map(|r| r.map(|r| r.report))
                    )
                });
                assert_eq!(a, b, "recovery from {} changed", s.name);
            }
        }
        // And plain recovery (everything on disk) still works and uses the newest.
        let r = recover_upto(&self.dir, None)
            .expect("recovery after purge")
            .expect("not fresh");
        let newest = self
            .snaps
            .iter()
            .map(|s| (s.term, s.index))
            .max_by_key(|&(t, i)| (i, t));
        assert_eq!(r.report.snapshot, newest);
        assert!(
            r.report.removed_orphan_snapshots.is_empty(),
            "{:?}",
            r.report
        );
    }
}

proptest! {
    #![proptest_config(config(cases(192)))]

    #[test]
    fn purge_keeps_what_retained_snapshots_need(
        segment_size in prop_oneof![Just(1024u64), Just(2048)],
        max_snapshots in 1usize..4,
        steps in vec(arb_gstep(), 10..60),
    ) {
        let mut p = Purger::new(segment_size, max_snapshots);
        for s in &steps {
            p.step(s);
        }
        p.purge();
        // The final directory still reads as the model says.
        let c = read_segments(&segment_files(&p.dir)).expect("read");
        let hs = c.hard_state();
        prop_assert_eq!(hs, p.model.last_hs);
    }
}

/// The type bytes and the magic are part of the on-disk format (FORMAT.md, section 2).
#[test]
fn record_type_bytes_are_the_documented_ones() {
    assert_eq!(RecordType::SegmentHeader as u8, 1);
    assert_eq!(RecordType::Entry as u8, 2);
    assert_eq!(RecordType::HardState as u8, 3);
    assert_eq!(RecordType::Snapshot as u8, 4);
    assert_eq!(FRAME_MAGIC.to_le_bytes(), *b"RKVF");
}

/// A follower's conflicting suffix is overwritten from below a later snapshot's index; replay
/// from that snapshot must not resurrect the overwritten entries.
#[test]
fn replay_after_snapshot_ignores_entries_overwritten_below_it() {
    let mut dir = MemDir::new();
    let mut ops = Vec::new();
    let mut w = WalWriter::create(ID, WalConfig::default(), 1, &mut ops);
    let e = |index: u64, term: u64| {
        Record::Entry(EntryRec {
            index,
            term,
            kind: EntryKind::Normal,
            data: vec![index as u8, term as u8],
            context: Vec::new(),
        })
    };
    let mut model = Model::default();
    let mut put = |r: Record, w: &mut WalWriter, ops: &mut Vec<FileOp>| {
        w.append(&r, ops);
        model.apply(&r);
    };
    for i in 1..=10 {
        put(e(i, 1), &mut w, &mut ops);
    }
    put(
        Record::HardState(HardStateRec {
            term: 1,
            vote: 1,
            commit: 4,
        }),
        &mut w,
        &mut ops,
    );
    // A new leader's entries conflict at 5: the log becomes 1..=4 (term 1), 5..=7 (term 2).
    for i in 5..=7 {
        put(e(i, 2), &mut w, &mut ops);
    }
    put(
        Record::HardState(HardStateRec {
            term: 2,
            vote: 1,
            commit: 7,
        }),
        &mut w,
        &mut ops,
    );
    put(
        Record::Snapshot(SnapshotMarker {
            index: 7,
            term: 2,
            conf_state: ConfStateRec::default(),
            log_reset: false,
        }),
        &mut w,
        &mut ops,
    );
    w.sync(&mut ops);
    apply_ops(&mut dir, &ops);
    let c = read_segments(&segment_files(&dir)).unwrap();
    assert_eq!(model.last_index(), 7);
    assert_eq!(c.entries_after(0).unwrap(), model.log);
    assert_eq!(
        c.entries_after(7).unwrap(),
        Vec::<EntryRec>::new(),
        "entries 8..=10 of term 1 were discarded by the conflict at 5"
    );
    check_contents(&c, &model);
}

proptest! {
    #![proptest_config(config(cases(128)))]

    /// Entries at or below `needed_above` read without their bytes, a run of them kept as its
    /// last (how recovery reads the log below its oldest snapshot file), change nothing the log
    /// after any snapshot at or above that index is built from, nor how the writer resumes.
    #[test]
    fn entries_read_hollow_below_a_snapshot_change_no_log_after_it(
        (segment_size, steps) in wal_scenario(),
        cut in any::<prop::sample::Index>(),
    ) {
        let (dir, _model, _w) = build_wal(segment_size, &steps);
        let files = segment_files(&dir);
        let whole = read_segments(&files).expect("undamaged WAL reads");
        let last = whole
            .records
            .iter()
            .filter_map(|l| match &l.record {
                Record::Entry(e) => Some(e.index),
                Record::Snapshot(m) => Some(m.index),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let needed_above = cut.index(last as usize + 2) as u64;
        let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
        let mut read = |name: &str, offset: u64, max: usize| {
            let (_, bytes) = files.iter().find(|(n, _)| n == name).unwrap();
            Ok(raftkv_core::fileop::slice_at(bytes, offset, max))
        };
        let hollow = read_segments_at(&names, &mut read, 64, needed_above).expect("reads");
        prop_assert!(hollow.records.len() <= whole.records.len());
        for s in needed_above..=last + 1 {
            prop_assert_eq!(whole.entries_after(s), hollow.entries_after(s), "after {}", s);
        }
        prop_assert_eq!(
            whole.markers().collect::<Vec<_>>(),
            hollow.markers().collect::<Vec<_>>()
        );
        prop_assert_eq!(whole.hard_state(), hollow.hard_state());
        let cfg = WalConfig { segment_size_bytes: segment_size };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let wa = WalWriter::resume(ID, cfg, &whole, &mut a);
        let wb = WalWriter::resume(ID, cfg, &hollow, &mut b);
        prop_assert_eq!(a, b);
        prop_assert_eq!(wa.last_index(), wb.last_index());
        prop_assert_eq!(wa.segments(), wb.segments());
        prop_assert_eq!(wa.marker_segments(), wb.marker_segments());
    }
}
