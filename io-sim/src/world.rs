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
use crate::history::{Op, OpKind, Output};
use crate::observer::Observer;
use madsim::runtime::{Handle, NodeHandle};
use madsim::time::{sleep, sleep_until, Instant};
use raftkv_core::command::RequestId;
use raftkv_core::memdir::{CrashKind, MemDir};
use raftkv_core::node::{
    Action, Bootstrap, ClientError, ClientOp, ClientReply, ClientRequest, Event, Node, NodeConfig,
    StateRole,
};
use raftkv_core::recovery::recover;
use raftkv_core::rng::Rng;
use raftkv_core::wal::{WalConfig, WalIdentity};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub const CLUSTER_ID: u64 = 0x51;

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
    start: Instant,
    pub disks: Mutex<BTreeMap<u64, MemDir>>,
    busy: Mutex<BTreeSet<u64>>,
    /// Nodes whose disk job is durable but not yet reported (persisted messages still held).
    synced: Mutex<BTreeSet<u64>>,
    inboxes: Mutex<BTreeMap<u64, mpsc::UnboundedSender<Inbound>>>,
    net: Mutex<NetState>,
    net_tx: Mutex<Option<mpsc::UnboundedSender<Packet>>>,
    pub obs: Mutex<Observer>,
    pub history: Mutex<Vec<Op>>,
    pub acked: Mutex<Vec<RequestId>>,
    incarnations: Mutex<BTreeMap<u64, u64>>,
    rng: Mutex<Rng>,
    stop_clients: AtomicBool,
    members: BTreeMap<u64, String>,
    /// Latest (applied index, state hash, commit, role) per live node, for convergence.
    pub views: Mutex<BTreeMap<u64, (u64, u64, u64, StateRole)>>,
}

impl World {
    pub fn new(cfg: SimConfig, keep_trace: bool) -> Self {
        let members = (1..=cfg.nodes).map(|i| (i, format!("sim://{i}"))).collect();
        World {
            start: Instant::now(),
            disks: Mutex::new((1..=cfg.nodes).map(|i| (i, MemDir::new())).collect()),
            busy: Mutex::default(),
            synced: Mutex::default(),
            inboxes: Mutex::default(),
            net: Mutex::default(),
            net_tx: Mutex::new(None),
            obs: Mutex::new(Observer::new(keep_trace)),
            history: Mutex::default(),
            acked: Mutex::default(),
            incarnations: Mutex::default(),
            rng: Mutex::new(Rng::new(cfg.seed ^ 0xD15C)),
            stop_clients: AtomicBool::new(false),
            members,
            views: Mutex::default(),
            cfg,
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn record(&self, node: u64, what: &str, detail: serde_json::Value) {
        let now = self.now_ns();
        self.obs.lock().unwrap().record(now, node, what, detail);
    }

    fn count(&self, what: &'static str) {
        self.obs.lock().unwrap().count(what);
    }

    fn violation(&self, checker: &'static str, detail: String) {
        self.record(
            0,
            "violation",
            serde_json::json!({"checker": checker, "detail": detail}),
        );
        self.obs.lock().unwrap().violation(checker, detail);
    }

    fn rand_below(&self, n: u64) -> u64 {
        self.rng.lock().unwrap().below(n)
    }

    fn chance(&self, p: f64) -> bool {
        p > 0.0 && self.rng.lock().unwrap().chance(p)
    }

    fn node_config(&self, id: u64, incarnation: u64) -> NodeConfig {
        let mut cfg = NodeConfig::new(
            id,
            CLUSTER_ID,
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
        cfg
    }

    /// Decides a message's fate at send time. Returns false if the sender would see the send
    /// fail (partitioned link: a TCP connect would fail); a lost packet "succeeds".
    fn net_send(&self, from: u64, to: u64, bytes: Vec<u8>) -> bool {
        let now = self.now_ns();
        let (calm, blocked) = {
            let n = self.net.lock().unwrap();
            (n.calm, n.blocked.contains(&(from, to)))
        };
        if blocked {
            self.count("net_blocked");
            return false;
        }
        let f = &self.cfg.net;
        if !calm && self.chance(f.loss) {
            self.count("net_lost");
            return true;
        }
        let copies = if !calm && self.chance(f.duplicate) {
            self.count("net_duplicated");
            2
        } else {
            1
        };
        for c in 0..copies {
            let mut bytes = bytes.clone();
            if !calm && c == 0 && !bytes.is_empty() && self.chance(f.corrupt) {
                let at = self.rand_below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << self.rand_below(8);
                self.count("net_corrupted");
            }
            let mut delay =
                f.delay_base_us + exp_sample(&mut self.rng.lock().unwrap(), f.delay_tail_us);
            if !calm && self.chance(f.long_tail) {
                delay += exp_sample(&mut self.rng.lock().unwrap(), f.delay_tail_us * 100);
                self.count("net_long_delay");
            }
            let seq = {
                let mut n = self.net.lock().unwrap();
                n.seq += 1;
                n.seq
            };
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
            Some(at) => world.start + Duration::from_nanos(at),
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
                        world.count("net_blocked");
                        continue;
                    }
                    let inbox = world.inboxes.lock().unwrap().get(&to).cloned();
                    if let Some(tx) = inbox {
                        let _ = tx.send(Inbound::Peer(bytes));
                    }
                }
            }
        }
    }
}

