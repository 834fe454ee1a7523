//! What the node shows of itself: [`NodeStatus`] (status endpoints and tests) and its
//! [`Readiness`], both assembled from a borrowed [`View`] of the node so neither can change it;
//! and the leader's commit as this node heard it (`LeaderCommit`, a sub-state readiness needs:
//! "caught up" is measured against the leader's commit, not this node's own; within a term it
//! only moves forward).

use super::membership::Membership;
use super::pending::Pending;
use super::persist::Persistence;
use super::snapshots::SnapshotLane;
use super::transfers::Transfers;
use super::{NodeConfig, StopReason};
use crate::health::{self, Readiness};
use crate::identity::Identity;
use crate::kv::KvState;
use crate::storage::NodeStorage;
use raft::{RawNode, StateRole};
use std::collections::{BTreeMap, BTreeSet};

/// Read-only view for status endpoints and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: u64,
    pub cluster_id: u64,
    pub incarnation: u64,
    /// Recorded incarnation of each member (absent until the leader has recorded it).
    pub incarnations: BTreeMap<u64, u64>,
    /// Members that do not vote (yet).
    pub learners: BTreeSet<u64>,
    pub role: StateRole,
    pub leader_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    /// The last index raft knows is durable (its job completed).
    pub persisted_index: u64,
    pub log_entries_in_memory: usize,
    /// Payload bytes of those entries (compaction bounds them by the state's bytes).
    pub log_bytes_in_memory: u64,
    /// Key plus value bytes of the state.
    pub state_bytes: u64,
    pub members: BTreeMap<u64, String>,
    pub pending_proposals: usize,
    pub pending_reads: usize,
    pub disk_job_in_flight: bool,
    pub snapshot_job_in_flight: bool,
    /// Snapshot files this node (as leader) is streaming to followers.
    pub snapshot_sends: usize,
    /// The snapshot file this node is receiving: (index, bytes received, file bytes).
    pub snapshot_receiving: Option<(u64, u64, u64)>,
}

/// The highest commit index a leader sent this node in the term it was sent in.
#[derive(Default)]
pub(super) struct LeaderCommit {
    term: u64,
    commit: u64,
}

impl LeaderCommit {
    /// The current leader of `term` told this node its commit is (at least) `commit`; appends
    /// carry the leader's commit, heartbeats the part of it this node matched.
    pub(super) fn heard(&mut self, term: u64, commit: u64) {
        let next = if self.term == term {
            self.commit.max(commit)
        } else {
            commit
        };
        (self.term, self.commit) = (term, next);
    }

    /// The commit readiness measures against: a leader's own, else the one heard in this term
    /// (never below this node's own commit).
    fn as_of(&self, role: StateRole, term: u64, committed: u64) -> u64 {
        if role == StateRole::Leader {
            committed
        } else if self.term == term {
            self.commit.max(committed)
        } else {
            committed
        }
    }
}

/// What status and readiness read, borrowed from the node.
pub(super) struct View<'a> {
    pub cfg: &'a NodeConfig,
    pub identity: &'a Identity,
    pub raw: &'a RawNode<NodeStorage>,
    pub kv: &'a KvState,
    /// The role and leader as of the last Ready (raft's own may be newer).
    pub role: StateRole,
    pub leader_id: u64,
    pub persist: &'a Persistence,
    pub pending: &'a Pending,
    pub snapshots: &'a SnapshotLane,
    pub transfers: &'a Transfers,
    pub membership: &'a Membership,
    pub leader_commit: &'a LeaderCommit,
    pub stopped: Option<&'a StopReason>,
    pub shut_down: bool,
}

impl View<'_> {
    pub(super) fn status(&self) -> NodeStatus {
        let store = self.raw.store();
        NodeStatus {
            id: self.cfg.id,
            cluster_id: self.identity.cluster_id,
            incarnation: self.identity.incarnation,
            incarnations: self.kv.incarnations().clone(),
            learners: self.kv.learners().keys().copied().collect(),
            role: self.role,
            leader_id: self.leader_id,
            term: self.raw.raft.term,
            commit_index: self.raw.raft.raft_log.committed,
            applied_index: self.kv.applied_index(),
            snapshot_index: self.snapshots.index(),
            first_index: store.first_index(),
            last_index: self.raw.raft.raft_log.last_index(),
            persisted_index: self.raw.raft.raft_log.persisted,
            log_entries_in_memory: store.entry_count(),
            log_bytes_in_memory: store.log_bytes(store.first_index(), store.last_index()),
            state_bytes: self.kv.data_bytes(),
            members: self.kv.members().clone(),
            pending_proposals: self.pending.proposal_count(),
            pending_reads: self.pending.read_count(),
            disk_job_in_flight: self.persist.in_flight_id().is_some(),
            snapshot_job_in_flight: self.snapshots.job_id().is_some(),
            snapshot_sends: self.transfers.sends(),
            snapshot_receiving: self.transfers.receiving(),
        }
    }

    /// Whether this node should be sent clients, check by check (see [`crate::health`]).
    pub(super) fn readiness(&self) -> Readiness {
        let r = &self.raw.raft;
        let leader_commit = self
            .leader_commit
            .as_of(r.state, r.term, r.raft_log.committed);
        Readiness::evaluate(&health::Inputs {
            id: self.cfg.id,
            stopped: self.stopped.cloned(),
            shutting_down: self.shut_down,
            leader: r.leader_id,
            applied: self.kv.applied_index(),
            leader_commit,
            // The bound a learner must be within to be promoted: close enough to serve.
            bound: self.cfg.compaction.catch_up_entries,
            receiving_snapshot: self.transfers.receiving(),
            is_member: self.kv.members().contains_key(&self.cfg.id),
            removed: self.membership.is_removed(),
            url_unconfirmed: self.membership.url_unconfirmed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leaders_commit_counts_in_its_term_only() {
        let mut seen = LeaderCommit::default();
        seen.heard(3, 10);
        // A heartbeat carries only the part of the commit this node matched: never lower it.
        seen.heard(3, 4);
        assert_eq!(seen.as_of(StateRole::Follower, 3, 2), 10);
        assert_eq!(seen.as_of(StateRole::Follower, 4, 2), 2);
        assert_eq!(seen.as_of(StateRole::Leader, 3, 2), 2);
        seen.heard(4, 6);
        assert_eq!(seen.as_of(StateRole::Follower, 4, 2), 6);
    }
}
