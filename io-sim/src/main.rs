//! `raftkv-sim`: replay one seed, or sweep a range of seeds.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "raftkv-sim",
    about = "Deterministic simulation of a raftkv cluster: one seed, one world."
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// The seed to replay.
    #[arg(long)]
    seed: Option<u64>,
    /// Write the event trace (JSON lines) here.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Write the client history (JSON lines, one object per operation) here.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Run the seed twice and compare trace hashes.
    #[arg(long)]
    check_determinism: bool,
    /// Replay the seed with a planted bug (a build with `--cfg raftkv_planted_bugs`), to study
    /// how a checker catches it.
    #[arg(long, value_name = "BUG")]
    plant: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run many seeds and summarise.
    Sweep {
        /// Seed range, `A..B` (B exclusive).
        #[arg(long, value_parser = parse_range)]
        seeds: (u64, u64),
        /// Seeds run in parallel (threads).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Run every seed twice and compare trace hashes.
        #[arg(long)]
        check_determinism: bool,
        /// Disable core's workaround for the raft-rs campaign-after-snapshot panic.
        #[arg(long)]
        without_raft_rs_guard: bool,
    },
    /// Plant a known bug and run seeds until a checker catches it (needs a build with
    /// `--cfg raftkv_planted_bugs`; see README).
    Planted {
        /// One of: ack-before-sync, local-linearizable-reads, persisted-messages-before-sync,
        /// compact-past-snapshot, corrupt-middle-as-torn-tail, snapshot-without-conf-state.
        #[arg(long)]
        bug: String,
        #[arg(long, value_parser = parse_range, default_value = "0..200")]
        seeds: (u64, u64),
    },
    /// Enumerate every state a crash may leave at every sync boundary of recorded workloads,
    /// recover each and check it (see README, "Crash states").
    CrashStates {
        /// Workload seeds (each seed interleaves the disk lanes differently).
        #[arg(long, value_parser = parse_range, default_value = "0..4")]
        seeds: (u64, u64),
        /// Only this workload: single or joiner.
        #[arg(long)]
        workload: Option<String>,
        /// Plant a storage bug first (a build with `--cfg raftkv_planted_bugs`).
        #[arg(long, value_name = "BUG")]
        plant: Option<String>,
        /// Print only the totals, not a line per boundary.
        #[arg(long)]
        summary: bool,
    },
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or("expected A..B")?;
    let a: u64 = a.parse().map_err(|_| format!("bad start {a:?}"))?;
    let b: u64 = b.parse().map_err(|_| format!("bad end {b:?}"))?;
    if a >= b {
        return Err("empty range".into());
    }
    Ok((a, b))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("raftkv-sim: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(not(madsim))]
fn run(_: Cli) -> anyhow::Result<bool> {
    anyhow::bail!("built without --cfg madsim; the workspace's .cargo/config.toml sets it — build from the repository root")
}

#[cfg(madsim)]
fn run(cli: Cli) -> anyhow::Result<bool> {
    use raftkv_io_sim::run_seed;
    match cli.command {
        Some(Cmd::Sweep {
            seeds,
            jobs,
            check_determinism,
            without_raft_rs_guard,
        }) => sweep(seeds, jobs.max(1), check_determinism, without_raft_rs_guard),
        Some(Cmd::Planted { bug, seeds }) => planted(&bug, seeds),
        Some(Cmd::CrashStates {
            seeds,
            workload,
            plant,
            summary,
        }) => crash_states(seeds, workload.as_deref(), plant.as_deref(), !summary),
        None => {
            let seed = cli
                .seed
                .ok_or_else(|| anyhow::anyhow!("give --seed N, or use `sweep --seeds A..B`"))?;
            let keep = cli.trace.is_some();
            let bug = match &cli.plant {
                None => None,
                Some(name) => {
                    let bug = raftkv_core::planted::PlantedBug::from_name(name)
                        .ok_or_else(|| anyhow::anyhow!("unknown bug {name:?}"))?;
                    if !raftkv_core::planted::PLANTABLE {
                        anyhow::bail!("this build cannot plant bugs; build with RUSTFLAGS=\"--cfg madsim --cfg raftkv_planted_bugs\"");
                    }
                    Some(bug)
                }
            };
            let r = run_seed(seed, keep, bug);
            if let Some(p) = &cli.trace {
                let mut f = std::io::BufWriter::new(std::fs::File::create(p)?);
                for l in r.trace_lines.as_deref().unwrap_or_default() {
                    writeln!(f, "{l}")?;
                }
            }
            if let Some(p) = &cli.history {
                let mut f = std::io::BufWriter::new(std::fs::File::create(p)?);
                for op in &r.history {
                    writeln!(f, "{}", op.to_json())?;
                }
            }
            println!(
                "seed {seed}: trace hash {:016x} ({} events)",
                r.trace_hash, r.trace_events
            );
            println!(
                "ops {} (unknown outcome {}), faults {}, simulated {:.1} s in {:.2} s wall ({:.0}x)",
                r.ops,
                r.ops_unknown,
                r.faults_injected,
                r.sim_secs,
                r.wall_secs,
                r.sim_secs / r.wall_secs.max(1e-9)
            );
            println!("coverage: {}", coverage_line(&r.coverage));
            let mut ok = r.passed();
            for v in &r.violations {
                println!("FAILED [{}] {}", v.checker, v.detail);
            }
            if cli.check_determinism {
                let again = run_seed(seed, false, bug);
                if again.trace_hash == r.trace_hash {
                    println!("determinism: second run has the same trace hash");
                } else {
                    println!(
                        "FAILED [determinism] second run trace hash {:016x}",
                        again.trace_hash
                    );
                    ok = false;
                }
            }
            if !ok {
                println!("config: {}", r.config.describe());
                println!("reproduce: cargo run --release -p raftkv-io-sim -- --seed {seed} --trace trace.jsonl --history history.jsonl");
            }
            Ok(ok)
        }
    }
}

#[cfg(madsim)]
fn crash_states(
    (a, b): (u64, u64),
    workload: Option<&str>,
    plant: Option<&str>,
    verbose: bool,
) -> anyhow::Result<bool> {
    if let Some(w) = workload {
        if !raftkv_io_sim::crash::WORKLOADS.iter().any(|(n, _)| *n == w) {
            anyhow::bail!("unknown workload {w:?}: single or joiner");
        }
    }
    if let Some(name) = plant {
        let bug = raftkv_core::planted::PlantedBug::from_name(name)
            .ok_or_else(|| anyhow::anyhow!("unknown bug {name:?}"))?;
        if !raftkv_core::planted::PLANTABLE {
            anyhow::bail!("this build cannot plant bugs; build with RUSTFLAGS=\"--cfg madsim --cfg raftkv_planted_bugs\"");
        }
        #[cfg(raftkv_planted_bugs)]
        raftkv_core::planted::plant(Some(bug));
        let _ = bug;
    }
    let r = raftkv_io_sim::crash::run(a..b, workload, 20);
    let mut per: std::collections::BTreeMap<&str, (usize, u64, usize, u64)> = Default::default();
    for b in &r.boundaries {
        if verbose {
            println!(
                "{} seed {} boundary {} ({}): {} unsynced units, {} states{}",
                b.workload,
                b.seed,
                b.index,
                b.label,
                b.unsynced_units,
                b.states,
                if b.bounded {
                    format!(" (bounded; {} combinations in full)", b.combinations)
                } else {
                    " (all)".to_string()
                }
            );
        }
        let e = per.entry(b.workload).or_default();
        e.0 += 1;
        e.1 += b.states as u64;
        e.2 += b.bounded as usize;
        e.3 = e.3.max(b.states as u64);
    }
    for (w, (n, states, bounded, most)) in &per {
        println!(
            "{w}: {n} boundaries, {states} states ({} enumerated in full, {bounded} bounded; at most {most} at one boundary)",
            n - bounded
        );
    }
    for v in &r.violations {
        println!("FAILED {v}");
    }
    println!(
        "crash-states: {} states checked at {} boundaries, {} violations, in {:.1} s",
        r.states,
        r.boundaries.len(),
        r.violations.len(),
        r.wall_secs
    );
    Ok(r.violations.is_empty())
}

#[cfg(madsim)]
fn planted(name: &str, (a, b): (u64, u64)) -> anyhow::Result<bool> {
    use raftkv_core::planted::PlantedBug;
    let bug = PlantedBug::from_name(name).ok_or_else(|| anyhow::anyhow!("unknown bug {name:?}"))?;
    if !raftkv_core::planted::PLANTABLE {
        anyhow::bail!("this build cannot plant bugs; build with RUSTFLAGS=\"--cfg madsim --cfg raftkv_planted_bugs\"");
    }
    let expected = raftkv_io_sim::expected_checkers(bug);
    for seed in a..b {
        let r = raftkv_io_sim::run_seed(seed, false, Some(bug));
        if let Some(v) = r.violations.first() {
            let all: Vec<&str> = r.violations.iter().map(|v| v.checker).collect();
            let hit = all.iter().any(|c| expected.contains(c));
            println!(
                "planted {name}: caught at seed {seed} by [{}] ({}); checkers that fired: {all:?}",
                v.checker, v.detail
            );
            println!(
                "expected one of {expected:?}: {}",
                if hit { "yes" } else { "NO" }
            );
            return Ok(hit);
        }
    }
    println!("planted {name}: NOT caught in seeds {a}..{b}");
    Ok(false)
}

fn coverage_line(c: &std::collections::BTreeMap<&'static str, u64>) -> String {
    c.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(madsim)]
fn sweep(
    (a, b): (u64, u64),
    jobs: usize,
    check_determinism: bool,
    without_guard: bool,
) -> anyhow::Result<bool> {
    use raftkv_io_sim::{run_seed_with, SeedReport};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    let total = b - a;
    let next = Arc::new(AtomicU64::new(a));
    // (report, trace hash of the second run when checking determinism)
    type Results = Vec<(SeedReport, Option<u64>)>;
    let results: Arc<Mutex<Results>> = Arc::default();
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..jobs)
        .map(|_| {
            let (next, results) = (next.clone(), results.clone());
            std::thread::spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= b {
                    return;
                }
                let r = run_seed_with(seed, false, None, without_guard);
                let second = check_determinism
                    .then(|| run_seed_with(seed, false, None, without_guard).trace_hash);
                let mut res = results.lock().unwrap();
                res.push((r, second));
                let done = res.len() as u64;
                let failed = res
                    .iter()
                    .filter(|(r, s)| !r.passed() || s.is_some_and(|h| h != r.trace_hash))
                    .count();
                let width = 30;
                let filled = (done * width / total) as usize;
                eprint!(
                    "\r[{}{}] {done}/{total} seeds, {failed} failed, {:.0} s",
                    "#".repeat(filled),
                    " ".repeat(width as usize - filled),
                    started.elapsed().as_secs_f64()
                );
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a sweep thread panicked"))?;
    }
    eprintln!();
    let mut results = Arc::try_unwrap(results)
        .map_err(|_| anyhow::anyhow!("results still shared"))?
        .into_inner()
        .unwrap();
    results.sort_by_key(|(r, _)| r.seed);
    let wall = started.elapsed().as_secs_f64();
    let ops: usize = results.iter().map(|(r, _)| r.ops).sum();
    let unknown: usize = results.iter().map(|(r, _)| r.ops_unknown).sum();
    let faults: u64 = results.iter().map(|(r, _)| r.faults_injected).sum();
    let sim: f64 = results.iter().map(|(r, _)| r.sim_secs).sum();
    let cpu: f64 = results.iter().map(|(r, _)| r.wall_secs).sum();
    let mut coverage = std::collections::BTreeMap::new();
    for (r, _) in &results {
        for (k, v) in &r.coverage {
            *coverage.entry(*k).or_insert(0u64) += v;
        }
    }
    let failures: Vec<&(SeedReport, Option<u64>)> = results
        .iter()
        .filter(|(r, s)| !r.passed() || s.is_some_and(|h| h != r.trace_hash))
        .collect();
    println!("| seeds | operations | unknown outcome | faults injected | simulated time | wall time | sim s / wall s | seeds / min |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {total} | {ops} | {unknown} | {faults} | {sim:.0} s | {wall:.1} s | {:.1} | {:.1} |",
        sim / cpu.max(1e-9),
        total as f64 / (wall / 60.0).max(1e-9)
    );
    println!("coverage: {}", coverage_line(&coverage));
    let gaps = raftkv_io_sim::coverage_gaps(&coverage);
    if !gaps.is_empty() {
        println!("FAILED coverage: never exercised: {}", gaps.join(", "));
    }
    if check_determinism {
        println!("determinism: each seed run twice, trace hashes compared");
    }
    for (r, second) in &failures {
        for v in &r.violations {
            println!("FAILED seed {} [{}] {}", r.seed, v.checker, v.detail);
        }
        if let Some(h) = second.filter(|h| *h != r.trace_hash) {
            println!(
                "FAILED seed {} [determinism] trace hashes {:016x} and {h:016x}",
                r.seed, r.trace_hash
            );
        }
        println!("  config: {}", r.config.describe());
        println!("  reproduce: cargo run --release -p raftkv-io-sim -- --seed {} --trace trace.jsonl --history history.jsonl", r.seed);
    }
    println!(
        "{} passed, {} failed",
        total as usize - failures.len(),
        failures.len()
    );
    Ok(failures.is_empty() && gaps.is_empty())
}
