//! The simulated world: raft nodes, a network and disks that lie, clients, and a supervisor that
//! injects faults, all on madsim's seeded scheduler, clock and node lifecycle.
//!
//! Each raft node is a madsim node whose init task recovers from its simulated disk and runs the
//! event loop around a `raftkv_core::node::Node`; killing the madsim node kills its disk tasks
//! mid-job. Messages travel through a network task on a node of its own (packets in flight
//! outlive their sender). Disks are `core::memdir::MemDir`s with latency and a crash model.
//! Every `tokio::select!` is `biased`: tokio's default random branch order would leak OS
//! randomness into the schedule.

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
use raftkv_core::rng::Rng;
use raftkv_core::wal::WalConfig;
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

/// The last packets a node sent: (to, bytes).
type SentLog = std::collections::VecDeque<(u64, Vec<u8>)>;

pub enum Inbound {
    Peer(Vec<u8>),
    Client {
        request_id: Option<RequestId>,
        op: ClientOp,
        timeout_ticks: u64,
        reply: oneshot::Sender<Reply>,
    },
}

struct Packet {
    at_ns: u64,
    seq: u64,
    from: u64,
    to: u64,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct NetState {
    /// Directed links that drop everything.
    blocked: BTreeSet<(u64, u64)>,
    calm: bool,
    seq: u64,
}

pub struct World {
    pub cfg: SimConfig,
    start: Mutex<Option<Instant>>,
    pub disks: Mutex<BTreeMap<u64, MemDir>>,
    /// Disk jobs in flight per node (the WAL lane and the snapshot lane).
    busy: Mutex<BTreeMap<u64, u32>>,
    /// Nodes whose disk job is durable but not yet reported (persisted messages still held).
    synced: Mutex<BTreeSet<u64>>,
    inboxes: Mutex<BTreeMap<u64, mpsc::UnboundedSender<Inbound>>>,
    net: Mutex<NetState>,
    net_tx: Mutex<Option<mpsc::UnboundedSender<Packet>>>,
    pub obs: Mutex<Observer>,
    pub history: Mutex<Vec<Op>>,
    pub acked: Mutex<Vec<RequestId>>,
    incarnations: Mutex<BTreeMap<u64, u64>>,
    /// The world's random streams, one per fault class (see `options::Streams`).
    streams: Mutex<Streams>,
    stop_clients: AtomicBool,
    /// Run without core's workaround for the raft-rs campaign-after-snapshot panic.
    without_raft_rs_guard: bool,
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
    /// Crashes of each node's disk so far: a job that outlives one stops quietly.
    disk_epochs: Mutex<BTreeMap<u64, u64>>,
    /// Each node's last applied view of the recorded incarnations (kept while it is down).
    recorded: Mutex<BTreeMap<u64, BTreeMap<u64, u64>>>,
    /// Nodes whose disks may rot (read corruption, latent errors, misdirected writes): a
    /// minority of the initial members.
    bad_disks: BTreeSet<u64>,
    /// Nodes that stopped themselves (fsync error, ENOSPC) and wait for a restart.
    exited: Mutex<BTreeSet<u64>>,
    /// Nodes that cannot come back with their data (corruption, unreadable disk, lost disk):
    /// to be replaced by a new member with a new id.
    unrecoverable: Mutex<BTreeSet<u64>>,
    /// Nodes with injected disk damage not yet replaced (kept to a minority).
    damaged: Mutex<BTreeSet<u64>>,
    /// madsim handles of every raft node ever started, by raft id.
    nodes: Mutex<BTreeMap<u64, NodeHandle>>,
    next_id: Mutex<u64>,
    /// Crashed nodes and when they come back; paused nodes and when they resume.
    down: Mutex<BTreeMap<u64, Instant>>,
    paused: Mutex<BTreeMap<u64, Instant>>,
    /// Recent packets each node sent: replayed as stale messages after it restarts.
    sent_log: Mutex<BTreeMap<u64, SentLog>>,
    /// Latest (applied index, state hash, commit, role) per live node, for convergence.
    pub views: Mutex<BTreeMap<u64, (u64, u64, u64, StateRole)>>,
}

impl World {
    pub fn new(cfg: SimConfig, trace: crate::Trace, without_raft_rs_guard: bool) -> Self {
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
        let bad_disks = (1..=(cfg.nodes - 1) / 2)
            .map(|i| 1 + (cfg.seed + i) % cfg.nodes)
            .collect();
        World {
            flags: Mutex::new(flags),
            mistakes: Mutex::default(),
            wiped: Mutex::default(),
            recorded: Mutex::default(),
            disk_epochs: Mutex::default(),
            bad_disks,
            exited: Mutex::default(),
            unrecoverable: Mutex::default(),
            sent_log: Mutex::default(),
            damaged: Mutex::default(),
            nodes: Mutex::default(),
            next_id: Mutex::new(100),
            down: Mutex::default(),
            paused: Mutex::default(),
            start: Mutex::new(None),
            disks: Mutex::new((1..=cfg.nodes).map(|i| (i, MemDir::new())).collect()),
            busy: Mutex::default(),
            synced: Mutex::default(),
            inboxes: Mutex::default(),
            net: Mutex::default(),
            net_tx: Mutex::new(None),
            obs: Mutex::new(Observer::new(trace != crate::Trace::Hash)),
            trace_messages: trace == crate::Trace::Messages,
            history: Mutex::default(),
            acked: Mutex::default(),
            incarnations: Mutex::default(),
            streams: Mutex::new(Streams::new(cfg.seed, "world")),
            stop_clients: AtomicBool::new(false),
            operator_idle: AtomicBool::new(true),
            retired: Mutex::default(),
            without_raft_rs_guard,
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
        cfg.wal = WalConfig {
            segment_size_bytes: self.cfg.segment_size_bytes,
        };
        cfg.max_pending_proposals = 256;
        cfg.max_pending_reads = 256;
        cfg.raft_rs_snapshot_campaign_guard = !self.without_raft_rs_guard;
        cfg.snapshot_chunk_bytes = self.cfg.snapshot_chunk_bytes;
        cfg.snapshot_window_chunks = self.cfg.snapshot_window_chunks;
        cfg
    }

    /// Decides a message's fate at send time. Returns false if the sender would see the send
    /// fail (partitioned link: a TCP connect would fail); a lost packet "succeeds".
    fn net_send(&self, from: u64, to: u64, kind: &'static str, bytes: Vec<u8>) -> bool {
        let now = self.now_ns();
        let (calm, blocked) = {
            let n = self.net.lock().unwrap();
            (n.calm, n.blocked.contains(&(from, to)))
        };
        if blocked {
            self.count(Counter::NetBlocked);
            self.note(from, "send", || serde_json::json!({"to": to, "kind": kind, "bytes": bytes.len(), "fate": "refused: link blocked"}));
            return false;
        }
        if self.cfg.swarm.stale_messages {
            let mut log = self.sent_log.lock().unwrap();
            let q = log.entry(from).or_default();
            q.push_back((to, bytes.clone()));
            if q.len() > 16 {
                q.pop_front();
            }
        }
        let f = &self.cfg.net;
        if !calm && self.chance_of(FaultClass::NetLoss, f.loss) {
            self.count(Counter::NetLost);
            self.note(from, "send", || serde_json::json!({"to": to, "kind": kind, "bytes": bytes.len(), "fate": "lost"}));
            return true;
        }
        let copies = if !calm && self.chance_of(FaultClass::NetDuplicate, f.duplicate) {
            self.count(Counter::NetDuplicated);
            2
        } else {
            1
        };
        for c in 0..copies {
            let mut bytes = bytes.clone();
            let mut corrupted = false;
            if !calm
                && c == 0
                && !bytes.is_empty()
                && self.chance_of(FaultClass::NetCorrupt, f.corrupt)
            {
                let at = self.below_of(FaultClass::NetCorrupt, bytes.len() as u64) as usize;
                bytes[at] ^= 1 << self.below_of(FaultClass::NetCorrupt, 8);
                self.count(Counter::NetCorrupted);
                corrupted = true;
            }
            let mut delay = f.delay_base_us + self.weather_exp(f.delay_tail_us);
            if !calm && self.chance_of(FaultClass::NetLongDelay, f.long_tail) {
                delay += exp_sample(
                    self.streams.lock().unwrap().of(FaultClass::NetLongDelay),
                    f.delay_tail_us * 100,
                );
                self.count(Counter::NetLongDelay);
            }
            let seq = {
                let mut n = self.net.lock().unwrap();
                n.seq += 1;
                n.seq
            };
            self.note(from, "send", || {
                serde_json::json!({"to": to, "kind": kind, "bytes": bytes.len(), "seq": seq,
                    "fate": if c == 1 { "duplicate" } else { "sent" },
                    "corrupted": corrupted, "delay_us": delay})
            });
            let pkt = Packet {
                at_ns: now + delay * 1000,
                seq,
                from,
                to,
                bytes,
            };
            if let Some(tx) = self.net_tx.lock().unwrap().as_ref() {
                let _ = tx.send(pkt);
            }
        }
        true
    }
}

fn exp_sample(r: &mut Rng, mean: u64) -> u64 {
    if mean == 0 {
        return 0;
    }
    let u = (r.below(1_000_000) as f64 + 1.0) / 1_000_001.0;
    (-(u.ln()) * mean as f64) as u64
}

/// The network: delivers packets at their time to whatever incarnation of the target is up,
/// unless the link is blocked at delivery time.
async fn net_loop(world: Arc<World>, mut rx: mpsc::UnboundedReceiver<Packet>) {
    let mut heap: BinaryHeap<Reverse<(u64, u64, u64, u64)>> = BinaryHeap::new();
    let mut payloads: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    loop {
        let next = heap.peek().map(|Reverse((at, ..))| *at);
        let wake = match next {
            Some(at) => world.start() + Duration::from_nanos(at),
            None => Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            biased;
            p = rx.recv() => match p {
                Some(p) => {
                    heap.push(Reverse((p.at_ns, p.seq, p.from, p.to)));
                    payloads.insert(p.seq, p.bytes);
                }
                None => return,
            },
            _ = sleep_until(wake) => {
                let now = world.now_ns();
                while let Some(Reverse((at, seq, from, to))) = heap.peek().copied() {
                    if at > now {
                        break;
                    }
                    heap.pop();
                    let bytes = payloads.remove(&seq).expect("payload");
                    if world.net.lock().unwrap().blocked.contains(&(from, to)) {
                        world.count(Counter::NetBlocked);
                        world.note(to, "deliver", || serde_json::json!({"from": from, "seq": seq, "fate": "dropped: link blocked"}));
                        continue;
                    }
                    let inbox = world.inboxes.lock().unwrap().get(&to).cloned();
                    world.note(to, "deliver", || serde_json::json!({"from": from, "seq": seq,
                        "fate": if inbox.is_some() { "delivered" } else { "dropped: node down" }}));
                    if let Some(tx) = inbox {
                        let _ = tx.send(Inbound::Peer(bytes));
                    }
                }
            }
        }
    }
}

/// How a disk job ended.
enum JobEnd {
    Done(u64),
    /// A snapshot job's file (of this many bytes) is durable.
    SnapshotSaved(u64, u64),
    /// A read of a snapshot file streaming to a follower.
    Read(u64, Result<Vec<u8>, DiskFailure>),
    /// The disk reported an error: the node must stop (never retry an fsync).
    Failed(u64, DiskFailure),
}

/// Runs one disk job op by op with latency; a kill stops it wherever it is. Injects the rare
/// disk faults of the seed: fsync errors, ENOSPC, misdirected writes.
async fn disk_job(
    world: Arc<World>,
    id: u64,
    job: raftkv_core::node::DiskJob,
    done: mpsc::UnboundedSender<JobEnd>,
) {
    run_ops(world, id, job.id, job.ops, JobEnd::Done(job.id), done).await
}

/// The snapshot lane: serialise piece by piece as the ops are taken (no simulated time: CPU),
/// writing like any disk job, concurrently with the node's WAL jobs.
async fn snapshot_job(
    world: Arc<World>,
    id: u64,
    job: raftkv_core::node::SnapshotJob,
    done: mpsc::UnboundedSender<JobEnd>,
) {
    let (file_bytes, ops) = job.write();
    let end = JobEnd::SnapshotSaved(job.id, file_bytes);
    run_ops(world, id, job.id, ops, end, done).await
}

/// Reads part of a snapshot file (streaming to a follower) after a disk op's latency. A read
/// sees the page cache; one cut short by a crash never completes.
async fn read_job(
    world: Arc<World>,
    id: u64,
    job: raftkv_core::node::ReadJob,
    done: mpsc::UnboundedSender<JobEnd>,
) {
    let epoch = world.disk_epoch(id);
    let d = &world.cfg.disk;
    let tail = world.weather_exp(d.tail_us);
    sleep(Duration::from_micros(d.op_us + tail)).await;
    if world.disk_epoch(id) != epoch {
        return;
    }
    let result = {
        let disks = world.disks.lock().unwrap();
        job.from_bytes(disks.get(&id).and_then(|d| d.read(&job.name)))
    };
    world.count(Counter::SnapshotReads);
    let _ = done.send(JobEnd::Read(job.id, result));
}

async fn run_ops(
    world: Arc<World>,
    id: u64,
    job_id: u64,
    ops: impl IntoIterator<Item = FileOp>,
    end: JobEnd,
    done: mpsc::UnboundedSender<JobEnd>,
) {
    world.io_begin(id);
    let epoch = world.disk_epoch(id);
    let slowness = world
        .cfg
        .slowness
        .get((id - 1) as usize)
        .copied()
        .unwrap_or(1);
    let (sw, rare) = (&world.cfg.swarm, &world.cfg.rare);
    for op in ops {
        let op = &op;
        // Slow disks are a fault: they recover when the world heals.
        let slow = if world.net.lock().unwrap().calm {
            1
        } else {
            slowness
        };
        let d = &world.cfg.disk;
        let base = if op.is_sync() { d.sync_us } else { d.op_us };
        let tail = world.weather_exp(d.tail_us);
        sleep(Duration::from_micros((base + tail) * slow)).await;
        let calm = world.net.lock().unwrap().calm;
        if !calm
            && sw.fsync_errors
            && op.is_sync()
            && world.chance_of(FaultClass::FsyncErrors, rare.fsync_error)
        {
            // After a failed fsync the kernel may have dropped the dirty pages: what was not
            // synced before is gone, and the node must not carry on.
            let mut rng = Rng::new(world.below_of(FaultClass::FsyncErrors, u64::MAX));
            world
                .disks
                .lock()
                .unwrap()
                .get_mut(&id)
                .expect("disk")
                .crash(CrashKind::PowerLoss, &mut |n| rng.below(n));
            world.bump_disk_epoch(id);
            world.count(Counter::FsyncFailures);
            world.record(
                id,
                "fault",
                serde_json::json!({"fault": "fsync_error", "file": op.file_name()}),
            );
            world.io_end(id);
            let failure = DiskFailure {
                op: "fsync",
                file: op.file_name().map(str::to_string),
                kind: std::io::ErrorKind::Other,
            };
            let _ = done.send(JobEnd::Failed(job_id, failure));
            return;
        }
        let is_write = matches!(op, FileOp::WriteAt { .. } | FileOp::Create { .. });
        if !calm && sw.enospc && is_write && world.chance_of(FaultClass::Enospc, rare.enospc) {
            if debug_node(id) {
                eprintln!(
                    "[{} ns] node {id} job {} ENOSPC on {:?}",
                    world.now_ns(),
                    job_id,
                    op
                );
            }
            world.count(Counter::Enospc);
            world.record(
                id,
                "fault",
                serde_json::json!({"fault": "enospc", "file": op.file_name()}),
            );
            world.io_end(id);
            let failure = DiskFailure {
                op: "write",
                file: op.file_name().map(str::to_string),
                kind: std::io::ErrorKind::StorageFull,
            };
            let _ = done.send(JobEnd::Failed(job_id, failure));
            return;
        }
        let mut op = op.clone();
        // Misdirected writes hit snapshot files, whose checksum must catch them. In the WAL's
        // tail a write that lands elsewhere leaves zeros where it belonged, which reads as a
        // torn write: a documented limit of a single-copy log.
        let to_snapshot = op
            .file_name()
            .is_some_and(|n| n.ends_with(".snap.tmp") || n.ends_with(".snap.recv.tmp"));
        if !calm
            && sw.misdirected_writes
            && to_snapshot
            && world.may_damage(id)
            && world.chance_of(FaultClass::MisdirectedWrites, rare.misdirected * 20.0)
        {
            if let FileOp::WriteAt { offset, .. } = &mut op {
                let shift = 512 * (1 + world.below_of(FaultClass::MisdirectedWrites, 8));
                *offset += shift;
                world.count(Counter::MisdirectedWrites);
                world.record(id, "fault", serde_json::json!({"fault": "misdirected_write", "file": op.file_name(), "shift_bytes": shift}));
                world.mark_damaged(id);
            }
        }
        if debug_node(id) {
            eprintln!("[{} ns] node {id} job {} {:?}", world.now_ns(), job_id, op);
        }
        let r = world
            .disks
            .lock()
            .unwrap()
            .get_mut(&id)
            .expect("disk")
            .apply(&op);
        if let Err(e) = r {
            if world.disk_epoch(id) != epoch {
                // The disk crashed under this job (the other lane's fsync failed, say): the job
                // dies with its process, it did not misuse the disk.
                world.io_end(id);
                return;
            }
            world.violation(Checker::Disk, format!("node {id}: {op:?} failed: {e}"));
            return;
        }
    }
    // The window between a completed sync and the sends that wait for it: the node still counts
    // as busy, so the supervisor's crashes land here too.
    world.synced.lock().unwrap().insert(id);
    let gap_us = 1 + world.weather_exp(500);
    sleep(Duration::from_micros(gap_us)).await;
    world.synced.lock().unwrap().remove(&id);
    world.io_end(id);
    let _ = done.send(end);
}

/// `RAFTKV_SIM_DEBUG_NODE=N` prints node N's disk ops.
fn debug_node(id: u64) -> bool {
    std::env::var("RAFTKV_SIM_DEBUG_NODE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        == Some(id)
}

/// Sticky read corruption and latent sector errors, applied to a bad disk before a restart.
fn rot_disk(world: &World, id: u64) -> bool {
    let (sw, rare) = (&world.cfg.swarm, &world.cfg.rare);
    if !world.may_damage(id) {
        return false;
    }
    let mut unreadable = false;
    let mut disks = world.disks.lock().unwrap();
    let d = disks.get_mut(&id).expect("disk");
    // Rot lands in sealed WAL segments and snapshot files. Bit rot in the active segment's tail
    // can be indistinguishable from a torn write without a second copy of the log (etcd shares
    // this limit), so it is not injected there; see README, "Fault model".
    let mut wal: Vec<String> = d
        .list()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    wal.sort();
    wal.pop();
    let files: Vec<String> = wal
        .into_iter()
        .chain(d.list().into_iter().filter(|n| n.ends_with(".snap")))
        .collect();
    if files.is_empty() {
        return false;
    }
    let rot = FaultClass::ReadCorruption;
    if sw.read_corruption && world.chance_of(rot, rare.read_corruption) {
        let name = &files[world.below_of(rot, files.len() as u64) as usize];
        let mut bytes = d.read(name).expect("listed").to_vec();
        // Only bytes that were written (up to the last non-zero byte) rot.
        if let Some(end) = bytes.iter().rposition(|&b| b != 0) {
            let at = world.below_of(rot, end as u64 + 1) as usize;
            bytes[at] ^= 1 << world.below_of(rot, 8);
            d.overwrite(name, bytes).expect("listed");
            drop(disks);
            world.mark_damaged(id);
            world.count(Counter::ReadCorruptionInjected);
            world.record(
                id,
                "fault",
                serde_json::json!({"fault": "read_corruption", "file": name, "offset": at}),
            );
            disks = world.disks.lock().unwrap();
        }
    }
    if sw.latent_sector_errors && world.chance_of(FaultClass::LatentSectorErrors, rare.latent_error)
    {
        unreadable = true;
        world.mark_damaged(id);
        world.count(Counter::LatentSectorErrors);
        world.record(
            id,
            "fault",
            serde_json::json!({"fault": "latent_sector_error"}),
        );
    }
    drop(disks);
    unreadable
}

/// A raft node's life: recover from its disk, then run the event loop until killed or stopped.
async fn node_main(world: Arc<World>, id: u64) {
    let incarnation = {
        let mut inc = world.incarnations.lock().unwrap();
        let e = inc.entry(id).or_insert(0);
        *e += 1;
        *e
    };
    let unreadable = incarnation > 1 && rot_disk(&world, id);
    let cfg = world.node_config(id, incarnation);
    let flags = world.flags.lock().unwrap()[&id].clone();
    if let Some(mistake) = world.mistakes.lock().unwrap().remove(&id) {
        world.try_mistake(id, &cfg, &flags, mistake);
    }
    let booted = {
        let disks = world.disks.lock().unwrap();
        let d = &disks[&id];
        let mut first_read = true;
        boot(cfg, &flags, &d.list(), &mut |n| {
            if unreadable && std::mem::take(&mut first_read) {
                return Err("EIO: latent sector error".to_string());
            }
            d.read(n)
                .map(|b| b.to_vec())
                .ok_or_else(|| "missing".to_string())
        })
    };
    let mut node = match booted {
        Ok(n) => n,
        Err(BootError::Removed { .. })
        | Err(BootError::Node(raftkv_core::node::NodeError::Removed)) => {
            world.record(
                id,
                "stopped",
                serde_json::json!({"reason": "data directory of a removed node"}),
            );
            return;
        }
        Err(e) => {
            // Expected only where the disk was made to rot: then the node is replaced.
            if world.bad_disks.contains(&id) {
                world.count(Counter::CorruptionDetected);
                world.record(
                    id,
                    "unrecoverable",
                    serde_json::json!({"error": e.to_string()}),
                );
                world.unrecoverable.lock().unwrap().insert(id);
            } else {
                world.violation(
                    Checker::Recovery,
                    format!("node {id} incarnation {incarnation}: {e}"),
                );
            }
            return;
        }
    };
    world.record(id, "start", serde_json::json!({"incarnation": incarnation}));
    let (tx, mut rx) = mpsc::unbounded_channel();
    world.inboxes.lock().unwrap().insert(id, tx);
    if incarnation > 1 && world.cfg.swarm.stale_messages {
        // Packets from the previous incarnation, still wandering the network.
        let old: Vec<(u64, Vec<u8>)> = world
            .sent_log
            .lock()
            .unwrap()
            .remove(&id)
            .map(|q| q.into_iter().collect())
            .unwrap_or_default();
        for (to, bytes) in old.into_iter().take(4) {
            world.count(Counter::StaleMessagesReplayed);
            world.net_send(id, to, "stale", bytes);
        }
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut pending: BTreeMap<u64, oneshot::Sender<Reply>> = BTreeMap::new();
    let mut next_handle = 1u64;
    let drift = world
        .cfg
        .drift
        .get((id - 1) as usize)
        .copied()
        .unwrap_or(1.0);
    let tick = Duration::from_micros((world.cfg.tick_ms as f64 * 1000.0 * drift) as u64);
    let mut next_tick = Instant::now() + tick;
    let mut last_applied = u64::MAX;
    let mut last_hash = 0;
    loop {
        for action in node.drain() {
            match action {
                Action::Disk(job) => {
                    madsim::task::spawn(disk_job(world.clone(), id, job, done_tx.clone()));
                }
                Action::Snapshot(job) => {
                    world.count(Counter::SnapshotJobs);
                    madsim::task::spawn(snapshot_job(world.clone(), id, job, done_tx.clone()));
                }
                Action::Read(job) => {
                    madsim::task::spawn(read_job(world.clone(), id, job, done_tx.clone()));
                }
                Action::Send(o) => {
                    {
                        let mut obs = world.obs.lock().unwrap();
                        obs.record_bytes(&o.to.to_le_bytes());
                        obs.record_bytes(&o.bytes);
                    }
                    if o.kind == FrameKind::SnapshotChunk {
                        world.count(Counter::SnapshotChunksSent);
                    }
                    let (to, kind) = (o.to, o.kind);
                    let label = match kind {
                        FrameKind::Raft => "raft",
                        FrameKind::SnapshotChunk => "snapshot_chunk",
                        FrameKind::Forward { .. } => "forward",
                        FrameKind::Other => "other",
                    };
                    node.sent(if world.net_send(id, to, label, o.bytes) {
                        SendOutcome::Delivered { to, kind }
                    } else {
                        SendOutcome::Failed { to, kind }
                    });
                }
                Action::Reply { handle, result } => {
                    if let Some(tx) = pending.remove(&handle) {
                        let _ = tx.send(result);
                    }
                }
                Action::Event(e) => observe_event(&world, id, e),
            }
        }
        let s = node.status();
        // Index 0 is a joiner before its first snapshot: not replicated state yet. The state
        // hash (a serialisation of the whole state machine) is taken only when applied moves.
        if s.applied_index != last_applied {
            last_applied = s.applied_index;
            last_hash = node.kv().hash();
            if s.applied_index > 0 {
                world
                    .obs
                    .lock()
                    .unwrap()
                    .state(id, s.applied_index, last_hash);
            }
            world
                .recorded
                .lock()
                .unwrap()
                .insert(id, s.incarnations.clone());
        }
        world
            .views
            .lock()
            .unwrap()
            .insert(id, (s.applied_index, last_hash, s.commit_index, s.role));
        if let Some(reason) = node.stopped() {
            world.node_stopped(id, reason);
            return;
        }
        tokio::select! {
            biased;
            Some(end) = done_rx.recv() => match end {
                JobEnd::Done(job) => node.disk_done(job),
                JobEnd::SnapshotSaved(job, file_bytes) => node.snapshot_saved(job, file_bytes),
                JobEnd::Read(job, result) => node.read_done(job, result),
                JobEnd::Failed(job, failure) => node.disk_failed(job, failure),
            },
            Some(m) = rx.recv() => match m {
                Inbound::Peer(bytes) => {
                    if node.receive(&bytes).is_err() {
                        world.count(Counter::PeerFramesRejected);
                    }
                }
                Inbound::Client { request_id, op, timeout_ticks, reply } => {
                    let handle = next_handle;
                    next_handle += 1;
                    pending.insert(handle, reply);
                    node.client(ClientRequest { handle, request_id, timeout_ticks, op });
                }
            },
            _ = sleep_until(next_tick) => {
                node.tick();
                next_tick += tick;
            }
        }
    }
}

fn observe_event(world: &World, id: u64, e: Event) {
    let mut obs = world.obs.lock().unwrap();
    match &e {
        Event::Applied {
            index,
            term,
            entry_hash,
            request_id,
        } => {
            obs.applied(id, *index, *term, *entry_hash, *request_id);
            return; // too many for the trace; the state hashes cover them
        }
        Event::Durable { hard_state } => {
            obs.durable(id, *hard_state);
            return;
        }
        Event::Recovered {
            hard_state, report, ..
        } => {
            obs.recovered(id, *hard_state);
            if report.torn_tail.is_some() {
                obs.count(Counter::TornTailsRepaired);
            }
            if !report.removed_orphan_snapshots.is_empty() {
                obs.count(Counter::OrphanSnapshotsRemoved);
            }
            if !report.set_aside.is_empty() {
                obs.count(Counter::SnapshotsSetAside);
            }
            if report.snapshot.is_some() {
                obs.count(Counter::RestartsFromSnapshot);
            }
        }
        Event::PeerRefused { .. } => obs.count(Counter::PeerIncarnationsRefused),
        Event::IncarnationProposed { .. } => obs.count(Counter::IncarnationsRecorded),
        Event::ClusterAdopted { .. } => obs.count(Counter::ClusterIdsAdopted),
        Event::RoleChanged {
            term,
            role: StateRole::Leader,
            ..
        } => {
            obs.leader(id, *term);
            obs.count(Counter::Elections);
        }
        Event::SnapshotSaved { .. } => obs.count(Counter::SnapshotsTaken),
        Event::SnapshotSuperseded { .. } => obs.count(Counter::SnapshotsSuperseded),
        Event::SnapshotInstalled { .. } => obs.count(Counter::SnapshotsInstalled),
        Event::SnapshotSendStarted { .. } => obs.count(Counter::SnapshotSendsStarted),
        Event::SnapshotSent { .. } => obs.count(Counter::SnapshotsSent),
        Event::SnapshotSendResumed { .. } => obs.count(Counter::SnapshotSendsResumed),
        Event::SnapshotChunksResent { .. } => obs.count(Counter::SnapshotChunksResent),
        Event::SnapshotSendFailed { .. } => obs.count(Counter::SnapshotSendsFailed),
        Event::SnapshotSetAside { .. } => obs.count(Counter::DamagedSnapshotsRefusedByFollowers),
        Event::SnapshotReceived { .. } => obs.count(Counter::SnapshotsReceived),
        Event::SnapshotRefused { .. } => obs.count(Counter::SnapshotsRefused),
        Event::SnapshotReceiveAbandoned { .. } => obs.count(Counter::SnapshotReceivesAbandoned),
        Event::CompactedLog { .. } => obs.count(Counter::Compactions),
        Event::Purged { .. } => obs.count(Counter::Purges),
        Event::MemberAdded { .. } | Event::MemberRemoved { .. } | Event::LearnerAdded { .. } => {
            obs.count(Counter::ConfChangesApplied)
        }
        Event::LearnerPromoted { .. } => {
            obs.count(Counter::ConfChangesApplied);
            obs.count(Counter::LearnersPromoted);
        }
        _ => {}
    }
    let now = world.now_ns();
    obs.record(
        now,
        id,
        "event",
        serde_json::to_value(&e).expect("events serialise"),
    );
}

impl World {
    /// A node stopped: decide what that means for the world (and the checkers).
    fn node_stopped(&self, id: u64, reason: &StopReason) {
        self.record(
            id,
            "stopped",
            serde_json::json!({"reason": reason.to_string()}),
        );
        self.inboxes.lock().unwrap().remove(&id);
        self.views.lock().unwrap().remove(&id);
        // Still wiped until its peers refuse it (a disk error may stop it first).
        let wiped = self.wiped.lock().unwrap().contains(&id);
        if matches!(
            reason,
            StopReason::NotRecognized { .. } | StopReason::LogBehindLeader { .. }
        ) {
            self.wiped.lock().unwrap().remove(&id);
        }
        match reason {
            StopReason::Removed | StopReason::RemovedReported { .. } => {}
            // The real shell exits on a disk error; so does this node, until restarted.
            StopReason::Disk { .. } => {
                self.exited.lock().unwrap().insert(id);
            }
            // A wiped disk under its old id must be refused by its incarnation (every member
            // had recorded the old one before the wipe); then it is replaced.
            StopReason::NotRecognized { .. } if wiped => {
                self.count(Counter::WipedRestartsRefused);
                self.unrecoverable.lock().unwrap().insert(id);
            }
            // Only raft's own commit invariant (guarded in core) noticed: the incarnation check
            // did not fire, and until that heartbeat the node could vote.
            StopReason::LogBehindLeader { .. } if wiped => {
                self.unrecoverable.lock().unwrap().insert(id);
                self.violation(
                    Checker::Identity,
                    format!("node {id} restarted on a wiped disk was not refused by its incarnation: {reason}"),
                )
            }
            // An honest node refused, or one that lost synced writes without being told to: the
            // storage or the protocol lost data.
            StopReason::NotRecognized { .. } => {
                self.violation(Checker::Identity, format!("node {id}: {reason}"))
            }
            StopReason::LogBehindLeader { .. } => {
                self.violation(Checker::DurableState, format!("node {id}: {reason}"))
            }
            StopReason::BadSnapshotFromLeader { .. } | StopReason::PeerUrlNotConfirmed { .. } => {
                self.violation(Checker::Fatal, format!("node {id}: {reason}"))
            }
        }
    }

    /// Starts `id` the wrong way first; the mistake must be refused at boot (then the operator
    /// reads the error and starts it the right way).
    fn try_mistake(&self, id: u64, cfg: &NodeConfig, flags: &StartFlags, mistake: Mistake) {
        let dir = match mistake {
            Mistake::StaleDirectory => {
                // A single-node run of the same id, left behind: boot it and run its first job.
                let solo = StartFlags {
                    peers: [(id, flags.peers[&id].clone())].into(),
                    token: flags.token.clone(),
                    join: false,
                };
                let mut d = MemDir::new();
                let mut n = boot(cfg.clone(), &solo, &[], &mut |_| Err("empty".into()))
                    .expect("boot on an empty directory");
                for a in n.drain() {
                    if let Action::Disk(job) = a {
                        for op in &job.ops {
                            d.apply(op).expect("memdir op");
                        }
                        n.disk_done(job.id);
                    }
                }
                d
            }
            Mistake::OtherNodesDirectory(other) => match self.disks.lock().unwrap().get(&other) {
                Some(d) => d.clone(),
                None => return,
            },
            Mistake::ChangedCluster => self.disks.lock().unwrap()[&id].clone(),
        };
        let mut wrong_flags = flags.clone();
        if mistake == Mistake::ChangedCluster {
            wrong_flags.peers.insert(999, "sim://999".into());
        }
        let r = boot(cfg.clone(), &wrong_flags, &dir.list(), &mut |n| {
            dir.read(n)
                .map(|b| b.to_vec())
                .ok_or_else(|| "missing".to_string())
        });
        let expected = match (&r, mistake) {
            (Err(BootError::StrangerPeers { .. }), Mistake::StaleDirectory) => true,
            (Err(BootError::WrongNode { .. }), Mistake::OtherNodesDirectory(_)) => true,
            (Err(BootError::StrangerPeers { .. }), Mistake::ChangedCluster) => true,
            // A rotten directory is refused for its damage first.
            (Err(BootError::Recovery(_)), _) => self.bad_disks.contains(&id),
            // A removed member's own directory is refused for that first.
            (Err(BootError::Removed { .. }), Mistake::ChangedCluster) => true,
            // A directory with no snapshot yet (its first job never completed, or a joiner's
            // before its first one) has no history to contradict the flags: nothing to refuse,
            // nothing lost.
            (Ok(n), Mistake::ChangedCluster | Mistake::OtherNodesDirectory(_)) => {
                n.status().snapshot_index == 0 || !dir.list().iter().any(|f| f.ends_with(".snap"))
            }
            _ => false,
        };
        let what = format!("{mistake:?}");
        let outcome = match &r {
            Ok(_) => "accepted".to_string(),
            Err(e) => e.to_string(),
        };
        self.record(
            id,
            "mistake",
            serde_json::json!({"mistake": what, "outcome": outcome}),
        );
        if expected {
            self.count(Counter::OperatorMistakesRefused);
        } else {
            self.violation(
                Checker::Identity,
                format!(
                    "node {id}: operator mistake {what} was not refused as expected: {outcome}"
                ),
            );
        }
    }

    /// True if every member's last view holds `id`'s incarnation: a wipe of `id` is then a
    /// mistake its peers can tell (before that, a wiped node is indistinguishable from one that
    /// never ran, the documented first-contact window).
    fn incarnation_known_everywhere(&self, id: u64) -> bool {
        let recorded = self.recorded.lock().unwrap();
        self.member_ids()
            .iter()
            .all(|m| recorded.get(m).is_some_and(|r| r.contains_key(&id)))
    }

    /// The node that last reported itself leader, if any.
    fn leader(&self) -> Option<u64> {
        self.views
            .lock()
            .unwrap()
            .iter()
            .find(|(_, v)| v.3 == StateRole::Leader)
            .map(|(id, _)| *id)
    }

    fn member_ids(&self) -> Vec<u64> {
        self.members.lock().unwrap().keys().copied().collect()
    }

    fn random_member(&self, rng: &mut Rng) -> u64 {
        let ids = self.member_ids();
        ids[rng.below(ids.len() as u64) as usize]
    }
}

/// Sends one request to node `target` and waits for its reply (None: the node is down, died
/// holding the request, or did not answer in time).
async fn call(
    world: &World,
    target: u64,
    request_id: Option<RequestId>,
    op: ClientOp,
) -> Option<Reply> {
    call_traced(world, target, request_id, op).await.ok()
}

/// Why a call got no reply.
enum NoReply {
    /// The node was down: the request never reached it.
    NotSent,
    /// It reached the node, which died holding it or did not answer in time: it may have been
    /// proposed.
    Unanswered,
}

async fn call_traced(
    world: &World,
    target: u64,
    request_id: Option<RequestId>,
    op: ClientOp,
) -> Result<Reply, NoReply> {
    let ticks = (world.cfg.client_timeout_ms / world.cfg.tick_ms).max(1);
    let inbox = world
        .inboxes
        .lock()
        .unwrap()
        .get(&target)
        .cloned()
        .ok_or(NoReply::NotSent)?;
    let (tx, rx) = oneshot::channel();
    let request = Inbound::Client {
        request_id,
        op,
        timeout_ticks: ticks,
        reply: tx,
    };
    if inbox.send(request).is_err() {
        return Err(NoReply::NotSent);
    }
    match madsim::time::timeout(Duration::from_millis(world.cfg.client_timeout_ms + 500), rx).await
    {
        Ok(Ok(r)) => Ok(r),
        _ => Err(NoReply::Unanswered),
    }
}

/// One client: operations on a small key set against random members, with retries under the
/// same request id until a definite answer or the retry budget runs out.
async fn client_main(world: Arc<World>, cid: u64) {
    let mut rng = Rng::new(world.cfg.seed ^ (cid << 32) ^ 0xC11E);
    let mut seq = 0u64;
    while !world.stop_clients.load(Ordering::Relaxed) {
        seq += 1;
        let key = format!("k{}", rng.below(world.cfg.keys));
        let (kind, op, input) = match rng.below(100) {
            0..=39 => {
                let v = format!("c{cid}-{seq}");
                (
                    OpKind::Put,
                    ClientOp::Put {
                        key: key.clone().into_bytes(),
                        value: v.clone().into_bytes(),
                    },
                    Some(v),
                )
            }
            40..=49 => (
                OpKind::Delete,
                ClientOp::Delete {
                    key: key.clone().into_bytes(),
                },
                None,
            ),
            50..=84 => (
                OpKind::Get,
                ClientOp::Get {
                    key: key.clone().into_bytes(),
                },
                None,
            ),
            _ => (
                OpKind::GetLocal,
                ClientOp::GetLocal {
                    key: key.clone().into_bytes(),
                },
                None,
            ),
        };
        let is_write = matches!(kind, OpKind::Put | OpKind::Delete);
        let rid = is_write.then_some(RequestId { client: cid, seq });
        let invoke_ns = world.now_ns();
        let mut maybe_applied = false;
        let mut result: Option<Reply> = None;
        let mut target = world.random_member(&mut rng);
        for attempt in 0..40 {
            if attempt > 0 {
                sleep(Duration::from_millis(10 + rng.below(40))).await;
            }
            match call_traced(&world, target, rid, op.clone()).await {
                Ok(Ok(reply)) => {
                    result = Some(Ok(reply));
                    break;
                }
                Ok(Err(e)) => {
                    // The node's claim, taken at its word: a definite answer means this attempt
                    // was never applied. A write no attempt left in doubt is left out of the
                    // history (it never happened), so if it was applied after all, a read that
                    // sees its unique value fails the linearizability check.
                    maybe_applied |= e.outcome_unknown();
                    if matches!(e, ClientError::NoLeader { .. }) {
                        world.count(Counter::NoLeaderAnswers);
                    }
                    // Some clients take a definite 503 as final, as a real one may: that is
                    // what puts the claim to the test (a retry under the same request id would
                    // hide an application by the attempt that claimed none).
                    let give_up = is_write && !maybe_applied && rng.below(4) == 0;
                    target = match e {
                        ClientError::NotLeader { leader: Some(l) } => l,
                        _ => world.random_member(&mut rng),
                    };
                    if matches!(e, ClientError::Rejected(_)) || (give_up && !e.outcome_unknown()) {
                        result = Some(Err(e));
                        break;
                    }
                }
                Err(NoReply::NotSent) => target = world.random_member(&mut rng),
                Err(NoReply::Unanswered) => {
                    // Died holding it, or silent: it may have been proposed. (Whether the node
                    // is up after the call says nothing: one that crashed holding it is not.)
                    maybe_applied = true;
                    target = world.random_member(&mut rng);
                }
            }
            if kind == OpKind::GetLocal {
                break;
            }
        }
        let complete_ns = world.now_ns();
        let output = match &result {
            Some(Ok(ClientReply::Written(w))) => Some(Output::Existed(match w {
                raftkv_core::kv::WriteResult::Put { existed }
                | raftkv_core::kv::WriteResult::Delete { existed } => *existed,
            })),
            Some(Ok(ClientReply::Value(v))) => Some(Output::Value(
                v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
            )),
            _ => None,
        };
        if is_write && matches!(&result, Some(Err(e)) if !e.outcome_unknown()) && !maybe_applied {
            world.count(Counter::WritesDefinitelyNotApplied);
        }
        // Unknown write outcomes are recorded without a completion; reads and writes that
        // definitely never happened are not recorded.
        if output.is_some() || (is_write && maybe_applied) {
            let op = Op {
                client: cid,
                key,
                kind,
                input,
                output: output.clone(),
                invoke_ns,
                complete_ns: output.as_ref().map(|_| complete_ns),
            };
            world.record(0, "op", serde_json::to_value(&op).expect("op json"));
            if op.complete_ns.is_some() && is_write {
                world
                    .acked
                    .lock()
                    .unwrap()
                    .push(rid.expect("write has an id"));
            }
            world.history.lock().unwrap().push(op);
        }
        sleep(Duration::from_millis(rng.below(20))).await;
    }
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

/// Liveness bound: after the network heals and every node is back, every member must serve a
/// write and a linearizable read, and all must converge, within this many simulated seconds.
pub const LIVENESS_BOUND_S: u64 = 15;

/// Membership work (replacing unrecoverable nodes, growing, shrinking) runs in a task of its own
/// so the fault loop never stalls while a change waits for a quorum.
/// How a membership change ended for the operator.
enum ChangeOutcome {
    Done,
    /// Refused before it was proposed (it would have cost the cluster its quorum).
    Refused,
    /// No definite answer in time: it may still commit.
    Unknown,
}

enum MemberCmd {
    Grow,
    Shrink(u64),
}

struct Operator {
    world: Arc<World>,
    /// Membership changes draw from `Membership`, mistakes from `OperatorMistakes`.
    streams: Streams,
    /// Nodes started and proposed for addition whose addition is not yet confirmed.
    pending_adds: BTreeSet<u64>,
    /// Unrecoverable nodes whose replacement was already added.
    replacing: BTreeSet<u64>,
    /// Removals proposed whose outcome is not yet confirmed.
    pending_removes: BTreeSet<u64>,
}

impl Operator {
    /// Drives one membership change through the client path (any member; followers forward).
    /// "Already a member" / "not a member" count as done: an earlier attempt whose outcome was
    /// unknown went through.
    async fn member_change(&mut self, op: ClientOp) -> ChangeOutcome {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut target = self
            .world
            .random_member(self.streams.of(FaultClass::Membership));
        let mut maybe_applied = false;
        while Instant::now() < deadline {
            match call(&self.world, target, None, op.clone()).await {
                Some(Ok(ClientReply::Members(_))) => {
                    self.world.count(Counter::ConfChanges);
                    return ChangeOutcome::Done;
                }
                Some(Err(ClientError::Rejected(
                    RejectReason::AlreadyMember { .. }
                    | RejectReason::NotMember { .. }
                    | RejectReason::NotLearner { .. },
                ))) => return ChangeOutcome::Done,
                // Refused before proposing, and no earlier attempt can still commit.
                Some(Err(ClientError::Rejected(RejectReason::WouldLoseQuorum { .. })))
                    if !maybe_applied =>
                {
                    self.world.count(Counter::ConfChangesRefusedForQuorum);
                    return ChangeOutcome::Refused;
                }
                Some(Err(ClientError::NotLeader { leader: Some(l) })) => target = l,
                other => {
                    maybe_applied |= match &other {
                        Some(Err(e)) => e.outcome_unknown(),
                        _ => true,
                    };
                    sleep(Duration::from_millis(50)).await;
                    target = self
                        .world
                        .random_member(self.streams.of(FaultClass::Membership));
                }
            }
        }
        ChangeOutcome::Unknown
    }

    /// Starts a new empty node and asks the cluster to add it. The node is started *before*
    /// the outcome is known: if the change commits while its answer is lost, a cluster that
    /// now counts the new node in its quorum would otherwise wait forever for a node nobody
    /// started. Until the add is confirmed the id stays pending and is retried.
    async fn add_member(&mut self) -> bool {
        let id = *self.world.next_id.lock().unwrap();
        *self.world.next_id.lock().unwrap() += 1;
        let addr = format!("sim://{id}");
        let mut members = self.world.members.lock().unwrap().clone();
        members.insert(id, addr);
        self.world.flags.lock().unwrap().insert(
            id,
            StartFlags {
                peers: members,
                token: TOKEN.into(),
                join: true,
            },
        );
        self.world.disks.lock().unwrap().insert(id, MemDir::new());
        self.world
            .record(id, "membership", serde_json::json!({"change": "joining"}));
        let world = self.world.clone();
        let mistake = world.cfg.swarm.operator_mistakes
            && self
                .streams
                .of(FaultClass::OperatorMistakes)
                .chance(world.cfg.rare.mistake);
        if !mistake {
            world.spawn_node(id);
            self.pending_adds.insert(id);
            return self.confirm_add(id).await;
        }
        // The operator's mistake: the member is added, but its process is started late, or
        // never (then noticed and removed). Learner first, it costs the cluster no quorum.
        let never = self.streams.of(FaultClass::OperatorMistakes).below(2) == 0;
        world.count(if never {
            Counter::MistakesNeverStarted
        } else {
            Counter::MistakesStartedLate
        });
        world.record(
            id,
            "mistake",
            serde_json::json!({"mistake": if never { "never started" } else { "started late" }}),
        );
        self.pending_adds.insert(id);
        let op = ClientOp::AddLearner {
            id,
            addr: format!("sim://{id}"),
            auto_promote: true,
        };
        match self.member_change(op).await {
            ChangeOutcome::Refused => {
                self.pending_adds.remove(&id);
                world.retired.lock().unwrap().insert(id);
                return false;
            }
            ChangeOutcome::Done if never => {
                self.pending_adds.remove(&id);
                if self.remove_member(id).await {
                    world.count(Counter::NeverStartedMembersRemoved);
                }
                return false;
            }
            ChangeOutcome::Done => {
                let late_ms = 500 + self.streams.of(FaultClass::OperatorMistakes).below(2500);
                sleep(Duration::from_millis(late_ms)).await;
            }
            // It may have been added: start it, as a careful operator would.
            ChangeOutcome::Unknown => {}
        }
        world.spawn_node(id);
        self.confirm_add(id).await
    }

    async fn confirm_add(&mut self, id: u64) -> bool {
        let addr = format!("sim://{id}");
        // Learner first: a new member counts toward no quorum until the leader promotes it,
        // once it has caught up.
        let op = ClientOp::AddLearner {
            id,
            addr: addr.clone(),
            auto_promote: true,
        };
        match self.member_change(op).await {
            ChangeOutcome::Done => {}
            ChangeOutcome::Unknown => return false,
            ChangeOutcome::Refused => {
                // Definitely never proposed: the node started for it goes away for good.
                self.pending_adds.remove(&id);
                self.world.retired.lock().unwrap().insert(id);
                self.world.kill_node(id);
                return false;
            }
        }
        // A member only once it votes: until then the operator's other changes (a shrink, say)
        // must not count it. The leader promotes it when it has caught up; asking is idempotent.
        if !matches!(
            self.member_change(ClientOp::PromoteNode { id }).await,
            ChangeOutcome::Done
        ) {
            return false;
        }
        self.pending_adds.remove(&id);
        self.world.members.lock().unwrap().insert(id, addr);
        true
    }

    async fn remove_member(&mut self, id: u64) -> bool {
        // Counted out while the outcome is open: damage budgets (a minority of the members)
        // must hold whether or not the removal went through.
        let addr = self.world.members.lock().unwrap().remove(&id);
        match self.member_change(ClientOp::RemoveNode { id }).await {
            ChangeOutcome::Done => {}
            ChangeOutcome::Refused => {
                self.pending_removes.remove(&id);
                if let Some(a) = addr {
                    self.world.members.lock().unwrap().insert(id, a);
                }
                return false;
            }
            ChangeOutcome::Unknown => {
                // The outcome may be unknown: retried until definite.
                self.pending_removes.insert(id);
                return false;
            }
        }
        self.pending_removes.remove(&id);
        self.world.retired.lock().unwrap().insert(id);
        self.world.members.lock().unwrap().remove(&id);
        // Not killed: a removed node lingers as a voter for members that have not applied its
        // removal yet, then stops by itself (and is never restarted: it is retired).
        self.world
            .record(id, "membership", serde_json::json!({"change": "removed"}));
        true
    }

    /// A node that cannot come back with its data is replaced, the README's way: the old id is
    /// removed first (the live voters keep a quorum), then a new id is added (empty, it joins by
    /// snapshot). A wiped node never rejoins as itself.
    async fn replace_one(&mut self) {
        let Some(id) = self
            .world
            .unrecoverable
            .lock()
            .unwrap()
            .iter()
            .next()
            .copied()
        else {
            return;
        };
        self.world.kill_node(id);
        let member = self.world.members.lock().unwrap().contains_key(&id);
        if (member || self.pending_removes.contains(&id)) && !self.remove_member(id).await {
            return;
        }
        if !self.replacing.contains(&id) {
            self.replacing.insert(id);
            if !self.add_member().await && self.pending_adds.is_empty() {
                // Refused (a quorum short while others are down): try again later.
                self.replacing.remove(&id);
                return;
            }
        }
        let pending: Vec<u64> = self.pending_adds.iter().copied().collect();
        for p in pending {
            self.confirm_add(p).await;
        }
        if !self.pending_adds.is_empty() {
            return;
        }
        self.replacing.remove(&id);
        self.world.unrecoverable.lock().unwrap().remove(&id);
        self.world.damaged.lock().unwrap().remove(&id);
        self.world.count(Counter::Replacements);
    }

    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<MemberCmd>) {
        let mut open = true;
        loop {
            let idle = self.pending_adds.is_empty()
                && self.pending_removes.is_empty()
                && self.world.unrecoverable.lock().unwrap().is_empty();
            self.world.operator_idle.store(idle, Ordering::Relaxed);
            // Lost members go first: until a dead voter is removed, an add may be refused for
            // want of a quorum (and a pending one retried forever).
            if !self.world.unrecoverable.lock().unwrap().is_empty() {
                self.replace_one().await;
                continue;
            }
            if let Some(&p) = self.pending_adds.iter().next() {
                self.confirm_add(p).await;
                continue;
            }
            if let Some(&p) = self.pending_removes.iter().next() {
                self.remove_member(p).await;
                continue;
            }
            if !open {
                // No more changes are requested after healing; replacements still happen.
                sleep(Duration::from_millis(20)).await;
                continue;
            }
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(MemberCmd::Grow) => {
                        self.add_member().await;
                    }
                    Some(MemberCmd::Shrink(id)) => {
                        // Shrink only while the damage already injected (possibly not yet
                        // detected) stays a minority of what is left: a smaller cluster
                        // tolerates fewer failures.
                        let left = self.world.members.lock().unwrap().len().saturating_sub(1);
                        let damaged = self.world.damaged.lock().unwrap().len();
                        if left >= 3 && damaged <= (left - 1) / 2 {
                            self.remove_member(id).await;
                        }
                    }
                    None => open = false,
                },
                _ = sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}

impl World {
    fn spawn_node(self: &Arc<Self>, id: u64) {
        let w = self.clone();
        let n = Handle::current()
            .create_node()
            .name(format!("raft-{id}"))
            .init(move || node_main(w.clone(), id))
            .build();
        self.nodes.lock().unwrap().insert(id, n);
    }

    fn node_handle_id(&self, id: u64) -> Option<madsim::task::NodeId> {
        self.nodes.lock().unwrap().get(&id).map(|n| n.id())
    }

    /// Stops a node for good (removed or replaced).
    fn kill_node(&self, id: u64) {
        if let Some(nid) = self.node_handle_id(id) {
            Handle::current().kill(nid);
        }
        self.down.lock().unwrap().remove(&id);
        self.paused.lock().unwrap().remove(&id);
        self.inboxes.lock().unwrap().remove(&id);
        self.views.lock().unwrap().remove(&id);
    }

    /// Nodes that may still be damaged (rotting disk, lost disk) without losing a quorum for
    /// good: bad-disk nodes only, and only while no more than a minority is unrecoverable.
    fn may_damage(&self, id: u64) -> bool {
        let members = self.members.lock().unwrap().len();
        let damaged = self.damaged.lock().unwrap();
        self.bad_disks.contains(&id) && (damaged.contains(&id) || damaged.len() < (members - 1) / 2)
    }

    fn io_begin(&self, id: u64) {
        *self.busy.lock().unwrap().entry(id).or_default() += 1;
    }

    fn io_end(&self, id: u64) {
        let mut busy = self.busy.lock().unwrap();
        if let Some(n) = busy.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                busy.remove(&id);
            }
        }
    }

    fn disk_epoch(&self, id: u64) -> u64 {
        self.disk_epochs
            .lock()
            .unwrap()
            .get(&id)
            .copied()
            .unwrap_or(0)
    }

    fn bump_disk_epoch(&self, id: u64) {
        *self.disk_epochs.lock().unwrap().entry(id).or_default() += 1;
    }

    fn mark_damaged(&self, id: u64) {
        self.damaged.lock().unwrap().insert(id);
    }
}

struct Supervisor {
    world: Arc<World>,
    handle: Handle,
    /// Each fault class schedules and aims its faults from its own stream.
    streams: Streams,
}

impl Supervisor {
    fn is_up(&self, id: u64) -> bool {
        self.world.inboxes.lock().unwrap().contains_key(&id)
    }

    fn crash(&mut self, victim: u64, kind: CrashKind, wipe: bool) {
        let world = self.world.clone();
        let world = &world;
        let was_busy = world.busy.lock().unwrap().remove(&victim).is_some();
        if world.synced.lock().unwrap().remove(&victim) {
            world.count(Counter::CrashesBetweenSyncAndSend);
        }
        let Some(nid) = world.node_handle_id(victim) else {
            return;
        };
        self.handle.kill(nid);
        world.paused.lock().unwrap().remove(&victim);
        world.inboxes.lock().unwrap().remove(&victim);
        world.views.lock().unwrap().remove(&victim);
        let rng = self.streams.of(FaultClass::Crashes);
        let lost = world
            .disks
            .lock()
            .unwrap()
            .get_mut(&victim)
            .unwrap()
            .crash(kind, &mut |n| rng.below(n));
        world.bump_disk_epoch(victim);
        world.obs.lock().unwrap().faults_injected += 1;
        world.count(if kind == CrashKind::PowerLoss {
            Counter::CrashesPowerLoss
        } else {
            Counter::CrashesProcess
        });
        if was_busy {
            world.count(Counter::CrashesDuringIo);
        }
        let kind_name = match kind {
            CrashKind::PowerLoss => "power_loss",
            CrashKind::Process => "process",
        };
        world.record(victim, "fault", serde_json::json!({"fault": "crash", "kind": kind_name, "sectors_lost": lost, "io_in_flight": was_busy, "disk_lost": wipe}));
        if wipe {
            world.disks.lock().unwrap().insert(victim, MemDir::new());
            world.mark_damaged(victim);
            world.count(Counter::DiskLosses);
            world.unrecoverable.lock().unwrap().insert(victim);
        } else {
            if world.cfg.swarm.operator_mistakes
                && self
                    .streams
                    .of(FaultClass::OperatorMistakes)
                    .chance(world.cfg.rare.mistake)
            {
                self.plan_mistake(victim);
            }
            let down_s = 0.05
                + world.cfg.process.down_max_s
                    * (self.streams.of(FaultClass::Crashes).below(1000) as f64 / 1000.0);
            world
                .down
                .lock()
                .unwrap()
                .insert(victim, Instant::now() + sim_secs(down_s));
        }
    }

    /// The operator's next mistake with `victim`, which is down: wipe its disk and restart it
    /// under its old id, or start it on the wrong directory or with the wrong flags.
    fn plan_mistake(&mut self, victim: u64) {
        let world = &self.world;
        let members = world.member_ids();
        let rng = self.streams.of(FaultClass::OperatorMistakes);
        let mistake = match rng.below(4) {
            0 => {
                let minority = {
                    let damaged = world.damaged.lock().unwrap();
                    !damaged.contains(&victim) && damaged.len() < (members.len() - 1) / 2
                };
                if !minority || !world.incarnation_known_everywhere(victim) {
                    return;
                }
                world.disks.lock().unwrap().insert(victim, MemDir::new());
                world.obs.lock().unwrap().disk_replaced(victim);
                world.mark_damaged(victim);
                world.wiped.lock().unwrap().insert(victim);
                world.count(Counter::MistakesWipedRestart);
                world.record(
                    victim,
                    "fault",
                    serde_json::json!({"fault": "disk_wiped", "then": "restarted under its old id"}),
                );
                return;
            }
            1 => Mistake::StaleDirectory,
            2 => {
                let others: Vec<u64> = members.into_iter().filter(|&m| m != victim).collect();
                Mistake::OtherNodesDirectory(others[rng.below(others.len() as u64) as usize])
            }
            _ => Mistake::ChangedCluster,
        };
        world.count(Counter::MistakesAtStart);
        world.mistakes.lock().unwrap().insert(victim, mistake);
    }

    fn restart_due(&mut self, all: bool) {
        let world = &self.world;
        let now = Instant::now();
        let mut due = due_ids(&world.down, all, now);
        due.extend(std::mem::take(&mut *world.exited.lock().unwrap()));
        for id in due {
            world.down.lock().unwrap().remove(&id);
            if world.retired.lock().unwrap().contains(&id)
                || world.unrecoverable.lock().unwrap().contains(&id)
            {
                continue;
            }
            let Some(nid) = world.node_handle_id(id) else {
                continue;
            };
            world.record(id, "fault", serde_json::json!({"fault": "restart"}));
            world.count(Counter::Restarts);
            self.handle.restart(nid);
        }
        for id in due_ids(&world.paused, all, now) {
            world.paused.lock().unwrap().remove(&id);
            if let Some(nid) = world.node_handle_id(id) {
                self.handle.resume(nid);
            }
        }
    }

    /// A member that is up and not paused, drawn from `class`'s stream (crashes and pauses
    /// pick their own victims).
    fn pick_victim(&mut self, class: FaultClass) -> Option<u64> {
        let paused = self.world.paused.lock().unwrap().clone();
        let up: Vec<u64> = self
            .world
            .member_ids()
            .into_iter()
            .filter(|id| self.is_up(*id) && !paused.contains_key(id))
            .collect();
        let busy: Vec<u64> = self
            .world
            .busy
            .lock()
            .unwrap()
            .keys()
            .copied()
            .filter(|id| up.contains(id))
            .collect();
        let rng = self.streams.of(class);
        let pool = if !busy.is_empty() && rng.chance(self.world.cfg.process.prefer_busy) {
            busy
        } else {
            up
        };
        (!pool.is_empty()).then(|| pool[rng.below(pool.len() as u64) as usize])
    }

    fn partition(&mut self) {
        let world = &self.world;
        let ids = world.member_ids();
        let mut blocked = BTreeSet::new();
        let rng = self.streams.of(FaultClass::Partitions);
        let kind = rng.below(5);
        match kind {
            0 => {} // heal
            1 => {
                // Symmetric split into two sides.
                let side: BTreeMap<u64, bool> =
                    ids.iter().map(|&i| (i, rng.below(2) == 0)).collect();
                for &a in &ids {
                    for &b in &ids {
                        if side[&a] != side[&b] {
                            blocked.insert((a, b));
                        }
                    }
                }
            }
            2 => {
                // One-way link failures.
                for _ in 0..rng.range(1, ids.len() as u64 + 1) {
                    let a = ids[rng.below(ids.len() as u64) as usize];
                    let b = ids[rng.below(ids.len() as u64) as usize];
                    if a != b {
                        blocked.insert((a, b));
                    }
                }
            }
            _ => {
                // Isolate the leader (or a random node when none is known).
                let leader = world.leader();
                let victim = leader.unwrap_or_else(|| ids[rng.below(ids.len() as u64) as usize]);
                for &o in &ids {
                    if o != victim {
                        blocked.insert((victim, o));
                        blocked.insert((o, victim));
                    }
                }
            }
        }
        let shape = match kind {
            0 => "healed",
            1 => "split",
            2 => "one_way",
            _ => "isolate_leader",
        };
        world.record(
            0,
            "fault",
            serde_json::json!({"fault": "partition", "shape": shape, "blocked": blocked}),
        );
        if !blocked.is_empty() {
            world.obs.lock().unwrap().faults_injected += 1;
            world.count(match kind {
                1 => Counter::PartitionsSplit,
                2 => Counter::PartitionsOneWay,
                _ => Counter::PartitionsIsolateLeader,
            });
        }
        world.net.lock().unwrap().blocked = blocked;
    }
}

/// The supervisor: builds the world, injects faults for `fault_s`, heals, checks liveness,
/// lets clients finish, waits for convergence, and leaves the verdicts in the observer.
pub async fn supervise(world: Arc<World>) {
    let handle = Handle::current();
    let (net_tx, net_rx) = mpsc::unbounded_channel();
    *world.net_tx.lock().unwrap() = Some(net_tx);
    let net_node = handle.create_node().name("net").build();
    net_node.spawn(net_loop(world.clone(), net_rx));
    for id in 1..=world.cfg.nodes {
        world.spawn_node(id);
    }
    let ops_node = handle.create_node().name("operator").build();
    let (member_tx, member_rx) = mpsc::unbounded_channel();
    let operator = Operator {
        world: world.clone(),
        streams: Streams::new(world.cfg.seed, "operator"),
        pending_adds: BTreeSet::new(),
        replacing: BTreeSet::new(),
        pending_removes: BTreeSet::new(),
    };
    ops_node.spawn(operator.run(member_rx));
    let clients_node = handle.create_node().name("clients").build();
    let mut client_tasks = Vec::new();
    for cid in 1..=world.cfg.clients {
        client_tasks.push(clients_node.spawn(client_main(world.clone(), cid)));
    }
    let mut sup = Supervisor {
        world: world.clone(),
        handle: handle.clone(),
        streams: Streams::new(world.cfg.seed, "supervisor"),
    };

    // Fault phase.
    let cfg = world.cfg.clone();
    let fault_end = Instant::now() + Duration::from_secs(cfg.fault_s);
    let start = Instant::now();
    use FaultClass::{Crashes, DiskLoss, Membership, Partitions, Pauses};
    let mut next_crash = later(start, cfg.process.crash_every_s, sup.streams.of(Crashes));
    let mut next_partition = later(start, cfg.net.partition_every_s, sup.streams.of(Partitions));
    let mut next_pause = if cfg.swarm.pauses {
        later(start, cfg.pause_every_s, sup.streams.of(Pauses))
    } else {
        None
    };
    let mut next_member = if cfg.swarm.membership {
        later(start, cfg.membership_every_s, sup.streams.of(Membership))
    } else {
        None
    };
    while Instant::now() < fault_end {
        sleep(Duration::from_millis(5)).await;
        let now = Instant::now();
        sup.restart_due(false);
        if next_crash.is_some_and(|t| now >= t) {
            next_crash = later(now, cfg.process.crash_every_s, sup.streams.of(Crashes));
            if let Some(victim) = sup.pick_victim(Crashes) {
                let kind = if sup.streams.of(Crashes).chance(cfg.process.power_loss) {
                    CrashKind::PowerLoss
                } else {
                    CrashKind::Process
                };
                let wipe = cfg.swarm.disk_loss
                    && world.may_damage(victim)
                    && sup.streams.of(DiskLoss).chance(cfg.rare.disk_loss);
                sup.crash(victim, kind, wipe);
            }
        }
        if next_partition.is_some_and(|t| now >= t) {
            next_partition = later(now, cfg.net.partition_every_s, sup.streams.of(Partitions));
            sup.partition();
        }
        if next_pause.is_some_and(|t| now >= t) {
            next_pause = later(now, cfg.pause_every_s, sup.streams.of(Pauses));
            if let Some(victim) = sup.pick_victim(Pauses) {
                if let Some(nid) = world.node_handle_id(victim) {
                    handle.pause(nid);
                    let until = now
                        + sim_secs(
                            0.05 + 2.0 * (sup.streams.of(Pauses).below(1000) as f64 / 1000.0),
                        );
                    world.paused.lock().unwrap().insert(victim, until);
                    world.count(Counter::Pauses);
                    let for_ms = (until - now).as_millis() as u64;
                    world.record(
                        victim,
                        "fault",
                        serde_json::json!({"fault": "pause", "for_ms": for_ms}),
                    );
                }
            }
        }
        if next_member.is_some_and(|t| now >= t) {
            next_member = later(now, cfg.membership_every_s, sup.streams.of(Membership));
            let ids = world.member_ids();
            if ids.len() <= 3 || (ids.len() < 5 && sup.streams.of(Membership).below(2) == 0) {
                let _ = member_tx.send(MemberCmd::Grow);
            } else {
                let leader = world.leader();
                let others: Vec<u64> = ids.into_iter().filter(|id| Some(*id) != leader).collect();
                let _ = member_tx.send(MemberCmd::Shrink(
                    others[sup.streams.of(Membership).below(others.len() as u64) as usize],
                ));
            }
        }
    }

    // Calm phase: heal everything, bring everyone back, keep the clients going.
    {
        let mut n = world.net.lock().unwrap();
        n.blocked.clear();
        n.calm = true;
    }
    drop(member_tx);
    sup.restart_due(true);
    let healed_at = Instant::now();
    world.record(0, "fault", serde_json::json!({"fault": "healed"}));
    // Replacements of unrecoverable nodes finish first (bounded), then the liveness clock runs.
    let settle_deadline = healed_at + Duration::from_secs(LIVENESS_BOUND_S);
    sleep(Duration::from_millis(50)).await;
    while !world.operator_idle.load(Ordering::Relaxed) && Instant::now() < settle_deadline {
        sleep(Duration::from_millis(20)).await;
        sup.restart_due(true);
    }
    if !world.operator_idle.load(Ordering::Relaxed) {
        let stuck = world.unrecoverable.lock().unwrap().clone();
        world.violation(Checker::Liveness, format!("membership work (replacing {stuck:?}) did not finish within {LIVENESS_BOUND_S} s of healing"));
    }
    let liveness_deadline = Instant::now() + Duration::from_secs(LIVENESS_BOUND_S);

    // Checker 5 (liveness): every member serves a write and a linearizable read in bound.
    for id in world.member_ids() {
        let mut served = false;
        while !served
            && Instant::now() < liveness_deadline
            && world.members.lock().unwrap().contains_key(&id)
        {
            let probe = format!("probe-{id}");
            let put = ClientOp::Put {
                key: probe.clone().into_bytes(),
                value: b"1".to_vec(),
            };
            if let Some(Ok(_)) = call(&world, id, None, put).await {
                let get = ClientOp::Get {
                    key: probe.into_bytes(),
                };
                served = matches!(
                    call(&world, id, None, get).await,
                    Some(Ok(ClientReply::Value(Some(_))))
                );
            }
            if !served {
                sleep(Duration::from_millis(50)).await;
                sup.restart_due(true);
            }
        }
        if !served && world.members.lock().unwrap().contains_key(&id) {
            world.violation(
                Checker::Liveness,
                format!("member {id} did not serve a write and a read within {LIVENESS_BOUND_S} s"),
            );
        }
    }
    let rest = Duration::from_secs(cfg.calm_s).saturating_sub(healed_at.elapsed());
    sleep(rest).await;
    world.stop_clients.store(true, Ordering::Relaxed);
    for t in client_tasks {
        let _ = t.await;
    }

    // Identity: every node restarted on a wiped disk under its old id was refused (its peers
    // hold its old incarnation), so it never voted and was replaced.
    for id in world.wiped.lock().unwrap().clone() {
        if world.members.lock().unwrap().contains_key(&id) {
            world.violation(
                Checker::Identity,
                format!("node {id} was restarted on a wiped disk under its old id and its peers never refused it"),
            );
        }
    }

    // Convergence: every member applies the same index and holds the same state.
    let deadline = Instant::now() + Duration::from_secs(LIVENESS_BOUND_S);
    loop {
        let members = world.member_ids();
        let views = world.views.lock().unwrap().clone();
        let mine: Vec<&(u64, u64, u64, StateRole)> =
            members.iter().filter_map(|id| views.get(id)).collect();
        let converged = mine.len() == members.len() && {
            let first = mine[0];
            mine.iter()
                .all(|v| v.0 == first.0 && v.1 == first.1 && v.2 <= first.0)
        };
        if converged {
            break;
        }
        if Instant::now() > deadline {
            world.violation(Checker::Liveness, format!("members {members:?} did not converge within {LIVENESS_BOUND_S} s after healing: {views:?}"));
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }

    // Tear the world down inside the runtime. A task still parked on a channel or a timer when
    // the runtime is dropped is never dropped itself (its waker dies with the runtime), and each
    // holds the world: a sweep then kept every seed's world alive (2.4 MB a seed). Killing a
    // node wakes its tasks; the executor drops them the next time it runs.
    let all: Vec<madsim::task::NodeId> = world
        .nodes
        .lock()
        .unwrap()
        .values()
        .map(|n| n.id())
        .chain([net_node.id(), ops_node.id(), clients_node.id()])
        .collect();
    for nid in all {
        handle.kill(nid);
    }
    sleep(Duration::from_millis(1)).await;
}
