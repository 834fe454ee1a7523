//! Compaction bookkeeping: when to snapshot, how far to compact the in-memory log, and which
//! snapshot files and WAL segments may be purged.
//!
//! The rules follow etcd's raftexample (snapCount, snapshotCatchUpEntriesN) and add the purge it
//! never did: keep the newest `max_snapshots` snapshots and every WAL segment needed to recover
//! from *each* of them (its marker, and every entry after it).

use crate::wal::SegmentInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactionConfig {
    /// Take a snapshot once more than this many entries were applied since the last one.
    pub snap_count: u64,
    /// Entries kept in memory below a new snapshot so slow followers can catch up by log.
    pub catch_up_entries: u64,
    /// Snapshot files kept on disk (with the WAL to recover from each).
    pub max_snapshots: usize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            snap_count: 10_000,
            catch_up_entries: 5_000,
            max_snapshots: 5,
        }
    }
}

/// raftexample's trigger: `applied - snapshot_index > snap_count`.
pub fn should_snapshot(cfg: &CompactionConfig, applied_index: u64, snapshot_index: u64) -> bool {
    debug_assert!(applied_index >= snapshot_index);
    applied_index.saturating_sub(snapshot_index) > cfg.snap_count
}

/// First index to keep in memory after a snapshot at `snapshot_index`.
pub fn compact_index(cfg: &CompactionConfig, snapshot_index: u64) -> u64 {
    if snapshot_index > cfg.catch_up_entries {
        snapshot_index - cfg.catch_up_entries
    } else {
        1
    }
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
