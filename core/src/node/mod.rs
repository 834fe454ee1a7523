//! The replicated node: raft-rs's `RawNode` driven purely by inputs, in raft-rs's Ready order.
//!
//! A node is started by [`crate::boot::boot`] from its data directory and flags. Inputs:
//! [`Node::tick`], [`Node::receive`] (peer bytes), [`Node::client`] (requests),
//! [`Node::disk_done`] / [`Node::disk_failed`] (completion or failure of a [`DiskJob`]),
//! [`Node::snapshot_saved`] (completion of a [`SnapshotJob`]), [`Node::sent`] (what became of a
//! send). Outputs: [`Action`]s taken with [`Node::drain`]. A node that stops (removed, a disk
//! failure, refused by its peers) says why in [`Node::stopped`] and answers everything pending.
//! Which answer a request gets is decided here, never in a shell: a request never proposed gets a
//! definite error (held at most [`no_leader_hold_ticks`] when no leader is known), and only one
//! proposed, or forwarded to a leader that may have proposed it, is "outcome unknown"
//! ([`ClientError::outcome_unknown`]).
//!
//! Identity: every frame carries the cluster id and both ends' incarnations. A frame from an
//! incarnation the membership does not hold is refused (its votes and acks never count) and
//! answered with a refusal that stops the sender; a frame addressed to an earlier incarnation of
//! this node is dropped; the leader records each member's incarnation on first contact.
//!
//! Persistence follows the Ready contract in async form. Each Ready's entries, HardState and
//! snapshot become `FileOp`s in a staged job; at most one job is in flight; everything staged
//! while it runs rides the next job and its one sync (group commit). Messages raft marks as
//! "persisted" (votes, append responses) are held *inside* the node and released only when the
//! job holding their Ready completes, so a shell cannot send them early. A leader's own messages
//! go out at once (it replicates while it syncs). Committed entries are applied as soon as raft
//! hands them out (raft only hands out persisted ones), writes are answered after apply.
//!
//! A snapshot of the state machine is a second lane: the node hands out a [`SnapshotJob`] holding
//! an O(1) clone of the state, a shell serialises it and writes the file beside the WAL's jobs,
//! and only once that file is durable does the node log its WAL marker and compact. Writes never
//! wait for a snapshot to be serialised or synced.
//!
//! This file orchestrates: it drives raft-rs, calls the sub-states beside it and turns what
//! they return into [`Action`]s, in the order the effects must happen (`snapshot_flow` holds
//! the part of it that carries out the snapshot lane's and transfers' decisions). Each sub-state is a
//! struct that owns its fields and asserts its invariants (in release builds too); input only
//! ever gets a refusal. `persist` (the next disk job and the one in flight; HardState
//! monotone), `pending` (every request held and where its answer goes, an applied proposal's
//! answer; tables bounded, each request answered once), `snapshots` (the snapshot lane: files on
//! disk, one job at a time, never beside startup's, when one starts, its file operations and
//! WAL markers, the purge after it; the index only moves forward), `transfers` (both ends of
//! snapshot transfers, over `crate::transfer`, and the received file the next Ready installs),
//! `peers` (what the node knows of its peers beyond the applied membership, the incarnations
//! the leader records), `forwards_seen` (forwarded requests already taken from each sender, so
//! no copy is proposed), `membership` (its own peer URL and removal, and the rules a membership
//! change must pass), `spare` (the WAL's next segment, zero-filled off its lane), `election`
//! (seeded election timeouts), `outbox` (the actions handed out, frames held until the startup
//! job is durable), `status` (the leader's commit heard, for readiness). Beside them, functions
//! without state: `frames` (a frame's admission: a verdict from the envelope and the identity
//! and membership it reads), `requests` (where a client request goes and what serving it is),
//! `status` (`NodeStatus` and `Readiness` from a borrowed view), `restore` (what a starting node
//! is built from), `apply` (one committed entry decoded once), `raft_rs_guard` (repairs of
//! messages raft-rs 0.7 gets wrong).
//! The public types live in `config` ([`NodeConfig`], [`Bootstrap`]), `actions` ([`Action`],
//! [`Event`], ...), `errors` ([`StopReason`], [`NodeError`], [`PeerError`]) and `status`
//! ([`NodeStatus`]), re-exported here.

pub use crate::client::{ClientError, ClientOp, ClientReply, ClientRequest, RejectReason};
mod actions;
mod apply;
mod config;
mod election;
mod errors;
mod forwards_seen;
mod frames;
mod log_matching;
mod membership;
mod outbox;
mod peers;
mod pending;
mod persist;
mod raft_rs_guard;
mod requests;
mod restore;
mod snapshot_flow;
mod snapshots;
mod spare;
mod status;
mod transfers;

pub use actions::{
    Action, DiskFailure, DiskJob, Event, FrameKind, Outgoing, SendOutcome, SnapshotJob,
};
use config::raft_config;
pub use config::{no_leader_hold_ticks, Bootstrap, NodeConfig};
use election::ElectionTimeouts;
pub use errors::{NodeError, PeerError, RaftRefusal, StopReason};
use frames::{Admission, Learn, RaftCheck, Verdict};
use requests::{Route, Serve};
pub use restore::Restored;
use status::LeaderCommit;
pub use status::NodeStatus;

