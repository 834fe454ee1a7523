//! `raftkv-sim`: replay one seed, sweep a range of seeds (or one shard of it), merge shards'
//! results, check a history file, and enumerate crash states.

use clap::{Args, Parser, Subcommand};
use raftkv_io_sim::options::{parse_fault_classes, FaultClass, WorldOptions};
use raftkv_io_sim::sweep::Shard;
use std::collections::BTreeSet;
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
    #[command(flatten)]
    world: WorldArgs,
    /// Write the event trace (JSON lines) here.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Also trace every message sent and delivered (never part of the trace hash).
    #[arg(long, requires = "trace")]
    trace_messages: bool,
    /// Draw the run as one self-contained HTML page here: a lane per node, the clients'
    /// operations, faults, snapshots, and any violation where it fired.
    #[arg(long, value_name = "FILE")]
    timeline: Option<PathBuf>,
    /// Write the client history (JSON lines, one object per operation) here.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Run the seed twice and compare trace hashes.
    #[arg(long)]
    check_determinism: bool,
}

/// The flags that shape a world beyond its seed: every failure's repro line carries them.
#[derive(Args, Clone, Default)]
struct WorldArgs {
    /// Turn these fault classes off, whatever the seed drew (comma-separated, e.g.
    /// `net-loss,crashes`; `shrink` finds a smallest set).
    #[arg(long, value_name = "CLASSES", value_parser = parse_fault_classes)]
    faults_off: Option<BTreeSet<FaultClass>>,
    /// Length of the fault phase in simulated seconds (default 20).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=600))]
    fault_secs: Option<u64>,
    /// Disable core's workaround for the raft-rs campaign-after-snapshot panic.
    #[arg(long)]
    without_raft_rs_guard: bool,
    /// Disable core's repair of raft-rs 0.7's batched appends whose entries do not follow
    /// their index.
    #[arg(long)]
    without_batch_append_guard: bool,
    /// Plant a known bug (a build with `--cfg raftkv_planted_bugs`; see README).
    #[arg(long, value_name = "BUG")]
    plant: Option<String>,
}

impl WorldArgs {
    fn options(&self) -> anyhow::Result<WorldOptions> {
        Ok(WorldOptions {
            faults_off: self.faults_off.clone().unwrap_or_default(),
            fault_secs: self.fault_secs,
            without_raft_rs_guard: self.without_raft_rs_guard,
            without_batch_append_guard: self.without_batch_append_guard,
            plant: self.plant.as_deref().map(plantable).transpose()?,
        })
    }
}

/// A planted bug by name, if this build can plant it.
fn plantable(name: &str) -> anyhow::Result<raftkv_core::planted::PlantedBug> {
    let bug = raftkv_core::planted::PlantedBug::from_name(name)
        .ok_or_else(|| anyhow::anyhow!("unknown bug {name:?}"))?;
    if !raftkv_core::planted::PLANTABLE {
        anyhow::bail!("this build cannot plant bugs; build with RUSTFLAGS=\"--cfg madsim --cfg raftkv_planted_bugs\"");
    }
    Ok(bug)
}

