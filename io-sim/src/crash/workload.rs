//! Workloads whose file operations crash states are enumerated over: real `core` nodes driven to
//! exercise every kind of write the node makes, with their two disk lanes interleaved op by op
//! (in the orders a shell may run them), and a record of what each completed job made durable.
//!
//! - `single`: one node bootstraps, takes writes, cuts WAL segments, snapshots, compacts and
//!   purges (`--max-snapshots 1`, so a purge leaves exactly one snapshot), crashes once and
//!   restarts (recovery's repairs are part of what is enumerated), and goes on.
//! - `joiner`: a node added to a one-node cluster receives the leader's snapshot file in chunks,
//!   installs it (rename, marker), then takes entries and snapshots of its own.

use super::model::CrashDir;
use raftkv_core::boot::{boot, StartFlags};
use raftkv_core::command::RequestId;
use raftkv_core::fileop::FileOp;
use raftkv_core::node::{
    Action, ClientOp, ClientRequest, DiskJob, Event, Node, NodeConfig, SendOutcome,
};
use raftkv_core::rng::Rng;
use raftkv_core::wal::{HardStateRec, WalConfig};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub const TOKEN: &str = "crash-states";

/// What the recorded node had made durable (its completed jobs) at some moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub hard_state: HardStateRec,
    pub persisted_index: u64,
    /// (term, index) of every snapshot that ever had a file under its final name (that every
    /// such file is whole is checked on its own).
    pub snapshots: BTreeSet<(u64, u64)>,
}

/// A moment a crash is enumerated at: just before a sync, or at the end.
pub struct Boundary<'a> {
    pub label: String,
    pub dir: &'a CrashDir,
    pub facts: &'a Facts,
}

/// A completed job whose touched files are not all durable (names of those files).
pub struct Undurable {
    pub job: String,
    pub files: Vec<String>,
}

pub fn config(id: u64) -> NodeConfig {
    let mut cfg = NodeConfig::new(id, 7 + id);
    cfg.compaction.snap_count = 12;
    cfg.compaction.catch_up_entries = 4;
    cfg.compaction.max_snapshots = 1;
    cfg.wal = WalConfig {
        segment_size_bytes: 2048,
    };
    cfg.snapshot_chunk_bytes = 200;
    cfg.snapshot_window_chunks = 2;
    cfg.trace_applied = true;
    cfg
}

fn addr(id: u64) -> String {
    format!("http://127.0.0.1:{}", 23000 + id)
}

fn boot_on(cfg: &NodeConfig, flags: &StartFlags, dir: &CrashDir) -> Node {
    boot(cfg.clone(), flags, &dir.list(), &mut |n, at, max| {
        dir.read_at(n, at, max)
    })
    .unwrap_or_else(|e| panic!("workload boot: {e}"))
}

/// A job of the background lane: (id, the snapshot file's length or `None` for a prepare job,
/// the ops not yet run, the files it touches).
type BackgroundJob = (u64, Option<u64>, VecDeque<FileOp>, Vec<String>);

/// The recorded node: its directory, its two lanes, and what it has made durable.
struct Recorded {
    node: Node,
    cfg: NodeConfig,
    flags: StartFlags,
    dir: CrashDir,
    wal: VecDeque<(u64, VecDeque<FileOp>, Vec<String>)>,
    /// The background lane in issue order, as io-real runs it: snapshot jobs (with their file's
    /// length) and prepare jobs (`None`).
    bg: VecDeque<BackgroundJob>,
    facts: Facts,
    outbox: Vec<(u64, Vec<u8>)>,
    handle: u64,
    seq: u64,
}

fn touched(ops: &[FileOp]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for op in ops {
        let names = match op {
            FileOp::Rename { from, to } => vec![from.clone(), to.clone()],
            other => other.file_name().map(str::to_string).into_iter().collect(),
        };
        for n in names {
            // Scratch files (`*.tmp`) are made durable later, by design (a received snapshot
            // is synced with its last chunk).
            if !n.ends_with(".tmp") && !v.contains(&n) {
                v.push(n);
            }
        }
    }
    v
}

impl Recorded {
    fn new(cfg: NodeConfig, flags: StartFlags, dir: CrashDir) -> Self {
        let node = boot_on(&cfg, &flags, &dir);
        let mut r = Recorded {
            node,
            cfg,
            flags,
            dir,
            wal: VecDeque::new(),
            bg: VecDeque::new(),
            facts: Facts::default(),
            outbox: Vec::new(),
            handle: 1,
            seq: 1,
        };
        // Only a restart's recovered log is durable already; a fresh start's is not, until its
        // first job completes.
        if r.node.status().last_index > 0 && !r.dir.list().is_empty() {
            r.facts.persisted_index = r.node.status().persisted_index;
        }
        r.facts.snapshots = r
            .dir
            .list()
            .iter()
            .filter_map(|n| raftkv_core::snapfile::parse_name(n))
            .collect();
        r.pump();
        r
    }

