//! The simulator as a test: a sweep of seeds must pass every checker, and a seed must replay to
//! the same trace hash, in this process and in a separate one. `RAFTKV_SIM_SEEDS` sizes the
//! sweep (CI raises it); `RAFTKV_SIM_DETERMINISM_SEEDS` the determinism check.

#![cfg(madsim)]

use raftkv_io_sim::run_seed;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn a_sweep_of_seeds_passes_every_checker() {
    let seeds = env_u64("RAFTKV_SIM_SEEDS", 60);
    let mut failures = Vec::new();
    let mut ops = 0;
    let mut faults = 0;
    for seed in 0..seeds {
        let r = run_seed(seed, false);
        ops += r.ops;
        faults += r.faults_injected;
        if !r.passed() {
            failures.push(format!("seed {seed}: {:?}\n  reproduce: cargo run --release -p raftkv-io-sim -- --seed {seed}", r.violations));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        ops as u64 > seeds * 100,
        "the workload barely ran: {ops} ops"
    );
    assert!(faults > seeds, "faults were barely injected: {faults}");
}

#[test]
fn seeds_replay_exactly_and_differ_from_each_other() {
    let seeds = env_u64("RAFTKV_SIM_DETERMINISM_SEEDS", 10);
    let mut hashes = std::collections::BTreeSet::new();
    for seed in 1000..1000 + seeds {
        let a = run_seed(seed, false).trace_hash;
        let b = run_seed(seed, false).trace_hash;
        assert_eq!(a, b, "seed {seed} is not deterministic");
        hashes.insert(a);
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
