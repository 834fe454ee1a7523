//! A pure, single-threaded, deterministic cluster harness for `raftkv-core` nodes.
//!
//! Nodes talk through an in-memory message queue that the seeded RNG reorders (and, when asked,
//! drops); disks are `MemDir`s whose jobs complete after a random number of delivery rounds.
//! Every action the nodes emit is folded into a trace hash, so two runs with one seed can be
//! compared bit for bit.

#![allow(dead_code)]

use raft::StateRole;
use raftkv_core::boot::{boot, BootError, StartFlags};
use raftkv_core::command::RequestId;
use raftkv_core::memdir::{CrashKind, MemDir};
use raftkv_core::node::{
    Action, ClientError, ClientOp, ClientReply, ClientRequest, DiskJob, Event, FrameKind, Node,
    NodeConfig, ReadJob, SendOutcome, SnapshotJob, StopReason,
};
use raftkv_core::rng::{Fnv64, Rng};
use raftkv_core::wal::WalConfig;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub const TOKEN: &str = "harness";

pub struct SimNode {
    pub node: Option<Node>,
    pub dir: MemDir,
    pub cfg: NodeConfig,
    pub flags: StartFlags,
    jobs: VecDeque<DiskJob>,
    /// The snapshot lane: at most one job, completed independently of `jobs`.
    snapshot_job: Option<SnapshotJob>,
    /// A prepare job (the WAL's next spare segment): beside `jobs`, like the snapshot lane.
    prepare_job: Option<DiskJob>,
    /// Reads of snapshot files being streamed, completed with the disk jobs.
    reads: VecDeque<ReadJob>,
    pub incarnation: u64,
}

#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub snapshots_saved: u64,
    pub snapshots_installed: u64,
    pub compactions: u64,
    pub purges: u64,
    pub elections: u64,
    pub loaded_snapshots: u64,
    pub torn_tails: u64,
    pub messages_dropped: u64,
    pub snapshot_sends_started: u64,
    pub snapshot_chunks_resent: u64,
    pub snapshot_sends_resumed: u64,
    pub snapshot_sends_failed: u64,
    pub snapshots_received: u64,
    pub appends_reindexed: u64,
}

pub struct Cluster {
    pub nodes: BTreeMap<u64, SimNode>,
    net: Vec<(u64, u64, Vec<u8>, FrameKind)>,
    pub rng: Rng,
    pub trace: Fnv64,
    pub replies: BTreeMap<u64, Result<ClientReply, ClientError>>,
    next_handle: u64,
    /// Nodes cut off from everyone.
    pub isolated: BTreeSet<u64>,
    /// Nodes whose frames are dropped (they still receive).
    pub muted: BTreeSet<u64>,
    /// (node, index): mute the node as soon as it has committed the index, before anything it
    /// sends after that is delivered (its word that the index is committed is lost).
    pub mute_once_committed: Option<(u64, u64)>,
    /// (node, index, peers): as `mute_once_committed`, but only its frames to `peers` are lost.
    pub cut_once_committed: Option<(u64, u64, BTreeSet<u64>)>,
    /// (from, to): links whose frames are dropped.
    pub cut_links: BTreeSet<(u64, u64)>,
    /// Probability that a message is dropped.
    pub loss: f64,
    /// Every forwarded request delivered: (from, to, frame), for tests that replay one.
    pub forwards_delivered: Vec<(u64, u64, Vec<u8>)>,
    pub stats: Stats,
    next_client_seq: u64,
    /// Panic when a node stops (off in tests that expect a refusal).
    pub fatal_stops: bool,
    /// Nodes whose WAL jobs do not complete (a stalled disk) until removed from here.
    pub stalled_disks: BTreeSet<u64>,
    /// Nodes whose snapshot jobs do not complete (a slow snapshot lane) until removed from here.
    pub held_snapshot_lanes: BTreeSet<u64>,
    /// `step` calls so far (one tick each).
    steps: u64,
    /// Rewrites every frame on its way (a peer that sends what no correct node would).
    pub tamper: Option<fn(Vec<u8>) -> Vec<u8>>,
}

/// Boots a node from the bytes of a directory.
pub fn boot_from(cfg: &NodeConfig, flags: &StartFlags, dir: &MemDir) -> Result<Node, BootError> {
    boot(cfg.clone(), flags, &dir.list(), &mut |n, at, max| {
        dir.read_at(n, at, max)
    })
}

