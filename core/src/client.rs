//! Client requests and replies: what a shell hands the node and gets back.
//!
//! These types also cross the peer network when a follower forwards a request to the leader, so
//! they are serde types encoded with our own codec (see `msgcodec`).

use crate::command::RequestId;
use crate::kv::WriteResult;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Linearizable read through ReadIndex (leader only).
    Get {
        key: Vec<u8>,
    },
    /// Possibly stale read from this node's state machine (any node).
    GetLocal {
        key: Vec<u8>,
    },
    AddNode {
        id: u64,
        addr: String,
    },
    RemoveNode {
        id: u64,
    },
    /// Add a non-voting member (promoted by the leader once caught up when `auto_promote`).
    AddLearner {
        id: u64,
        addr: String,
        auto_promote: bool,
    },
    /// Promote a learner to a voter; refused until it is within a bound of the leader's log.
    PromoteNode {
        id: u64,
    },
    /// Change a member's peer URL (through the log, like any membership change).
    UpdateNode {
        id: u64,
        addr: String,
    },
}

impl ClientOp {
    pub fn is_write(&self) -> bool {
        !matches!(self, ClientOp::Get { .. } | ClientOp::GetLocal { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    /// The shell's handle for the reply; unique among the node's outstanding requests.
    pub handle: u64,
    /// De-duplication id for writes; a retry must reuse it.
    pub request_id: Option<RequestId>,
    pub timeout_ticks: u64,
    pub op: ClientOp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientReply {
    Written(WriteResult),
    Value(Option<Vec<u8>>),
    Members(BTreeMap<u64, String>),
}

/// Why a request failed. Each variant is either *definite* (the request was never proposed, so
/// it was not applied and never will be: retrying anywhere is safe) or *outcome unknown* (it was
/// proposed, or forwarded to a leader that may have proposed it: a write may still be applied).
/// The node decides which; shells only map the variant to a status (see [`Self::outcome_unknown`]).
///
/// New variants go at the end: the enum crosses the peer network in forward replies (by
/// variant index; `StoppedWhilePending` keeps the index, and the meaning, of the old `Stopped`).
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum ClientError {
    /// Definite: this node is not the leader (and does not forward this request).
    #[error("not the leader; leader is {leader:?}; the request was not applied")]
    NotLeader { leader: Option<u64> },
    /// Definite: a queue is full.
    #[error("busy: too many pending requests; the request was not applied")]
    Busy,
    /// Definite: not applied, and never will be.
    #[error("rejected: {0}")]
    Rejected(RejectReason),
    /// Outcome unknown: the deadline passed after the request was proposed or forwarded (the
    /// write may still be applied).
    #[error("timed out; the outcome is unknown")]
    Timeout,
    /// Outcome unknown: leadership changed while the request was pending.
    #[error("leadership changed; the outcome is unknown; leader is {leader:?}")]
    LeaderChanged { leader: Option<u64> },
    /// Outcome unknown: the node stopped (removed, failed, or shut down) after proposing or
    /// forwarding the request.
    #[error("node stopped while the request was pending; the outcome is unknown")]
    StoppedWhilePending,
    /// Definite: the follower could not send the request to the leader (connection refused, in
    /// backoff, queue full): it was never proposed, so retrying (any node) is safe.
    #[error(
        "the leader (node {leader}) cannot be reached from this node; the request was not applied"
    )]
    LeaderUnreachable { leader: u64 },
    /// Definite: no leader was known when the request arrived, and none was elected while it
    /// was held (about one election timeout); it was never proposed.
    #[error("no leader was elected within {waited_ticks} ticks; the request was not applied")]
    NoLeader { waited_ticks: u64 },
    /// Definite: the node has stopped (removed from the cluster, or failed) and did not propose
    /// the request, either because it arrived after the stop or because it was still waiting
    /// for a leader.
    #[error("node stopped; the request was not applied")]
    Stopped,
    /// Definite: this leader's log holds more than it may beyond its latest snapshot
    /// ([`crate::compaction::write_limit_bytes`]): writes outran the snapshot job, and are
    /// refused until a snapshot is saved, so that memory stays bounded by the state (etcd's
    /// "too many requests"). Retrying after a short wait is safe.
    #[error(
        "too many requests: the log holds {log_bytes} bytes beyond the latest snapshot, over its \
         limit of {limit_bytes} until a snapshot is saved; the request was not applied"
    )]
    TooManyRequests { log_bytes: u64, limit_bytes: u64 },
}

