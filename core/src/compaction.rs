//! Compaction bookkeeping: when to snapshot, how far to compact the in-memory log, and which
//! snapshot files and WAL segments may be purged.
//!
//! The rules follow etcd's raftexample (snapCount, snapshotCatchUpEntriesN) and add two things
//! it never did:
//! - a bound in bytes beside the bound in entries: the log in memory is weighed against the
//!   state (key and value bytes), so that memory stays within a small multiple of the state
//!   whatever the size of the values (raftexample's 10 000 entries of 64 KiB are 625 MiB of log
//!   before the first snapshot, whatever the state);
//! - the purge: keep the newest `max_snapshots` snapshots and every WAL segment needed to
//!   recover from *each* of them (its marker, and every entry after it).

use crate::wal::SegmentInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactionConfig {
    /// Take a snapshot once more than this many entries were applied since the last one.
    pub snap_count: u64,
    /// Entries kept in memory below a new snapshot so slow followers can catch up by log.
    pub catch_up_entries: u64,
    /// Snapshot files kept on disk (with the WAL to recover from each).
    pub max_snapshots: usize,
    /// The byte bound on the log ([`log_bytes_bound`]) never goes below this: a small state
    /// is not snapshotted every few writes.
    pub log_bytes_floor: u64,
}

/// The log in memory may hold this share of the state's bytes since the last snapshot, and as
/// much again below it for slow followers: with the state itself, the node then holds at most
/// about 1.5× the state (plus what arrives while a snapshot job runs), within the 2× its
/// operators are promised. A snapshot costs about the state's bytes, so writing a quarter of
/// the state between two keeps their cost to 4 bytes written per byte of log.
pub const LOG_SHARE_OF_STATE: u64 = 4;

/// A leader refuses writes while its log beyond the latest snapshot holds more than this many
/// times [`log_bytes_bound`] ([`write_limit_bytes`]). A job starts at one bound, so writes go on
/// while it runs until they have added one more; then the node holds at most the state, the
/// log (two bounds: half the state) and the old values the job still holds of what those
/// writes replaced (one bound): 1.75× the state. Without the limit, writes that outrun
/// snapshot creation grow the log without bound (measured: 2.3× the state under 20 s of 64 KiB
/// overwrites at 100 MiB, BENCHMARKS.md "Cost curves").
pub const WRITE_LIMIT_OVER_BOUND: u64 = 2;

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            snap_count: 10_000,
            catch_up_entries: 5_000,
            max_snapshots: 5,
            log_bytes_floor: 1 << 20,
        }
    }
}

/// Bytes of log the node keeps on each side of its latest snapshot, for a state of
/// `state_bytes` (key and value bytes).
pub fn log_bytes_bound(cfg: &CompactionConfig, state_bytes: u64) -> u64 {
    cfg.log_bytes_floor.max(state_bytes / LOG_SHARE_OF_STATE)
}

/// Bytes of log beyond the latest snapshot past which a leader refuses writes
/// ([`WRITE_LIMIT_OVER_BOUND`]).
pub fn write_limit_bytes(cfg: &CompactionConfig, state_bytes: u64) -> u64 {
    WRITE_LIMIT_OVER_BOUND * log_bytes_bound(cfg, state_bytes)
}

/// raftexample's trigger, `applied - snapshot_index > snap_count`, or the entries applied since
/// the snapshot hold more than [`log_bytes_bound`] (`since_snapshot_bytes`).
pub fn should_snapshot(
    cfg: &CompactionConfig,
    applied_index: u64,
    snapshot_index: u64,
    since_snapshot_bytes: u64,
    state_bytes: u64,
) -> bool {
    debug_assert!(applied_index >= snapshot_index);
    applied_index.saturating_sub(snapshot_index) > cfg.snap_count
        || (applied_index > snapshot_index
            && since_snapshot_bytes > log_bytes_bound(cfg, state_bytes))
}