/// Runs one disk job op by op with latency; a kill stops it wherever it is.
async fn disk_job(
    world: Arc<World>,
    id: u64,
    job: raftkv_core::node::DiskJob,
    done: mpsc::UnboundedSender<u64>,
) {
    world.busy.lock().unwrap().insert(id);
    for op in &job.ops {
        let d = &world.cfg.disk;
        let base = if op.is_sync() { d.sync_us } else { d.op_us };
        let tail = exp_sample(&mut world.rng.lock().unwrap(), d.tail_us);
        let us = base + tail;
        sleep(Duration::from_micros(us)).await;
        let r = world
            .disks
            .lock()
            .unwrap()
            .get_mut(&id)
            .expect("disk")
            .apply(op);
        if let Err(e) = r {
            world.violation("disk", format!("node {id}: {op:?} failed: {e}"));
            return;
        }
    }
    // The window between a completed sync and the sends that wait for it: the node still counts
    // as busy, so the supervisor's crashes land here too.
    world.synced.lock().unwrap().insert(id);
    let gap_us = 1 + exp_sample(&mut world.rng.lock().unwrap(), 500);
    sleep(Duration::from_micros(gap_us)).await;
    world.synced.lock().unwrap().remove(&id);
    world.busy.lock().unwrap().remove(&id);
    let _ = done.send(job.id);
}

