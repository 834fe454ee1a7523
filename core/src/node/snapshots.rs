//! The snapshot lane, a sub-state: the snapshots this node holds on disk, the one snapshot job
//! in flight, whether raft asked for a snapshot storage could not serve, and the startup job
//! (recovery's file removals) that no snapshot job may run beside.
//!
//! Invariants (asserted, in release builds too):
//! - at most one snapshot job at a time, and none while the startup job is in flight (the two
//!   lanes must never touch the same file name);
//! - the snapshot index only moves forward: a saved or installed snapshot is newer than the one
//!   it replaces (a local one that lost the race to the leader's is superseded, never recorded);
//! - every file named in `on_disk` is a durable snapshot this node may send or recover from.

use crate::compaction::SnapshotOnDisk;
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

    pub(super) fn on_disk(&self) -> &[SnapshotOnDisk] {
        &self.on_disk
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

    pub(super) fn is_wanted(&self) -> bool {
        self.wanted
    }

    /// A snapshot job or the startup job is in flight: no new snapshot job may start.
    pub(super) fn busy(&self) -> bool {
        self.job.is_some() || self.startup_job.is_some()
    }

    /// A new snapshot job may start: the wish is answered (or asked for again later).
    pub(super) fn clear_wanted(&mut self) {
        self.wanted = false;
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
