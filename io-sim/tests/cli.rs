//! `raftkv-sim` as its users run it: history files checked by `check`, output into a closed
//! pipe.

#![cfg(madsim)]

use std::process::{Command, Stdio};

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_raftkv-sim"))
}

#[test]
fn a_history_written_by_a_run_passes_check_and_a_tampered_one_fails_it() {
    let dir = std::env::temp_dir().join(format!("raftkv-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.jsonl");
    let out = sim()
        .args(["--seed", "5", "--history"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = sim().arg("check").arg(&good).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("linearizable"), "{stdout}");

    // A read that returns a value nobody wrote has no linearization.
    let text = std::fs::read_to_string(&good).unwrap();
    let mut tampered = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let mut op: serde_json::Value = serde_json::from_str(l).unwrap();
            if !tampered && op["kind"] == "get" && !op["output"].is_null() {
                op["output"] = serde_json::json!({"value": "never-written"});
                tampered = true;
            }
            op.to_string()
        })
        .collect();
    assert!(tampered, "the run read nothing");
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let out = sim().arg("check").arg(&bad).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED [linearizability]"), "{stdout}");

    // Not a history: a clear error naming the file and the line.
    let junk = dir.join("junk.jsonl");
    std::fs::write(&junk, format!("{}\n{{\"client\":1}}\n", lines[0])).unwrap();
    let out = sim().arg("check").arg(&junk).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("junk.jsonl") && stderr.contains("line 2"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let mut child = sim()
        .args(["--seed", "4242"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
