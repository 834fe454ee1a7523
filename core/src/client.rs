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

#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum ClientError {
    /// Not proposed: this node is not the leader.
    #[error("not the leader; leader is {leader:?}")]
    NotLeader { leader: Option<u64> },
    /// Not proposed: a queue is full.
    #[error("busy: too many pending requests")]
    Busy,
    /// Not applied, and never will be.
    #[error("rejected: {0}")]
    Rejected(RejectReason),
    /// Outcome unknown: the deadline passed (the write may still be applied).
    #[error("timed out; the outcome is unknown")]
    Timeout,
    /// Outcome unknown: leadership changed while the request was pending.
    #[error("leadership changed; the outcome is unknown; leader is {leader:?}")]
    LeaderChanged { leader: Option<u64> },
    /// Outcome unknown: the node stopped (removed from the cluster or failed) while the request
    /// was pending.
    #[error("node stopped")]
    Stopped,
    /// The follower could not send the request to the leader (connection refused, in backoff,
    /// queue full): it was never proposed, so retrying (any node) is safe.
    #[error(
        "the leader (node {leader}) cannot be reached from this node; the request was not applied"
    )]
    LeaderUnreachable { leader: u64 },
}

impl ClientError {
    /// True if a write answered with this error may or may not have been applied.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout | ClientError::LeaderChanged { .. } | ClientError::Stopped
        )
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