pub fn addr(id: u64) -> String {
    format!("http://127.0.0.1:{}", 12379 + id * 10)
}

pub fn base_config(id: u64, seed: u64) -> NodeConfig {
    let mut cfg = NodeConfig::new(id, seed);
    cfg.wal = WalConfig {
        segment_size_bytes: 16 * 1024,
    };
    cfg.compaction.snap_count = 200;
    cfg.compaction.catch_up_entries = 50;
    cfg.compaction.max_snapshots = 2;
    cfg
}

impl Cluster {
    pub fn new(n: u64, seed: u64) -> Self {
        Self::with_config(n, seed, |_| {})
    }

    pub fn with_config(n: u64, seed: u64, tweak: impl Fn(&mut NodeConfig)) -> Self {
        let members: BTreeMap<u64, String> = (1..=n).map(|i| (i, addr(i))).collect();
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            net: Vec::new(),
            rng: Rng::new(seed),
            trace: Fnv64::default(),
            replies: BTreeMap::new(),
            next_handle: 1,
            isolated: BTreeSet::new(),
            muted: BTreeSet::new(),
            mute_once_committed: None,
            cut_once_committed: None,
            cut_links: BTreeSet::new(),
            loss: 0.0,
            forwards_delivered: Vec::new(),
            stats: Stats::default(),
            next_client_seq: 1,
            fatal_stops: true,
            stalled_disks: BTreeSet::new(),
            held_snapshot_lanes: BTreeSet::new(),
            steps: 0,
            tamper: None,
        };
        for id in 1..=n {
            let mut cfg = base_config(id, seed);
            tweak(&mut cfg);
            let flags = StartFlags {
                peers: members.clone(),
                token: TOKEN.into(),
                join: false,
            };
            c.insert_node(id, cfg, flags);
        }
        c.pump_actions();
        c
    }

    /// Starts node `id` on an empty directory.
    fn insert_node(&mut self, id: u64, cfg: NodeConfig, flags: StartFlags) {
        let dir = MemDir::new();
        let node = boot_from(&cfg, &flags, &dir).expect("start");
        let sim = SimNode {
            node: Some(node),
            dir,
            cfg,
            flags,
            jobs: VecDeque::new(),
            snapshot_job: None,
            prepare_job: None,
            reads: VecDeque::new(),
            incarnation: 0,
        };
        self.nodes.insert(id, sim);
    }

    /// Adds a node that joins with `--join` semantics (it must be added with AddNode too).
    pub fn start_joiner(&mut self, id: u64, seed: u64, tweak: impl Fn(&mut NodeConfig)) {
        let mut cfg = base_config(id, seed);
        tweak(&mut cfg);
        let members: BTreeMap<u64, String> = self
            .nodes
            .keys()
            .map(|&i| (i, addr(i)))
            .chain([(id, addr(id))])
            .collect();
        let flags = StartFlags {
            peers: members,
            token: TOKEN.into(),
            join: true,
        };
        self.insert_node(id, cfg, flags);
        self.pump_actions();
    }

    /// Node `id`, which must be up.
    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.node.as_mut())
            .unwrap_or_else(|| panic!("node {id} is not up"))
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes[&id].node.as_ref().expect("node is up")
    }

    pub fn is_up(&self, id: u64) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|n| n.node.as_ref().is_some_and(|n| n.stopped().is_none()))
    }

    pub fn up_ids(&self) -> Vec<u64> {
        self.nodes
            .keys()
            .copied()
            .filter(|&id| self.is_up(id))
            .collect()
    }

    pub fn leader(&self) -> Option<u64> {
        let leaders: Vec<(u64, u64)> = self
            .up_ids()
            .into_iter()
            .filter(|&id| !self.isolated.contains(&id))
            .map(|id| (self.node(id).status().term, id))
            .filter(|&(_, id)| self.node(id).status().role == StateRole::Leader)
            .collect();
        leaders.into_iter().max().map(|(_, id)| id)
    }

    fn hash_action(&mut self, id: u64, a: &Action) {
        self.trace.update_u64(id);
        match a {
            Action::Send(o) => {
                self.trace.update_u64(o.to);
                self.trace.update(&o.bytes);
            }
            other => self.trace.update(format!("{other:?}").as_bytes()),
        }
    }

    /// Collects every node's actions until none produce more.
    fn pump_actions(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            let actions = match self.nodes.get_mut(&id).and_then(|n| n.node.as_mut()) {
                Some(node) => node.drain(),
                None => continue,
            };
            for a in actions {
                self.hash_action(id, &a);
                match a {
                    Action::Disk(job) => self.nodes.get_mut(&id).unwrap().jobs.push_back(job),
                    Action::Snapshot(job) => {
                        let lane = &mut self.nodes.get_mut(&id).unwrap().snapshot_job;
                        assert!(lane.is_none(), "node {id}: two snapshot jobs at once");
                        *lane = Some(job);
                    }
                    Action::Read(job) => self.nodes.get_mut(&id).unwrap().reads.push_back(job),
                    Action::Prepare(job) => {
                        let lane = &mut self.nodes.get_mut(&id).unwrap().prepare_job;
                        assert!(lane.is_none(), "node {id}: two prepare jobs at once");
                        *lane = Some(job);
                    }
                    Action::Send(o) => self.net.push((id, o.to, o.bytes, o.kind)),
                    Action::Reply { handle, result } => {
                        self.replies.insert(handle, result);
                    }
                    Action::Event(e) => match e {
                        Event::SnapshotSaved { .. } => self.stats.snapshots_saved += 1,
                        Event::SnapshotInstalled { .. } => self.stats.snapshots_installed += 1,
                        Event::CompactedLog { .. } => self.stats.compactions += 1,
                        Event::Purged { .. } => self.stats.purges += 1,
                        Event::LoadingSnapshot { .. } => self.stats.loaded_snapshots += 1,
                        Event::SnapshotSendStarted { .. } => self.stats.snapshot_sends_started += 1,
                        Event::SnapshotChunksResent { .. } => {
                            self.stats.snapshot_chunks_resent += 1
                        }
                        Event::SnapshotSendResumed { .. } => self.stats.snapshot_sends_resumed += 1,
                        Event::SnapshotSendFailed { .. } => self.stats.snapshot_sends_failed += 1,
                        Event::SnapshotReceived { .. } => self.stats.snapshots_received += 1,
                        Event::AppendReindexed { .. } => self.stats.appends_reindexed += 1,
                        Event::RoleChanged {
                            role: StateRole::Leader,
                            ..
                        } => self.stats.elections += 1,
                        Event::Recovered { report, .. } if report.torn_tail.is_some() => {
                            self.stats.torn_tails += 1
                        }
                        Event::Stopped { reason }
                            if self.fatal_stops
                                && !matches!(
                                    reason,
                                    StopReason::Removed | StopReason::RemovalConfirmed
                                ) =>
                        {
                            panic!("node {id} stopped: {reason}")
                        }
                        _ => {}
                    },
                }
            }
        }
    }

    /// Completes some disk jobs (each with probability 1/2, in order per node).
    fn run_disks(&mut self, all: bool) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            // The snapshot lane runs beside the WAL's jobs: before them, between, or after.
            let run_lane =
                (all || self.rng.below(2) == 0) && !self.held_snapshot_lanes.contains(&id);
            let n = self.nodes.get_mut(&id).unwrap();
            if let (true, Some(node)) = (run_lane, n.node.as_mut()) {
                if let Some(job) = n.snapshot_job.take() {
                    let (file_bytes, ops) = job.write();
                    for op in ops {
                        n.dir
                            .apply(&op)
                            .unwrap_or_else(|e| panic!("node {id}: {op:?}: {e}"));
                    }
                    node.snapshot_saved(job.id, file_bytes);
                    self.pump_actions();
                }
            }
            let has_prepare = self.nodes[&id].prepare_job.is_some();
            let run_prepare = has_prepare && (all || self.rng.below(2) == 0);
            let n = self.nodes.get_mut(&id).unwrap();
            if let (true, Some(node)) = (run_prepare, n.node.as_mut()) {
                if let Some(job) = n.prepare_job.take() {
                    for op in &job.ops {
                        n.dir
                            .apply(op)
                            .unwrap_or_else(|e| panic!("node {id}: {op:?}: {e}"));
                    }
                    node.disk_done(job.id);
                    self.pump_actions();
                }
            }
            loop {
                let n = self.nodes.get_mut(&id).unwrap();
                let Some(node) = n.node.as_mut() else { break };
                let Some(job) = n.reads.pop_front() else {
                    break;
                };
                let result = job.from_bytes(n.dir.read(&job.name));
                node.read_done(job.id, result);
                self.pump_actions();
            }
            loop {
                let n = self.nodes.get_mut(&id).unwrap();
                if n.jobs.is_empty() || n.node.is_none() || self.stalled_disks.contains(&id) {
                    break;
                }
                if !all && self.rng.below(2) == 0 {
                    break;
                }
                let job = n.jobs.pop_front().unwrap();
                for op in &job.ops {
                    n.dir
                        .apply(op)
                        .unwrap_or_else(|e| panic!("node {id}: {op:?}: {e}"));
                }
                n.node.as_mut().unwrap().disk_done(job.id);
                self.pump_actions();
            }
        }
    }

    fn deliver(&mut self) {
        if let Some((id, index)) = self.mute_once_committed {
            let committed = self.nodes[&id]
                .node
                .as_ref()
                .is_none_or(|n| n.status().commit_index >= index);
            if committed {
                self.muted.insert(id);
                self.mute_once_committed = None;
            }
        }
        if let Some((id, index, peers)) = &self.cut_once_committed {
            let committed = self.nodes[id]
                .node
                .as_ref()
                .is_none_or(|n| n.status().commit_index >= *index);
            if committed {
                let id = *id;
                self.cut_links.extend(peers.iter().map(|&p| (id, p)));
                self.cut_once_committed = None;
            }
        }
        let mut batch = std::mem::take(&mut self.net);
        // Reorder: a seeded shuffle.
        for i in (1..batch.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            batch.swap(i, j);
        }
        for (from, to, bytes, kind) in batch {
            let bytes = match self.tamper {
                Some(f) => f(bytes),
                None => bytes,
            };
            let cut = self.isolated.contains(&from)
                || self.isolated.contains(&to)
                || self.muted.contains(&from)
                || self.cut_links.contains(&(from, to));
            let lost = self.loss > 0.0 && self.rng.chance(self.loss);
            let target_up = self.nodes.get(&to).is_some_and(|n| n.node.is_some());
            let delivered = !cut && !lost && target_up && {
                let r = self
                    .nodes
                    .get_mut(&to)
                    .unwrap()
                    .node
                    .as_mut()
                    .unwrap()
                    .receive(&bytes);
                r.is_ok() || !matches!(r, Err(raftkv_core::node::PeerError::Decode(_)))
            };
            if !delivered {
                self.stats.messages_dropped += 1;
            } else if matches!(kind, FrameKind::Forward { .. }) {
                self.forwards_delivered.push((from, to, bytes.clone()));
            }
            if let Some(sender) = self.nodes.get_mut(&from).and_then(|n| n.node.as_mut()) {
                sender.sent(if delivered {
                    SendOutcome::Delivered { to, kind }
                } else {
                    SendOutcome::Failed { to, kind }
                });
            }
        }
        self.pump_actions();
    }

    /// Ticks so far: how long something took, in the harness's clock.
    pub fn now_steps(&self) -> u64 {
        self.steps
    }

    /// One tick on every live node, then message delivery and disk progress.
    pub fn step(&mut self) {
        self.steps += 1;
        for id in self.up_ids() {
            self.node_mut(id).tick();
        }
        self.pump_actions();
        for _ in 0..4 {
            self.run_disks(false);
            self.deliver();
        }
        self.run_disks(true);
        self.deliver();
    }

    pub fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.step();
        }
    }

    /// Runs until `cond` holds, panicking after `max_ticks`.
    pub fn run_until(
        &mut self,
        max_ticks: u64,
        what: &str,
        mut cond: impl FnMut(&Cluster) -> bool,
    ) {
        for _ in 0..max_ticks {
            if cond(self) {
                return;
            }
            self.step();
        }
        assert!(cond(self), "not reached within {max_ticks} ticks: {what}");
    }

    pub fn wait_leader(&mut self) -> u64 {
        self.run_until(500, "a leader", |c| c.leader().is_some());
        self.leader().unwrap()
    }

    pub fn submit(&mut self, to: u64, op: ClientOp, request_id: Option<RequestId>) -> u64 {
        let handle = self.next_handle;
        self.next_handle += 1;
        let req = ClientRequest {
            handle,
            request_id,
            timeout_ticks: 50,
            op,
        };
        self.nodes
            .get_mut(&to)
            .unwrap()
            .node
            .as_mut()
            .unwrap()
            .client(req);
        self.pump_actions();
        handle
    }

    pub fn wait_reply(&mut self, handle: u64) -> Result<ClientReply, ClientError> {
        self.run_until(200, "a reply", |c| c.replies.contains_key(&handle));
        self.replies.remove(&handle).unwrap()
    }

    /// Puts through the current leader, retrying (same request id) until acknowledged.
    pub fn put(&mut self, key: &str, value: &str) {
        let rid = RequestId {
            client: 1,
            seq: self.next_client_seq,
        };
        self.next_client_seq += 1;
        for _ in 0..50 {
            let leader = self.wait_leader();
            let h = self.submit(
                leader,
                ClientOp::Put {
                    key: key.into(),
                    value: value.into(),
                },
                Some(rid),
            );
            match self.wait_reply(h) {
                Ok(ClientReply::Written(_)) => return,
                Ok(other) => panic!("unexpected reply {other:?}"),
                Err(_) => self.run(5),
            }
        }
        panic!("put {key} never acknowledged");
    }

    pub fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        for _ in 0..50 {
            let leader = self.wait_leader();
            let h = self.submit(leader, ClientOp::Get { key: key.into() }, None);
            match self.wait_reply(h) {
                Ok(ClientReply::Value(v)) => return v,
                Ok(other) => panic!("unexpected reply {other:?}"),
                Err(_) => self.run(5),
            }
        }
        panic!("get {key} never answered");
    }

    /// Power loss (or process crash) of one node: unsynced state is lost per the crash model.
    pub fn crash(&mut self, id: u64, kind: CrashKind) {
        let n = self.nodes.get_mut(&id).unwrap();
        n.node = None;
        n.jobs.clear();
        n.snapshot_job = None;
        n.prepare_job = None;
        n.reads.clear();
        let rng = &mut self.rng;
        n.dir.crash(kind, &mut |k| rng.below(k));
    }

    /// Restarts a node from the bytes of its directory.
    pub fn restart(&mut self, id: u64) {
        let flags = self.nodes[&id].flags.clone();
        self.try_restart_with(id, flags)
            .unwrap_or_else(|e| panic!("node {id} restart: {e}"));
    }

    /// Restarts a node from its directory with these flags (an operator's mistake, say).
    pub fn try_restart_with(&mut self, id: u64, flags: StartFlags) -> Result<(), BootError> {
        let n = self.nodes.get_mut(&id).unwrap();
        assert!(n.node.is_none());
        n.incarnation += 1;
        let mut cfg = n.cfg.clone();
        cfg.seed = cfg.seed.wrapping_add(n.incarnation);
        let node = boot_from(&cfg, &flags, &n.dir)?;
        n.node = Some(node);
        self.pump_actions();
        Ok(())
    }

    /// The shell of node `id` shuts down (SIGTERM): the node answers what it holds.
    pub fn shut_down(&mut self, id: u64) {
        self.node_mut(id).shut_down();
        self.pump_actions();
    }

    /// Stops a node (a process that exits); its directory stays.
    pub fn stop_node(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).unwrap();
        n.node = None;
        n.jobs.clear();
        n.snapshot_job = None;
        n.prepare_job = None;
        n.reads.clear();
    }

    /// Runs until every live node has applied the same index and holds the same state.
    pub fn wait_converged(&mut self, max_ticks: u64) {
        self.run_until(max_ticks, "replicas converged", |c| {
            let ids = c.up_ids();
            let Some(l) = c.leader() else { return false };
            let target = c.node(l).status().commit_index;
            ids.iter().all(|&id| {
                let s = c.node(id).status();
                s.applied_index == target && c.node(id).kv().hash() == c.node(l).kv().hash()
            })
        });
    }

    pub fn file_count(&self, id: u64, suffix: &str) -> usize {
        self.nodes[&id]
            .dir
            .list()
            .iter()
            .filter(|n| n.ends_with(suffix))
            .count()
    }
}
