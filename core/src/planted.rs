//! Planted bugs: known-wrong behaviours that the simulator must catch, to prove its checkers
//! have teeth.
//!
//! The wrong code paths exist only in builds with `--cfg raftkv_planted_bugs`, which no normal
//! build sets (`io-sim`'s planted-bug test builds a separate copy with it). Everywhere else
//! `active` is a constant `false` and the planted branches compile away, so the `raftkv` binary
//! cannot be made to run them.

/// The bugs that can be planted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlantedBug {
    /// Answer a write as soon as it is proposed, before it is durable (raftexample's bug).
    AckBeforeSync,
    /// Serve linearizable reads from the local state machine, skipping ReadIndex.
    LocalLinearizableReads,
    /// Send raft's persisted messages (votes, append acks) before the sync completes.
    PersistedMessagesBeforeSync,
    /// Purge WAL segments holding entries after the snapshot index.
    CompactPastSnapshot,
    /// Treat any bad frame in the last WAL segment as a torn tail and truncate it.
    CorruptMiddleAsTornTail,
    /// Build snapshots with an empty ConfState.
    SnapshotWithoutConfState,
    /// Ignore incarnations in frames, both the sender's and the one addressed (a node whose
    /// directory was wiped keeps voting under its old id).
    IgnoreIncarnation,
    // Storage bugs: caught by crash-state enumeration (`raftkv-sim crash-states`).
    /// Rename a snapshot's temp file to its final name before the file is synced.
    SnapshotRenameBeforeSync,
    /// Cut a WAL segment without syncing the directory after its rename.
    SegmentCutWithoutDirSync,
    /// Log (and sync) a received snapshot's WAL marker before its file is durable under its name.
    MarkerBeforeSnapshotDurable,
    /// Truncate a torn WAL tail without syncing the truncation.
    TornTailTruncateWithoutSync,
    /// Purge old snapshots and segments in the same job as the new marker, before its sync.
    PurgeBeforeMarkerDurable,
    /// Restart a new cluster's member whose first job never completed as if it were a joiner
    /// before its first snapshot (an empty configuration: it never campaigns).
    UnfinishedFirstJobAsRestart,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 7] = [
        PlantedBug::AckBeforeSync,
        PlantedBug::LocalLinearizableReads,
        PlantedBug::PersistedMessagesBeforeSync,
        PlantedBug::CompactPastSnapshot,
        PlantedBug::CorruptMiddleAsTornTail,
        PlantedBug::SnapshotWithoutConfState,
        PlantedBug::IgnoreIncarnation,
    ];

    /// The storage bugs, which crash-state enumeration must catch (the sweep is shown beside it).
    pub const STORAGE: [PlantedBug; 6] = [
        PlantedBug::SnapshotRenameBeforeSync,
        PlantedBug::SegmentCutWithoutDirSync,
        PlantedBug::MarkerBeforeSnapshotDurable,
        PlantedBug::TornTailTruncateWithoutSync,
        PlantedBug::PurgeBeforeMarkerDurable,
        PlantedBug::UnfinishedFirstJobAsRestart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::AckBeforeSync => "ack-before-sync",
            PlantedBug::LocalLinearizableReads => "local-linearizable-reads",
            PlantedBug::PersistedMessagesBeforeSync => "persisted-messages-before-sync",
            PlantedBug::CompactPastSnapshot => "compact-past-snapshot",
            PlantedBug::CorruptMiddleAsTornTail => "corrupt-middle-as-torn-tail",
            PlantedBug::SnapshotWithoutConfState => "snapshot-without-conf-state",
            PlantedBug::IgnoreIncarnation => "ignore-incarnation",
            PlantedBug::SnapshotRenameBeforeSync => "snapshot-rename-before-sync",
            PlantedBug::SegmentCutWithoutDirSync => "segment-cut-without-dir-sync",
            PlantedBug::MarkerBeforeSnapshotDurable => "marker-before-snapshot-durable",
            PlantedBug::TornTailTruncateWithoutSync => "torn-tail-truncate-without-sync",
            PlantedBug::PurgeBeforeMarkerDurable => "purge-before-marker-durable",
            PlantedBug::UnfinishedFirstJobAsRestart => "unfinished-first-job-as-restart",
        }
    }

    pub fn from_name(s: &str) -> Option<PlantedBug> {
        Self::ALL
            .into_iter()
            .chain(Self::STORAGE)
            .find(|b| b.name() == s)
    }
}

#[cfg(raftkv_planted_bugs)]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<PlantedBug>> = const { std::cell::Cell::new(None) };
}

/// Plants `bug` for the current thread (simulations run one seed per thread).
#[cfg(raftkv_planted_bugs)]
pub fn plant(bug: Option<PlantedBug>) {
    ACTIVE.with(|a| a.set(bug));
}

/// True if `bug` is planted. Always false outside `--cfg raftkv_planted_bugs` builds.
#[inline]
pub fn active(bug: PlantedBug) -> bool {
    #[cfg(raftkv_planted_bugs)]
    {
        ACTIVE.with(|a| a.get() == Some(bug))
    }
    #[cfg(not(raftkv_planted_bugs))]
    {
        let _ = bug;
        false
    }
}

/// True in builds that can plant bugs.
pub const PLANTABLE: bool = cfg!(raftkv_planted_bugs);
