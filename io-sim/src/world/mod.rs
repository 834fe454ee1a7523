//! The simulated world: raft nodes, a network and disks that lie, clients, and a supervisor that
//! injects faults, all on madsim's seeded scheduler, clock and node lifecycle.
//!
//! Each raft node is a madsim node whose init task recovers from its simulated disk and runs the
//! event loop around a `raftkv_core::node::Node`; killing the madsim node kills its disk tasks
//! mid-job. Messages travel through a network task on a node of its own (packets in flight
//! outlive their sender). Disks are `core::memdir::MemDir`s with latency and a crash model.
//! Every `tokio::select!` is `biased`: tokio's default random branch order would leak OS
//! randomness into the schedule.
//!
//! The code map, one file per part, as in TigerBeetle's VOPR: `network` (packets, delays,
//! partitions, the delivery task), `disk` (disk jobs with latency and the fault atlas: fsync
//! errors, ENOSPC, misdirected writes, rot), `node` (the shell around each `core` node),
//! `workload` (the clients), `operator` (membership and the operator's mistakes), `supervisor`
//! (the fault schedule, heal, liveness, identity, convergence). This file holds what they share:
//! the world's configuration, clock, observer and random streams.

mod disk;
mod network;
mod node;
mod operator;
mod supervisor;
mod workload;

use disk::*;
use network::*;
use operator::*;
pub use supervisor::{supervise, LIVENESS_BOUND_S};
pub use workload::Workload;
use workload::*;

use crate::config::SimConfig;
use crate::coverage::Counter;
use crate::history::{Op, OpKind, Output};
use crate::observer::{Checker, Observer};
use crate::options::{FaultClass, Streams};
use madsim::runtime::{Handle, NodeHandle};
use madsim::time::{sleep, sleep_until, Instant};
use raftkv_core::boot::{boot, BootError, StartFlags};
use raftkv_core::command::RequestId;
use raftkv_core::fileop::FileOp;
use raftkv_core::memdir::{CrashKind, MemDir};
use raftkv_core::node::{
    Action, ClientError, ClientOp, ClientReply, ClientRequest, DiskFailure, Event, FrameKind,
    NodeConfig, RejectReason, SendOutcome, StateRole, StopReason,
};
use raftkv_core::recovery::RecoveryError;
use raftkv_core::rng::Rng;
use raftkv_core::wal::{WalConfig, WalError};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// `--cluster-token` of every simulated node.
pub const TOKEN: &str = "sim";

/// An operator mistake made when a node is next started (see `Swarm::operator_mistakes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mistake {
    /// Started on a directory left from a single-node run of the same id.
    StaleDirectory,
    /// Started on a copy of another member's directory.
    OtherNodesDirectory(u64),
    /// Started with a `--cluster` naming a member its cluster never had.
    ChangedCluster,
}
type Reply = Result<ClientReply, ClientError>;

