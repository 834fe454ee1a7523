//! Crash-state enumeration as a test: every state a crash may leave at every sync boundary of
//! the recorded workloads recovers and keeps every rule (`raftkv_io_sim::crash::check`). CI runs
//! `RAFTKV_CRASH_SEEDS` workload seeds (default 2); `raftkv-sim crash-states --seeds 0..64` is
//! the longer run (README). The planted storage bugs it must catch are in `planted.rs`.

use raftkv_io_sim::crash;

#[test]
fn every_enumerated_crash_state_recovers_and_keeps_every_rule() {
    let seeds: u64 = std::env::var("RAFTKV_CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let r = crash::run(0..seeds, None, 10);
    for (name, _) in crash::WORKLOADS {
        let b: Vec<_> = r
            .boundaries
            .iter()
            .filter(|b| b.workload == *name)
            .collect();
        assert!(b.len() > 20, "{name}: only {} boundaries", b.len());
        assert!(
            b.iter().any(|b| !b.bounded) && b.iter().any(|b| b.states > 100),
            "{name}: enumerations too small to mean much"
        );
    }
    println!(
        "crash-states: {} states checked at {} boundaries in {:.1} s",
        r.states,
        r.boundaries.len(),
        r.wall_secs
    );
    assert!(r.violations.is_empty(), "{}", r.violations.join("\n"));
}
