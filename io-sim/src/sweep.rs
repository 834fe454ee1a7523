//! Sweeps: many seeds of one world shape on a few threads, summarised as they finish. Memory is
//! flat in the number of seeds: a seed's report is folded into running totals and dropped; only
//! failures are kept. A sweep may be one shard of many (`Shard`), and shards' results merge
//! (`merge`) into what one machine would have found, coverage requirement included.

use crate::options::WorldOptions;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// This result file's format; `merge` refuses any other.
pub const FORMAT: u32 = 1;

/// Shard `index` of `count` (1-based): the seeds whose offset from the range's start is
/// `index - 1` modulo `count`. Shards of one range are disjoint and cover it, and each gets
/// every count-th seed, so slow stretches of seeds spread over all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub fn contains(&self, range_start: u64, seed: u64) -> bool {
        (seed - range_start) % self.count == self.index - 1
    }

    /// How many seeds of `range` this shard runs.
    pub fn len(&self, range: &std::ops::Range<u64>) -> u64 {
        let n = range.end - range.start;
        n / self.count + u64::from(n % self.count >= self.index)
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let (k, n) = s.split_once('/').ok_or("expected K/N, e.g. 3/8")?;
        let index: u64 = k.parse().map_err(|_| format!("bad shard index {k:?}"))?;
        let count: u64 = n.parse().map_err(|_| format!("bad shard count {n:?}"))?;
        if count == 0 || index == 0 || index > count {
            return Err(format!("shard {index}/{count}: K must be in 1..=N"));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What to sweep.
#[derive(Clone, Debug)]
pub struct SweepSpec {
    pub seeds: std::ops::Range<u64>,
    pub shard: Option<Shard>,
    /// Threads running seeds.
    pub jobs: usize,
    /// Run every seed twice and compare trace hashes.
    pub check_determinism: bool,
    pub options: WorldOptions,
}

impl SweepSpec {
    /// The seeds this sweep runs, in order.
    pub fn seeds(&self) -> impl Iterator<Item = u64> + '_ {
        self.seeds
            .clone()
            .filter(|&s| self.shard.is_none_or(|sh| sh.contains(self.seeds.start, s)))
    }

    pub fn len(&self) -> u64 {
        match self.shard {
            Some(sh) => sh.len(&self.seeds),
            None => self.seeds.end - self.seeds.start,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One checker that fired on a seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedCheck {
    pub checker: String,
    pub detail: String,
}

/// A failed seed, with what it takes to replay it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    pub seed: u64,
    pub checks: Vec<FailedCheck>,
    /// The world's configuration (`SimConfig`), as JSON.
    pub config: serde_json::Value,
    pub repro: String,
}

/// The resident set size after some number of seeds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct RssSample {
    pub after_seeds: u64,
    pub bytes: u64,
}

/// A sweep's (or a shard's, or merged shards') results: what `--json FILE` writes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepResult {
    pub format: u32,
    pub seeds_start: u64,
    pub seeds_end: u64,
    /// The shards this result covers: `None` for a whole range.
    pub shard: Option<Shard>,
    /// The world-shaping flags every seed ran with.
    pub options: Vec<String>,
    pub check_determinism: bool,
    pub seeds_run: u64,
    pub ops: u64,
    pub ops_unknown: u64,
    pub faults_injected: u64,
    /// Simulated seconds, summed over seeds.
    pub sim_secs: f64,
    /// Seconds of a thread spent running seeds, summed.
    pub cpu_secs: f64,
    /// Elapsed seconds (of the longest shard, when merged).
    pub wall_secs: f64,
    pub coverage: BTreeMap<String, u64>,
    pub failures: Vec<Failure>,
    /// RSS after 1, 2, 4, ... seeds and at the end (Linux only): flat when nothing leaks.
    pub rss: Vec<RssSample>,
}

impl SweepResult {
    fn empty(spec: &SweepSpec) -> SweepResult {
        SweepResult {
            format: FORMAT,
            seeds_start: spec.seeds.start,
            seeds_end: spec.seeds.end,
            shard: spec.shard,
            options: spec.options.args(),
            check_determinism: spec.check_determinism,
            seeds_run: 0,
            ops: 0,
            ops_unknown: 0,
            faults_injected: 0,
            sim_secs: 0.0,
            cpu_secs: 0.0,
            wall_secs: 0.0,
            coverage: BTreeMap::new(),
            failures: Vec::new(),
            rss: Vec::new(),
        }
    }

    /// Required coverage counters that stayed at zero.
    pub fn coverage_gaps(&self) -> Vec<crate::coverage::Counter> {
        crate::coverage::gaps(&self.coverage)
    }

    /// Whether the coverage requirement applies: to a whole range (not a lone shard) of at
    /// least [`crate::coverage::JUDGED_FROM_SEEDS`] seeds. The rarest required paths run a few
    /// times in a hundred seeds, so a shorter sweep missing one says nothing about the
    /// simulator.
    pub fn coverage_judged(&self) -> bool {
        self.shard.is_none() && self.seeds_run >= crate::coverage::JUDGED_FROM_SEEDS
    }

    /// Passed: no seed failed and, where coverage is judged, every required path ran.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && (!self.coverage_judged() || self.coverage_gaps().is_empty())
    }

    /// The summary table, in Markdown, as BENCHMARKS.md quotes it.
    pub fn table(&self) -> String {
        format!(
            "| seeds | operations | unknown outcome | faults injected | simulated time | wall time | seed time (all threads) | simulated s / wall s | seeds / min |\n\
             |---|---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} | {} | {:.0} s | {:.1} s | {:.1} s | {:.1} | {:.1} |",
            self.seeds_run,
            self.ops,
            self.ops_unknown,
            self.faults_injected,
            self.sim_secs,
            self.wall_secs,
            self.cpu_secs,
            self.sim_secs / self.wall_secs.max(1e-9),
            self.seeds_run as f64 / (self.wall_secs / 60.0).max(1e-9)
        )
    }
}