/// A raft node's life: recover from its disk, then run the event loop until killed.
async fn node_main(world: Arc<World>, id: u64) {
    let incarnation = {
        let mut inc = world.incarnations.lock().unwrap();
        let e = inc.entry(id).or_insert(0);
        *e += 1;
        *e
    };
    let recovered = {
        let disks = world.disks.lock().unwrap();
        let d = &disks[&id];
        recover(
            &d.list(),
            WalIdentity {
                cluster_id: CLUSTER_ID,
                node_id: id,
            },
            &mut |n| {
                d.read(n)
                    .map(|b| b.to_vec())
                    .ok_or_else(|| "missing".to_string())
            },
        )
    };
    let recovered = match recovered {
        Ok(r) => r,
        Err(e) => {
            return world.violation(
                "recovery",
                format!("node {id} incarnation {incarnation}: {e}"),
            )
        }
    };
    if let Some(r) = &recovered {
        if r.report.torn_tail.is_some() {
            world.count("torn_tails_repaired");
        }
        if !r.report.removed_orphan_snapshots.is_empty() {
            world.count("orphan_snapshots_removed");
        }
        if r.snapshot.is_some() {
            world.count("restarts_from_snapshot");
        }
    }
    let bootstrap = Bootstrap::NewCluster {
        members: world.members.clone(),
    };
    let mut node = match Node::start(world.node_config(id, incarnation), recovered, bootstrap) {
        Ok(n) => n,
        Err(e) => {
            return world.violation(
                "recovery",
                format!("node {id} incarnation {incarnation}: {e}"),
            )
        }
    };
    world.record(id, "start", serde_json::json!({"incarnation": incarnation}));
    let (tx, mut rx) = mpsc::unbounded_channel();
    world.inboxes.lock().unwrap().insert(id, tx);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut pending: BTreeMap<u64, oneshot::Sender<Reply>> = BTreeMap::new();
    let mut next_handle = 1u64;
    let tick = Duration::from_millis(world.cfg.tick_ms);
    let mut next_tick = Instant::now() + tick;
    let mut last_applied = u64::MAX;
    loop {
        for action in node.drain() {
            match action {
                Action::Disk(job) => {
                    madsim::task::spawn(disk_job(world.clone(), id, job, done_tx.clone()));
                }
                Action::Send(o) => {
                    {
                        let mut obs = world.obs.lock().unwrap();
                        obs.record_bytes(&o.to.to_le_bytes());
                        obs.record_bytes(&o.bytes);
                    }
                    if o.snapshot {
                        world.count("snapshots_sent");
                    }
                    let ok = world.net_send(id, o.to, o.bytes);
                    if o.snapshot {
                        node.report_snapshot(o.to, ok);
                    }
                    if !ok {
                        node.report_unreachable(o.to);
                    }
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
        if s.applied_index != last_applied {
            last_applied = s.applied_index;
            let h = node.kv().hash();
            world.obs.lock().unwrap().state(id, s.applied_index, h);
        }
        world.views.lock().unwrap().insert(
            id,
            (s.applied_index, node.kv().hash(), s.commit_index, s.role),
        );
        if let Some(reason) = node.stopped() {
            world.record(id, "stopped", serde_json::json!({"reason": reason}));
            world.inboxes.lock().unwrap().remove(&id);
            world.views.lock().unwrap().remove(&id);
            return;
        }
        tokio::select! {
            biased;
            Some(job) = done_rx.recv() => node.disk_done(job),
            Some(m) = rx.recv() => match m {
                Inbound::Peer(bytes) => {
                    if node.receive(&bytes).is_err() {
                        world.count("peer_frames_rejected");
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
        Event::RoleChanged {
            term,
            role: StateRole::Leader,
            ..
        } => {
            obs.leader(id, *term);
            obs.count("elections");
        }
        Event::SnapshotSaved { .. } => obs.count("snapshots_taken"),
        Event::SnapshotInstalled { .. } => obs.count("snapshots_installed"),
        Event::CompactedLog { .. } => obs.count("compactions"),
        Event::Purged { .. } => obs.count("purges"),
        Event::Fatal { reason } => obs.violation("fatal", format!("node {id}: {reason}")),
        _ => {}
    }
    let now = world.now_ns();
    obs.record(
        now,
        id,
        "event",
        serde_json::Value::String(format!("{e:?}")),
    );
}

/// One client: operations on a small key set against random nodes, with retries under the same
/// request id until a definite answer or the retry budget runs out.
async fn client_main(world: Arc<World>, cid: u64) {
    let mut rng = Rng::new(world.cfg.seed ^ (cid << 32) ^ 0xC11E);
    let ticks = (world.cfg.client_timeout_ms / world.cfg.tick_ms).max(1);
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
        let mut target = 1 + rng.below(world.cfg.nodes);
        for attempt in 0..40 {
            if attempt > 0 {
                sleep(Duration::from_millis(10 + rng.below(40))).await;
            }
            let inbox = world.inboxes.lock().unwrap().get(&target).cloned();
            let Some(inbox) = inbox else {
                target = 1 + rng.below(world.cfg.nodes);
                continue;
            };
            let (tx, rx) = oneshot::channel();
            let _ = inbox.send(Inbound::Client {
                request_id: rid,
                op: op.clone(),
                timeout_ticks: ticks,
                reply: tx,
            });
            let r =
                madsim::time::timeout(Duration::from_millis(world.cfg.client_timeout_ms + 500), rx)
                    .await;
            match r {
                Ok(Ok(Ok(reply))) => {
                    result = Some(Ok(reply));
                    break;
                }
                Ok(Ok(Err(e))) => {
                    maybe_applied |= e.outcome_unknown();
                    if let ClientError::NotLeader { leader: Some(l) } = e {
                        target = l;
                    } else {
                        target = 1 + rng.below(world.cfg.nodes);
                    }
                    if matches!(e, ClientError::Rejected(_)) {
                        result = Some(Err(e));
                        break;
                    }
                }
                // The node died holding the request, or never answered.
                _ => {
                    maybe_applied = true;
                    target = 1 + rng.below(world.cfg.nodes);
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
        let record = match (&output, is_write && maybe_applied) {
            (Some(_), _) => true,
            (None, true) => true, // unknown outcome: recorded without completion
            (None, false) => false, // definitely never happened
        };
        if record {
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

fn sim_secs(s: f64) -> Duration {
    Duration::from_micros((s * 1e6) as u64)
}

/// The supervisor: builds the world, injects faults for `fault_s`, heals, lets clients finish,
/// waits for convergence, and leaves the verdicts in the observer.
pub async fn supervise(world: Arc<World>) {
    let handle = Handle::current();
    let (net_tx, net_rx) = mpsc::unbounded_channel();
    *world.net_tx.lock().unwrap() = Some(net_tx);
    let net_node = handle.create_node().name("net").build();
    net_node.spawn(net_loop(world.clone(), net_rx));

    let mut nodes: BTreeMap<u64, NodeHandle> = BTreeMap::new();
    for id in 1..=world.cfg.nodes {
        let w = world.clone();
        let n = handle
            .create_node()
            .name(format!("raft-{id}"))
            .init(move || node_main(w.clone(), id))
            .build();
        nodes.insert(id, n);
    }
    let clients_node = handle.create_node().name("clients").build();
    let mut client_tasks = Vec::new();
    for cid in 1..=world.cfg.clients {
        client_tasks.push(clients_node.spawn(client_main(world.clone(), cid)));
    }

    // Fault phase.
    let mut rng = Rng::new(world.cfg.seed ^ 0xFA17);
    let fault_end = Instant::now() + Duration::from_secs(world.cfg.fault_s);
    let mut down: BTreeMap<u64, Instant> = BTreeMap::new();
    let p = world.cfg.process.clone();
    let nf = world.cfg.net.clone();
    let mut next_crash = Instant::now() + sim_secs(exp_f(&mut rng, p.crash_every_s));
    let mut next_partition = Instant::now() + sim_secs(exp_f(&mut rng, nf.partition_every_s));
    while Instant::now() < fault_end {
        sleep(Duration::from_millis(5)).await;
        let now = Instant::now();
        // Restarts that are due.
        let due: Vec<u64> = down
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            down.remove(&id);
            world.record(id, "fault", serde_json::json!("restart"));
            world.count("restarts");
            handle.restart(nodes[&id].id());
        }
        if now >= next_crash {
            next_crash = now + sim_secs(exp_f(&mut rng, p.crash_every_s));
            let up: Vec<u64> = (1..=world.cfg.nodes)
                .filter(|id| !down.contains_key(id))
                .collect();
            let busy: Vec<u64> = world
                .busy
                .lock()
                .unwrap()
                .iter()
                .copied()
                .filter(|id| up.contains(id))
                .collect();
            let pool = if !busy.is_empty() && rng.chance(p.prefer_busy) {
                busy
            } else {
                up
            };
            if !pool.is_empty() {
                let victim = pool[rng.below(pool.len() as u64) as usize];
                let kind = if rng.chance(p.power_loss) {
                    CrashKind::PowerLoss
                } else {
                    CrashKind::Process
                };
                let was_busy = world.busy.lock().unwrap().remove(&victim);
                if world.synced.lock().unwrap().remove(&victim) {
                    world.count("crashes_between_sync_and_send");
                }
                handle.kill(nodes[&victim].id());
                world.inboxes.lock().unwrap().remove(&victim);
                world.views.lock().unwrap().remove(&victim);
                let lost = world
                    .disks
                    .lock()
                    .unwrap()
                    .get_mut(&victim)
                    .unwrap()
                    .crash(kind, &mut |n| rng.below(n));
                world.obs.lock().unwrap().faults_injected += 1;
                world.count(if kind == CrashKind::PowerLoss {
                    "crashes_power_loss"
                } else {
                    "crashes_process"
                });
                if was_busy {
                    world.count("crashes_during_io");
                }
                world.record(victim, "fault", serde_json::json!({"crash": format!("{kind:?}"), "sectors_lost": lost, "io_in_flight": was_busy}));
                down.insert(
                    victim,
                    now + sim_secs(0.05 + p.down_max_s * (rng.below(1000) as f64 / 1000.0)),
                );
            }
        }
        if now >= next_partition {
            next_partition = now + sim_secs(exp_f(&mut rng, nf.partition_every_s));
            let mut blocked = BTreeSet::new();
            let n = world.cfg.nodes;
            let kind = rng.below(5);
            match kind {
                0 => {} // heal
                1 => {
                    // Symmetric split into two sides.
                    let side: Vec<bool> = (0..n).map(|_| rng.below(2) == 0).collect();
                    for a in 1..=n {
                        for b in 1..=n {
                            if side[(a - 1) as usize] != side[(b - 1) as usize] {
                                blocked.insert((a, b));
                            }
                        }
                    }
                }
                2 => {
                    // One-way link failures.
                    for _ in 0..rng.range(1, n + 1) {
                        let (a, b) = (1 + rng.below(n), 1 + rng.below(n));
                        if a != b {
                            blocked.insert((a, b));
                        }
                    }
                }
                _ => {
                    // Isolate the leader (or a random node when none is known).
                    let leader = world
                        .views
                        .lock()
                        .unwrap()
                        .iter()
                        .find(|(_, v)| v.3 == StateRole::Leader)
                        .map(|(id, _)| *id);
                    let victim = leader.unwrap_or(1 + rng.below(n));
                    for o in 1..=n {
                        if o != victim {
                            blocked.insert((victim, o));
                            blocked.insert((o, victim));
                        }
                    }
                }
            }
            world.record(
                0,
                "fault",
                serde_json::json!({"partition": kind, "blocked": blocked.len()}),
            );
            if !blocked.is_empty() {
                world.obs.lock().unwrap().faults_injected += 1;
                world.count(if kind == 1 {
                    "partitions_split"
                } else if kind == 2 {
                    "partitions_one_way"
                } else {
                    "partitions_isolate_leader"
                });
            }
            world.net.lock().unwrap().blocked = blocked;
        }
    }

    // Calm phase: heal everything, restart everyone, keep the clients going.
    {
        let mut n = world.net.lock().unwrap();
        n.blocked.clear();
        n.calm = true;
    }
    for (id, _) in std::mem::take(&mut down) {
        world.count("restarts");
        handle.restart(nodes[&id].id());
    }
    world.record(0, "fault", serde_json::json!("healed"));
    sleep(Duration::from_secs(world.cfg.calm_s)).await;
    world.stop_clients.store(true, Ordering::Relaxed);
    for t in client_tasks {
        let _ = t.await;
    }

    // Convergence: every node applies the same index and holds the same state.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let views = world.views.lock().unwrap().clone();
        let converged = views.len() as u64 == world.cfg.nodes && {
            let first = views.values().next().copied().unwrap();
            views
                .values()
                .all(|v| v.0 == first.0 && v.1 == first.1 && v.2 <= first.0)
        };
        if converged {
            break;
        }
        if Instant::now() > deadline {
            world.violation(
                "convergence",
                format!("replicas did not converge within 20 s after healing: {views:?}"),
            );
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
}

fn exp_f(r: &mut Rng, mean_s: f64) -> f64 {
    let u = (r.below(1_000_000) as f64 + 1.0) / 1_000_001.0;
    -(u.ln()) * mean_s
}
