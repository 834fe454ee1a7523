//! Why a node stopped ([`StopReason`]), why it could not start ([`NodeError`]), and why a peer's
//! frame was refused ([`PeerError`]): typed, so shells and the simulator match on them, never on
//! text.

use super::DiskFailure;
use crate::msgcodec::DecodeError;
use thiserror::Error;

/// Why a node stopped. One list: shells and the simulator match on it, never on text.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StopReason {
    #[error("removed from the cluster, and no member has counted on this node's vote since")]
    Removed,
    #[error("removed from the cluster: every remaining voter reports the removal applied")]
    RemovalConfirmed,
    #[error(
        "disk job {job} failed: {failure}; stopping (a failed write or fsync is never retried)"
    )]
    Disk { job: u64, failure: DiskFailure },
    #[error(
        "member {by} refuses this node: the cluster knows node {id} as incarnation {recorded:#x}, \
         but this data directory is incarnation {mine:#x}. The directory was wiped or replaced \
         since node {id} last ran, so it no longer holds what node {id} acknowledged and must not \
         vote. Replace the member: add a new member with a new id (learner first), start it with \
         --join on an empty directory, then remove node {id} (see README, \"Replacing a failed node\")"
    )]
    NotRecognized {
        by: u64,
        id: u64,
        recorded: u64,
        mine: u64,
    },
    #[error(
        "leader {leader} believes this node holds entries up to {commit} but its log ends at \
         {last_index}: the data directory lost writes it had synced (an old copy restored, or a \
         disk that lies about fsync). It must not vote; replace the member (see README)"
    )]
    LogBehindLeader {
        leader: u64,
        commit: u64,
        last_index: u64,
    },
    #[error(
        "leader {leader} holds an entry of term {leader_term} at index {index}, where this node \
         committed one of term {term}: the cluster lost writes it had committed (members \
         restarted from old copies of their data directories, or disks that lie about fsync), and \
         this node holds some of them. It stops rather than mix the two histories. Its data \
         directory keeps what the cluster lost: save it before replacing the member (see README, \
         \"Replacing a failed node\")"
    )]
    CommittedEntryConflict {
        leader: u64,
        index: u64,
        term: u64,
        leader_term: u64,
    },
    #[error(
        "leader {leader}'s entry at index {index} of term {term} is not this node's entry of that \
         index and term: two leaders were elected in one term, which takes a member that forgot \
         its vote (a data directory restarted from an old copy, or a disk that lies about fsync), \
         and the two wrote different histories. It stops rather than mix them. Its data directory \
         keeps what it holds: save it before replacing the member (see README, \"Replacing a \
         failed node\")"
    )]
    DivergentLog { leader: u64, index: u64, term: u64 },
    #[error("the snapshot at index {index} from the leader does not decode")]
    BadSnapshotFromLeader { index: u64 },
    #[error(
        "--cluster gives this node the peer URL {flag}, but its data directory knows it as \
         {recorded}, and no member reached it at {flag} within {waited_ticks} ticks: the cluster \
         still dials {recorded}. Start it with {recorded}, or change the URL through the \
         membership first (PUT /v1/members/{id} on any member with {{\"peer_url\": \"{flag}\"}}), \
         then restart it with the new one"
    )]
    PeerUrlNotConfirmed {
        id: u64,
        recorded: String,
        flag: String,
        waited_ticks: u64,
    },
}

/// Why raft-rs's `step` refused a message from the network: its error kept as which one it was
/// (`raft::Error` is neither `Clone` nor `Eq`, and a peer's frame error is both).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum RaftRefusal {
    #[error("a message type raft only takes locally")]
    LocalMessage,
    #[error("a response from a peer raft does not track")]
    PeerNotFound,
    #[error("raft failed to step it: {0}")]
    Other(&'static str),
}

impl From<raft::Error> for RaftRefusal {
    fn from(e: raft::Error) -> Self {
        match e {
            raft::Error::StepLocalMsg => RaftRefusal::LocalMessage,
            raft::Error::StepPeerNotFound => RaftRefusal::PeerNotFound,
            raft::Error::Io(_) => RaftRefusal::Other("I/O error"),
            raft::Error::Store(_) => RaftRefusal::Other("storage error"),
            raft::Error::ProposalDropped => RaftRefusal::Other("proposal dropped"),
            raft::Error::ConfigInvalid(_) => RaftRefusal::Other("invalid configuration"),
            raft::Error::CodecError(_) => RaftRefusal::Other("protobuf codec error"),
            raft::Error::Exists { .. } => RaftRefusal::Other("node already exists"),
            raft::Error::NotExists { .. } => RaftRefusal::Other("node does not exist"),
            raft::Error::ConfChangeError(_) => RaftRefusal::Other("invalid conf change"),
            raft::Error::RequestSnapshotDropped => RaftRefusal::Other("snapshot request dropped"),
        }
    }
}

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("state-machine snapshot does not decode")]
    BadSnapshot,
    #[error("data directory belongs to a node that was removed from the cluster")]
    Removed,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PeerError {
    #[error("undecodable frame: {0}")]
    Decode(#[from] DecodeError),
    #[error("frame from a node of another cluster ({0:#x}). A node added to a running cluster but started without --join bootstraps a cluster of its own: stop it, empty its data directory and start it with --join")]
    WrongCluster(u64),
    #[error("frame for node {0}")]
    WrongRecipient(u64),
    #[error("frame for incarnation {addressed:#x} of this node, which is {mine:#x}")]
    OldIncarnation { addressed: u64, mine: u64 },
    #[error("frame from node {from} incarnation {sent:#x}; the membership records {recorded:#x}")]
    StaleIncarnation { from: u64, sent: u64, recorded: u64 },
    #[error("frame from unknown or removed node {0}")]
    UnknownSender(u64),
    #[error("heartbeat commits {commit} beyond this node's last index {last_index}")]
    CommitBeyondLog { commit: u64, last_index: u64 },
    #[error(
        "the leader's log has term {leader_term} at index {index}, committed here with term {term}"
    )]
    CommittedEntryConflict {
        index: u64,
        term: u64,
        leader_term: u64,
    },
    #[error("the leader's entry at index {index} of term {term} differs from this node's")]
    DivergentEntry { index: u64, term: u64 },
    #[error("raft refused the message: {0}")]
    Raft(RaftRefusal),
    #[error("snapshot chunk of term {term}, this node is in term {current}")]
    StaleSnapshotChunk { term: u64, current: u64 },
    #[error("a snapshot message for index {index} whose metadata (index, term, a configuration with voters) is not the verified file's")]
    SnapshotMessageMismatch { index: u64 },
    #[error("campaign deferred until the installed snapshot is durable")]
    CampaignDeferred,
    /// A copy of a forwarded request already taken (a duplicate or delayed frame): dropped, so a
    /// request answered "not applied" is never proposed after all (`node::forwards_seen`).
    #[error("a copy of forwarded request {forward_id:#x}, already taken")]
    DuplicateForward { forward_id: u64 },
    #[error("node stopped")]
    Stopped,
}