pub enum Inbound {
    Peer(Vec<u8>),
    Client {
        request_id: Option<RequestId>,
        op: ClientOp,
        timeout_ticks: u64,
        reply: oneshot::Sender<Reply>,
    },
}
pub struct World {
    pub cfg: SimConfig,
    start: Mutex<Option<Instant>>,
    inboxes: Mutex<BTreeMap<u64, mpsc::UnboundedSender<Inbound>>>,
    /// The simulated network (owns its links, queue and stale-message log).
    net: Network,
    /// Every node's disk and the fault atlas's book on them.
    disks: Disks,
    pub obs: Mutex<Observer>,
    /// The clients' record: what the history checkers read.
    pub workload: Workload,
    incarnations: Mutex<BTreeMap<u64, u64>>,
    /// The world's random streams, one per fault class (see `options::Streams`).
    streams: Mutex<Streams>,
    /// Run without core's workaround for the raft-rs campaign-after-snapshot panic.
    without_raft_rs_guard: bool,
    /// Run without core's repair of raft-rs's misplaced batched appends.
    without_batch_append_guard: bool,
    /// Message-level events go into the written trace (`World::note`).
    trace_messages: bool,
    /// Ids removed from the cluster: never restarted.
    retired: Mutex<BTreeSet<u64>>,
    /// The operator has no membership work in progress.
    operator_idle: AtomicBool,
    /// Current members (id -> address) as the supervisor drives membership.
    pub members: Mutex<BTreeMap<u64, String>>,
    /// The flags each node id is started with (what its operator types).
    flags: Mutex<BTreeMap<u64, StartFlags>>,
    /// Mistakes to make at each node's next start.
    mistakes: Mutex<BTreeMap<u64, Mistake>>,
    /// Nodes restarted on a wiped disk under their old id, not yet refused by their peers.
    wiped: Mutex<BTreeSet<u64>>,
    /// Wiped nodes to restart deaf to the leader: they campaign before any heartbeat can stop
    /// them, so their peers must refuse them by their incarnation.
    deaf_restarts: Mutex<BTreeSet<u64>>,
    /// Each node's last applied view of the recorded incarnations (kept while it is down).
    recorded: Mutex<BTreeMap<u64, BTreeMap<u64, u64>>>,
    /// Nodes that stopped themselves (fsync error, ENOSPC) and wait for a restart.
    exited: Mutex<BTreeSet<u64>>,
    /// Nodes that cannot come back with their data (corruption, unreadable disk, lost disk):
    /// to be replaced by a new member with a new id.
    unrecoverable: Mutex<BTreeSet<u64>>,
    /// madsim handles of every raft node ever started, by raft id.
    nodes: Mutex<BTreeMap<u64, NodeHandle>>,
    next_id: Mutex<u64>,
    /// Crashed nodes and when they come back; paused nodes and when they resume.
    down: Mutex<BTreeMap<u64, Instant>>,
    paused: Mutex<BTreeMap<u64, Instant>>,
    /// Latest (applied index, state hash, commit, role) per live node, for convergence.
    pub views: Mutex<BTreeMap<u64, (u64, u64, u64, StateRole)>>,
}

impl World {
    pub fn new(cfg: SimConfig, trace: crate::Trace, opts: &crate::options::WorldOptions) -> Self {
        let members: BTreeMap<u64, String> =
            (1..=cfg.nodes).map(|i| (i, format!("sim://{i}"))).collect();
        let flags = (1..=cfg.nodes)
            .map(|i| {
                (
                    i,
                    StartFlags {
                        peers: members.clone(),
                        token: TOKEN.into(),
                        join: false,
                    },
                )
            })
            .collect();
        World {
            flags: Mutex::new(flags),
            mistakes: Mutex::default(),
            wiped: Mutex::default(),
            deaf_restarts: Mutex::default(),
            recorded: Mutex::default(),
            exited: Mutex::default(),
            unrecoverable: Mutex::default(),
            nodes: Mutex::default(),
            next_id: Mutex::new(100),
            down: Mutex::default(),
            paused: Mutex::default(),
            start: Mutex::new(None),
            disks: Disks::new(cfg.nodes, cfg.seed),
            inboxes: Mutex::default(),
            net: Network::default(),
            obs: Mutex::new(Observer::new(trace != crate::Trace::Hash)),
            trace_messages: trace == crate::Trace::Messages,
            workload: Workload::default(),
            incarnations: Mutex::default(),
            streams: Mutex::new(Streams::new(cfg.seed, "world")),
            operator_idle: AtomicBool::new(true),
            retired: Mutex::default(),
            without_raft_rs_guard: opts.without_raft_rs_guard,
            without_batch_append_guard: opts.without_batch_append_guard,
            members: Mutex::new(members),
            views: Mutex::default(),
            cfg,
        }
    }

    /// Starts the simulated clock (call inside the runtime).
    pub fn reset_clock(&self) {
        *self.start.lock().unwrap() = Some(Instant::now());
    }

    fn start(&self) -> Instant {
        self.start
            .lock()
            .unwrap()
            .expect("clock started inside the runtime")
    }

