//! raftkv-sim: `raftkv-core` nodes in a deterministic simulated world (madsim), with a disk and a
//! network that lie, a concurrent client workload, and checkers. One seed names one world and
//! replays it exactly.
//!
//! `run_seed` builds the world for a seed, runs it under a fresh madsim runtime, then runs the
//! history checkers. The code map: `config` (the seed's world), `world` (nodes, disks, network,
//! clients, supervisor), `observer` (trace, coverage, replica and raft-safety checkers),
//! `check` (linearizability, durability, local reads), `history` (the client history format).

pub mod check;
pub mod config;
pub mod history;
pub mod observer;
#[cfg(madsim)]
pub mod world;

use config::SimConfig;
use history::Op;
use observer::Violation;
use std::collections::BTreeMap;

#[derive(Debug)]
pub struct SeedReport {
    pub seed: u64,
    pub config: SimConfig,
    pub ops: usize,
    pub ops_unknown: usize,
    pub faults_injected: u64,
    pub sim_secs: f64,
    pub wall_secs: f64,
    pub trace_hash: u64,
    pub trace_events: u64,
    pub violations: Vec<Violation>,
    pub coverage: BTreeMap<&'static str, u64>,
    pub history: Vec<Op>,
    pub trace_lines: Option<Vec<String>>,
}

impl SeedReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs one seed. `keep_trace` keeps the event trace as JSON lines (it is always hashed).
#[cfg(madsim)]
pub fn run_seed(seed: u64, keep_trace: bool) -> SeedReport {
    use std::sync::Arc;
    let cfg = SimConfig::from_seed(seed);
    let wall = std::time::Instant::now();
    let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    let (world, sim_ns) = rt.block_on(async move {
        let world = Arc::new(world::World::new(cfg, keep_trace));
        world::supervise(world.clone()).await;
        let sim_ns = world.now_ns();
        (world, sim_ns)
    });
    let sim_secs = sim_ns as f64 / 1e9;
    drop(rt);
    let history = world.history.lock().unwrap().clone();
    let acked = world.acked.lock().unwrap().clone();
    let mut obs = std::mem::take(&mut *world.obs.lock().unwrap());
    match check::linearizability::check(&history) {
        check::linearizability::Verdict::Ok => {}
        check::linearizability::Verdict::Violation { key, ops } => obs.violation(
            "linearizability",
            format!("key {key}: no linearization of its {ops} operations"),
        ),
        check::linearizability::Verdict::Inconclusive { key, ops } => obs.violation(
            "linearizability",
            format!("key {key}: search budget exhausted on {ops} operations"),
        ),
    }
    if let Err(e) = check::durability(&acked, &obs.applied_requests) {
        obs.violation("durability", e);
    }
    if let Err(e) = check::local_reads(&history) {
        obs.violation("local-reads", e);
    }
    SeedReport {
        seed,
        config: world.cfg.clone(),
        ops: history.len(),
        ops_unknown: history.iter().filter(|o| o.complete_ns.is_none()).count(),
        faults_injected: obs.faults_injected,
        sim_secs,
        wall_secs: wall.elapsed().as_secs_f64(),
        trace_hash: obs.trace_hash(),
        trace_events: obs.trace_len,
        violations: obs.violations.clone(),
        coverage: obs.coverage.clone(),
        history,
        trace_lines: obs.trace_lines.take(),
    }
}