impl ClientError {
    /// True if a write answered with this error may or may not have been applied; false when
    /// it was definitely not applied.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ClientError::Timeout
            | ClientError::LeaderChanged { .. }
            | ClientError::StoppedWhilePending => true,
            ClientError::NotLeader { .. }
            | ClientError::Busy
            | ClientError::Rejected(_)
            | ClientError::Stopped
            | ClientError::LeaderUnreachable { .. }
            | ClientError::NoLeader { .. }
            | ClientError::TooManyRequests { .. } => false,
        }
    }
}

/// Why a request was refused for good (HTTP 409). One list, so shells and the simulator match
/// on a variant, never on text.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum RejectReason {
    #[error("local reads are not forwarded")]
    LocalReadForwarded,
    #[error("0 is not a valid member id")]
    ZeroId,
    #[error("node {id} is already a member")]
    AlreadyMember { id: u64 },
    #[error("id {id} was removed before and cannot be reused; add the node under a new id")]
    IdRemoved { id: u64 },
    #[error("node {id} is not a member")]
    NotMember { id: u64 },
    #[error("cannot remove the last member")]
    LastMember,
    #[error("peer URL {addr:?} is already used by member {id}")]
    UrlInUse { id: u64, addr: String },
    #[error("the change would leave {active} live voters where {needed} make a quorum (etcd's strict reconfig check): remove a dead member first, start the missing ones, or add the new member as a learner (\"learner\": true), which counts toward no quorum until it is promoted")]
    WouldLoseQuorum { active: usize, needed: usize },
    #[error("node {id} is not a learner")]
    NotLearner { id: u64 },
    #[error("learner {id} has {matched} of the leader's {last_index} entries; promote it once it has caught up")]
    LearnerBehind {
        id: u64,
        matched: u64,
        last_index: u64,
    },
    #[error("another membership change is in progress")]
    ChangeInProgress,
    #[error("request id older than this client's last write")]
    StaleRequest,
    #[error("the entry does not decode")]
    Undecodable,
    #[error("raft refused the membership change")]
    ConfChangeRefused,
    #[error("joint membership changes are not supported")]
    JointChange,
    #[error("the applied entry is not of the kind proposed")]
    KindMismatch,
    #[error("raft refused the proposal")]
    ProposalRefused,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_error() -> Vec<ClientError> {
        vec![
            ClientError::NotLeader { leader: None },
            ClientError::NotLeader { leader: Some(2) },
            ClientError::Busy,
            ClientError::Rejected(RejectReason::ChangeInProgress),
            ClientError::Timeout,
            ClientError::LeaderChanged { leader: Some(3) },
            ClientError::StoppedWhilePending,
            ClientError::LeaderUnreachable { leader: 2 },
            ClientError::NoLeader { waited_ticks: 20 },
            ClientError::Stopped,
            ClientError::TooManyRequests {
                log_bytes: 3 << 20,
                limit_bytes: 2 << 20,
            },
        ]
    }

    #[test]
    fn every_answer_says_whether_it_was_applied() {
        for e in every_error() {
            let text = e.to_string();
            if e.outcome_unknown() {
                assert!(text.contains("outcome is unknown"), "{e:?}: {text}");
            } else if !matches!(e, ClientError::Rejected(_)) {
                assert!(text.contains("not applied"), "{e:?}: {text}");
            }
        }
    }

    #[test]
    fn old_nodes_stopped_keeps_its_wire_index_and_meaning() {
        // Before definite stops existed, variant 5 was `Stopped`, outcome unknown: a frame from
        // such a node must still read as outcome unknown.
        let bytes = postcard::to_allocvec(&ClientError::StoppedWhilePending).unwrap();
        assert_eq!(bytes, [5]);
        let old: ClientError = postcard::from_bytes(&[5]).unwrap();
        assert!(old.outcome_unknown());
    }
}