/// What the caller hears as each seed finishes (progress bars, JUnit cases).
pub struct SeedDone<'a> {
    pub seed: u64,
    pub wall_secs: f64,
    pub failure: Option<&'a Failure>,
    pub done: u64,
    pub failed: u64,
    pub total: u64,
}

/// Runs the sweep. `on_seed` is called once per finished seed, from the thread that ran it.
#[cfg(madsim)]
pub fn run(spec: &SweepSpec, on_seed: &(dyn Fn(&SeedDone) + Sync)) -> SweepResult {
    use std::sync::Mutex;
    let total = spec.len();
    let seeds = Mutex::new(spec.seeds());
    let acc = Mutex::new(SweepResult::empty(spec));
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..spec.jobs.max(1) {
            s.spawn(|| loop {
                let Some(seed) = seeds.lock().unwrap().next() else {
                    return;
                };
                let r = crate::run_seed(seed, crate::Trace::Hash, &spec.options);
                let seed_wall_secs = r.wall_secs;
                let second = spec
                    .check_determinism
                    .then(|| crate::run_seed(seed, crate::Trace::Hash, &spec.options).trace_hash);
                let mut checks: Vec<FailedCheck> = r
                    .violations
                    .iter()
                    .map(|v| FailedCheck {
                        checker: v.checker.name().to_string(),
                        detail: v.detail.clone(),
                    })
                    .collect();
                if let Some(h) = second.filter(|h| *h != r.trace_hash) {
                    checks.push(FailedCheck {
                        checker: crate::observer::Checker::Determinism.name().into(),
                        detail: format!("trace hashes {:016x} and {h:016x}", r.trace_hash),
                    });
                }
                let failure = (!checks.is_empty()).then(|| Failure {
                    seed,
                    checks,
                    config: serde_json::to_value(&r.config).expect("config serialises"),
                    repro: r.repro(),
                });
                let mut a = acc.lock().unwrap();
                a.seeds_run += 1;
                a.ops += r.ops as u64;
                a.ops_unknown += r.ops_unknown as u64;
                a.faults_injected += r.faults_injected;
                a.sim_secs += r.sim_secs;
                a.cpu_secs += r.wall_secs;
                for (k, v) in &r.coverage {
                    *a.coverage.entry(k.name().to_string()).or_default() += v;
                }
                let done = a.seeds_run;
                if done.is_power_of_two() {
                    if let Some(bytes) = rss_bytes() {
                        a.rss.push(RssSample {
                            after_seeds: done,
                            bytes,
                        });
                    }
                }
                if let Some(f) = failure {
                    a.failures.push(f);
                }
                let failed = a.failures.len() as u64;
                let last = a.failures.last().filter(|f| f.seed == seed).cloned();
                drop(a);
                drop(r);
                on_seed(&SeedDone {
                    seed,
                    wall_secs: seed_wall_secs,
                    failure: last.as_ref(),
                    done,
                    failed,
                    total,
                });
            });
        }
    });
    let mut a = acc.into_inner().unwrap();
    a.wall_secs = started.elapsed().as_secs_f64();
    a.failures.sort_by_key(|f| f.seed);
    if let Some(bytes) = rss_bytes() {
        a.rss.push(RssSample {
            after_seeds: a.seeds_run,
            bytes,
        });
    }
    a
}

