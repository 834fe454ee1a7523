//! The snapshot lane, a sub-state: the snapshots this node holds on disk, the one snapshot job
//! in flight, whether raft asked for a snapshot storage could not serve, and the startup job
//! (recovery's file removals) that no snapshot job may run beside; when a job starts
//! (`should_start`, `compaction.rs`'s rule or raft's wish), the file operations and WAL marker
//! of a snapshot saved, superseded, installed from the leader or set aside as damaged, and the
//! purge after a new snapshot.
//!
//! Invariants (asserted, in release builds too):
//! - at most one snapshot job at a time, and none while the startup job is in flight (the two
//!   lanes must never touch the same file name);
//! - the snapshot index only moves forward: a saved or installed snapshot is newer than the one
//!   it replaces (a local one that lost the race to the leader's is superseded, never recorded);
//! - every file named in `on_disk` is a durable snapshot this node may send or recover from.

use super::persist::Persistence;
use super::{Event, SnapshotJob};
use crate::compaction::{self, CompactionConfig, SnapshotOnDisk};
use crate::convert::{cs_to_rec, rec_to_cs};
use crate::fileop::FileOp;
use crate::kv::KvState;
use crate::planted::{active as planted, PlantedBug};
use crate::snapfile::{self, SnapshotMeta};
use crate::storage::NodeStorage;
use crate::wal::{HardStateRec, SnapshotMarker};
use raft::eraftpb::Snapshot;

pub(super) struct SnapshotLane {
    /// The newest snapshot's index (made here or installed from the leader).
    index: u64,
    on_disk: Vec<SnapshotOnDisk>,
    /// raft asked for a snapshot that storage could not serve (none yet, or not of the current
    /// ConfState).
    wanted: bool,
    /// The snapshot job handed out and not yet reported saved: (job id, what it captures).
    job: Option<(u64, SnapshotMeta)>,
    /// The startup job (recovery's removal of temp and orphan snapshot files, and its syncs)
    /// until it completes.
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
    fn forget(&mut self, name: &str) {
        self.on_disk.retain(|s| s.name != name);
    }

    /// Forgets every file in `names` (a purge).
    fn forget_all(&mut self, names: &[String]) {
        self.on_disk.retain(|s| !names.contains(&s.name));
    }

    /// raft asked for a snapshot storage could not serve.
    pub(super) fn want(&mut self) {
        self.wanted = true;
    }

    /// A snapshot job or the startup job is in flight: no new snapshot job may start.
    fn busy(&self) -> bool {
        self.job.is_some() || self.startup_job.is_some()
    }

    pub(super) fn job_id(&self) -> Option<u64> {
        self.job.as_ref().map(|(id, _)| *id)
    }