#[derive(Subcommand)]
enum Cmd {
    /// Run many seeds and summarise.
    Sweep {
        /// Seed range, `A..B` (B exclusive).
        #[arg(long, value_parser = parse_range)]
        seeds: (u64, u64),
        /// Run only shard K of N (`K/N`, 1-based): every N-th seed of the range. Shards are
        /// disjoint and cover the range; `merge` applies the coverage requirement to all of them.
        #[arg(long, value_name = "K/N")]
        shard: Option<Shard>,
        /// Seeds run in parallel (threads).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Run every seed twice and compare trace hashes.
        #[arg(long)]
        check_determinism: bool,
        #[command(flatten)]
        world: WorldArgs,
        /// Write the results as JSON here (the input of `merge`).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write a JUnit report here (a test case per seed).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Merge the `--json` results of every shard of one sweep; fails on a failed seed, a missing
    /// or repeated shard, or (from 300 seeds) a required path that no shard exercised.
    Merge {
        /// The shards' result files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the merged results as JSON here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Shrink a failing seed's world: turn fault classes off one at a time and shorten the
    /// fault phase while the same checker still fires; print the smallest world's repro line.
    Shrink {
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        world: WorldArgs,
    },
    /// Run the project's history checkers (linearizability, local reads) on a history file
    /// (JSON lines, the format `--history` writes; README, "History files").
    Check { file: PathBuf },
    /// Plant a known bug and run seeds until a checker catches it (needs a build with
    /// `--cfg raftkv_planted_bugs`; see README).
    Planted {
        /// One of: ack-before-sync, local-linearizable-reads, persisted-messages-before-sync,
        /// compact-past-snapshot, corrupt-middle-as-torn-tail, snapshot-without-conf-state,
        /// ignore-incarnation, and the storage bugs of `crash-states`.
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
    // Output piped into `head` ends with the pipe closed: end quietly, as other tools do,
    // rather than panic in `println!`.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
    match cli.command {
        Some(Cmd::Sweep {
            seeds,
            shard,
            jobs,
            check_determinism,
            world,
            json,
            junit,
        }) => {
            let spec = raftkv_io_sim::sweep::SweepSpec {
                seeds: seeds.0..seeds.1,
                shard,
                jobs: jobs.max(1),
                check_determinism,
                options: world.options()?,
            };
            sweep(&spec, json.as_deref(), junit.as_deref())
        }
        Some(Cmd::Merge { files, json }) => merge(&files, json.as_deref()),
        Some(Cmd::Shrink { seed, world }) => shrink(seed, &world.options()?),
        Some(Cmd::Check { file }) => check_file(&file),
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
            let out = Outputs {
                trace: cli.trace.as_deref(),
                trace_messages: cli.trace_messages,
                timeline: cli.timeline.as_deref(),
                history: cli.history.as_deref(),
            };
            replay(seed, &cli.world.options()?, &out, cli.check_determinism)
        }
    }
}

#[cfg(madsim)]
/// Creates `path` for writing, naming it in the error.
fn create(path: &std::path::Path) -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    let f = std::fs::File::create(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    Ok(std::io::BufWriter::new(f))
}

/// What a replay writes.
#[cfg(madsim)]
struct Outputs<'a> {
    trace: Option<&'a std::path::Path>,
    trace_messages: bool,
    timeline: Option<&'a std::path::Path>,
    history: Option<&'a std::path::Path>,
}

#[cfg(madsim)]
fn replay(
    seed: u64,
    opts: &WorldOptions,
    out: &Outputs,
    check_determinism: bool,
) -> anyhow::Result<bool> {
    use raftkv_io_sim::{run_seed, Trace};
    let level = if out.trace_messages {
        Trace::Messages
    } else if out.trace.is_some() || out.timeline.is_some() {
        Trace::Events
    } else {
        Trace::Hash
    };
    let r = run_seed(seed, level, opts);
    let (trace, history) = (out.trace, out.history);
    if let Some(p) = out.timeline {
        let violations: Vec<(String, String)> = r
            .violations
            .iter()
            .map(|v| (v.checker.to_string(), v.detail.clone()))
            .collect();
        let page = raftkv_io_sim::timeline::render(
            seed,
            r.trace_lines.as_deref().unwrap_or_default(),
            &violations,
            serde_json::to_value(&r.config)?,
            &r.repro(),
        );
        let mut f = create(p)?;
        f.write_all(page.as_bytes())?;
        f.flush()?;
    }
    if let Some(p) = trace {
        let mut f = create(p)?;
        for l in r.trace_lines.as_deref().unwrap_or_default() {
            writeln!(f, "{l}")?;
        }
        f.flush()?;
    }
    if let Some(p) = history {
        let mut f = create(p)?;
        for op in &r.history {
            writeln!(f, "{}", op.to_json())?;
        }
        f.flush()?;
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
    if check_determinism {
        let again = run_seed(seed, Trace::Hash, opts);
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
        println!("reproduce: {}", r.repro());
    }
    Ok(ok)
}

#[cfg(madsim)]
fn shrink(seed: u64, opts: &WorldOptions) -> anyhow::Result<bool> {
    let mut n = 0;
    let r = raftkv_io_sim::shrink::shrink(seed, opts, &mut |t| {
        n += 1;
        println!(
            "trial {n}: {}: {}",
            t.what,
            if t.still_fails {
                "still fails, kept"
            } else {
                "passes, undone"
            }
        );
    })?;
    let on: Vec<&str> = r.classes_on.iter().map(|c| c.name()).collect();
    println!(
        "seed {seed} shrunk in {} trials: [{}] still fires ({}) with {} fault classes on ({}) and a {} s fault phase",
        r.trials,
        r.checker,
        r.detail,
        on.len(),
        if on.is_empty() { "none".to_string() } else { on.join(", ") },
        r.fault_secs
    );
    println!("reproduce: {}", r.repro());
    Ok(true)
}

#[cfg(madsim)]
fn check_file(path: &std::path::Path) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let ops = raftkv_io_sim::history::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let keys: BTreeSet<&str> = ops.iter().map(|o| o.key.as_str()).collect();
    let fired = raftkv_io_sim::check::history(&ops);
    for (checker, detail) in &fired {
        println!("FAILED [{checker}] {detail}");
    }
    println!(
        "{}: {} operations on {} keys ({} with unknown outcome): {}",
        path.display(),
        ops.len(),
        keys.len(),
        ops.iter().filter(|o| o.complete_ns.is_none()).count(),
        if fired.is_empty() {
            "linearizable, local reads valid"
        } else {
            "FAILED"
        }
    );
    Ok(fired.is_empty())
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
        let bug = plantable(name)?;
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
    let bug = plantable(name)?;
    let expected = raftkv_io_sim::expected_checkers(bug);
    let opts = WorldOptions {
        plant: Some(bug),
        ..WorldOptions::default()
    };
    for seed in a..b {
        let r = raftkv_io_sim::run_seed(seed, raftkv_io_sim::Trace::Hash, &opts);
        if let Some(v) = r.violations.first() {
            let all: Vec<&str> = r.violations.iter().map(|v| v.checker.name()).collect();
            let hit = r.violations.iter().any(|v| expected.contains(&v.checker));
            let expected: Vec<&str> = expected.iter().map(|c| c.name()).collect();
            println!(
                "planted {name}: caught at seed {seed} by [{}] ({}); checkers that fired: {all:?}",
                v.checker, v.detail
            );
            println!(
                "expected one of {expected:?}: {}",
                if hit { "yes" } else { "NO" }
            );
            println!("reproduce: {}", r.repro());
            return Ok(hit);
        }
    }
    println!("planted {name}: NOT caught in seeds {a}..{b}");
    Ok(false)
}

#[cfg(madsim)]
fn coverage_line<K: std::fmt::Display>(c: &std::collections::BTreeMap<K, u64>) -> String {
    c.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(madsim)]
/// Prints a sweep's (or merged shards') results; true if it passed.
fn report(r: &raftkv_io_sim::sweep::SweepResult) -> bool {
    println!("{}", r.table());
    println!("coverage: {}", coverage_line(&r.coverage));
    let gaps = r.coverage_gaps();
    let names: Vec<&str> = gaps.iter().map(|c| c.name()).collect();
    if r.coverage_judged() && !gaps.is_empty() {
        println!("FAILED coverage: never exercised: {}", names.join(", "));
    } else if r.shard.is_none() && !gaps.is_empty() {
        println!(
            "coverage: not judged below {} seeds (the rarest paths run a few times in a hundred); never exercised in these {}: {}",
            raftkv_io_sim::coverage::JUDGED_FROM_SEEDS,
            r.seeds_run,
            names.join(", ")
        );
    } else if let Some(sh) = r.shard {
        println!(
            "shard {sh}: the coverage requirement applies to the merged shards (`raftkv-sim merge`)"
        );
    }
    if r.check_determinism {
        println!("determinism: each seed run twice, trace hashes compared");
    }
    for f in &r.failures {
        for c in &f.checks {
            println!("FAILED seed {} [{}] {}", f.seed, c.checker, c.detail);
        }
        println!("  config: {}", f.config);
        println!("  reproduce: {}", f.repro);
    }
    println!(
        "{} passed, {} failed",
        r.seeds_run - r.failures.len() as u64,
        r.failures.len()
    );
    r.passed()
}

#[cfg(madsim)]
fn write_json(path: &std::path::Path, r: &raftkv_io_sim::sweep::SweepResult) -> anyhow::Result<()> {
    let mut f = create(path)?;
    serde_json::to_writer_pretty(&mut f, r)?;
    writeln!(f)?;
    f.flush()?;
    Ok(())
}

#[cfg(madsim)]
fn sweep(
    spec: &raftkv_io_sim::sweep::SweepSpec,
    json: Option<&std::path::Path>,
    junit: Option<&std::path::Path>,
) -> anyhow::Result<bool> {
    use raftkv_io_sim::sweep;
    use std::io::IsTerminal;
    use std::sync::Mutex;
    let total = spec.len();
    anyhow::ensure!(
        total > 0,
        "shard {:?} of the range has no seeds",
        spec.shard
    );
    // A bar on a terminal; in a log, a plain line every tenth of the way.
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "[{bar:30}] {pos}/{len} seeds, {msg} failed, {elapsed} (eta {eta})",
            )
            .expect("template parses")
            .progress_chars("#>-"),
        );
        b.set_message("0");
        Some(b)
    } else {
        None
    };
    // JUnit cases go to a file as seeds finish (memory stays flat), wrapped at the end.
    let cases_path = junit.map(|p| p.with_extension("cases.tmp"));
    let cases = match &cases_path {
        Some(p) => Some(Mutex::new(create(p)?)),
        None => None,
    };
    let case_error: Mutex<Option<std::io::Error>> = Mutex::new(None);
    let started = std::time::Instant::now();
    let step = (total / 10).max(1);
    let r = sweep::run(spec, &|d| {
        if let Some(c) = &cases {
            if let Err(e) = c.lock().unwrap().write_all(sweep::junit_case(d).as_bytes()) {
                case_error.lock().unwrap().get_or_insert(e);
            }
        }
        match &bar {
            Some(b) => {
                b.set_message(d.failed.to_string());
                b.inc(1);
            }
            None if d.done % step == 0 || d.done == d.total => eprintln!(
                "sweep: {}/{} seeds, {} failed, {:.0} s",
                d.done,
                d.total,
                d.failed,
                started.elapsed().as_secs_f64()
            ),
            None => {}
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(e) = case_error.into_inner().unwrap() {
        anyhow::bail!("cannot write JUnit cases: {e}");
    }
    if let (Some(path), Some(cases), Some(cases_path)) = (junit, cases, &cases_path) {
        cases.into_inner().unwrap().flush()?;
        let body = std::fs::read_to_string(cases_path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", cases_path.display()))?;
        let mut f = create(path)?;
        f.write_all(sweep::junit_document(&r, &body).as_bytes())?;
        f.flush()?;
        std::fs::remove_file(cases_path)
            .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", cases_path.display()))?;
    }
    if let Some(p) = json {
        write_json(p, &r)?;
    }
    Ok(report(&r))
}

#[cfg(madsim)]
fn merge(files: &[PathBuf], json: Option<&std::path::Path>) -> anyhow::Result<bool> {
    let mut parts = Vec::new();
    for p in files {
        let text = std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
        let r: raftkv_io_sim::sweep::SweepResult = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a sweep result: {e}", p.display()))?;
        parts.push(r);
    }
    let merged = raftkv_io_sim::sweep::merge(&parts)?;
    if let Some(p) = json {
        write_json(p, &merged)?;
    }
    println!(
        "merged {} result files: seeds {}..{}",
        files.len(),
        merged.seeds_start,
        merged.seeds_end
    );
    Ok(report(&merged))
}
