//! The snapshot lane, a sub-state: the snapshots this node holds on disk, the one snapshot job
//! in flight, whether raft asked for a snapshot storage could not serve, and the startup job
//! (recovery's file removals) that no snapshot job may run beside; when a job starts
//! (`should_start`, `compaction.rs`'s rule or raft's wish) and the purge after a new snapshot.
//!
//! Invariants (asserted, in release builds too):
//! - at most one snapshot job at a time, and none while the startup job is in flight (the two
//!   lanes must never touch the same file name);
//! - the snapshot index only moves forward: a saved or installed snapshot is newer than the one
//!   it replaces (a local one that lost the race to the leader's is superseded, never recorded);
//! - every file named in `on_disk` is a durable snapshot this node may send or recover from.

use super::persist::Persistence;
use super::Event;
use crate::compaction::{self, CompactionConfig, SnapshotOnDisk};
use crate::fileop::FileOp;
use crate::planted::{active as planted, PlantedBug};
use crate::snapfile::SnapshotMeta;

pub(super) struct SnapshotLane {
    /// The newest snapshot's index (made here or installed from the leader).
    index: u64,
    on_disk: Vec<SnapshotOnDisk>,
    /// raft asked for a snapshot that storage could not serve (none yet, or not of the current
    /// ConfState).
    wanted: bool,
    /// The snapshot job handed out and not yet reported saved: (job id, what it captures).
    job: Option<(u64, SnapshotMeta)>,
    /// The startup job (recovery's removal of temp and orphan snapshot files) until it completes.
    /// A snapshot job may reuse one of those names, so none starts before: the two lanes must
    /// never touch the same file (the simulator caught a removal landing on a new temp file).
    startup_job: Option<u64>,
}

impl SnapshotLane {
    pub(super) fn new(index: u64, on_disk: Vec<SnapshotOnDisk>) -> SnapshotLane {
        SnapshotLane {
            index,
            on_disk,
            wanted: false,
            job: None,
            startup_job: None,
        }
    }

    pub(super) fn index(&self) -> u64 {
        self.index
    }

    pub(super) fn holds(&self, name: &str) -> bool {
        self.on_disk.iter().any(|s| s.name == name)
    }

    /// Forgets a file (set aside as broken, or purged).
    pub(super) fn forget(&mut self, name: &str) {
        self.on_disk.retain(|s| s.name != name);
    }

    /// Forgets every file in `names` (a purge).
    pub(super) fn forget_all(&mut self, names: &[String]) {
        self.on_disk.retain(|s| !names.contains(&s.name));
    }

    /// raft asked for a snapshot storage could not serve.
    pub(super) fn want(&mut self) {
        self.wanted = true;
    }

    /// A snapshot job or the startup job is in flight: no new snapshot job may start.
    pub(super) fn busy(&self) -> bool {
        self.job.is_some() || self.startup_job.is_some()
    }

    pub(super) fn job(&self) -> Option<&(u64, SnapshotMeta)> {
        self.job.as_ref()
    }

    pub(super) fn job_id(&self) -> Option<u64> {
        self.job.as_ref().map(|(id, _)| *id)
    }

    pub(super) fn start(&mut self, id: u64, meta: SnapshotMeta) {
        assert!(
            !self.busy(),
            "one snapshot job at a time, never beside startup's"
        );
        self.job = Some((id, meta));
    }

    /// Job `id` was saved: what it captured.
    pub(super) fn finish(&mut self, id: u64) -> SnapshotMeta {
        let (job_id, meta) = self
            .job
            .take()
            .expect("snapshot_saved without a snapshot job");
        assert_eq!(job_id, id, "snapshot_saved for another job");
        meta
    }

    /// A snapshot is durable and marked (saved here or installed): it becomes the newest.
    pub(super) fn record(&mut self, s: SnapshotOnDisk) {
        assert!(
            s.index > self.index,
            "snapshot index went back: {} after {}",
            s.index,
            self.index
        );
        self.index = s.index;
        self.on_disk.push(s);
    }

    /// A snapshot job should start now: `compaction`'s rule says one is due at `applied`, or raft
    /// wanted one storage could not serve and a new one would serve it (newer, or of the current
    /// ConfState where the latest is not: `stale_conf`). Never while busy (one at a time, not
    /// beside startup's file removals); a wish left unanswered then is asked for again once this
    /// one is saved.
    pub(super) fn should_start(
        &mut self,
        cfg: &CompactionConfig,
        applied: u64,
        stale_conf: impl FnOnce() -> bool,
    ) -> bool {
        let due = compaction::should_snapshot(cfg, applied, self.index);
        let wanted = self.wanted && (applied > self.index || stale_conf());
        if self.busy() {
            return false;
        }
        self.wanted = false;
        due || wanted
    }

    /// After a new snapshot: removes the WAL segments no retained snapshot needs and the
    /// snapshots past `max_snapshots`, except files `pinned` (streaming to a follower: a later
    /// purge takes them). Removals wait for this job's sync (`post_sync`): the new marker must
    /// be durable first. The event, if anything goes.
    pub(super) fn purge(
        &mut self,
        cfg: &CompactionConfig,
        persist: &mut Persistence,
        pinned: impl Fn(&str) -> bool,
    ) -> Option<Event> {
        let mut plan = compaction::plan_purge(
            cfg,
            &self.on_disk,
            persist.wal().segments(),
            persist.wal().marker_segments(),
        );
        let keep_from = if planted(PlantedBug::CompactPastSnapshot) {
            persist.wal().current_seq()
        } else {
            plan.keep_wal_from_seq
        };
        let early = planted(PlantedBug::PurgeBeforeMarkerDurable);
        let (wal, purge_ops) = if early {
            persist.wal_and_ops()
        } else {
            persist.wal_and_post_sync()
        };
        let segments = wal.purge_before(keep_from, purge_ops);
        plan.remove_snapshots.retain(|n| !pinned(n));
        let purge_ops = if early {
            persist.ops()
        } else {
            persist.post_sync()
        };
        for name in &plan.remove_snapshots {
            purge_ops.push(FileOp::Remove { name: name.clone() });
        }
        if !plan.remove_snapshots.is_empty() {
            purge_ops.push(FileOp::SyncDir);
            self.forget_all(&plan.remove_snapshots);
        }
        assert!(
            self.on_disk
                .iter()
                .all(|s| !plan.remove_snapshots.contains(&s.name)),
            "a purged snapshot is still on disk"
        );
        (segments > 0 || !plan.remove_snapshots.is_empty()).then_some(Event::Purged {
            segments,
            snapshots: plan.remove_snapshots.len(),
        })
    }

    pub(super) fn set_startup_job(&mut self, id: Option<u64>) {
        self.startup_job = id;
    }

    /// Job `id` completed: true if it was the startup job (now done).
    pub(super) fn startup_done(&mut self, id: u64) -> bool {
        if self.startup_job == Some(id) {
            self.startup_job = None;
            true
        } else {
            false
        }
    }
}
