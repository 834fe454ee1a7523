//! The simulator as a test: a sweep of seeds must pass every checker and exercise every recovery
//! path, and a seed must replay to the same trace hash, in this process and in a separate one.
//! `RAFTKV_SIM_SEEDS` sizes the sweep (CI raises it); `RAFTKV_SIM_DETERMINISM_SEEDS` the
//! determinism check.

#![cfg(madsim)]

use raftkv_io_sim::{coverage_gaps, run_seed, SeedReport};
use std::collections::BTreeMap;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `seeds` on two threads (this machine's cores); results in seed order.
fn run_many(seeds: std::ops::Range<u64>) -> Vec<SeedReport> {
    let next = std::sync::atomic::AtomicU64::new(seeds.start);
    let out = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= seeds.end {
                    return;
                }
                let r = run_seed(seed, false, None);
                out.lock().unwrap().push(r);
            });
        }
    });
    let mut v = out.into_inner().unwrap();
    v.sort_by_key(|r| r.seed);
    v
}

#[test]
fn a_sweep_of_seeds_passes_every_checker_and_covers_every_recovery_path() {
    let seeds = env_u64("RAFTKV_SIM_SEEDS", 120);
    let reports = run_many(0..seeds);
    let mut failures = Vec::new();
    let mut coverage: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut ops, mut faults) = (0, 0);
    for r in &reports {
        ops += r.ops;
        faults += r.faults_injected;
        for (k, v) in &r.coverage {
            *coverage.entry(k).or_default() += v;
        }
        if !r.passed() {
            failures.push(format!(
                "seed {}: {:?}\n  reproduce: cargo run --release -p raftkv-io-sim -- --seed {}",
                r.seed, r.violations, r.seed
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        ops as u64 > seeds * 100,
        "the workload barely ran: {ops} ops"
    );
    assert!(faults > seeds, "faults were barely injected: {faults}");
    let gaps = coverage_gaps(&coverage);
    assert!(
        gaps.is_empty(),
        "never exercised in {seeds} seeds: {gaps:?}; totals {coverage:?}"
    );
}

#[test]
fn seeds_replay_exactly_and_differ_from_each_other() {
    let seeds = env_u64("RAFTKV_SIM_DETERMINISM_SEEDS", 10);
    let first = run_many(1000..1000 + seeds);
    let second = run_many(1000..1000 + seeds);
    let mut hashes = std::collections::BTreeSet::new();
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "seed {} is not deterministic",
            a.seed
        );
        hashes.insert(a.trace_hash);
    }
    assert_eq!(
        hashes.len() as u64,
        seeds,
        "different seeds must give different traces"
    );
}

#[test]
fn a_seed_replays_identically_in_separate_processes() {
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv-sim"))
            .args(["--seed", "4242"])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines().next().unwrap_or_default().to_string()
    };
    let a = run();
    assert!(a.contains("trace hash"), "{a}");
    assert_eq!(a, run());
}

/// A range CI has never swept before: `RAFTKV_SIM_FRESH_START` (derived from the commit by
/// `.ci/run`, so running it by hand on the same commit gives the same range) and
/// `RAFTKV_SIM_FRESH_SEEDS` seeds from there. Every seed must pass every checker; coverage is the
/// fixed sweep's business. Without the variables this runs a small default range.
#[test]
fn a_fresh_range_of_seeds_passes_every_checker() {
    let start = env_u64("RAFTKV_SIM_FRESH_START", 1_000_000);
    let seeds = env_u64("RAFTKV_SIM_FRESH_SEEDS", 20);
    println!("fresh range: seeds {start}..{}", start + seeds);
    let failures: Vec<String> = run_many(start..start + seeds)
        .iter()
        .filter(|r| !r.passed())
        .map(|r| {
            format!(
                "seed {}: {:?}\n  reproduce: cargo run --release -p raftkv-io-sim -- --seed {}",
                r.seed, r.violations, r.seed
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "fresh range {start}..{}:\n{}",
        start + seeds,
        failures.join("\n")
    );
}