use crate::command::{MemberChange, MemberProposal, Proposal, RequestId};
use crate::compaction;
use crate::convert::hs_to_rec;
use crate::fileop::FileOp;
use crate::health::Readiness;
use crate::identity::{Identity, UNKNOWN_CLUSTER};
use crate::kv::KvState;
use crate::msgcodec::Forward;
use crate::msgcodec::{self, Recipient, Refusal};
use crate::planted::{active as planted, PlantedBug};
use crate::rng::Rng;
use crate::storage::NodeStorage;
pub use crate::transfer::ReadJob;
use membership::{conf_change_of, Membership};
use outbox::Outbox;
use peers::Peers;
use pending::{AwaitingLeader, Pending, PendingKind, PendingProposal, PendingRead};
use persist::Persistence;
use raft::eraftpb::{ConfChangeV2, Entry, Message};
use raft::RawNode;
pub use raft::StateRole;
use snapshots::SnapshotLane;
use spare::Spares;
use std::collections::BTreeMap;
use transfers::Transfers;

/// Where a reply goes: the local shell, or back to the follower that forwarded the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyTo {
    Local(u64),
    Remote { peer: u64, forward_id: u64 },
}

pub struct Node {
    cfg: NodeConfig,
    /// Cluster id and incarnation this node speaks with (the data directory's identity file).
    identity: Identity,
    raw: RawNode<NodeStorage>,
    kv: KvState,
    /// The next disk job and the one in flight (raft-rs's persistence order).
    persist: Persistence,
    now_tick: u64,
    /// Election timeouts drawn from the node's seeded RNG, not raft-rs's.
    timeouts: ElectionTimeouts,
    role: StateRole,
    leader_id: u64,
    /// The actions `drain` hands out, and frames held until the startup job is durable.
    out: Outbox,
    /// Every client request held and not yet answered.
    pending: Pending,
    /// What this node knows of its peers beyond the membership it applied.
    peers: Peers,
    /// Forward ids already taken from each sender, so a copy is never proposed.
    forwards_seen: forwards_seen::ForwardsSeen,
    /// The snapshots on disk, the snapshot job, the startup job it may not run beside.
    snapshots: SnapshotLane,
    /// The WAL's next segment, prepared off its lane.
    spares: Spares,
    /// Its own place in the membership: its peer URL, and whether it applied its own removal.
    membership: Membership,
    /// Both ends of snapshot transfers, and the received file the next Ready installs.
    transfers: Transfers,
    stopped: Option<StopReason>,
    /// Set by [`Node::shut_down`]: pending requests were answered; nothing more is processed.
    shut_down: bool,
    /// The highest commit a leader sent this node in its term, for readiness.
    leader_commit: LeaderCommit,
}

impl Node {
    /// Starts a node from what recovery found (or from nothing). The returned node has already
    /// queued a disk job (WAL creation or repairs): drain it and execute it first.
    /// `first_ops` run before anything else (boot's identity file). Crate-private: shells start
    /// nodes with [`crate::boot::boot`], which checks the data directory against the flags.
    pub(crate) fn start(
        cfg: NodeConfig,
        identity: Identity,
        restored: Option<Restored>,
        bootstrap: Bootstrap,
        first_ops: Vec<FileOp>,
    ) -> Result<Node, NodeError> {
        assert_eq!(identity.node_id, cfg.id, "identity of another node");
        let restore::Start {
            kv,
            wal,
            storage,
            ops,
            events,
            snapshots_on_disk,
        } = restore::start_state(&cfg, identity.cluster_id, restored, &bootstrap, first_ops)?;
        let applied = kv.applied_index();
        let snapshot_index = storage
            .latest_snapshot()
            .map_or(0, |s| s.get_metadata().index);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config(&cfg, applied), storage, &logger)?;
        let mut rng = Rng::new(cfg.seed ^ cfg.id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Ids that travel the network start at a random point per incarnation (see ForwardReply).
        let first_forward_id = rng.next_u64() >> 1;
        let first_read_id = rng.next_u64() >> 1;
        let cfg_transfer = cfg.clone();
        let mut node = Node {
            timeouts: ElectionTimeouts::new(rng, cfg.election_tick),
            cfg,
            identity,
            raw,
            kv,
            persist: Persistence::new(wal, ops),
            now_tick: 0,
            role: StateRole::Follower,
            leader_id: 0,
            out: Outbox::new(events),
            pending: Pending::new(
                cfg_transfer.max_pending_proposals,
                cfg_transfer.max_pending_reads,
                first_read_id,
                first_forward_id,
            ),
            peers: Peers::default(),
            forwards_seen: forwards_seen::ForwardsSeen::default(),
            snapshots: SnapshotLane::new(snapshot_index, snapshots_on_disk),
            spares: Spares::new(cfg_transfer.wal_spare_segments),
            membership: Membership::default(),
            transfers: Transfers::new(&cfg_transfer),
            stopped: None,
            shut_down: false,
            leader_commit: LeaderCommit::default(),
        };
        node.issue_job();
        let startup = node.persist.in_flight_id();
        node.snapshots.set_startup_job(startup);
        if startup.is_none() {
            node.spares.arm();
            node.out.release();
        }
        // A lone voter need not wait out an election timeout to lead.
        let voters = &node.raw.raft.prs().conf().voters().ids();
        if voters.len() == 1 && voters.contains(node.cfg.id) {
            node.raw.campaign()?;
        }
        Ok(node)
    }

    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    /// The URL from the flags; `moved` is (recorded, flag) when they disagree with the directory.
    pub(crate) fn set_own_url(&mut self, own_url: Option<String>, moved: Option<(String, String)>) {
        let unconfirmed = self
            .membership
            .set_own_url(&self.cfg, self.now_tick, own_url, moved);
        self.out.events(unconfirmed);
    }

    pub(crate) fn push_event(&mut self, e: Event) {
        self.out.event_first(e);
    }

    /// Why the node stopped (removed, a disk failure, refused by its peers), if it did.
    pub fn stopped(&self) -> Option<&StopReason> {
        self.stopped.as_ref()
    }

