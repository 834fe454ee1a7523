//! Helpers shared by the simulator's test files.

use std::path::PathBuf;
use std::process::Command;

/// Builds the planted-bug copy of `raftkv-sim` in its own target directory (planted bugs exist
/// only in builds with `--cfg raftkv_planted_bugs`) and returns its path.
pub fn planted_sim() -> PathBuf {
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