    pub fn now_ns(&self) -> u64 {
        self.start().elapsed().as_nanos() as u64
    }

    fn record(&self, node: u64, what: &str, detail: serde_json::Value) {
        let now = self.now_ns();
        self.obs.lock().unwrap().record(now, node, what, detail);
    }

    /// A message-level event (`--trace-messages`): in the written trace only, never hashed, so
    /// a trace hash is the same with and without it.
    fn note(&self, node: u64, what: &str, detail: impl FnOnce() -> serde_json::Value) {
        if self.trace_messages {
            let now = self.now_ns();
            self.obs.lock().unwrap().note(now, node, what, detail());
        }
    }

    fn count(&self, what: Counter) {
        self.obs.lock().unwrap().count(what);
    }

    fn violation(&self, checker: Checker, detail: String) {
        let now = self.now_ns();
        self.obs.lock().unwrap().violation_at(now, checker, detail);
    }

    /// Uniform in `0..n`, from `class`'s stream.
    fn below_of(&self, class: FaultClass, n: u64) -> u64 {
        self.streams.lock().unwrap().of(class).below(n)
    }

    /// True with probability `p`, from `class`'s stream (no draw when `p` is zero).
    fn chance_of(&self, class: FaultClass, p: f64) -> bool {
        p > 0.0 && self.streams.lock().unwrap().of(class).chance(p)
    }

    /// An exponential sample of mean `mean` from the weather (delays, latencies).
    fn weather_exp(&self, mean: u64) -> u64 {
        exp_sample(self.streams.lock().unwrap().weather(), mean)
    }

    fn node_config(&self, id: u64, incarnation: u64) -> NodeConfig {
        let mut cfg = NodeConfig::new(
            id,
            self.cfg
                .seed
                .wrapping_mul(31)
                .wrapping_add(id * 1000 + incarnation),
        );
        cfg.compaction.snap_count = self.cfg.snap_count;
        cfg.compaction.catch_up_entries = self.cfg.catch_up_entries;
        cfg.compaction.max_snapshots = 2;
        cfg.compaction.log_bytes_floor = self.cfg.log_bytes_floor;
        cfg.wal = WalConfig {
            segment_size_bytes: self.cfg.segment_size_bytes,
        };
        cfg.max_pending_proposals = 256;
        cfg.max_pending_reads = 256;
        cfg.raft_rs_snapshot_campaign_guard = !self.without_raft_rs_guard;
        cfg.raft_rs_batch_append_guard = !self.without_batch_append_guard;
        cfg.snapshot_chunk_bytes = self.cfg.snapshot_chunk_bytes;
        cfg.snapshot_window_chunks = self.cfg.snapshot_window_chunks;
        // The observer compares replicas entry by entry.
        cfg.trace_applied = true;
        cfg
    }
}

fn exp_sample(r: &mut Rng, mean: u64) -> u64 {
    if mean == 0 {
        return 0;
    }
    let u = (r.below(1_000_000) as f64 + 1.0) / 1_000_001.0;
    (-(u.ln()) * mean as f64) as u64
}

/// Ids whose time in `map` has come (or all of them).
fn due_ids(map: &Mutex<BTreeMap<u64, Instant>>, all: bool, now: Instant) -> Vec<u64> {
    map.lock()
        .unwrap()
        .iter()
        .filter(|(_, t)| all || **t <= now)
        .map(|(id, _)| *id)
        .collect()
}

fn sim_secs(s: f64) -> Duration {
    Duration::from_micros((s * 1e6) as u64)
}

fn exp_f(r: &mut Rng, mean_s: f64) -> f64 {
    if mean_s <= 0.0 {
        return f64::INFINITY;
    }
    let u = (r.below(1_000_000) as f64 + 1.0) / 1_000_001.0;
    -(u.ln()) * mean_s
}

fn later(now: Instant, mean_s: f64, rng: &mut Rng) -> Option<Instant> {
    let s = exp_f(rng, mean_s);
    s.is_finite().then(|| now + sim_secs(s))
}