    /// The identity this node speaks with (cluster id, incarnation).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn kv(&self) -> &KvState {
        &self.kv
    }

    /// The voters of raft's configuration (both halves of a joint one), in order: empty only for
    /// a joiner that has not received its first snapshot.
    pub fn voters(&self) -> Vec<u64> {
        let mut voters: Vec<u64> = self.raw.raft.prs().conf().voters().ids().iter().collect();
        voters.sort_unstable();
        voters
    }

    pub fn members(&self) -> &BTreeMap<u64, String> {
        self.kv.members()
    }

    pub fn status(&self) -> NodeStatus {
        self.view().status()
    }

    /// Whether this node should be sent clients, check by check (see [`crate::health`]).
    pub fn readiness(&self) -> Readiness {
        self.view().readiness()
    }

    fn view(&self) -> status::View<'_> {
        status::View {
            cfg: &self.cfg,
            identity: &self.identity,
            raw: &self.raw,
            kv: &self.kv,
            role: self.role,
            leader_id: self.leader_id,
            persist: &self.persist,
            pending: &self.pending,
            snapshots: &self.snapshots,
            transfers: &self.transfers,
            membership: &self.membership,
            leader_commit: &self.leader_commit,
            stopped: self.stopped.as_ref(),
            shut_down: self.shut_down,
        }
    }

    /// Processes everything raft has ready and returns the actions accumulated so far.
    pub fn drain(&mut self) -> Vec<Action> {
        if self.stopped.is_none() && !self.shut_down {
            self.drive();
            self.fix_election_timeout();
        }
        self.out.take()
    }

    fn stop(&mut self, reason: StopReason) {
        if self.stopped.is_some() {
            return;
        }
        self.out.event(Event::Stopped {
            reason: reason.clone(),
        });
        self.stopped = Some(reason);
        self.answer_all_pending();
    }

    /// The shell is shutting down (SIGTERM): every pending request is answered as a stop would
    /// answer it, so a client learns whether its request could still be applied (a shell that
    /// merely dropped them could not tell). No input is processed afterwards.
    pub fn shut_down(&mut self) {
        if self.stopped.is_none() && !self.shut_down {
            self.shut_down = true;
            self.answer_all_pending();
        }
    }

    /// A stopping node's answers: what it proposed, or forwarded to a leader that may have
    /// proposed it, may still be applied (`StoppedWhilePending`); what was still waiting for a
    /// leader never left this node (`Stopped`, definite). Reads change nothing, so theirs is
    /// definite too.
    fn answer_all_pending(&mut self) {
        for (to, err) in self.pending.take_all_for_stop() {
            self.reply(to, Err(err));
        }
    }

    /// Answers every pending proposal and read with `err`.
    fn fail_pending(&mut self, err: ClientError) {
        for handle in self.pending.take_proposals_and_reads() {
            self.reply(handle, Err(err.clone()));
        }
    }

    // ---- inputs ----

    /// One logical clock tick.
    pub fn tick(&mut self) {
        if self.stopped.is_some() || self.shut_down {
            return;
        }
        self.now_tick += 1;
        if let Some(reason) = self.membership.stop_due(&self.cfg, self.now_tick) {
            return self.stop(reason);
        }
        if self.identity.cluster_id == UNKNOWN_CLUSTER
            && self
                .now_tick
                .is_multiple_of(config::join_wait_ticks(&self.cfg))
        {
            self.out.event(Event::StillWaitingToJoin {
                waited_ticks: self.now_tick,
            });
        }
        self.fix_election_timeout();
        if !self.snapshot_unpersisted() {
            self.raw.tick();
        }
        self.fix_election_timeout();
        self.expire_requests();
        self.tick_transfers();
    }

    /// A snapshot from the leader is installed but its disk job has not completed. raft-rs 0.7
    /// with async persistence then has `applied` below the compacted log (it may only advance
    /// to the snapshot once persisted), and a campaign in that window asks storage for the
    /// entries between the two to look for conf changes: `Store(Compacted)`, a panic inside
    /// raft-rs. Found by the simulator (`raftkv-sim --seed 109 --without-raft-rs-guard` shows it). The
    /// node neither ticks nor accepts `MsgTimeoutNow` until the job completes.
    fn snapshot_unpersisted(&self) -> bool {
        self.cfg.raft_rs_snapshot_campaign_guard
            && self.kv.applied_index() > self.raw.raft.raft_log.applied
    }

    /// Called after every input that steps raft (see `election`).
    fn fix_election_timeout(&mut self) {
        if self.cfg.seeded_election_timeout {
            self.timeouts.fix(&mut self.raw.raft);
        }
    }

    fn expire_requests(&mut self) {
        for (to, err) in self.pending.take_expired(self.now_tick) {
            self.reply(to, Err(err));
        }
    }

    /// A frame from a peer (transport length prefix removed). Bad frames are dropped with an
    /// error for the shell to log; the node is unaffected.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<(), PeerError> {
        let r = self.receive_frame(bytes);
        if self.stopped.is_none() {
            self.fix_election_timeout();
        }
        r
    }

    fn receive_frame(&mut self, bytes: &[u8]) -> Result<(), PeerError> {
        if self.stopped.is_some() {
            return Err(PeerError::Stopped);
        }
        let env = msgcodec::decode(bytes)?;
        let (adopt_cluster, verdict) = match frames::admit(&env, &self.frames_view()) {
            Admission::Drop(error) => return Err(error),
            Admission::Peer {
                adopt_cluster,
                verdict,
            } => (adopt_cluster, verdict),
        };
        if let Some(cluster_id) = adopt_cluster {
            self.adopt_cluster(cluster_id, env.from);
        }
        let member = match verdict {
            Verdict::NotRecognized { stop, error } => {
                self.stop(stop);
                return Err(error);
            }
            Verdict::StaleSender { answer, error } => {
                if let Some(why) = answer {
                    let to = frames::sender_of(&env);
                    let bytes = msgcodec::encode_refused(&self.sender(), to, why);
                    self.push_send(env.from, FrameKind::Other, bytes);
                }
                let from = env.from;
                let refused = error.clone();
                self.out.event(Event::PeerRefused {
                    from,
                    error: refused,
                });
                return Err(error);
            }
            Verdict::Removed { learn, error } => {
                self.learn(env.from, &env.from_addr, learn);
                let bytes = msgcodec::encode_removed(&self.sender(), frames::sender_of(&env));
                self.push_send(env.from, FrameKind::Other, bytes);
                return Err(error);
            }
            Verdict::Accept { learn, member } => {
                self.learn(env.from, &env.from_addr, learn);
                member
            }
        };
        if member {
            self.peers.heard(env.from, self.now_tick);
            let confirmed = self.membership.member_reached_us();
            self.out.events(confirmed);
        }
        match env.body {
            msgcodec::Body::Raft(mut m) => {
                if member {
                    self.membership.counted_on(self.now_tick);
                }
                if let Err(index) = log_matching::check(&mut m, &self.raw.raft.raft_log) {
                    let term = m.log_term;
                    self.stop(StopReason::DivergentLog {
                        leader: env.from,
                        index,
                        term,
                    });
                    return Err(PeerError::DivergentEntry { index, term });
                }
                match self.check_raft(env.from, &m) {
                    RaftCheck::Step => self.step_raft(env.from, m),
                    RaftCheck::CampaignDeferred => Err(PeerError::CampaignDeferred),
                    RaftCheck::CommittedConflict { stop, error } => {
                        self.stop(stop);
                        Err(error)
                    }
                    RaftCheck::CommitBeyondLog { stop, error } => {
                        self.stop(stop);
                        Err(error)
                    }
                }
            }
            msgcodec::Body::Forward(f) => {
                if !self
                    .forwards_seen
                    .first_sight(env.from, env.from_incarnation, f.forward_id)
                {
                    // Its first copy was taken, and answered or proposed: this one must not be.
                    return Err(PeerError::DuplicateForward {
                        forward_id: f.forward_id,
                    });
                }
                let to = ReplyTo::Remote {
                    peer: env.from,
                    forward_id: f.forward_id,
                };
                match requests::refuse_forwarded(&f.op, self.membership.is_removed()) {
                    Some(err) => self.reply(to, Err(err)),
                    None => self.handle_request(to, f.request_id, f.timeout_ticks, f.op),
                }
                Ok(())
            }
            msgcodec::Body::ForwardReply { forward_id, result } => {
                // Forward ids start at a random point per incarnation, so a late reply meant for
                // a previous incarnation of this node cannot answer a request of this one.
                if let Some(f) = self.pending.take_forward_from(forward_id, env.from) {
                    self.reply(ReplyTo::Local(f.handle), result);
                }
                Ok(())
            }
            msgcodec::Body::Removed => {
                let voters = self.other_voters();
                if self
                    .membership
                    .removal_reported(env.from, self.now_tick, voters)
                {
                    self.out.event(Event::RemovedFromCluster);
                }
                if let Some(reason) = self.membership.stop_due(&self.cfg, self.now_tick) {
                    self.stop(reason);
                }
                Ok(())
            }
            msgcodec::Body::SnapshotChunk {
                message,
                key,
                offset,
                bytes,
            } => self.on_snapshot_chunk(env.from, message, key, offset, bytes),
            msgcodec::Body::SnapshotAck(ack) => {
                let steps = self.transfers.on_ack(env.from, ack, self.now_tick);
                self.run_send_steps(steps);
                Ok(())
            }
            msgcodec::Body::Refused(Refusal::StaleIncarnation { recorded }) => {
                if let Some(stop) = frames::refusal_stops(&env, recorded, &self.frames_view()) {
                    self.stop(stop);
                }
                Ok(())
            }
        }
    }

    /// What frame admission reads.
    fn frames_view(&self) -> frames::View<'_> {
        frames::View {
            id: self.cfg.id,
            identity: &self.identity,
            kv: &self.kv,
        }
    }

    fn learn(&mut self, from: u64, addr: &str, learn: Learn) {
        match learn {
            Learn::Nothing => {}
            Learn::Incarnation(incarnation) => self.peers.saw_incarnation(from, incarnation),
            Learn::Address => self.peers.hint(from, addr.to_string()),
        }
    }

    /// Steps an admitted raft message; appends and heartbeats from the leader tell readiness
    /// how far it committed.
    fn step_raft(&mut self, from: u64, m: Message) -> Result<(), PeerError> {
        use raft::eraftpb::MessageType::{MsgAppend, MsgHeartbeat};
        let (kind, term, commit) = (m.get_msg_type(), m.term, m.commit);
        self.raw.step(m).map_err(|e| PeerError::Raft(e.into()))?;
        if matches!(kind, MsgAppend | MsgHeartbeat)
            && term == self.raw.raft.term
            && from == self.raw.raft.leader_id
        {
            self.leader_commit.heard(term, commit);
        }
        Ok(())
    }

    /// Takes the cluster id of a joining node's cluster and makes it durable with the next job.
    fn adopt_cluster(&mut self, cluster_id: u64, from: u64) {
        assert_eq!(self.identity.cluster_id, UNKNOWN_CLUSTER);
        self.identity.cluster_id = cluster_id;
        // The WAL keeps the id it was created with (unknown): the identity file is the authority.
        self.identity.write_ops(self.persist.ops());
        self.out.event(Event::ClusterAdopted { cluster_id, from });
    }

    /// How a send went: raft learns of unreachable peers and of snapshot outcomes from this.
    pub fn sent(&mut self, outcome: SendOutcome) {
        if self.stopped.is_some() {
            return;
        }
        match outcome {
            // A chunk's delivery says nothing: the receiver's acknowledgement does.
            SendOutcome::Delivered { .. } => {}
            SendOutcome::Failed { to, kind } => {
                match kind {
                    FrameKind::SnapshotChunk => self.transfers.send_failed(to),
                    FrameKind::Forward { forward_id } => {
                        // Never reached the leader: definitely not applied, and waiting out the
                        // deadline would only turn that into "outcome unknown".
                        if let Some(f) = self.pending.take_forward(forward_id) {
                            let err = ClientError::LeaderUnreachable { leader: f.leader };
                            self.reply(ReplyTo::Local(f.handle), Err(err));
                        }
                    }
                    FrameKind::Raft | FrameKind::Other => {}
                }
                self.raw.report_unreachable(to);
            }
        }
    }

    /// The disk job `id` failed. The node stops and answers everything pending (outcome unknown
    /// for what it proposed, definite for the rest); a shell exits or restarts the process, and
    /// recovery decides what survived.
    pub fn disk_failed(&mut self, id: u64, failure: DiskFailure) {
        let in_flight = self.persist.in_flight_id();
        let snapshot = self.snapshots.job_id();
        assert!(
            in_flight == Some(id) || snapshot == Some(id) || self.spares.owns(id),
            "disk_failed for job {id}, which is not in flight"
        );
        self.stop(StopReason::Disk { job: id, failure });
    }

    /// A client request; the reply comes as `Action::Reply` with the same handle. On a follower,
    /// writes and linearizable reads are forwarded to the leader when one is known.
    pub fn client(&mut self, req: ClientRequest) {
        let to = ReplyTo::Local(req.handle);
        let view = requests::RouteView {
            id: self.cfg.id,
            closed: self.stopped.is_some() || self.shut_down || self.membership.is_removed(),
            is_leader: self.raw.raft.state == StateRole::Leader,
            raft_leader: self.raw.raft.leader_id,
            now_tick: self.now_tick,
            hold_ticks: no_leader_hold_ticks(&self.cfg),
        };
        match requests::route(&req, &view) {
            Route::Refuse(err) => self.reply(to, Err(err)),
            Route::Hold {
                hold_until_tick,
                deadline_tick,
            } => {
                let held = self.pending.hold(AwaitingLeader {
                    arrived_tick: self.now_tick,
                    hold_until_tick,
                    deadline_tick,
                    req,
                });
                if !held {
                    self.reply(to, Err(ClientError::Busy));
                }
            }
            Route::Forward {
                leader,
                deadline_tick,
            } => {
                let Some(forward_id) = self.pending.add_forward(req.handle, deadline_tick, leader)
                else {
                    return self.reply(to, Err(ClientError::Busy));
                };
                let fwd = Forward {
                    forward_id,
                    request_id: req.request_id,
                    timeout_ticks: req.timeout_ticks,
                    op: req.op,
                };
                let to = self.recipient(leader);
                let bytes = msgcodec::encode_forward(&self.sender(), to, fwd);
                self.push_send(to.id, FrameKind::Forward { forward_id }, bytes);
            }
            Route::Serve => self.handle_request(to, req.request_id, req.timeout_ticks, req.op),
        }
    }

    fn handle_request(
        &mut self,
        to: ReplyTo,
        request_id: Option<RequestId>,
        timeout_ticks: u64,
        op: ClientOp,
    ) {
        let deadline_tick = self.now_tick + timeout_ticks.max(1);
        let view = requests::ServeView {
            is_leader: self.raw.raft.state == StateRole::Leader,
            leader: Some(self.leader_id).filter(|&l| l != 0),
            kv: &self.kv,
            rules: self.member_rules(),
            writes_refused: self.writes_refused(),
        };
        match requests::serve(op, request_id, &view) {
            Serve::Answer(result) => self.reply(to, result),
            Serve::Read { key } => {
                let now = self.raw.raft.commit_to_current_term();
                let read = PendingRead {
                    handle: to,
                    key,
                    deadline_tick,
                    read_index: None,
                };
                let Some(id) = self.pending.add_read(read, !now) else {
                    return self.reply(to, Err(ClientError::Busy));
                };
                if now {
                    self.raw.read_index(id.to_le_bytes().to_vec());
                }
            }
            Serve::Propose {
                proposal,
                kind,
                early,
            } => {
                self.propose(to, deadline_tick, kind, |raw| {
                    raw.propose(vec![], proposal.encode())
                });
                if let Some(result) = early {
                    self.ack_early(to, result);
                }
            }
            Serve::ProposeChange(mp) => {
                let cc = conf_change_of(&mp.change);
                self.propose(to, deadline_tick, PendingKind::Member, |raw| {
                    raw.propose_conf_change(mp.encode(), cc)
                });
            }
        }
    }

    /// `TooManyRequests` while the log beyond the latest snapshot (committed or not) is over
    /// its limit: the writes outran the snapshot job, and memory must stay bounded by the state.
    fn writes_refused(&self) -> Option<ClientError> {
        let store = self.raw.store();
        let log_bytes = store.log_bytes(self.snapshots.index() + 1, store.last_index());
        let limit_bytes = compaction::write_limit_bytes(&self.cfg.compaction, self.kv.data_bytes());
        (log_bytes > limit_bytes).then_some(ClientError::TooManyRequests {
            log_bytes,
            limit_bytes,
        })
    }

    /// The rules a membership change is checked against, as they stand now.
    fn member_rules(&self) -> membership::Rules<'_> {
        membership::Rules {
            cfg: &self.cfg,
            kv: &self.kv,
            prs: self.raw.raft.prs(),
            peers: &self.peers,
            now_tick: self.now_tick,
            last_index: self.raw.raft.raft_log.last_index(),
        }
    }

    /// The leader promotes learners added with `auto_promote` once they have caught up, one
    /// membership change at a time. Runs outside Ready handling, like every proposal.
    fn promote_learners(&mut self) {
        if self.raw.raft.state != StateRole::Leader
            || self.raw.raft.has_pending_conf()
            || self.membership.is_removed()
        {
            return;
        }
        let term = self.raw.raft.term;
        let ready = self.member_rules().learner_to_promote(term);
        if let Some(id) = ready {
            let change = MemberChange::Promote { id };
            let cc = conf_change_of(&change);
            let mp = MemberProposal {
                request_id: None,
                change,
            };
            if self.raw.propose_conf_change(mp.encode(), cc).is_ok() {
                self.peers.proposed_promotion(id, term);
            }
        }
    }

    /// Planted bug only: answer the write just proposed as if it were applied.
    fn ack_early(&mut self, to: ReplyTo, result: crate::kv::WriteResult) {
        if self.pending.take_latest_proposal_for(to).is_some() {
            self.reply(to, Ok(ClientReply::Written(result)));
        }
    }

    fn propose(
        &mut self,
        handle: ReplyTo,
        deadline_tick: u64,
        kind: PendingKind,
        f: impl FnOnce(&mut RawNode<NodeStorage>) -> raft::Result<()>,
    ) {
        if self.pending.proposals_full() {
            return self.reply(handle, Err(ClientError::Busy));
        }
        let before = self.raw.raft.raft_log.last_index();
        let result = f(&mut self.raw);
        let after = self.raw.raft.raft_log.last_index();
        match requests::proposed(result, before, after) {
            Ok(index) => {
                let term = self.raw.raft.term;
                let p = PendingProposal {
                    handle,
                    term,
                    kind,
                    deadline_tick,
                };
                self.pending.add_proposal(index, p);
            }
            Err(err) => self.reply(handle, Err(err)),
        }
    }

    /// The disk job `id` completed: everything in it is durable.
    pub fn disk_done(&mut self, id: u64) {
        if self.spares.owns(id) {
            let name = self.spares.finish(id);
            if self.stopped.is_none() {
                self.persist.give_spare(name);
            }
            return;
        }
        let job = self.persist.complete(id);
        if self.snapshots.startup_done(id) {
            self.spares.arm();
            if self.stopped.is_some() || self.shut_down {
                // Their requests were answered when it stopped: nothing held may leave now.
                self.out.discard_held();
            } else {
                self.out.release();
            }
        }
        if self.stopped.is_some() {
            return;
        }
        if let Some(hard_state) = job.hard_state {
            self.out.event(Event::Durable { hard_state });
        }
        if let Some(n) = job.ready_number {
            self.raw.on_persist_ready(n);
        }
        for m in job.gated {
            self.send(m);
        }
        for o in job.gated_frames {
            self.push_send(o.to, o.kind, o.bytes);
        }
        self.advance_apply();
        self.issue_job();
        self.issue_spare();
    }

    /// Tells raft how far we applied. raft-rs insists applied <= persisted; a snapshot installed
    /// from the leader is applied to the state machine before its job is durable, so raft hears
    /// about it only once the job completes.
    fn advance_apply(&mut self) {
        let log = &self.raw.raft.raft_log;
        let target = self
            .kv
            .applied_index()
            .min(log.persisted)
            .min(log.committed);
        if target > log.applied {
            self.raw.advance_apply_to(target);
        }
    }

    // ---- the Ready loop ----

    fn drive(&mut self) {
        loop {
            if self.raw.store().take_snapshot_wanted() {
                self.snapshots.want();
            }
            self.flush_waiting_reads();
            self.flush_awaiting_leader();
            self.record_incarnations();
            self.promote_learners();
            self.step_down_if_removed();
            if !self.raw.has_ready() {
                break;
            }
            let mut rd = self.raw.ready();
            if let Some(ss) = rd.ss() {
                self.on_soft_state(ss.raft_state, ss.leader_id);
            }
            for m in rd.take_messages() {
                self.send(m);
            }
            if !rd.snapshot().is_empty() {
                let snap = rd.snapshot().clone();
                if let Err(reason) = self.install_snapshot(snap) {
                    self.stop(reason);
                    return;
                }
            }
            let committed = rd.take_committed_entries();
            self.apply_entries(committed);
            if self.stopped.is_some() {
                return;
            }
            if !rd.entries().is_empty() {
                self.raw.mut_store().append(rd.entries());
                self.persist.append_entries(rd.entries());
            }
            if let Some(hs) = rd.hs() {
                self.raw.mut_store().set_hard_state(hs.clone());
                self.persist.stage_hard_state(hs_to_rec(hs));
            }
            for rs in rd.take_read_states() {
                self.pending.read_index_known(&rs.request_ctx, rs.index);
            }
            let persisted = rd.take_persisted_messages();
            let number = rd.number();
            self.raw.advance_append_async(rd);
            if self.persist.is_idle() {
                // Nothing to persist and nothing in flight: the Ready is durable as it stands.
                self.raw.on_persist_ready(number);
                for m in persisted {
                    self.send(m);
                }
            } else if planted(PlantedBug::PersistedMessagesBeforeSync) {
                self.persist.gate_ready(number, Vec::new());
                for m in persisted {
                    self.send(m);
                }
            } else {
                self.persist.gate_ready(number, persisted);
            }
            self.advance_apply();
            self.serve_reads();
            self.maybe_snapshot();
        }
        self.issue_job();
        self.issue_spare();
        self.assert_log_order();
    }

    /// A leader that applied its own removal hands over: heartbeats that carry the commit (best
    /// effort: they may be lost), then follower. Runs between Readies, before any input reaches
    /// raft-rs leading a configuration it is not in.
    fn step_down_if_removed(&mut self) {
        if self.membership.is_removed() && self.raw.raft.state == StateRole::Leader {
            self.raw.raft.ping();
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
        }
    }

    /// applied ≤ committed ≤ last index, after every pass of the Ready loop: the state machine
    /// only ever applies what raft committed, and raft commits only what its log holds.
    fn assert_log_order(&self) {
        let log = &self.raw.raft.raft_log;
        let applied = self.kv.applied_index();
        assert!(
            applied <= log.committed,
            "node {}: applied {applied} beyond committed {}",
            self.cfg.id,
            log.committed
        );
        assert!(
            log.committed <= log.last_index(),
            "node {}: committed {} beyond the log's last index {}",
            self.cfg.id,
            log.committed,
            log.last_index()
        );
    }

    fn issue_job(&mut self) {
        if let Some(job) = self.persist.issue() {
            self.out.push(Action::Disk(job));
        }
    }

    /// Starts writing the WAL's next spare segment if it has none and none is being written.
    fn issue_spare(&mut self) {
        if self.spares.wanted(self.persist.wal().spare().is_some()) {
            let id = self.persist.allocate_id();
            let size_bytes = self.persist.wal().segment_size_bytes();
            let job = self.spares.start(id, size_bytes);
            self.out.push(Action::Prepare(job));
        }
    }

    /// What `frames::check_raft` says of raft message `m` from `from`.
    fn check_raft(&self, from: u64, m: &Message) -> RaftCheck {
        let log = &self.raw.raft.raft_log;
        let term_at = |index: u64| log.term(index).ok();
        let view = frames::RaftView {
            snapshot_unpersisted: self.snapshot_unpersisted(),
            last_index: log.last_index(),
            term: self.raw.raft.term,
            committed: log.committed,
            term_at: &term_at,
        };
        frames::check_raft(from, m, &view)
    }

    /// The voters of raft's configuration, this node apart.
    fn other_voters(&self) -> std::collections::BTreeSet<u64> {
        let me = self.cfg.id;
        self.raw
            .raft
            .prs()
            .conf()
            .voters()
            .ids()
            .iter()
            .filter(|&id| id != me)
            .collect()
    }

    /// This node's routing header for outgoing frames.
    fn sender(&self) -> msgcodec::Sender<'_> {
        msgcodec::Sender {
            cluster_id: self.identity.cluster_id,
            id: self.cfg.id,
            incarnation: self.identity.incarnation,
            addr: self
                .membership
                .own_url()
                .or_else(|| self.kv.members().get(&self.cfg.id).map(|s| s.as_str()))
                .unwrap_or(""),
        }
    }

    /// Where to reach `id`: its member address, or the one it advertised in its last frame
    /// (a member this node has not caught up with yet, or one since removed).
    pub fn peer_address(&self, id: u64) -> Option<&str> {
        self.kv
            .members()
            .get(&id)
            .or_else(|| self.peers.hinted_address(id))
            .map(|s| s.as_str())
    }

    /// `id` as a recipient: with the incarnation the membership records for it (0 if none yet).
    fn recipient(&self, id: u64) -> Recipient {
        Recipient {
            id,
            incarnation: self.kv.incarnation(id).unwrap_or(0),
        }
    }

    fn push_send(&mut self, to: u64, kind: FrameKind, bytes: Vec<u8>) {
        self.out.send(Outgoing { to, kind, bytes });
    }

    fn send(&mut self, mut m: Message) {
        if self.cfg.raft_rs_batch_append_guard {
            let log = &self.raw.raft.raft_log;
            let repair = raft_rs_guard::repair_batched_append(&mut m, |i| log.term(i).ok());
            self.out.events(repair.event(m.to));
        }
        log_matching::stamp(&mut m, &self.raw.raft.raft_log);
        if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
            return self.start_snapshot_send(m);
        }
        let to = self.recipient(m.to);
        let bytes = msgcodec::encode(&self.sender(), to.incarnation, &m);
        self.push_send(to.id, FrameKind::Raft, bytes);
    }

    fn reply(&mut self, to: ReplyTo, result: Result<ClientReply, ClientError>) {
        match to {
            ReplyTo::Local(handle) => self.out.push(Action::Reply { handle, result }),
            ReplyTo::Remote { peer, forward_id } => {
                let to = self.recipient(peer);
                let bytes = msgcodec::encode_forward_reply(&self.sender(), to, forward_id, result);
                self.push_send(peer, FrameKind::Other, bytes);
            }
        }
    }

    /// The leader records, through the log, the incarnation of every member it has heard from
    /// (itself included) whose incarnation the membership does not hold yet. Runs outside Ready
    /// handling (raft-rs forbids proposing between `ready` and `advance`). A proposal raft drops
    /// is made again in a later term.
    fn record_incarnations(&mut self) {
        if self.raw.raft.state != StateRole::Leader || self.membership.is_removed() {
            return;
        }
        let term = self.raw.raft.term;
        let me = (self.cfg.id, self.identity.incarnation);
        let wanted = self.peers.incarnations_to_record(me, &self.kv, term);
        for (id, incarnation) in wanted {
            let p = Proposal {
                request_id: None,
                command: crate::command::Command::RecordIncarnation { id, incarnation },
            };
            if self.raw.propose(vec![], p.encode()).is_ok() {
                self.peers.proposed_recording(id, term);
                self.out
                    .event(Event::IncarnationProposed { id, incarnation });
            }
        }
    }

    fn on_soft_state(&mut self, role: StateRole, leader_id: u64) {
        let was_leader = self.role == StateRole::Leader;
        if role != self.role || leader_id != self.leader_id {
            self.out.event(Event::RoleChanged {
                term: self.raw.raft.term,
                role,
                leader: leader_id,
            });
        }
        self.role = role;
        self.leader_id = leader_id;
        let leader = Some(leader_id).filter(|&l| l != 0);
        if was_leader && role != StateRole::Leader {
            self.fail_pending(ClientError::LeaderChanged { leader });
            self.transfers.stop_sending();
        }
        // Requests forwarded to a node that is no longer the leader would otherwise wait out
        // their whole deadline (the old leader may be dead): answer them now, outcome unknown,
        // so clients retry (with their request id) against the new leader.
        for f in self.pending.take_forwards_not_to(leader_id) {
            self.reply(
                ReplyTo::Local(f.handle),
                Err(ClientError::LeaderChanged { leader }),
            );
        }
    }

    /// Requests held while no leader was known go (or are forwarded) once one is. Runs outside
    /// Ready handling: raft-rs forbids proposing between `ready` and `advance`.
    fn flush_awaiting_leader(&mut self) {
        if self.leader_id == 0 || !self.pending.has_awaiting() {
            return;
        }
        let now = self.now_tick;
        for AwaitingLeader {
            deadline_tick,
            mut req,
            ..
        } in self.pending.take_awaiting()
        {
            req.timeout_ticks = deadline_tick.saturating_sub(now).max(1);
            self.client(req);
        }
    }

    fn flush_waiting_reads(&mut self) {
        if !self.pending.has_waiting_reads()
            || self.raw.raft.state != StateRole::Leader
            || !self.raw.raft.commit_to_current_term()
        {
            return;
        }
        for id in self.pending.take_waiting_reads() {
            self.raw.read_index(id.to_le_bytes().to_vec());
        }
    }

    fn serve_reads(&mut self) {
        let applied = self.kv.applied_index();
        for r in self.pending.take_servable_reads(applied) {
            let v = self.kv.get(&r.key).map(|v| v.to_vec());
            self.reply(r.handle, Ok(ClientReply::Value(v)));
        }
    }

    // ---- apply ----

    fn apply_entries(&mut self, entries: Vec<Entry>) {
        for e in entries {
            if e.index <= self.kv.applied_index() {
                continue;
            }
            let decoded = apply::Decoded::of(&e);
            self.out.event(Event::Applied {
                index: e.index,
                term: e.term,
                entry_hash: self.cfg.trace_applied.then(|| apply::entry_hash(&e)),
                request_id: decoded.request_id(),
            });
            match decoded {
                apply::Decoded::Empty => {
                    self.kv.advance(e.index);
                    self.finish_proposal(
                        e.index,
                        e.term,
                        Err(ClientError::Rejected(RejectReason::ChangeInProgress)),
                    );
                }
                apply::Decoded::Command(p) => {
                    if let crate::command::Command::RecordIncarnation { id, .. } = &p.command {
                        self.peers.recorded(*id);
                    }
                    let result = apply::apply_command(&mut self.kv, e.index, &p);
                    self.finish_proposal(e.index, e.term, result);
                }
                apply::Decoded::Member(change) => self.apply_member_change(&e, change),
                apply::Decoded::LeaveJoint => {
                    if let Ok(cs) = self.raw.apply_conf_change(&ConfChangeV2::default()) {
                        self.raw.mut_store().set_conf_state(cs);
                    }
                    self.kv.advance(e.index);
                }
                apply::Decoded::Skip(reason) => self.skip_entry(&e, reason),
            }
            assert_eq!(
                self.kv.applied_index(),
                e.index,
                "node {}: entry {} left applied at another index",
                self.cfg.id,
                e.index
            );
        }
    }

    fn skip_entry(&mut self, e: &Entry, reason: RejectReason) {
        // Every replica skips the same entry, so state machines stay equal.
        self.kv.advance(e.index);
        self.out.event(Event::EntrySkipped {
            index: e.index,
            reason: reason.clone(),
        });
        self.finish_proposal(e.index, e.term, Err(ClientError::Rejected(reason)));
    }

    fn apply_member_change(&mut self, e: &Entry, change: MemberChange) {
        let cc = conf_change_of(&change);
        match self.raw.apply_conf_change(&cc) {
            Ok(cs) => {
                self.raw.mut_store().set_conf_state(cs);
                self.kv.apply_member_change(e.index, &change);
                self.peers.applied(&change);
                if let MemberChange::Remove { id } = change {
                    self.forwards_seen.forget(id);
                }
                let ev = membership::applied_event(&change);
                self.out.event(ev);
                let members = self.kv.members().clone();
                self.finish_proposal(e.index, e.term, Ok(ClientReply::Members(members)));
                if matches!(change, MemberChange::Remove { id } if id == self.cfg.id) {
                    // It lingers as a voter before it stops (see `Membership::removed`).
                    if !self.membership.is_removed() {
                        self.out.event(Event::RemovedFromCluster);
                    }
                    let voters = self.other_voters();
                    self.membership.removed(self.now_tick, voters);
                }
            }
            Err(_) => self.skip_entry(e, RejectReason::ConfChangeRefused),
        }
    }

    fn finish_proposal(&mut self, index: u64, term: u64, result: Result<ClientReply, ClientError>) {
        let leader = Some(self.leader_id).filter(|&l| l != 0);
        if let Some((to, result)) = self.pending.take_applied(index, term, result, leader) {
            self.reply(to, result);
        }
    }
}
