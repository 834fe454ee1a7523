//! Coverage counters: the paths a run exercised, one list. A sweep sums them and, from
//! `JUDGED_FROM_SEEDS` seeds up, fails if a required one never ran (a sweep in which a
//! recovery path never happened proves little about it).

use std::collections::BTreeMap;

/// One counted path. Names (`name`) are what result files, repro output and the README use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Counter {
    AppendsReindexed,
    ClusterIdsAdopted,
    Compactions,
    ConfChanges,
    ConfChangesApplied,
    ConfChangesRefusedForQuorum,
    CorruptionDetected,
    CrashesBetweenSyncAndSend,
    CrashesDuringIo,
    CrashesPowerLoss,
    CrashesProcess,
    DamagedSnapshotsRefusedByFollowers,
    DiskLosses,
    Elections,
    Enospc,
    FsyncFailures,
    IncarnationsRecorded,
    LatentSectorErrors,
    LearnersPromoted,
    MisdirectedWrites,
    MistakesAtStart,
    MistakesNeverStarted,
    MistakesStartedLate,
    MistakesWipedRestart,
    NetBlocked,
    NetCorrupted,
    NetDuplicated,
    NetLongDelay,
    NetLost,
    NeverStartedMembersRemoved,
    OperatorMistakesRefused,
    OrphanSnapshotsRemoved,
    PartitionsIsolateLeader,
    PartitionsOneWay,
    PartitionsSplit,
    Pauses,
    PeerFramesRejected,
    PeerIncarnationsRefused,
    Purges,
    ReadCorruptionInjected,
    /// Read corruption that landed in a sealed WAL segment (the rest lands in snapshot files).
    SealedSegmentRotInjected,
    Replacements,
    Restarts,
    RestartsFromSnapshot,
    SnapshotChunksResent,
    SnapshotChunksSent,
    SnapshotJobs,
    SnapshotReads,
    SnapshotReceivesAbandoned,
    SnapshotSendsFailed,
    SnapshotSendsResumed,
    SnapshotSendsStarted,
    SnapshotsInstalled,
    SnapshotsReceived,
    SnapshotsRefused,
    SnapshotsSent,
    SnapshotsSetAside,
    SnapshotsSuperseded,
    SnapshotsTaken,
    StaleMessagesReplayed,
    TornTailsRepaired,
    WalSegmentsCreated,
    WalSparesPrepared,
    WalSparesUsed,
    WipedRestartsRefused,
    NoLeaderAnswers,
    WritesDefinitelyNotApplied,
    TooManyRequestsAnswers,
}

