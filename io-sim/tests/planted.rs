//! Test the tester: every planted bug must be caught within 200 seeds by the checker expected
//! for it. Planted bugs exist only in builds with `--cfg raftkv_planted_bugs`, so this test
//! builds such a copy of `raftkv-sim` in its own target directory (the normal build, and the
//! `raftkv` binary, cannot plant anything).

#![cfg(madsim)]

use std::path::PathBuf;
use std::process::Command;

fn planted_sim() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = root.join("target").join("planted");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "raftkv-io-sim",
            "--bin",
            "raftkv-sim",
            "--target-dir",
        ])
        .arg(&target)
        .env("RUSTFLAGS", "--cfg madsim --cfg raftkv_planted_bugs")
        .current_dir(&root)
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "building the planted-bug simulator failed"
    );
    target.join("release").join("raftkv-sim")
}

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