/// This process's resident set size (Linux; `None` elsewhere).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Why shard results do not merge.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MergeError {
    #[error("nothing to merge")]
    Empty,
    #[error("result format {0} (this build reads format {FORMAT})")]
    Format(u32),
    #[error("results disagree on {what}: {a} and {b}")]
    Disagree {
        what: &'static str,
        a: String,
        b: String,
    },
    #[error("shard {0} appears twice")]
    Duplicate(Shard),
    #[error("shards missing (of {count}): {missing:?}")]
    Missing { count: u64, missing: Vec<u64> },
    #[error("a whole-range result cannot merge with others")]
    NotAShard,
}

/// Merges the results of every shard of one sweep into the whole range's result. Refuses
/// shards of different sweeps, a shard given twice, and a missing one: the merged coverage must
/// be the whole range's.
pub fn merge(parts: &[SweepResult]) -> Result<SweepResult, MergeError> {
    let first = parts.first().ok_or(MergeError::Empty)?;
    if parts.len() == 1 && first.shard.is_none() {
        return Ok(first.clone());
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = first.clone();
    out.shard = None;
    out.seeds_run = 0;
    (out.ops, out.ops_unknown, out.faults_injected) = (0, 0, 0);
    (out.sim_secs, out.cpu_secs, out.wall_secs) = (0.0, 0.0, 0.0);
    out.coverage.clear();
    out.failures.clear();
    out.rss.clear();
    let count = first.shard.ok_or(MergeError::NotAShard)?.count;
    for p in parts {
        if p.format != FORMAT {
            return Err(MergeError::Format(p.format));
        }
        let sh = p.shard.ok_or(MergeError::NotAShard)?;
        let same = |what: &'static str, a: String, b: String| {
            if a == b {
                Ok(())
            } else {
                Err(MergeError::Disagree { what, a, b })
            }
        };
        same(
            "the seed range",
            format!("{}..{}", first.seeds_start, first.seeds_end),
            format!("{}..{}", p.seeds_start, p.seeds_end),
        )?;
        same("the shard count", count.to_string(), sh.count.to_string())?;
        same(
            "the world options",
            first.options.join(" "),
            p.options.join(" "),
        )?;
        same(
            "--check-determinism",
            first.check_determinism.to_string(),
            p.check_determinism.to_string(),
        )?;
        if !seen.insert(sh.index) {
            return Err(MergeError::Duplicate(sh));
        }
        out.seeds_run += p.seeds_run;
        out.ops += p.ops;
        out.ops_unknown += p.ops_unknown;
        out.faults_injected += p.faults_injected;
        out.sim_secs += p.sim_secs;
        out.cpu_secs += p.cpu_secs;
        out.wall_secs = out.wall_secs.max(p.wall_secs);
        for (k, v) in &p.coverage {
            *out.coverage.entry(k.clone()).or_default() += v;
        }
        out.failures.extend(p.failures.iter().cloned());
    }
    let missing: Vec<u64> = (1..=count).filter(|i| !seen.contains(i)).collect();
    if !missing.is_empty() {
        return Err(MergeError::Missing { count, missing });
    }
    out.failures.sort_by_key(|f| f.seed);
    Ok(out)
}

/// One JUnit `<testcase>` for a finished seed.
pub fn junit_case(d: &SeedDone) -> String {
    let mut s = format!(
        "    <testcase classname=\"raftkv-sim\" name=\"seed {}\" time=\"{:.3}\"",
        d.seed, d.wall_secs
    );
    match d.failure {
        None => s.push_str("/>\n"),
        Some(f) => {
            s.push_str(">\n");
            for c in &f.checks {
                s.push_str(&format!(
                    "      <failure type=\"{}\" message=\"{}\">{}\nreproduce: {}</failure>\n",
                    xml_escape(&c.checker),
                    xml_escape(&c.detail),
                    xml_escape(&c.detail),
                    xml_escape(&f.repro)
                ));
            }
            s.push_str("    </testcase>\n");
        }
    }
    s
}