impl Counter {
    pub const ALL: [Counter; 68] = [
        Counter::AppendsReindexed,
        Counter::ClusterIdsAdopted,
        Counter::Compactions,
        Counter::ConfChanges,
        Counter::ConfChangesApplied,
        Counter::ConfChangesRefusedForQuorum,
        Counter::CorruptionDetected,
        Counter::CrashesBetweenSyncAndSend,
        Counter::CrashesDuringIo,
        Counter::CrashesPowerLoss,
        Counter::CrashesProcess,
        Counter::DamagedSnapshotsRefusedByFollowers,
        Counter::DiskLosses,
        Counter::Elections,
        Counter::Enospc,
        Counter::FsyncFailures,
        Counter::IncarnationsRecorded,
        Counter::LatentSectorErrors,
        Counter::LearnersPromoted,
        Counter::MisdirectedWrites,
        Counter::MistakesAtStart,
        Counter::MistakesNeverStarted,
        Counter::MistakesStartedLate,
        Counter::MistakesWipedRestart,
        Counter::NetBlocked,
        Counter::NetCorrupted,
        Counter::NetDuplicated,
        Counter::NetLongDelay,
        Counter::NetLost,
        Counter::NeverStartedMembersRemoved,
        Counter::OperatorMistakesRefused,
        Counter::OrphanSnapshotsRemoved,
        Counter::PartitionsIsolateLeader,
        Counter::PartitionsOneWay,
        Counter::PartitionsSplit,
        Counter::Pauses,
        Counter::PeerFramesRejected,
        Counter::PeerIncarnationsRefused,
        Counter::Purges,
        Counter::ReadCorruptionInjected,
        Counter::SealedSegmentRotInjected,
        Counter::Replacements,
        Counter::Restarts,
        Counter::RestartsFromSnapshot,
        Counter::SnapshotChunksResent,
        Counter::SnapshotChunksSent,
        Counter::SnapshotJobs,
        Counter::SnapshotReads,
        Counter::SnapshotReceivesAbandoned,
        Counter::SnapshotSendsFailed,
        Counter::SnapshotSendsResumed,
        Counter::SnapshotSendsStarted,
        Counter::SnapshotsInstalled,
        Counter::SnapshotsReceived,
        Counter::SnapshotsRefused,
        Counter::SnapshotsSent,
        Counter::SnapshotsSetAside,
        Counter::SnapshotsSuperseded,
        Counter::SnapshotsTaken,
        Counter::StaleMessagesReplayed,
        Counter::TornTailsRepaired,
        Counter::WalSegmentsCreated,
        Counter::WalSparesPrepared,
        Counter::WalSparesUsed,
        Counter::WipedRestartsRefused,
        Counter::NoLeaderAnswers,
        Counter::WritesDefinitelyNotApplied,
        Counter::TooManyRequestsAnswers,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::AppendsReindexed => "appends_reindexed",
            Counter::ClusterIdsAdopted => "cluster_ids_adopted",
            Counter::Compactions => "compactions",
            Counter::ConfChanges => "conf_changes",
            Counter::ConfChangesApplied => "conf_changes_applied",
            Counter::ConfChangesRefusedForQuorum => "conf_changes_refused_for_quorum",
            Counter::CorruptionDetected => "corruption_detected",
            Counter::CrashesBetweenSyncAndSend => "crashes_between_sync_and_send",
            Counter::CrashesDuringIo => "crashes_during_io",
            Counter::CrashesPowerLoss => "crashes_power_loss",
            Counter::CrashesProcess => "crashes_process",
            Counter::DamagedSnapshotsRefusedByFollowers => "damaged_snapshots_refused_by_followers",
            Counter::DiskLosses => "disk_losses",
            Counter::Elections => "elections",
            Counter::Enospc => "enospc",
            Counter::FsyncFailures => "fsync_failures",
            Counter::IncarnationsRecorded => "incarnations_recorded",
            Counter::LatentSectorErrors => "latent_sector_errors",
            Counter::LearnersPromoted => "learners_promoted",
            Counter::MisdirectedWrites => "misdirected_writes",
            Counter::MistakesAtStart => "mistakes_at_start",
            Counter::MistakesNeverStarted => "mistakes_never_started",
            Counter::MistakesStartedLate => "mistakes_started_late",
            Counter::MistakesWipedRestart => "mistakes_wiped_restart",
            Counter::NetBlocked => "net_blocked",
            Counter::NetCorrupted => "net_corrupted",
            Counter::NetDuplicated => "net_duplicated",
            Counter::NetLongDelay => "net_long_delay",
            Counter::NetLost => "net_lost",
            Counter::NeverStartedMembersRemoved => "never_started_members_removed",
            Counter::OperatorMistakesRefused => "operator_mistakes_refused",
            Counter::OrphanSnapshotsRemoved => "orphan_snapshots_removed",
            Counter::PartitionsIsolateLeader => "partitions_isolate_leader",
            Counter::PartitionsOneWay => "partitions_one_way",
            Counter::PartitionsSplit => "partitions_split",
            Counter::Pauses => "pauses",
            Counter::PeerFramesRejected => "peer_frames_rejected",
            Counter::PeerIncarnationsRefused => "peer_incarnations_refused",
            Counter::Purges => "purges",
            Counter::ReadCorruptionInjected => "read_corruption_injected",
            Counter::SealedSegmentRotInjected => "sealed_segment_rot_injected",
            Counter::Replacements => "replacements",
            Counter::Restarts => "restarts",
            Counter::RestartsFromSnapshot => "restarts_from_snapshot",
            Counter::SnapshotChunksResent => "snapshot_chunks_resent",
            Counter::SnapshotChunksSent => "snapshot_chunks_sent",
            Counter::SnapshotJobs => "snapshot_jobs",
            Counter::SnapshotReads => "snapshot_reads",
            Counter::SnapshotReceivesAbandoned => "snapshot_receives_abandoned",
            Counter::SnapshotSendsFailed => "snapshot_sends_failed",
            Counter::SnapshotSendsResumed => "snapshot_sends_resumed",
            Counter::SnapshotSendsStarted => "snapshot_sends_started",
            Counter::SnapshotsInstalled => "snapshots_installed",
            Counter::SnapshotsReceived => "snapshots_received",
            Counter::SnapshotsRefused => "snapshots_refused",
            Counter::SnapshotsSent => "snapshots_sent",
            Counter::SnapshotsSetAside => "snapshots_set_aside",
            Counter::SnapshotsSuperseded => "snapshots_superseded",
            Counter::SnapshotsTaken => "snapshots_taken",
            Counter::StaleMessagesReplayed => "stale_messages_replayed",
            Counter::TornTailsRepaired => "torn_tails_repaired",
            Counter::WalSegmentsCreated => "wal_segments_created",
            Counter::WalSparesPrepared => "wal_spares_prepared",
            Counter::WalSparesUsed => "wal_spares_used",
            Counter::WipedRestartsRefused => "wiped_restarts_refused",
            Counter::WritesDefinitelyNotApplied => "writes_definitely_not_applied",
            Counter::NoLeaderAnswers => "no_leader_answers",
            Counter::TooManyRequestsAnswers => "too_many_requests_answers",
        }
    }

    pub fn from_name(s: &str) -> Option<Counter> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