    fn pump(&mut self) {
        for a in self.node.drain() {
            match a {
                Action::Disk(DiskJob { id, ops }) => {
                    let t = touched(&ops);
                    self.wal.push_back((id, ops.into(), t));
                }
                Action::Snapshot(job) => {
                    let (bytes, ops) = job.write();
                    let ops: Vec<FileOp> = ops.collect();
                    let t = touched(&ops);
                    assert!(
                        self.bg.iter().all(|j| j.1.is_none()),
                        "one snapshot job at a time"
                    );
                    self.bg.push_back((job.id, Some(bytes), ops.into(), t));
                }
                Action::Prepare(DiskJob { id, ops }) => {
                    let t = touched(&ops);
                    self.bg.push_back((id, None, ops.into(), t));
                }
                Action::Read(job) => {
                    let r = job.from_bytes(self.dir.read(&job.name));
                    self.node.read_done(job.id, r);
                    return self.pump();
                }
                Action::Send(o) => {
                    self.node.sent(SendOutcome::Delivered {
                        to: o.to,
                        kind: o.kind,
                    });
                    self.outbox.push((o.to, o.bytes));
                }
                Action::Reply { .. } => {}
                Action::Event(Event::Durable { hard_state }) => self.facts.hard_state = hard_state,
                Action::Event(Event::Stopped { reason }) => {
                    panic!("workload node stopped: {reason}")
                }
                Action::Event(_) => {}
            }
        }
    }

    fn put(&mut self, k: u64) {
        let h = self.handle;
        self.handle += 1;
        let rid = RequestId {
            client: 1,
            seq: self.seq,
        };
        self.seq += 1;
        self.node.client(ClientRequest {
            handle: h,
            request_id: Some(rid),
            timeout_ticks: 1000,
            op: ClientOp::Put {
                key: format!("key-{}", k % 23).into_bytes(),
                value: vec![b'a' + (k % 26) as u8; 20 + (k as usize * 37) % 180],
            },
        });
        self.pump();
    }

    /// Applies one op of one lane (the rng picks which when both have work). Calls `at` with
    /// the state just before every sync, and `undurable` for completed jobs that left touched
    /// files unsynced.
    fn step(
        &mut self,
        rng: &mut Rng,
        at: &mut dyn FnMut(Boundary),
        undurable: &mut dyn FnMut(Undurable),
    ) -> bool {
        let lanes = [!self.wal.is_empty(), !self.bg.is_empty()];
        let lane = match lanes {
            [false, false] => return false,
            [true, false] => 0,
            [false, true] => 1,
            [true, true] => rng.below(2) as usize,
        };
        let (op, done) = if lane == 0 {
            let (id, ops, _) = self.wal.front_mut().expect("chosen");
            let op = ops.pop_front();
            (op, ops.is_empty().then_some(*id))
        } else {
            let (id, _, ops, _) = self.bg.front_mut().expect("chosen");
            let op = ops.pop_front();
            (op, ops.is_empty().then_some(*id))
        };
        if let Some(op) = op {
            if op.is_sync() {
                at(Boundary {
                    label: format!("before {op:?}"),
                    dir: &self.dir,
                    facts: &self.facts,
                });
            }
            self.dir
                .apply(&op)
                .unwrap_or_else(|e| panic!("workload op {op:?}: {e}"));
            if let FileOp::Rename { to, .. } = &op {
                if let Some(named) = raftkv_core::snapfile::parse_name(to) {
                    self.facts.snapshots.insert(named);
                }
            }
        }
        if let Some(id) = done {
            let t = if lane == 0 {
                self.wal.pop_front().expect("front").2
            } else {
                let (_, bytes, _, t) = self.bg.pop_front().expect("lane");
                match bytes {
                    Some(bytes) => self.node.snapshot_saved(id, bytes),
                    None => self.node.disk_done(id),
                }
                t
            };
            let files = self.dir.not_durable(&t);
            if !files.is_empty() {
                undurable(Undurable {
                    job: format!("job {id}"),
                    files,
                });
            }
            if lane == 0 {
                self.node.disk_done(id);
            }
            self.pump();
            self.facts.persisted_index = self.node.status().persisted_index;
        }
        true
    }

    /// A power loss with every unsynced unit lost, then a restart on what survived.
    fn crash_and_restart(&mut self) {
        self.dir = self.dir.after_power_loss();
        self.wal.clear();
        self.bg.clear();
        self.outbox.clear();
        self.node = boot_on(&self.cfg, &self.flags, &self.dir);
        self.pump();
    }
}

