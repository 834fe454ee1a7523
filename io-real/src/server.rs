//! The event loop: one task owns the `Node` and feeds it ticks, peer frames, client requests
//! and disk completions; after each batch of inputs it executes the node's actions.

use crate::disk::{BackgroundJob, DiskResult};
use crate::peer::{Peers, SendReport};
use raftkv_core::command::RequestId;
use raftkv_core::health::Readiness;
use raftkv_core::node::{
    Action, ClientError, ClientOp, ClientReply, ClientRequest, DiskJob, Event, Node, NodeStatus,
    ReadJob, SendOutcome, StopReason,
};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most inputs handled before the node's actions are executed.
const MAX_INPUTS_PER_BATCH: usize = 1024;

pub type ClientResult = Result<ClientReply, ClientError>;

pub enum Input {
    Peer {
        conn_id: u64,
        bytes: Vec<u8>,
    },
    SendReport(SendReport),
    Client {
        op: ClientOp,
        request_id: Option<RequestId>,
        reply: oneshot::Sender<ClientResult>,
    },
    Status(oneshot::Sender<StatusView>),
    Disk(DiskResult),
}

/// Counters for /metrics.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub client_requests: u64,
    pub client_errors: u64,
    pub peer_frames_in: u64,
    pub peer_frames_rejected: u64,
    pub peer_frames_out: u64,
    pub peer_frames_dropped: u64,
    pub disk_jobs: u64,
    pub disk_syncs: u64,
    /// WAL segments zero-filled ahead of the cut that takes them.
    pub wal_spares_prepared: u64,
    pub snapshot_jobs: u64,
    pub snapshot_bytes_total: u64,
    pub snapshots_saved: u64,
    pub snapshots_installed: u64,
    pub snapshot_bytes_sent: u64,
    pub snapshot_sends_failed: u64,
    pub compactions: u64,
    pub purges: u64,
    pub elections_won: u64,
}

#[derive(Clone, Debug)]
pub struct StatusView {
    pub status: NodeStatus,
    pub counters: Counters,
    pub readiness: Readiness,
}

/// How the loop ended.
pub enum Exit {
    Shutdown,
    Stopped(StopReason),
}

/// The disk threads a server hands jobs to, one channel each.
pub struct Lanes {
    /// The WAL's jobs, strictly in order.
    pub disk: std::sync::mpsc::Sender<DiskJob>,
    /// Snapshot files.
    pub snapshots: std::sync::mpsc::Sender<BackgroundJob>,
    /// Files prepared ahead (the WAL's spare segments).
    pub prepares: std::sync::mpsc::Sender<BackgroundJob>,
    /// Chunks of snapshot files streaming to followers.
    pub reads: std::sync::mpsc::Sender<ReadJob>,
}

pub struct Server {
    pub node: Node,
    pub peers: Peers,
    pub disk: Option<std::sync::mpsc::Sender<DiskJob>>,
    pub snapshots: Option<std::sync::mpsc::Sender<BackgroundJob>>,
    pub prepares: Option<std::sync::mpsc::Sender<BackgroundJob>>,
    pub reads: Option<std::sync::mpsc::Sender<ReadJob>>,
    pub timeout_ticks: u64,
    pending: HashMap<u64, oneshot::Sender<ClientResult>>,
    next_handle: u64,
    counters: Counters,
}

impl Server {
    pub fn new(node: Node, peers: Peers, lanes: Lanes, timeout_ticks: u64) -> Self {
        Server {
            node,
            peers,
            disk: Some(lanes.disk),
            snapshots: Some(lanes.snapshots),
            prepares: Some(lanes.prepares),
            reads: Some(lanes.reads),
            timeout_ticks,
            pending: HashMap::new(),
            next_handle: 1,
            counters: Counters::default(),
        }
    }

