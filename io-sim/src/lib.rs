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
pub mod crash;
pub mod history;
pub mod observer;
#[cfg(madsim)]
pub mod world;

use config::SimConfig;
use history::Op;
use observer::Violation;
use std::collections::BTreeMap;

/// Paths a sweep must exercise: a sweep in which any of these never happened proves little
/// about them, and fails.
pub const REQUIRED_COVERAGE: &[&str] = &[
    "elections",
    "snapshots_taken",
    "snapshots_sent",
    "snapshots_installed",
    "snapshot_chunks_resent",
    "snapshot_sends_resumed",
    "snapshot_sends_failed",
    "snapshot_receives_abandoned",
    "damaged_snapshots_refused_by_followers",
    "compactions",
    "purges",
    "torn_tails_repaired",
    "snapshots_set_aside",
    "corruption_detected",
    "fsync_failures",
    "enospc",
    "disk_losses",
    "replacements",
    "conf_changes_applied",
    "crashes_power_loss",
    "crashes_during_io",
    "crashes_between_sync_and_send",
    "pauses",
    "stale_messages_replayed",
    "misdirected_writes",
    "read_corruption_injected",
    "latent_sector_errors",
    "incarnations_recorded",
    "learners_promoted",
    "cluster_ids_adopted",
    "peer_incarnations_refused",
    "wiped_restarts_refused",
    "operator_mistakes_refused",
    "mistakes_started_late",
    "never_started_members_removed",
    "no_leader_answers",
    "writes_definitely_not_applied",
];

/// Required paths that a set of coverage totals never exercised.
pub fn coverage_gaps(totals: &BTreeMap<&'static str, u64>) -> Vec<&'static str> {
    REQUIRED_COVERAGE
        .iter()
        .copied()
        .filter(|k| totals.get(k).copied().unwrap_or(0) == 0)
        .collect()
}

/// Checkers expected to catch each planted bug.
pub fn expected_checkers(bug: raftkv_core::planted::PlantedBug) -> &'static [&'static str] {
    use raftkv_core::planted::PlantedBug::*;
    match bug {
        AckBeforeSync => &["durability", "linearizability"],
        LocalLinearizableReads => &["linearizability"],
        // A follower that acknowledged entries it had not synced loses them in a crash; when the
        // leader then tells it to commit them, core's heartbeat guard (raft-rs's own invariant,
        // `to_commit N is out of range`, would panic) stops it as a log behind what the leader
        // knows it matched: `durable-state`, before the history checkers see the lost write.
        // Any of these counts.
        PersistedMessagesBeforeSync => &[
            "durable-state",
            "panic",
            "raft-safety",
            "replicas-agree",
            "durability",
            "linearizability",
        ],
        CompactPastSnapshot => &["recovery"],
        // A wiped node is never refused, so it keeps voting under its old id.
        IgnoreIncarnation => &["identity"],
        CorruptMiddleAsTornTail => &[
            "durable-state",
            "replicas-agree",
            "raft-safety",
            "durability",
        ],
        // A follower sent such a snapshot ignores it and never catches up (liveness); a node
        // that restarts from one recovers an empty configuration, refuses the next conf change
        // its peers apply, and diverges from them (replicas-agree). Either counts.
        SnapshotWithoutConfState => &["liveness", "replicas-agree"],
        // Storage bugs are crash-state enumeration's to catch (`crash`); in a sweep, whatever
        // checker fires first counts (README: which ones the sweeps also catch).
        SnapshotRenameBeforeSync
        | SegmentCutWithoutDirSync
        | MarkerBeforeSnapshotDurable
        | TornTailTruncateWithoutSync
        | PurgeBeforeMarkerDurable => &[
            "recovery",
            "durability",
            "durable-state",
            "replicas-agree",
            "linearizability",
            "raft-safety",
            "panic",
            "liveness",
            "identity",
            "fatal",
            "disk",
        ],
    }
}

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
/// `planted` plants a known bug (only in `--cfg raftkv_planted_bugs` builds).
#[cfg(madsim)]
pub fn run_seed(
    seed: u64,
    keep_trace: bool,
    planted: Option<raftkv_core::planted::PlantedBug>,
) -> SeedReport {
    run_seed_with(seed, keep_trace, planted, false)
}

/// `run_seed`, optionally without core's workaround for the raft-rs campaign-after-snapshot
/// panic (to show the raft-rs bug still reproduces).
#[cfg(madsim)]
pub fn run_seed_with(
    seed: u64,
    keep_trace: bool,
    planted: Option<raftkv_core::planted::PlantedBug>,
    without_raft_rs_guard: bool,
) -> SeedReport {
    use std::sync::Arc;
    #[cfg(raftkv_planted_bugs)]
    raftkv_core::planted::plant(planted);
    #[cfg(not(raftkv_planted_bugs))]
    assert!(
        planted.is_none(),
        "this build cannot plant bugs: build with --cfg raftkv_planted_bugs"
    );
    let cfg = SimConfig::from_seed(seed);
    let wall = std::time::Instant::now();
    let world = Arc::new(world::World::new(cfg, keep_trace, without_raft_rs_guard));
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
            world.obs.lock().unwrap().violation("panic", msg);
            0
        }
    };
    let sim_secs = sim_ns as f64 / 1e9;
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