/// First index to keep in memory after a snapshot at `snapshot_index`: at most
/// `catch_up_entries` entries below it (raftexample), holding at most [`log_bytes_bound`].
/// `first_within(budget)` is the lowest index from which the entries up to `snapshot_index`
/// hold at most `budget` bytes.
pub fn compact_index(
    cfg: &CompactionConfig,
    snapshot_index: u64,
    state_bytes: u64,
    first_within: impl FnOnce(u64) -> u64,
) -> u64 {
    let by_count = if snapshot_index > cfg.catch_up_entries {
        snapshot_index - cfg.catch_up_entries
    } else {
        1
    };
    let by_bytes = first_within(log_bytes_bound(cfg, state_bytes));
    let ci = by_count.max(by_bytes);
    debug_assert!(ci <= snapshot_index + 1, "compaction past the snapshot");
    ci
}

/// When a snapshot job starts with `log_bytes` in memory, the first index to keep: past the
/// latest durable snapshot (`snapshot_index`, whose file serves what is dropped) once the log
/// is over [`log_bytes_bound`], else nothing to drop. Without this the entries kept below that
/// snapshot, those since and those applied while the job runs would all stand at once.
pub fn compact_index_at_job_start(
    cfg: &CompactionConfig,
    log_bytes: u64,
    state_bytes: u64,
    snapshot_index: u64,
) -> Option<u64> {
    (log_bytes > log_bytes_bound(cfg, state_bytes)).then_some(snapshot_index + 1)
}

/// A durable snapshot file that has a WAL marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotOnDisk {
    pub name: String,
    pub index: u64,
    pub term: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgePlan {
    pub remove_snapshots: Vec<String>,
    /// Segments with a smaller seq may be removed.
    pub keep_wal_from_seq: u64,
}

/// Plans a purge. `snapshots` are the durable, marked snapshot files; `segments` the live WAL
/// segments in seq order; `marker_segments` (snapshot index, seq of a segment holding its
/// marker). Keeps the newest `max_snapshots` snapshots and, for the oldest of those, the segment
/// holding its marker and every segment that can hold entries after it.
pub fn plan_purge(
    cfg: &CompactionConfig,
    snapshots: &[SnapshotOnDisk],
    segments: &[SegmentInfo],
    marker_segments: &[(u64, u64)],
) -> PurgePlan {
    let first_seq = segments.first().map_or(0, |s| s.seq);
    let mut sorted: Vec<&SnapshotOnDisk> = snapshots.iter().collect();
    sorted.sort_by_key(|s| std::cmp::Reverse((s.index, s.term)));
    let keep = cfg.max_snapshots.max(1);
    if sorted.len() <= keep {
        // Nothing to drop; the WAL before the oldest snapshot may still go if safe.
        if let Some(oldest) = sorted.last() {
            return PurgePlan {
                remove_snapshots: Vec::new(),
                keep_wal_from_seq: wal_keep_from(
                    oldest.index,
                    segments,
                    marker_segments,
                    first_seq,
                ),
            };
        }
        return PurgePlan {
            remove_snapshots: Vec::new(),
            keep_wal_from_seq: first_seq,
        };
    }
    let oldest_kept = sorted[keep - 1];
    PurgePlan {
        remove_snapshots: sorted[keep..].iter().map(|s| s.name.clone()).collect(),
        keep_wal_from_seq: wal_keep_from(oldest_kept.index, segments, marker_segments, first_seq),
    }
}

fn wal_keep_from(
    snap_index: u64,
    segments: &[SegmentInfo],
    markers: &[(u64, u64)],
    first_seq: u64,
) -> u64 {
    // A segment's first_index is one past the last entry written before it was cut, so entries
    // after `snap_index` live in the last segment starting at or below `snap_index + 1`, or later.
    let Some(entries_from) = segments
        .iter()
        .filter(|s| s.first_index <= snap_index + 1)
        .map(|s| s.seq)
        .max()
    else {
        return first_seq;
    };
    let Some(marker_in) = markers
        .iter()
        .filter(|(i, _)| *i == snap_index)
        .map(|(_, seq)| *seq)
        .max()
    else {
        return first_seq;
    };
    entries_from.min(marker_in)
}