    pub async fn run(
        &mut self,
        mut inputs: mpsc::Receiver<Input>,
        tick: Duration,
        mut shutdown: oneshot::Receiver<()>,
    ) -> Exit {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Startup first: recovery's events (loaded snapshot, repaired tail, files set aside) are
        // logged and its repair job issued before any request is answered.
        self.execute();
        loop {
            tokio::select! {
                _ = ticker.tick() => self.node.tick(),
                input = inputs.recv() => {
                    let Some(input) = input else {
                        self.node.shut_down();
                        self.execute();
                        return Exit::Shutdown;
                    };
                    if let Some(exit) = self.handle(input) {
                        return exit;
                    }
                    for _ in 1..MAX_INPUTS_PER_BATCH {
                        match inputs.try_recv() {
                            Ok(input) => {
                                if let Some(exit) = self.handle(input) {
                                    return exit;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ = &mut shutdown => {
                    // Every request the node holds gets its answer (core decides which).
                    self.node.shut_down();
                    self.execute();
                    return Exit::Shutdown;
                }
            }
            self.execute();
            if let Some(reason) = self.node.stopped() {
                return Exit::Stopped(reason.clone());
            }
        }
    }

    fn handle(&mut self, input: Input) -> Option<Exit> {
        match input {
            Input::Peer { conn_id, bytes } => {
                self.counters.peer_frames_in += 1;
                if let Err(e) = self.node.receive(&bytes) {
                    self.counters.peer_frames_rejected += 1;
                    // Raft refusing a well-formed message (e.g. from a peer it no longer tracks)
                    // is routine; anything else means the connection speaks nonsense.
                    use raftkv_core::node::PeerError;
                    let routine = matches!(
                        e,
                        PeerError::Raft(_)
                            | PeerError::StaleSnapshotChunk { .. }
                            | PeerError::CampaignDeferred
                            | PeerError::DuplicateForward { .. }
                            | PeerError::StaleIncarnation { .. }
                            | PeerError::OldIncarnation { .. }
                            | PeerError::CommitBeyondLog { .. }
                            | PeerError::CommittedEntryConflict { .. }
                            | PeerError::DivergentEntry { .. }
                            | PeerError::Stopped
                    );
                    if !routine {
                        tracing::warn!(conn_id, error = %e, "dropping peer frame and closing its connection");
                        self.peers.close_conn(conn_id);
                    }
                }
            }
            Input::SendReport(r) => {
                let (to, kind) = (r.to, r.kind);
                if r.delivered {
                    self.node.sent(SendOutcome::Delivered { to, kind });
                } else {
                    self.counters.peer_frames_dropped += 1;
                    self.node.sent(SendOutcome::Failed { to, kind });
                }
            }
            Input::Client {
                op,
                request_id,
                reply,
            } => {
                self.counters.client_requests += 1;
                let handle = self.next_handle;
                self.next_handle += 1;
                self.pending.insert(handle, reply);
                self.node.client(ClientRequest {
                    handle,
                    request_id,
                    timeout_ticks: self.timeout_ticks,
                    op,
                });
            }
            Input::Status(tx) => {
                let _ = tx.send(StatusView {
                    status: self.node.status(),
                    counters: self.counters.clone(),
                    readiness: self.node.readiness(),
                });
            }
            Input::Disk(DiskResult::Done { id, syncs, elapsed }) => {
                self.counters.disk_jobs += 1;
                self.counters.disk_syncs += syncs.len() as u64;
                let fsync = metrics::histogram!(crate::metrics::WAL_FSYNC_SECONDS);
                for d in syncs {
                    fsync.record(d);
                }
                metrics::histogram!(crate::metrics::DISK_JOB_SECONDS).record(elapsed);
                self.node.disk_done(id);
            }
            Input::Disk(DiskResult::SnapshotSaved {
                id,
                size_bytes,
                elapsed,
            }) => {
                self.counters.snapshot_jobs += 1;
                metrics::histogram!(crate::metrics::SNAPSHOT_SAVE_SECONDS).record(elapsed);
                self.counters.snapshot_bytes_total += size_bytes;
                self.node.snapshot_saved(id, size_bytes);
            }
            Input::Disk(DiskResult::Prepared { id, elapsed }) => {
                self.counters.wal_spares_prepared += 1;
                tracing::debug!(job = id, ?elapsed, "WAL spare segment prepared");
                self.node.disk_done(id);
            }
            Input::Disk(DiskResult::Read { id, result }) => {
                if let Ok(bytes) = &result {
                    self.counters.snapshot_bytes_sent += bytes.len() as u64;
                }
                self.node.read_done(id, result);
            }
            Input::Disk(DiskResult::Failed {
                id,
                failure,
                detail,
            }) => {
                tracing::error!(job = id, %failure, %detail, "disk job failed");
                self.node.disk_failed(id, failure);
            }
        }
        None
    }

    fn execute(&mut self) {
        for action in self.node.drain() {
            match action {
                Action::Disk(job) => {
                    if let Some(d) = &self.disk {
                        // The disk thread only goes away after a failure, which ends the loop.
                        let _ = d.send(job);
                    }
                }
                Action::Snapshot(job) => {
                    if let Some(s) = &self.snapshots {
                        let _ = s.send(BackgroundJob::Snapshot(Box::new(job)));
                    }
                }
                Action::Prepare(job) => {
                    if let Some(s) = &self.prepares {
                        let _ = s.send(BackgroundJob::Prepare(job));
                    }
                }
                Action::Read(job) => {
                    if let Some(r) = &self.reads {
                        let _ = r.send(job);
                    }
                }
                Action::Send(o) => {
                    let addr = self
                        .node
                        .peer_address(o.to)
                        .and_then(|u| crate::cli::peer_socket_addr(u).ok());
                    let sent = match addr {
                        Some(addr) => self.peers.send(o.to, &addr, o.bytes, o.kind),
                        None => false,
                    };
                    if sent {
                        self.counters.peer_frames_out += 1;
                    } else {
                        self.counters.peer_frames_dropped += 1;
                        self.node.sent(SendOutcome::Failed {
                            to: o.to,
                            kind: o.kind,
                        });
                    }
                }
                Action::Reply { handle, result } => {
                    if result.is_err() {
                        self.counters.client_errors += 1;
                    }
                    if let Some(tx) = self.pending.remove(&handle) {
                        let _ = tx.send(result);
                    }
                }
                Action::Event(e) => self.log_event(e),
            }
        }
    }

    fn log_event(&mut self, e: Event) {
        match e {
            Event::LoadingSnapshot { term, index } => {
                tracing::info!("loading snapshot at term {term} and index {index}")
            }
            Event::Recovered {
                report,
                entry_count,
                commit,
                ..
            } => {
                if let Some(t) = &report.torn_tail {
                    tracing::warn!(segment = %t.segment, offset = t.offset, reason = ?t.reason, "repairing torn WAL tail");
                }
                for (file, reason) in &report.set_aside {
                    tracing::warn!(%file, %reason, "snapshot file is corrupt; set aside as .broken, using an older one");
                }
                tracing::info!(entry_count, commit, "replayed WAL");
            }
            Event::CommitClamped { from, to } => {
                tracing::warn!(from, to, "persisted commit beyond the log; clamped")
            }
            Event::AppendReindexed {
                to,
                index_was,
                index,
            } => {
                tracing::debug!(to, index_was, index, "repaired a raft-rs batched append")
            }
            Event::AppendEntriesDropped { to, count } => {
                tracing::warn!(
                    to,
                    count,
                    "raft-rs batched entries after an unknown term; not sent"
                )
            }
            Event::StartSnapshot {
                applied_index,
                last_snapshot_index,
            } => {
                tracing::info!("start snapshot [applied index: {applied_index} | last snapshot index: {last_snapshot_index}]")
            }
            Event::SnapshotSuperseded { index } => {
                tracing::info!(
                    index,
                    "discarded local snapshot: a newer one from the leader was installed meanwhile"
                )
            }
            Event::SnapshotSaved { term, index } => {
                self.counters.snapshots_saved += 1;
                tracing::info!(term, index, "saved snapshot")
            }
            Event::CompactedLog { index } => {
                self.counters.compactions += 1;
                tracing::info!("compacted log at index {index}")
            }
            Event::SnapshotInstalled { term, index } => {
                self.counters.snapshots_installed += 1;
                tracing::info!(term, index, "installed snapshot from the leader")
            }
            Event::Purged {
                segments,
                snapshots,
            } => {
                self.counters.purges += 1;
                tracing::info!(
                    segments,
                    snapshots,
                    "purged old WAL segments and snapshot files"
                )
            }
            Event::RoleChanged { term, role, leader } => {
                if role == raftkv_core::node::StateRole::Leader {
                    self.counters.elections_won += 1;
                }
                tracing::info!(term, ?role, leader, "raft role changed")
            }
            Event::MemberAdded { id, addr } => tracing::info!(id, %addr, "member added"),
            Event::MemberRemoved { id } => tracing::info!(id, "member removed"),
            Event::LearnerAdded { id, addr } => tracing::info!(id, %addr, "learner added"),
            Event::LearnerPromoted { id } => tracing::info!(id, "learner promoted to voter"),
            Event::RemovedFromCluster => {
                tracing::warn!("this node was removed from the cluster; stopping")
            }
            Event::EntrySkipped { index, reason } => {
                tracing::warn!(index, %reason, "skipped entry")
            }
            Event::Booted {
                kind,
                cluster_id,
                incarnation,
            } => {
                if kind == raftkv_core::boot::BootKind::Unfinished {
                    tracing::warn!("this data directory's first start never completed (a crash before its bootstrap was durable); the node never spoke, so it starts over as a new one");
                }
                tracing::info!(
                    ?kind,
                    cluster_id = format_args!("{cluster_id:#x}"),
                    incarnation = format_args!("{incarnation:#x}"),
                    "data directory identity"
                )
            }
            Event::ClusterAdopted { cluster_id, from } => tracing::info!(
                cluster_id = format_args!("{cluster_id:#x}"),
                from,
                "joined cluster"
            ),
            Event::IncarnationProposed { id, incarnation } => tracing::info!(
                id,
                incarnation = format_args!("{incarnation:#x}"),
                "recording member incarnation"
            ),
            Event::PeerRefused { from, error } => {
                tracing::warn!(from, %error, "refused a peer: its data directory is not the one the cluster knows")
            }
            Event::Stopped { reason } => tracing::error!(%reason, "node stopped"),
            Event::PeerUrlUnconfirmed { recorded, flag } => tracing::warn!(
                %recorded,
                %flag,
                "started on a peer URL this data directory does not know; waiting for a member to reach it there"
            ),
            Event::StillWaitingToJoin { waited_ticks } => tracing::warn!(
                waited_ticks,
                "started with --join, and no member has reached this node yet: add it first on a member (POST /v1/members, or raftexample's POST /ID with its peer URL), with the peer URL its --cluster gives it; an id once removed is never let back"
            ),
            Event::PeerUrlConfirmed { url } => {
                tracing::info!(%url, "a member reached this node at its new peer URL")
            }
            Event::SnapshotSendStarted {
                to,
                index,
                file_bytes,
            } => tracing::info!(to, index, file_bytes, "streaming snapshot file to follower"),
            Event::SnapshotSendResumed { to, index, offset } => {
                tracing::info!(
                    to,
                    index,
                    offset,
                    "follower had part of the snapshot: resuming"
                )
            }
            Event::SnapshotChunksResent { to, index, offset } => {
                tracing::debug!(to, index, offset, "resending snapshot chunks")
            }
            Event::SnapshotSent { to, index } => {
                tracing::info!(to, index, "follower received the snapshot file")
            }
            Event::SnapshotSendFailed { to, index, why } => {
                self.counters.snapshot_sends_failed += 1;
                tracing::warn!(to, index, %why, "snapshot transfer failed; raft retries")
            }
            Event::SnapshotSetAside { name } => tracing::error!(
                file = %name,
                "a follower found this snapshot file damaged; set aside as .broken, taking a new snapshot"
            ),
            Event::SnapshotReceived {
                from,
                index,
                file_bytes,
            } => tracing::info!(
                from,
                index,
                file_bytes,
                "received and verified snapshot file"
            ),
            Event::SnapshotRefused { from, index, why } => {
                tracing::warn!(from, index, %why, "refused a snapshot file from the leader")
            }
            Event::SnapshotReceiveAbandoned {
                from,
                index,
                received_bytes,
            } => tracing::warn!(
                from,
                index,
                received_bytes,
                "snapshot transfer fell silent; partial file removed"
            ),
            Event::Applied { index, .. } => tracing::trace!(index, "applied"),
            Event::Durable { hard_state } => tracing::trace!(?hard_state, "durable"),
        }
    }
}