impl std::fmt::Display for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The shortest sweep whose coverage is judged. The rarest required paths (a snapshot
/// receive abandoned, a damaged snapshot refused by a follower) run a few times in a hundred
/// seeds: in 300 each is expected at least six times.
pub const JUDGED_FROM_SEEDS: u64 = 300;

/// Paths a sweep of at least [`JUDGED_FROM_SEEDS`] seeds must exercise.
pub const REQUIRED: &[Counter] = &[
    Counter::Elections,
    Counter::WalSparesUsed,
    Counter::WalSegmentsCreated,
    Counter::SnapshotsTaken,
    Counter::SnapshotsSent,
    Counter::SnapshotsInstalled,
    Counter::SnapshotChunksResent,
    Counter::SnapshotSendsResumed,
    Counter::SnapshotSendsFailed,
    Counter::SnapshotReceivesAbandoned,
    Counter::DamagedSnapshotsRefusedByFollowers,
    Counter::Compactions,
    Counter::Purges,
    Counter::TornTailsRepaired,
    Counter::SnapshotsSetAside,
    Counter::CorruptionDetected,
    Counter::FsyncFailures,
    Counter::Enospc,
    Counter::DiskLosses,
    Counter::Replacements,
    Counter::ConfChangesApplied,
    Counter::CrashesPowerLoss,
    Counter::CrashesDuringIo,
    Counter::CrashesBetweenSyncAndSend,
    Counter::Pauses,
    Counter::StaleMessagesReplayed,
    Counter::MisdirectedWrites,
    Counter::ReadCorruptionInjected,
    Counter::SealedSegmentRotInjected,
    Counter::LatentSectorErrors,
    Counter::IncarnationsRecorded,
    Counter::LearnersPromoted,
    Counter::ClusterIdsAdopted,
    Counter::PeerIncarnationsRefused,
    Counter::WipedRestartsRefused,
    Counter::OperatorMistakesRefused,
    Counter::MistakesStartedLate,
    Counter::NeverStartedMembersRemoved,
    Counter::NoLeaderAnswers,
    Counter::WritesDefinitelyNotApplied,
    Counter::TooManyRequestsAnswers,
];

/// Required paths that a set of totals (by counter name) never exercised.
pub fn gaps(totals: &BTreeMap<String, u64>) -> Vec<Counter> {
    REQUIRED
        .iter()
        .copied()
        .filter(|c| totals.get(c.name()).copied().unwrap_or(0) == 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for c in Counter::ALL {
            assert!(seen.insert(c.name()), "{c:?} named twice");
            assert_eq!(Counter::from_name(c.name()), Some(c));
        }
    }
}
