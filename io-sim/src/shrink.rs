//! Shrinking a failing world: turn its fault classes off one at a time, then shorten its fault
//! phase, keeping each change under which the same checker still fires. Each class draws from
//! its own random stream (`options::Streams`), so turning one off leaves the others' draws as
//! they were and the smaller world is the same world with less in it, not a different one.

use crate::options::{FaultClass, WorldOptions};

/// One trial run while shrinking.
#[derive(Clone, Debug)]
pub struct Trial {
    pub options: WorldOptions,
    /// The target checker fired: the change is kept.
    pub still_fails: bool,
    pub what: String,
}

/// The smallest world found.
#[derive(Clone, Debug)]
pub struct Shrunk {
    pub seed: u64,
    /// The checker that fired at the start and still fires.
    pub checker: crate::observer::Checker,
    pub detail: String,
    pub options: WorldOptions,
    /// Fault classes still on in the smallest world.
    pub classes_on: Vec<FaultClass>,
    pub fault_secs: u64,
    pub trials: usize,
}

impl Shrunk {
    pub fn repro(&self) -> String {
        self.options.repro_command(self.seed)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ShrinkError {
    #[error("seed {0} passes every checker in this world: there is nothing to shrink")]
    Passes(u64),
}

/// Shrinks the failing world of `seed` shaped by `start`. `on_trial` hears each trial.
#[cfg(madsim)]
pub fn shrink(
    seed: u64,
    start: &WorldOptions,
    on_trial: &mut dyn FnMut(&Trial),
) -> Result<Shrunk, ShrinkError> {
    let first = crate::run_seed(seed, crate::Trace::Hash, start);
    let Some(v) = first.violations.first() else {
        return Err(ShrinkError::Passes(seed));
    };
    let checker = v.checker;
    let mut detail = v.detail.clone();
    let mut best = start.clone();
    let mut trials = 0;
    let mut fires = |opts: &WorldOptions, what: String, detail: &mut String| {
        trials += 1;
        let r = crate::run_seed(seed, crate::Trace::Hash, opts);
        let hit = r.violations.iter().find(|v| v.checker == checker);
        if let Some(v) = hit {
            *detail = v.detail.clone();
        }
        on_trial(&Trial {
            options: opts.clone(),
            still_fails: hit.is_some(),
            what,
        });
        hit.is_some()
    };
    // Classes off, one at a time; a second pass, since a class may become removable only once
    // another is gone.
    for _ in 0..2 {
        let mut changed = false;
        let cfg = crate::config::SimConfig::for_world(seed, &best);
        for c in FaultClass::ALL {
            if !cfg.is_on(c) || best.faults_off.contains(&c) {
                continue;
            }
            let mut t = best.clone();
            t.faults_off.insert(c);
            if fires(&t, format!("without {}", c.name()), &mut detail) {
                best = t;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // The shortest fault phase that still fails, by bisection (it need not be monotone; what is
    // kept was seen failing).
    let full = crate::config::SimConfig::for_world(seed, &best).fault_s;
    let (mut lo, mut hi) = (1, full);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let mut t = best.clone();
        t.fault_secs = Some(mid);
        if fires(&t, format!("fault phase {mid} s"), &mut detail) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if hi < full {
        best.fault_secs = Some(hi);
    }
    let cfg = crate::config::SimConfig::for_world(seed, &best);
    Ok(Shrunk {
        seed,
        checker,
        detail,
        classes_on: FaultClass::ALL
            .into_iter()
            .filter(|&c| cfg.is_on(c))
            .collect(),
        fault_secs: cfg.fault_s,
        options: best,
        trials,
    })
}
