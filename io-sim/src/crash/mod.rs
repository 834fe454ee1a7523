//! Crash-state enumeration: for recorded workloads of real `core` nodes, every state a crash may
//! leave at every sync boundary (all of them where the unsynced units are few, a systematic
//! bounded subset where they are many), each recovered and checked. Where the random sweeps
//! sample crashes, this enumerates them (`raftkv-sim crash-states`).
//!
//! `model` is the file-system model, `workload` the recorded nodes, `check` the rules every
//! state must keep.

pub mod check;
pub mod model;
pub mod workload;

use std::time::Instant;

/// The workloads, and the node of each whose directory is enumerated.
pub const WORKLOADS: &[(&str, u64)] = &[("single", 1), ("joiner", 2)];

/// One boundary's result.
#[derive(Clone, Debug)]
pub struct BoundaryReport {
    pub workload: &'static str,
    pub seed: u64,
    pub index: usize,
    pub label: String,
    pub unsynced_units: usize,
    pub states: usize,
    /// Combinations a full enumeration needs (more than `states` when bounded).
    pub combinations: u64,
    pub bounded: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    pub boundaries: Vec<BoundaryReport>,
    pub states: u64,
    pub violations: Vec<String>,
    pub wall_secs: f64,
}

/// Enumerates every workload for every seed in `seeds`; stops collecting violations after
/// `max_violations` (the first ones are the useful ones).
pub fn run(seeds: std::ops::Range<u64>, only: Option<&str>, max_violations: usize) -> Report {
    let start = Instant::now();
    let mut rep = Report::default();
    for &(name, id) in WORKLOADS
        .iter()
        .filter(|(n, _)| only.is_none_or(|o| o == *n))
    {
        for seed in seeds.clone() {
            let mut index = 0usize;
            let mut boundaries = Vec::new();
            let mut violations = Vec::new();
            let mut states_total = 0u64;
            let mut at = |b: workload::Boundary| {
                let (states, combinations, bounded) = b.dir.states();
                for (k, s) in states.iter().enumerate() {
                    if violations.len() >= max_violations {
                        break;
                    }
                    if let Err(e) = check::check_state(id, s, b.facts) {
                        violations.push(format!(
                            "{name} seed {seed} boundary {index} ({}), state {k}: {e}",
                            b.label
                        ));
                    }
                }
                if violations.len() < max_violations {
                    if let Err(e) = check::check_stopped_process(id, b.dir) {
                        violations.push(format!(
                            "{name} seed {seed} boundary {index} ({}), process stop: {e}",
                            b.label
                        ));
                    }
                }
                states_total += states.len() as u64;
                boundaries.push(BoundaryReport {
                    workload: name,
                    seed,
                    index,
                    label: b.label,
                    unsynced_units: b.dir.unsynced_units(),
                    states: states.len(),
                    combinations,
                    bounded,
                });
                index += 1;
            };
            let mut undurable = Vec::new();
            let mut on_undurable = |u: workload::Undurable| {
                undurable.push(format!(
                    "{name} seed {seed}: {} completed with {:?} not durable",
                    u.job, u.files
                ));
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                workload::run(name, seed, &mut at, &mut on_undurable)
            }));
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => violations.push(format!("{name} seed {seed}: workload: {e}")),
                Err(_) => violations.push(format!("{name} seed {seed}: the workload panicked")),
            }
            rep.states += states_total;
            rep.boundaries.extend(boundaries);
            rep.violations
                .extend(undurable.into_iter().take(max_violations));
            rep.violations.extend(violations);
        }
    }
    rep.wall_secs = start.elapsed().as_secs_f64();
    rep
}