    fn start(&mut self, id: u64, meta: SnapshotMeta) {
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
    fn record(&mut self, s: SnapshotOnDisk) {
        assert!(
            s.index > self.index,
            "snapshot index went back: {} after {}",
            s.index,
            self.index
        );
        self.index = s.index;
        self.on_disk.push(s);
    }

    /// Starts job `id`, a shell's to serialise: `kv` (an O(1) clone) at its applied index, with
    /// the term and ConfState `store` holds for it. The event that says so, and the job.
    pub(super) fn create(
        &mut self,
        id: u64,
        kv: KvState,
        store: &NodeStorage,
        piece_bytes: usize,
    ) -> (Event, SnapshotJob) {
        let applied = kv.applied_index();
        assert!(applied > 0, "a snapshot of nothing");
        let started = Event::StartSnapshot {
            applied_index: applied,
            last_snapshot_index: self.index,
        };
        let term = store
            .term_of(applied)
            .expect("the applied entry is in memory or is the compaction point");
        let conf_state = if planted(PlantedBug::SnapshotWithoutConfState) {
            Default::default()
        } else {
            cs_to_rec(store.conf_state())
        };
        let meta = SnapshotMeta {
            index: applied,
            term,
            conf_state,
        };
        self.start(id, meta.clone());
        (started, SnapshotJob::new(id, meta, kv, piece_bytes))
    }

    /// The job that captured `meta` was saved, but the leader's snapshot was installed meanwhile
    /// and is newer: the file describes a past no marker will point to. It is removed (after the
    /// next sync, like any purge); the event says so. `None`: the saved snapshot is the newest.
    pub(super) fn superseded(
        &self,
        meta: &SnapshotMeta,
        persist: &mut Persistence,
    ) -> Option<Event> {
        if meta.index > self.index {
            return None;
        }
        let name = snapfile::file_name(meta.term, meta.index);
        if !self.holds(&name) {
            persist.post_sync().push(FileOp::Remove { name });
        }
        Some(Event::SnapshotSuperseded { index: meta.index })
    }

    /// A snapshot this node made is durable (`meta`, newer than any): its marker is logged after
    /// the file, never before (a crash in between leaves an orphan file that recovery removes),
    /// with `hard_state`, whose commit covers it so recovery accepts the snapshot.
    pub(super) fn saved(
        &mut self,
        meta: &SnapshotMeta,
        hard_state: HardStateRec,
        persist: &mut Persistence,
    ) {
        assert!(
            hard_state.commit >= meta.index,
            "snapshot {} beyond the commit staged with it",
            meta.index
        );
        persist.stage_marker(SnapshotMarker {
            index: meta.index,
            term: meta.term,
            conf_state: meta.conf_state.clone(),
            log_reset: false,
        });
        persist.stage_hard_state(hard_state);
        self.record(SnapshotOnDisk {
            name: snapfile::file_name(meta.term, meta.index),
            term: meta.term,
            index: meta.index,
        });
    }

    /// Installs the leader's snapshot (`meta`), its file received and synced under the temp name
    /// `tmp`: renamed, the name made durable, and only then the marker that points to it logged.
    pub(super) fn install(&mut self, meta: SnapshotMeta, tmp: String, persist: &mut Persistence) {
        let SnapshotMeta {
            index,
            term,
            conf_state,
        } = meta;
        if let Some((_, local)) = &self.job {
            // raft restores only snapshots beyond its commit, and a local snapshot is at or below
            // it: the two never share a file name, so the lanes never write the same file.
            assert!(
                index > local.index,
                "installing snapshot {index} over local snapshot job {}",
                local.index
            );
        }
        let marker = SnapshotMarker {
            index,
            term,
            conf_state,
            log_reset: true,
        };
        let name = snapfile::file_name(term, index);
        let early = planted(PlantedBug::MarkerBeforeSnapshotDurable);
        if early {
            persist.stage_marker(marker.clone());
            persist.sync_wal();
        }
        persist.ops().push(FileOp::Rename {
            from: tmp,
            to: name.clone(),
        });
        persist.ops().push(FileOp::SyncDir);
        if !early {
            persist.stage_marker(marker);
        }
        self.record(SnapshotOnDisk { name, term, index });
    }

    /// A follower found file `name` damaged (its checksum fails there, so here too): set aside
    /// as recovery would (after the next sync), forgotten, and a fresh snapshot wanted. False if
    /// it was set aside already.
    pub(super) fn set_aside(&mut self, name: &str, persist: &mut Persistence) -> bool {
        if !self.holds(name) {
            return false;
        }
        self.forget(name);
        persist.post_sync().push(FileOp::Rename {
            from: name.to_string(),
            to: format!("{name}{}", snapfile::BROKEN_SUFFIX),
        });
        persist.post_sync().push(FileOp::SyncDir);
        self.want();
        true
    }

    /// A snapshot job should start now: `compaction`'s rule says one is due at `applied`, or raft
    /// wanted one storage could not serve and a new one would serve it (newer, or of the current
    /// ConfState where the latest is not: `stale_conf`). Never while busy (one at a time, not
    /// beside startup's file removals); a wish left unanswered then is asked for again once this
    /// one is saved.
    /// `since_bytes(index)` is the payload bytes of the entries applied after `index`, and
    /// `state_bytes` the state's (compaction weighs the two).
    pub(super) fn should_start(
        &mut self,
        cfg: &CompactionConfig,
        applied: u64,
        log: (impl FnOnce(u64) -> u64, u64),
        stale_conf: impl FnOnce() -> bool,
    ) -> bool {
        let (since_bytes, state_bytes) = log;
        let due = compaction::should_snapshot(
            cfg,
            applied,
            self.index,
            since_bytes(self.index),
            state_bytes,
        );
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

/// The `Snapshot` raft sees: metadata and a descriptor of the file (never the state itself).
pub(super) fn raft_snapshot(meta: &SnapshotMeta, file_bytes: u64) -> Snapshot {
    let mut s = Snapshot {
        data: snapfile::descriptor(file_bytes).into(),
        ..Default::default()
    };
    let m = s.mut_metadata();
    m.index = meta.index;
    m.term = meta.term;
    m.set_conf_state(rec_to_cs(&meta.conf_state));
    s
}
