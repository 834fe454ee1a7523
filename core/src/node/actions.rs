//! What a node hands its shell ([`Action`]s: disk jobs, snapshot jobs, reads, sends, replies,
//! events) and what the shell reports back about them ([`DiskFailure`], [`SendOutcome`]).

use super::{ClientError, ClientReply, PeerError, RejectReason, StateRole, StopReason};
use crate::command::RequestId;
use crate::fileop::FileOp;
use crate::kv::{KvState, SnapshotEncoder};
use crate::recovery::RecoveryReport;
use crate::snapfile::{self, SnapshotMeta};
use crate::transfer::{ChunkRefusal, ReadJob, SendFailure};
use crate::wal::HardStateRec;
use thiserror::Error;

/// A batch of file operations to execute in order; report completion with `disk_done(id)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskJob {
    pub id: u64,
    pub ops: Vec<FileOp>,
}

/// An encoded peer message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: u64,
    /// What the frame carries: report it back in [`SendOutcome`], so the node knows what a failed
    /// send lost.
    pub kind: FrameKind,
    pub bytes: Vec<u8>,
}

/// What an outgoing frame carries, as far as a failed send matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A raft message (raft learns the peer is unreachable).
    Raft,
    /// A chunk of a snapshot file (the transfer goes back to what the receiver has).
    SnapshotChunk,
    /// A client request forwarded to the leader: if it never left, the request was not applied,
    /// and its client is told so at once.
    Forward { forward_id: u64 },
    /// Anything else (replies, acknowledgements, notices).
    Other,
}

/// Things worth logging (and counting): the seed article's log lines among them. Serialises as
/// a JSON object with a `type` (the variant in snake case) and the variant's fields, so a trace
/// is read by field, not by parsing Debug text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The node started from its data directory (first event of every start).
    Booted {
        kind: crate::boot::BootKind,
        cluster_id: u64,
        incarnation: u64,
    },
    LoadingSnapshot {
        term: u64,
        index: u64,
    },
    Recovered {
        report: RecoveryReport,
        entry_count: usize,
        commit: u64,
        /// The HardState recovered from the WAL (before any clamping).
        hard_state: HardStateRec,
    },
    /// A job holding this HardState completed: it is durable.
    Durable {
        hard_state: HardStateRec,
    },
    CommitClamped {
        from: u64,
        to: u64,
    },
    /// raft-rs batched entries into an append whose index they do not follow; the node moved
    /// the message's index back to them (see `node::raft_rs_guard`).
    AppendReindexed {
        to: u64,
        index_was: u64,
        index: u64,
    },
    /// The same, but the term before the entries was unknown: they were not sent.
    AppendEntriesDropped {
        to: u64,
        count: usize,
    },
    StartSnapshot {
        applied_index: u64,
        last_snapshot_index: u64,
    },
    SnapshotSaved {
        term: u64,
        index: u64,
    },
    /// A local snapshot finished after a newer one from the leader was installed: discarded.
    SnapshotSuperseded {
        index: u64,
    },
    CompactedLog {
        index: u64,
    },
    SnapshotInstalled {
        term: u64,
        index: u64,
    },
    Purged {
        segments: usize,
        snapshots: usize,
    },
    RoleChanged {
        term: u64,
        #[serde(serialize_with = "role_name")]
        role: StateRole,
        leader: u64,
    },
    MemberAdded {
        id: u64,
        addr: String,
    },
    MemberRemoved {
        id: u64,
    },
    LearnerAdded {
        id: u64,
        addr: String,
    },
    LearnerPromoted {
        id: u64,
    },
    RemovedFromCluster,
    EntrySkipped {
        index: u64,
        reason: RejectReason,
    },
    /// A joining node learned its cluster's id from the first member that reached it.
    ClusterAdopted {
        cluster_id: u64,
        from: u64,
    },
    /// The leader proposed recording a member's incarnation (first contact).
    IncarnationProposed {
        id: u64,
        incarnation: u64,
    },
    /// A peer's frame was refused because of who sent it (identity), not how it was encoded.
    PeerRefused {
        from: u64,
        #[serde(serialize_with = "display")]
        error: PeerError,
    },
    /// Started on a peer URL its directory does not know; waiting for a member to reach it there.
    PeerUrlUnconfirmed {
        recorded: String,
        flag: String,
    },
    /// A member reached this node at its new peer URL.
    PeerUrlConfirmed {
        url: String,
    },
    /// Started with `--join`, and no member has reached it yet (repeated while that lasts): it
    /// was not added first, or was added with another peer URL, or was removed.
    StillWaitingToJoin {
        waited_ticks: u64,
    },
    /// The node stopped; no further input is processed.
    Stopped {
        #[serde(serialize_with = "display")]
        reason: StopReason,
    },
    /// The leader began streaming its snapshot file to a follower.
    SnapshotSendStarted {
        to: u64,
        index: u64,
        file_bytes: u64,
    },
    /// A follower had part of this snapshot from an earlier transfer: sending resumes there.
    SnapshotSendResumed {
        to: u64,
        index: u64,
        offset: u64,
    },
    /// Chunks from `offset` on are sent again (one was lost, reordered or corrupted).
    SnapshotChunksResent {
        to: u64,
        index: u64,
        offset: u64,
    },
    SnapshotSent {
        to: u64,
        index: u64,
    },
    SnapshotSendFailed {
        to: u64,
        index: u64,
        #[serde(serialize_with = "display")]
        why: SendFailure,
    },
    /// A follower found the leader's snapshot file damaged: it is set aside and a new one made.
    SnapshotSetAside {
        name: String,
    },
    /// A follower received a whole snapshot file and verified it.
    SnapshotReceived {
        from: u64,
        index: u64,
        file_bytes: u64,
    },
    /// A follower refused a snapshot file (it does not verify).
    SnapshotRefused {
        from: u64,
        index: u64,
        why: ChunkRefusal,
    },
    /// A snapshot transfer fell silent, or gave way to a newer snapshot; its partial file was
    /// removed.
    SnapshotReceiveAbandoned {
        from: u64,
        index: u64,
        received_bytes: u64,
    },
    /// An entry was applied (one per entry; shells may ignore it, checkers compare replicas).
    Applied {
        index: u64,
        term: u64,
        /// FNV-1a of the entry's type, data and context, when `NodeConfig::trace_applied` asks
        /// for it (a checker comparing replicas); `None` otherwise.
        entry_hash: Option<u64>,
        request_id: Option<RequestId>,
    },
}