/// Runs the workload named `name` and calls `at` at every boundary of the recorded node.
pub fn run(
    name: &str,
    seed: u64,
    at: &mut dyn FnMut(Boundary),
    undurable: &mut dyn FnMut(Undurable),
) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    match name {
        "single" => {
            let members: BTreeMap<u64, String> = [(1, addr(1))].into();
            let flags = StartFlags {
                peers: members,
                token: TOKEN.into(),
                join: false,
            };
            let mut r = Recorded::new(config(1), flags, CrashDir::default());
            for k in 0..70u64 {
                if k == 35 {
                    r.crash_and_restart();
                }
                r.node.tick();
                r.put(k);
                // Let the lanes run a random number of ops, so jobs overlap writes.
                for _ in 0..rng.below(12) {
                    if !r.step(&mut rng, at, undurable) {
                        break;
                    }
                }
            }
            while r.step(&mut rng, at, undurable) {}
            at(Boundary {
                label: "at the end".into(),
                dir: &r.dir,
                facts: &r.facts,
            });
            Ok(())
        }
        "joiner" => joiner(&mut rng, at, undurable),
        other => Err(format!("unknown workload {other:?}")),
    }
}

/// The leader of the `joiner` workload: its disk is not enumerated (ops run at once, in order).
struct Plain {
    node: Node,
    dir: CrashDir,
    outbox: Vec<(u64, Vec<u8>)>,
}

impl Plain {
    fn pump(&mut self) {
        loop {
            let actions = self.node.drain();
            if actions.is_empty() {
                return;
            }
            for a in actions {
                match a {
                    Action::Disk(job) | Action::Prepare(job) => {
                        for op in &job.ops {
                            self.dir.apply(op).expect("leader op");
                        }
                        self.node.disk_done(job.id);
                    }
                    Action::Snapshot(job) => {
                        let (bytes, ops) = job.write();
                        for op in ops {
                            self.dir.apply(&op).expect("leader snapshot op");
                        }
                        self.node.snapshot_saved(job.id, bytes);
                    }
                    Action::Read(job) => {
                        let r = job.from_bytes(self.dir.read(&job.name));
                        self.node
                            .read_done(job.id, Ok(r.expect("a streaming file is pinned")));
                    }
                    Action::Send(o) => {
                        self.node.sent(SendOutcome::Delivered {
                            to: o.to,
                            kind: o.kind,
                        });
                        self.outbox.push((o.to, o.bytes));
                    }
                    Action::Event(Event::Stopped { reason }) => panic!("leader stopped: {reason}"),
                    _ => {}
                }
            }
        }
    }
}

fn joiner(
    rng: &mut Rng,
    at: &mut dyn FnMut(Boundary),
    undurable: &mut dyn FnMut(Undurable),
) -> Result<(), String> {
    let one: BTreeMap<u64, String> = [(1, addr(1))].into();
    let lflags = StartFlags {
        peers: one,
        token: TOKEN.into(),
        join: false,
    };
    let lcfg = config(1);
    let mut leader = Plain {
        node: boot_on(&lcfg, &lflags, &CrashDir::default()),
        dir: CrashDir::default(),
        outbox: Vec::new(),
    };
    leader.pump();
    let put = |p: &mut Plain, k: u64| {
        p.node.client(ClientRequest {
            handle: k + 1,
            request_id: Some(RequestId {
                client: 9,
                seq: k + 1,
            }),
            timeout_ticks: 1000,
            op: ClientOp::Put {
                key: format!("key-{}", k % 17).into_bytes(),
                value: vec![b'a' + (k % 26) as u8; 30 + (k as usize * 53) % 150],
            },
        });
        p.pump();
    };
    for k in 0..30 {
        leader.node.tick();
        put(&mut leader, k);
    }
    leader.node.client(ClientRequest {
        handle: 1000,
        request_id: None,
        timeout_ticks: 1000,
        // A learner first: strict reconfig refuses a second voter nobody has heard from.
        op: ClientOp::AddLearner {
            id: 2,
            addr: addr(2),
            auto_promote: true,
        },
    });
    leader.pump();
    let both: BTreeMap<u64, String> = [(1, addr(1)), (2, addr(2))].into();
    let jflags = StartFlags {
        peers: both,
        token: TOKEN.into(),
        join: true,
    };
    let mut j = Recorded::new(config(2), jflags, CrashDir::default());
    for round in 0..400u64 {
        if round % 3 == 0 {
            leader.node.tick();
            j.node.tick();
        }
        if (60..100).contains(&round) {
            put(&mut leader, 100 + round);
        }
        leader.pump();
        for (to, bytes) in std::mem::take(&mut leader.outbox) {
            if to == 2 {
                let _ = j.node.receive(&bytes);
            }
        }
        j.pump();
        for (to, bytes) in std::mem::take(&mut j.outbox) {
            if to == 1 {
                let _ = leader.node.receive(&bytes);
            }
        }
        for _ in 0..1 + rng.below(6) {
            if !j.step(rng, at, undurable) {
                break;
            }
        }
    }
    while j.step(rng, at, undurable) {}
    let (ja, la) = (
        j.node.status().applied_index,
        leader.node.status().applied_index,
    );
    if ja < la {
        return Err(format!("the joiner applied {ja} of the leader's {la}"));
    }
    if j.facts.snapshots.is_empty() {
        return Err("the joiner never installed a snapshot".into());
    }
    at(Boundary {
        label: "at the end".into(),
        dir: &j.dir,
        facts: &j.facts,
    });
    Ok(())
}
