//! Seeds that find a bug in raft-rs 0.7 itself, kept as a regression test.
//!
//! With asynchronous persistence, a follower that installs a snapshot from the leader has
//! `applied` below the compacted log until the snapshot's disk job completes; a campaign in
//! that window (an election timeout, or `MsgTimeoutNow`) scans storage from `applied + 1` for
//! pending conf changes and raft-rs panics: "unexpected error getting unapplied entries ...:
//! Store(Compacted)". `core` works around it (`Node::snapshot_unpersisted`: no ticks and no
//! `MsgTimeoutNow` until the snapshot is durable).
//!
//! A seed names a world only for one version of the code, so a fixed list would silently stop
//! reproducing the bug as the code changes. The test therefore takes the first seeds of a range
//! that reproduce the panic with the workaround off (seeds 50, 59 and 103 when it was written),
//! requires that there are some, and requires the same seeds to pass with the workaround on.

#![cfg(madsim)]

use raftkv_io_sim::run_seed_with;

fn reproduces(seed: u64) -> bool {
    let r = run_seed_with(seed, false, None, true);
    r.violations
        .iter()
        .any(|v| v.checker == "panic" && v.detail.contains("Store(Compacted)"))
}

#[test]
fn raft_rs_campaign_after_snapshot_panic_reproduces_without_the_workaround_and_not_with_it() {
    let seeds: Vec<u64> = (0..600).filter(|&s| reproduces(s)).take(3).collect();
    assert!(!seeds.is_empty(), "no seed in 0..600 reproduces the raft-rs panic without the workaround: has raft-rs changed?");
    for seed in seeds {
        let r = run_seed_with(seed, false, None, false);
        assert!(
            r.passed(),
            "seed {seed} (reproduces the raft-rs panic without the workaround) fails with it: {:?}",
            r.violations
        );
    }
}