/// A role by its name in traces: `follower`, `candidate`, `leader`, `pre_candidate`.
fn role_name<S: serde::Serializer>(role: &StateRole, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match role {
        StateRole::Follower => "follower",
        StateRole::Candidate => "candidate",
        StateRole::Leader => "leader",
        StateRole::PreCandidate => "pre_candidate",
    })
}

/// An error by its message (it names its own fields).
fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Serialise the state machine as of `meta.index` and write it as a snapshot file. CPU-heavy and
/// a large write, so a shell runs it beside (never inside) the WAL's disk jobs: execute the ops of
/// [`SnapshotJob::write`] in order as it yields them, then report with
/// `snapshot_saved(id, file_bytes)`.
#[derive(Clone, PartialEq, Eq)]
pub struct SnapshotJob {
    pub id: u64,
    pub meta: SnapshotMeta,
    /// A clone of the state at `meta.index`: persistent maps, so taking it cost O(1) and later
    /// writes do not reach it.
    state: KvState,
    piece_bytes: usize,
}

impl SnapshotJob {
    /// A job capturing `state`, which must be the state at `meta.index`.
    pub(super) fn new(id: u64, meta: SnapshotMeta, state: KvState, piece_bytes: usize) -> Self {
        assert_eq!(
            state.applied_index(),
            meta.index,
            "a snapshot job of another index"
        );
        SnapshotJob {
            id,
            meta,
            state,
            piece_bytes,
        }
    }

    /// The file's length, and its ops: the payload is encoded piece by piece as the ops are
    /// taken, so memory stays at one piece whatever the state's size. Pure: any thread.
    pub fn write(&self) -> (u64, impl Iterator<Item = FileOp> + '_) {
        debug_assert_eq!(self.state.applied_index(), self.meta.index);
        let data_len = SnapshotEncoder::encoded_len(&self.state);
        let pieces = SnapshotEncoder::new(&self.state, self.piece_bytes);
        let file_bytes = snapfile::file_len(&self.meta, data_len);
        (
            file_bytes,
            snapfile::StreamWriter::new(&self.meta, data_len, pieces),
        )
    }
}

impl std::fmt::Debug for SnapshotJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotJob({}, {:?})", self.id, self.meta)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Disk(DiskJob),
    /// Runs concurrently with `Disk` jobs; at most one at a time.
    Snapshot(SnapshotJob),
    /// Read part of a snapshot file (to stream it to a follower); runs beside both lanes, on a
    /// file no job writes or removes while it is read.
    Read(ReadJob),
    /// Prepares a file the WAL will need (its next segment, zero-filled), beside the WAL's
    /// jobs: never inside that lane, since it writes a whole segment. At most one at a time;
    /// report with `disk_done(id)` or `disk_failed(id, ..)`.
    Prepare(DiskJob),
    Send(Outgoing),
    Reply {
        handle: u64,
        result: Result<ClientReply, ClientError>,
    },
    Event(Event),
}

/// A disk job that failed; the shell reports it with [`Node::disk_failed`](super::Node::disk_failed). Never retried: after
/// a failed fsync the kernel may already have dropped the dirty pages.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{op} failed on {}: {kind}", file.as_deref().unwrap_or("the data directory"))]
pub struct DiskFailure {
    /// The operation that failed (`write`, `fsync`, `rename`, ...).
    pub op: &'static str,
    pub file: Option<String>,
    pub kind: std::io::ErrorKind,
}

/// What became of an `Action::Send`, reported with [`Node::sent`](super::Node::sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Handed to the transport.
    Delivered { to: u64, kind: FrameKind },
    /// Never sent whole (no address, queue full, connection refused or in backoff, a write
    /// failed before the frame's last byte): the peer cannot have received it.
    Failed { to: u64, kind: FrameKind },
}
