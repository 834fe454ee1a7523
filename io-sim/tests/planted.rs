//! Test the tester: every planted bug must be caught within 200 seeds by the checker expected
//! for it. Planted bugs exist only in builds with `--cfg raftkv_planted_bugs`, so this test
//! builds such a copy of `raftkv-sim` in its own target directory (the normal build, and the
//! `raftkv` binary, cannot plant anything).

#![cfg(madsim)]

mod common;

use common::planted_sim;
use std::process::Command;

#[test]
fn every_planted_bug_is_caught_by_its_checker_within_200_seeds() {
    let sim = planted_sim();
    let mut report = Vec::new();
    let mut missed = Vec::new();
    for bug in raftkv_core::planted::PlantedBug::ALL {
        let out = Command::new(&sim)
            .args(["planted", "--bug", bug.name(), "--seeds", "0..200"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            missed.push(format!("{}: {text}", bug.name()));
        }
        report.push(text);
    }
    println!("{}", report.join(""));
    assert!(
        missed.is_empty(),
        "planted bugs not caught as expected:\n{}",
        missed.join("\n")
    );
}

#[test]
fn the_normal_build_cannot_plant_bugs() {
    const { assert!(!raftkv_core::planted::PLANTABLE) };
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv-sim"))
        .args(["planted", "--bug", "ack-before-sync"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot plant bugs"));
}

/// Runs crash-state enumeration with a planted storage bug; returns its first violation.
fn crash_states_with(bug: raftkv_core::planted::PlantedBug) -> String {
    let sim = planted_sim();
    let started = std::time::Instant::now();
    let out = Command::new(&sim)
        .args([
            "crash-states",
            "--summary",
            "--seeds",
            "0..2",
            "--plant",
            bug.name(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !out.status.success(),
        "{}: crash states found nothing:\n{text}",
        bug.name()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{}: took {:?}",
        bug.name(),
        started.elapsed()
    );
    let first = text
        .lines()
        .find(|l| l.starts_with("FAILED"))
        .unwrap_or_default()
        .to_string();
    println!("{}: {first}", bug.name());
    first
}

#[test]
fn crash_states_catch_snapshot_rename_before_sync() {
    let v = crash_states_with(raftkv_core::planted::PlantedBug::SnapshotRenameBeforeSync);
    assert!(v.contains("under its final name but not whole"), "{v}");
}

#[test]
fn crash_states_catch_segment_cut_without_dir_sync() {
    let v = crash_states_with(raftkv_core::planted::PlantedBug::SegmentCutWithoutDirSync);
    assert!(v.contains("not durable"), "{v}");
}

#[test]
fn crash_states_catch_marker_before_snapshot_durable() {
    let v = crash_states_with(raftkv_core::planted::PlantedBug::MarkerBeforeSnapshotDurable);
    assert!(v.contains("recovery refused"), "{v}");
}

#[test]
fn crash_states_catch_torn_tail_truncate_without_sync() {
    let v = crash_states_with(raftkv_core::planted::PlantedBug::TornTailTruncateWithoutSync);
    assert!(v.contains("repair job was not durable"), "{v}");
}

#[test]
fn crash_states_catch_unfinished_first_job_as_restart() {
    let v = crash_states_with(raftkv_core::planted::PlantedBug::UnfinishedFirstJobAsRestart);
    assert!(v.contains("no voters"), "{v}");
}

#[test]
fn crash_states_catch_purge_before_marker_durable() {
    let v = crash_states_with(raftkv_core::planted::PlantedBug::PurgeBeforeMarkerDurable);
    assert!(v.contains("recovery refused"), "{v}");
}
