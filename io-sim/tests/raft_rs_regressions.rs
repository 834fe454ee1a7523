//! Seeds that find a bug in raft-rs 0.7 itself, kept as a regression test.
//!
//! With asynchronous persistence, a follower that installs a snapshot from the leader has
//! `applied` below the compacted log until the snapshot's disk job completes; a campaign in
//! that window (an election timeout, or `MsgTimeoutNow`) scans storage from `applied + 1` for
//! pending conf changes and raft-rs panics: "unexpected error getting unapplied entries ...:
//! Store(Compacted)". `core` works around it (`Node::snapshot_unpersisted`: no ticks and no
//! `MsgTimeoutNow` until the snapshot is durable).
//!
//! A second raft-rs bug needs several inputs per Ready, which the simulated node shell takes
//! as the real one does: `Raft::try_batching` merges entries into a pending commit-only append
//! at another index (`node::raft_rs_guard` repairs the message). Without the repair most worlds
//! fail within seconds: raft-rs panics (`to_commit .. is out of range`, `entry .. conflict with
//! committed entry`), or a follower is told it lost entries it never had.
//!
//! A seed names a world only for one version of the code, so a fixed list would silently stop
//! reproducing the bug as the code changes. The test therefore takes the first seeds of a range
//! that reproduce the panic with the workaround off (seeds 50, 59 and 103 when it was written),
//! requires that there are some, and requires the same seeds to pass with the workaround on.

#![cfg(madsim)]

use raftkv_io_sim::{run_seed, Trace, WorldOptions};

/// The world of a seed without core's workaround.
fn without_guard() -> WorldOptions {
    WorldOptions {
        without_raft_rs_guard: true,
        ..WorldOptions::default()
    }
}

fn reproduces(seed: u64) -> bool {
    let r = run_seed(seed, Trace::Hash, &without_guard());
    r.violations
        .iter()
        .any(|v| v.checker == "panic" && v.detail.contains("Store(Compacted)"))
}

#[test]
fn raft_rs_campaign_after_snapshot_panic_reproduces_without_the_workaround_and_not_with_it() {
    let seeds: Vec<u64> = (0..600).filter(|&s| reproduces(s)).take(3).collect();
    assert!(!seeds.is_empty(), "no seed in 0..600 reproduces the raft-rs panic without the workaround: has raft-rs changed?");
    for seed in seeds {
        let r = run_seed(seed, Trace::Hash, &WorldOptions::default());
        assert!(
            r.passed(),
            "seed {seed} (reproduces the raft-rs panic without the workaround) fails with it: {:?}",
            r.violations
        );
    }
}

#[test]
fn misplaced_batched_appends_break_worlds_without_the_repair_and_not_with_them() {
    let without = WorldOptions {
        without_batch_append_guard: true,
        ..WorldOptions::default()
    };
    let seeds: Vec<u64> = (0..40)
        .filter(|&s| !run_seed(s, Trace::Hash, &without).passed())
        .take(3)
        .collect();
    assert!(
        !seeds.is_empty(),
        "no seed in 0..40 fails without the batched-append repair: has raft-rs changed?"
    );
    for seed in seeds {
        let r = run_seed(seed, Trace::Hash, &WorldOptions::default());
        assert!(
            r.passed(),
            "seed {seed} (fails without the repair) fails with it: {:?}",
            r.violations
        );
        assert!(
            r.coverage
                .get(&raftkv_io_sim::coverage::Counter::AppendsReindexed)
                .is_some_and(|&n| n > 0),
            "seed {seed} passed without repairing an append"
        );
    }
}

fn first_reproducing_seed() -> u64 {
    (0..600)
        .find(|&s| reproduces(s))
        .expect("a seed in 0..600 reproduces the raft-rs panic without the workaround")
}

/// A failure's repro line carries every flag that shaped its world: replayed from another
/// directory, the line's own arguments reproduce the same panic.
#[test]
fn the_repro_line_of_a_seed_without_the_workaround_reproduces_it_from_any_directory() {
    let seed = first_reproducing_seed();
    let without = without_guard();
    let line = run_seed(seed, Trace::Hash, &without).repro();
    assert!(line.contains("--without-raft-rs-guard"), "{line}");
    let args = line
        .split_once(" -- ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .expect("the line runs the simulator with arguments");
    let scratch = std::env::temp_dir().join(format!("raftkv-repro-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv-sim"))
        .args(args.split_whitespace())
        .current_dir(&scratch)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAILED [panic]") && stdout.contains("Store(Compacted)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&line),
        "the replay prints the same line: {stdout}"
    );
    assert!(scratch.join("history.jsonl").exists() && scratch.join("trace.jsonl").exists());
    std::fs::remove_dir_all(&scratch).unwrap();
}

/// Shrinking keeps the failure: the smallest world still panics the same way when replayed, and
/// has no fault class the original world did not have.
#[test]
fn a_shrunk_world_still_fails_with_the_same_checker() {
    let seed = first_reproducing_seed();
    let without = without_guard();
    let mut trials = Vec::new();
    let r = raftkv_io_sim::shrink::shrink(seed, &without, &mut |t| trials.push(t.clone()))
        .expect("the seed fails");
    assert_eq!(r.checker, "panic");
    assert_eq!(r.trials, trials.len());
    assert!(r.options.without_raft_rs_guard);
    let original = raftkv_io_sim::config::SimConfig::for_world(seed, &without);
    for c in &r.classes_on {
        assert!(original.is_on(*c), "{c:?} was off in the original world");
    }
    let again = run_seed(seed, Trace::Hash, &r.options);
    assert!(
        again.violations.iter().any(|v| v.checker == "panic"),
        "the shrunk world {:?} passes: {:?}",
        r.options,
        again.violations
    );
    // Every kept trial failed, and the result is the last kept one.
    for t in trials.iter().filter(|t| t.still_fails) {
        assert!(t.options.faults_off.is_subset(&r.options.faults_off));
    }
    assert!(raftkv_io_sim::shrink::shrink(0, &WorldOptions::default(), &mut |_| {}).is_err());
}
