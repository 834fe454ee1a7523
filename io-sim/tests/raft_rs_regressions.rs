//! Seeds that found a bug in raft-rs 0.7 itself, kept as regression tests.
//!
//! With asynchronous persistence, a follower that installs a snapshot from the leader has
//! `applied` below the compacted log until the snapshot's disk job completes; a campaign in
//! that window (an election timeout, or `MsgTimeoutNow`) scans storage from `applied + 1` for
//! pending conf changes and raft-rs panics: "unexpected error getting unapplied entries ...:
//! Store(Compacted)". `core` works around it (`Node::snapshot_unpersisted`: no ticks and no
//! `MsgTimeoutNow` until the snapshot is durable). These seeds reproduce the panic with the
//! workaround off, and pass with it on.

#![cfg(madsim)]

use raftkv_io_sim::run_seed_with;

const SEEDS: [u64; 3] = [50, 59, 103];

#[test]
fn raft_rs_campaign_after_snapshot_panic_reproduces_without_the_workaround() {
    for seed in SEEDS {
        let r = run_seed_with(seed, false, None, true);
        let panic = r.violations.iter().find(|v| v.checker == "panic");
        assert!(
            panic.is_some_and(|v| v.detail.contains("Store(Compacted)")),
            "seed {seed} no longer reproduces the raft-rs panic (the world may have changed; find new seeds with `raftkv-sim sweep --without-raft-rs-guard`): {:?}",
            r.violations
        );
    }
}

#[test]
fn the_same_seeds_pass_with_the_workaround() {
    for seed in SEEDS {
        let r = run_seed_with(seed, false, None, false);
        assert!(r.passed(), "seed {seed}: {:?}", r.violations);
    }
}
