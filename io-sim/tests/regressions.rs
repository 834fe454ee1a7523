//! Seeds the simulator once failed on, kept as regression tests (they run in every `cargo test`,
//! whatever the size of the sweep). Each names the bug it found. A seed names a world only for
//! one version of the simulator: since each fault class drew from its own stream (the shrinking
//! work), these seeds name other worlds than the ones that failed, and stay as extra seeds.

#![cfg(madsim)]

use raftkv_io_sim::{run_seed, Trace, WorldOptions};

/// (seed, what it caught).
const SEEDS: &[(u64, &str)] = &[
    // A restarted node re-created the snapshot it crashed while writing (same term and index,
    // so the same temp name) on the snapshot lane while recovery's startup job, on the WAL lane,
    // was still removing the old temp file: the removal deleted the new file mid-write. Fixed by
    // starting no snapshot job before the startup job completes.
    (690, "startup removal raced the snapshot lane"),
    (791, "startup removal raced the snapshot lane"),
    (794, "startup removal raced the snapshot lane"),
    (853, "startup removal raced the snapshot lane"),
    (1058, "startup removal raced the snapshot lane"),
    // A leader that removed itself stopped at once, taking with it the only knowledge that the
    // removal was committed; its peers kept a configuration that counted it, lost one more
    // member, and never elected again. Fixed by stepping down with heartbeats and lingering as
    // a voter (core/tests/cluster.rs `a_removed_leader_leaves_its_peers_able_to_elect_...`).
    (896, "a removed leader stopped at once"),
];

#[test]
fn seeds_that_once_failed_pass() {
    let mut failures = Vec::new();
    for &(seed, what) in SEEDS {
        let r = run_seed(seed, Trace::Hash, &WorldOptions::default());
        if !r.passed() {
            failures.push(format!("seed {seed} ({what}): {:?}", r.violations));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
