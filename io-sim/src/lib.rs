//! raftkv-sim: `raftkv-core` nodes in a deterministic simulated world (madsim), with a disk and a
//! network that lie, a concurrent client workload, and checkers. One seed names one world and
//! replays it exactly.
//!
//! `run_seed` builds the world for a seed, runs it under a fresh madsim runtime, then runs the
//! history checkers. The code map: `config` (the seed's world), `options` (what shapes a world
//! beyond its seed, the repro line, the per-class random streams), `world` (nodes, disks,
//! network, clients, supervisor), `observer` (trace, coverage, replica and raft-safety checkers),
//! `check` (linearizability, durability, local reads), `history` (the client history format),
//! `sweep` (many seeds, shards, merging), `shrink` (a failing world made small), `timeline`
//! (a seed's story as an HTML page), `crash`
//! (crash-state enumeration).

pub mod check;
pub mod config;
pub mod coverage;
pub mod crash;
pub mod history;
pub mod observer;
pub mod options;
pub mod shrink;
pub mod sweep;
pub mod timeline;
#[cfg(madsim)]
pub mod world;

use config::SimConfig;
use history::Op;
use observer::{Checker, Violation};
pub use options::{FaultClass, WorldOptions};
use std::collections::BTreeMap;

/// Checkers expected to catch each planted bug.
pub fn expected_checkers(bug: raftkv_core::planted::PlantedBug) -> &'static [Checker] {
    use raftkv_core::planted::PlantedBug::*;
    use Checker::*;
    match bug {
        AckBeforeSync => &[Durability, Linearizability],
        LocalLinearizableReads => &[Linearizability],
        // A follower that acknowledged entries it had not synced loses them in a crash; when the
        // leader then tells it to commit them, core's heartbeat guard (raft-rs's own invariant,
        // `to_commit N is out of range`, would panic) stops it as a log behind what the leader
        // knows it matched: `durable-state`, before the history checkers see the lost write.
        // Any of these counts.
        PersistedMessagesBeforeSync => &[
            DurableState,
            Panic,
            RaftSafety,
            ReplicasAgree,
            Durability,
            Linearizability,
        ],
        CompactPastSnapshot => &[Recovery],
        // A wiped node is never refused, so it keeps voting under its old id.
        IgnoreIncarnation => &[Identity],
        // Caught at the boot that misses the damage (recovery), or later by what the lost
        // entries break.
        CorruptMiddleAsTornTail => &[
            Recovery,
            DurableState,
            ReplicasAgree,
            RaftSafety,
            Durability,
        ],
        // A follower sent such a snapshot ignores it and never catches up (liveness); a node
        // that restarts from one recovers an empty configuration, refuses the next conf change
        // its peers apply, and diverges from them (replicas-agree). Either counts.
        SnapshotWithoutConfState => &[Liveness, ReplicasAgree],
        // Storage bugs are crash-state enumeration's to catch (`crash`); in a sweep, whatever
        // checker fires first counts (README: which ones the sweeps also catch).
        SnapshotRenameBeforeSync
        | SegmentCutWithoutDirSync
        | MarkerBeforeSnapshotDurable
        | TornTailTruncateWithoutSync
        | PurgeBeforeMarkerDurable
        | UnfinishedFirstJobAsRestart => &[
            Recovery,
            Durability,
            DurableState,
            ReplicasAgree,
            Linearizability,
            RaftSafety,
            Panic,
            Liveness,
            Identity,
            Fatal,
            Disk,
        ],
    }
}

#[derive(Debug)]
pub struct SeedReport {
    pub seed: u64,
    pub options: WorldOptions,
    pub config: SimConfig,
    pub ops: usize,
    pub ops_unknown: usize,
    pub faults_injected: u64,
    pub sim_secs: f64,
    pub wall_secs: f64,
    pub trace_hash: u64,
    pub trace_events: u64,
    pub violations: Vec<Violation>,
    pub coverage: BTreeMap<coverage::Counter, u64>,
    pub history: Vec<Op>,
    pub trace_lines: Option<Vec<String>>,
}

impl SeedReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The command that replays this seed's world from any directory.
    pub fn repro(&self) -> String {
        self.options.repro_command(self.seed)
    }
}

/// What a run keeps of its trace. The trace is always hashed; message-level events never are,
/// so a seed's hash is the same at every level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trace {
    /// Only the hash.
    Hash,
    /// Every event as a JSON line (`--trace`).
    Events,
    /// Events and every message sent and delivered (`--trace-messages`).
    Messages,
}

/// Runs one seed in the world `opts` shapes, keeping `trace` of its trace. A planted bug needs
/// a `--cfg raftkv_planted_bugs` build.
#[cfg(madsim)]
pub fn run_seed(seed: u64, trace: Trace, opts: &WorldOptions) -> SeedReport {
    use std::sync::Arc;
    #[cfg(raftkv_planted_bugs)]
    raftkv_core::planted::plant(opts.plant);
    #[cfg(not(raftkv_planted_bugs))]
    assert!(
        opts.plant.is_none(),
        "this build cannot plant bugs: build with --cfg raftkv_planted_bugs"
    );
    let cfg = SimConfig::for_world(seed, opts);
    let wall = std::time::Instant::now();
    let world = Arc::new(world::World::new(cfg, trace, opts));
    let w = world.clone();
    // A panic anywhere in the world (raft-rs's own assertions included) is a failed seed, not a
    // failed sweep.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        rt.block_on(async move {
            w.reset_clock();
            world::supervise(w.clone()).await;
            w.now_ns()
        })
    }));
    let sim_ns = match outcome {
        Ok(ns) => ns,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            world.obs.lock().unwrap().violation(Checker::Panic, msg);
            0
        }
    };
    let sim_secs = sim_ns as f64 / 1e9;
    let history = world.workload.history();
    let acked = world.workload.acked();
    let mut obs = std::mem::take(&mut *world.obs.lock().unwrap());
    let mut fired = check::history(&history);
    if let Err(e) = check::durability(&acked, &obs.applied_requests) {
        // Reported after linearizability and before local reads, as it always was.
        let at = fired
            .iter()
            .position(|(c, _)| *c == "local-reads")
            .unwrap_or(fired.len());
        fired.insert(at, (Checker::Durability, e));
    }
    for (checker, detail) in fired {
        obs.finding(checker, detail);
    }
    SeedReport {
        seed,
        options: opts.clone(),
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