/// A JUnit document around `cases` (the `junit_case` lines, in any order), with a test case for
/// the coverage requirement when the result is a whole range's.
pub fn junit_document(r: &SweepResult, cases: &str) -> String {
    let coverage = if !r.coverage_judged() {
        String::new()
    } else {
        let gaps = r.coverage_gaps();
        if gaps.is_empty() {
            "    <testcase classname=\"raftkv-sim\" name=\"coverage\"/>\n".to_string()
        } else {
            format!(
                "    <testcase classname=\"raftkv-sim\" name=\"coverage\">\n      <failure type=\"coverage\" message=\"never exercised: {}\"/>\n    </testcase>\n",
                xml_escape(&gaps.iter().map(|c| c.name()).collect::<Vec<_>>().join(", "))
            )
        }
    };
    let tests = r.seeds_run + u64::from(!coverage.is_empty());
    let failures =
        r.failures.len() as u64 + u64::from(r.coverage_judged() && !r.coverage_gaps().is_empty());
    let name = match r.shard {
        Some(sh) => format!("seeds {}..{} shard {sh}", r.seeds_start, r.seeds_end),
        None => format!("seeds {}..{}", r.seeds_start, r.seeds_end),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite name=\"raftkv-sim {}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{:.3}\">\n{cases}{coverage}  </testsuite>\n</testsuites>\n",
        xml_escape(&name),
        r.wall_secs
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_and_cover_the_range() {
        for (range, count) in [(0..100u64, 7u64), (5..6, 3), (10..37, 1), (0..8, 8)] {
            let mut hits = vec![0u32; (range.end - range.start) as usize];
            for index in 1..=count {
                let sh = Shard { index, count };
                let spec = SweepSpec {
                    seeds: range.clone(),
                    shard: Some(sh),
                    jobs: 1,
                    check_determinism: false,
                    options: WorldOptions::default(),
                };
                let seeds: Vec<u64> = spec.seeds().collect();
                assert_eq!(seeds.len() as u64, spec.len(), "shard {sh} of {range:?}");
                for s in seeds {
                    hits[(s - range.start) as usize] += 1;
                }
            }
            assert!(
                hits.iter().all(|&h| h == 1),
                "{range:?} / {count}: {hits:?}"
            );
        }
        assert!("0/3".parse::<Shard>().is_err());
        assert!("4/3".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        assert_eq!("2/3".parse::<Shard>().unwrap().to_string(), "2/3");
    }

    fn part(index: u64, count: u64, covered: &[&str]) -> SweepResult {
        let spec = SweepSpec {
            seeds: 0..crate::coverage::JUDGED_FROM_SEEDS,
            shard: Some(Shard { index, count }),
            jobs: 1,
            check_determinism: false,
            options: WorldOptions::default(),
        };
        let mut r = SweepResult::empty(&spec);
        r.seeds_run = spec.len();
        for c in covered {
            r.coverage.insert(c.to_string(), 1);
        }
        r
    }

    #[test]
    fn merging_checks_coverage_over_all_shards_and_refuses_gaps_and_repeats() {
        let names: Vec<&str> = crate::coverage::REQUIRED.iter().map(|c| c.name()).collect();
        let (half_a, half_b) = names.split_at(10);
        let a = part(1, 2, half_a);
        let b = part(2, 2, half_b);
        // Neither shard covers everything; each passes alone, as a shard.
        assert!(a.passed() && b.passed());
        let m = merge(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(m.seeds_run, crate::coverage::JUDGED_FROM_SEEDS);
        assert!(m.coverage_gaps().is_empty() && m.passed(), "{m:?}");
        assert_eq!(
            merge(std::slice::from_ref(&a)).unwrap_err(),
            MergeError::Missing {
                count: 2,
                missing: vec![2]
            }
        );
        assert_eq!(
            merge(&[a.clone(), a.clone()]).unwrap_err(),
            MergeError::Duplicate(Shard { index: 1, count: 2 })
        );
        let mut other = b.clone();
        other.seeds_end += 1;
        assert!(matches!(
            merge(&[a.clone(), other]),
            Err(MergeError::Disagree { .. })
        ));
        // Merged without one half's coverage, the requirement fails.
        let m = merge(&[a, part(2, 2, &[])]).unwrap();
        assert!(!m.passed());
        let doc = junit_document(&m, "");
        assert!(
            doc.contains("name=\"coverage\"") && doc.contains("<failure"),
            "{doc}"
        );
    }

    #[test]
    fn coverage_is_judged_only_over_a_whole_range_long_enough_to_exercise_every_path() {
        let whole = |seeds: u64, covered: &[&str]| {
            let spec = SweepSpec {
                seeds: 0..seeds,
                shard: None,
                jobs: 1,
                check_determinism: false,
                options: WorldOptions::default(),
            };
            let mut r = SweepResult::empty(&spec);
            r.seeds_run = seeds;
            for c in covered {
                r.coverage.insert(c.to_string(), 1);
            }
            r
        };
        let n = crate::coverage::JUDGED_FROM_SEEDS;
        let short = whole(n - 1, &[]);
        assert!(!short.coverage_judged() && short.passed());
        assert!(!junit_document(&short, "").contains("name=\"coverage\""));
        let long = whole(n, &[]);
        assert!(long.coverage_judged() && !long.passed());
        let names: Vec<&str> = crate::coverage::REQUIRED.iter().map(|c| c.name()).collect();
        assert!(whole(n, &names).passed());
        // A failed seed fails a sweep of any length.
        let mut failed = whole(1, &[]);
        failed.failures.push(Failure {
            seed: 0,
            checks: vec![],
            config: serde_json::Value::Null,
            repro: String::new(),
        });
        assert!(!failed.passed());
    }
}
