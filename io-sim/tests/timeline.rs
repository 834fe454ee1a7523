//! The timeline page in a real browser: a known failing world (a planted bug's first caught
//! seed) is drawn by headless Chromium, and its crashes, partitions and violation marker must be
//! in the rendered DOM at their times: `x = x0 + t / end * plot_width`, with `t` and `end` read
//! from the run's own trace, independently of the page's script. Chromium comes from Debian's
//! `chromium` package (installed by this test when missing and it runs as root, or by
//! `.ci/run`); `RAFTKV_CHROMIUM` names another binary.

#![cfg(madsim)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn find_chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("RAFTKV_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(|name| {
            let out = Command::new("which").arg(name).output().ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
}

/// Chromium, installed from Debian's packages if the machine lacks it and this test may (as
/// root, with apt-get, unless `RAFTKV_NO_INSTALL` is set): `cargo test --workspace` on a fresh
/// machine then needs nothing else. Otherwise a clear failure says how to get it.
fn chromium() -> PathBuf {
    if let Some(p) = find_chromium() {
        return p;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt = Command::new("which")
        .arg("apt-get")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && apt && std::env::var_os("RAFTKV_NO_INSTALL").is_none() {
        eprintln!(
            "timeline test: installing Debian's chromium (set RAFTKV_NO_INSTALL=1 to refuse)"
        );
        for args in [
            &["update", "-qq"][..],
            &["install", "-y", "-qq", "chromium"][..],
        ] {
            let status = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .expect("run apt-get");
            assert!(status.success(), "apt-get {args:?} failed");
        }
    }
    find_chromium().unwrap_or_else(|| {
        panic!("no Chromium found: install Debian's `chromium` package (apt-get install chromium; .ci/run does) or set RAFTKV_CHROMIUM")
    })
}

/// The DOM after the page's script ran.
fn rendered_dom(page: &Path, scratch: &Path) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--allow-file-access-from-files",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every element with tag `tag` as its attribute map.
fn elements(dom: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{tag} ");
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let end = after.find('>').unwrap_or(after.len());
        let mut attrs = BTreeMap::new();
        let mut s = &after[..end];
        while let Some(eq) = s.find("=\"") {
            let name = s[..eq].trim().to_string();
            let v = &s[eq + 2..];
            let close = v.find('"').unwrap_or(v.len());
            attrs.insert(name, v[..close].replace("&amp;", "&"));
            s = &v[(close + 1).min(v.len())..];
        }
        out.push(attrs);
        rest = &after[end..];
    }
    out
}

fn num(a: &BTreeMap<String, String>, k: &str) -> f64 {
    a.get(k)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("attribute {k} missing or not a number in {a:?}"))
}

#[test]
fn a_planted_bugs_timeline_draws_its_crashes_partitions_and_violation_at_their_times() {
    let sim = common::planted_sim();
    let bug = "corrupt-middle-as-torn-tail";
    let out = Command::new(&sim)
        .args(["planted", "--bug", bug, "--seeds", "0..200"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let seed: u64 = text
        .split("caught at seed ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{bug} was not caught: {text}"));

    let scratch = std::env::temp_dir().join(format!("raftkv-timeline-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let page = scratch.join("timeline.html");
    let trace = scratch.join("trace.jsonl");
    let out = Command::new(&sim)
        .args(["--seed", &seed.to_string(), "--plant", bug, "--timeline"])
        .arg(&page)
        .arg("--trace")
        .arg(&trace)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the seed fails");

    // What the trace says happened, and when.
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let end = events
        .iter()
        .map(|e| e["t_ns"].as_u64().unwrap())
        .max()
        .unwrap() as f64;
    let faults = |kind: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| e["event"] == "fault" && e["detail"]["fault"] == kind)
            .collect()
    };
    let crashes = faults("crash");
    let partitions: Vec<_> = faults("partition")
        .into_iter()
        .filter(|e| !e["detail"]["blocked"].as_array().unwrap().is_empty())
        .collect();
    let violations: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "violation")
        .collect();
    assert!(!crashes.is_empty(), "this world has crashes");
    assert!(!partitions.is_empty(), "this world has partitions");
    assert!(
        !violations.is_empty(),
        "the planted bug fires during the run"
    );

    let dom = rendered_dom(&page, &scratch);
    let svg = elements(&dom, "svg");
    assert_eq!(svg.len(), 1, "one chart, drawn by the page's script");
    let (x0, width) = (num(&svg[0], "data-x0"), num(&svg[0], "data-plot-width"));
    let at = |t: u64| x0 + t as f64 / end * width;
    let lines = elements(&dom, "line");
    let rects = elements(&dom, "rect");
    let drawn =
        |els: &[BTreeMap<String, String>], class: &str, node: Option<u64>, t: u64, x: &str| {
            els.iter().any(|a| {
                a.get("class")
                    .is_some_and(|c| c.split(' ').any(|c| c == class))
                    && node.is_none_or(|n| a.get("data-node") == Some(&n.to_string()))
                    && a.get("data-t-ns") == Some(&t.to_string())
                    && (num(a, x) - at(t)).abs() < 0.5
            })
        };
    for c in &crashes {
        let (t, node) = (c["t_ns"].as_u64().unwrap(), c["node"].as_u64().unwrap());
        assert!(
            drawn(&lines, "mark-crash", Some(node), t, "x1"),
            "crash of node {node} at {t} ns not drawn at x = {:.1}",
            at(t)
        );
    }
    for p in &partitions {
        let t = p["t_ns"].as_u64().unwrap();
        for pair in p["detail"]["blocked"].as_array().unwrap() {
            let node = pair[0].as_u64().unwrap();
            assert!(
                drawn(&rects, "partition", Some(node), t, "x"),
                "partition at {t} ns not drawn on node {node}'s lane at x = {:.1}",
                at(t)
            );
        }
    }
    for v in &violations {
        let t = v["t_ns"].as_u64().unwrap();
        let checker = v["detail"]["checker"].as_str().unwrap();
        assert!(
            lines
                .iter()
                .any(|a| a.get("class").map(String::as_str) == Some("violation")
                    && a.get("data-checker").map(String::as_str) == Some(checker)
                    && (num(a, "x1") - at(t)).abs() < 0.5),
            "violation [{checker}] at {t} ns not marked at x = {:.1}",
            at(t)
        );
    }
    // Lanes for every node, and the clients' operations.
    assert!(dom.contains("node 1") && dom.contains("clients"));
    assert!(
        rects
            .iter()
            .filter(|a| a.get("class").is_some_and(|c| c.starts_with("op ")))
            .count()
            > 100
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}
