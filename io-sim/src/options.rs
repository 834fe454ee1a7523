//! What shapes a world beyond its seed: the fault classes turned off and the fault phase's length
//! (shrinking sets them), a planted bug, and core's raft-rs workaround. One struct, so a sweep,
//! a replay, a shrink and every printed repro line agree on which flags a world needs.

use raftkv_core::planted::PlantedBug;
use raftkv_core::rng::{Fnv64, Rng};
use std::collections::BTreeSet;

/// A fault class of the swarm (one per field of `config::Swarm`). Each draws from its own
/// random stream (`FaultClass::stream`), so turning one off leaves the others' draws as they
/// were: the premise of shrinking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultClass {
    NetLoss,
    NetDuplicate,
    NetCorrupt,
    NetLongDelay,
    Partitions,
    Crashes,
    Pauses,
    TickDrift,
    SlowDisk,
    FsyncErrors,
    Enospc,
    ReadCorruption,
    LatentSectorErrors,
    MisdirectedWrites,
    DiskLoss,
    Membership,
    StaleMessages,
    OperatorMistakes,
}

impl FaultClass {
    pub const ALL: [FaultClass; 18] = [
        FaultClass::NetLoss,
        FaultClass::NetDuplicate,
        FaultClass::NetCorrupt,
        FaultClass::NetLongDelay,
        FaultClass::Partitions,
        FaultClass::Crashes,
        FaultClass::Pauses,
        FaultClass::TickDrift,
        FaultClass::SlowDisk,
        FaultClass::FsyncErrors,
        FaultClass::Enospc,
        FaultClass::ReadCorruption,
        FaultClass::LatentSectorErrors,
        FaultClass::MisdirectedWrites,
        FaultClass::DiskLoss,
        FaultClass::Membership,
        FaultClass::StaleMessages,
        FaultClass::OperatorMistakes,
    ];

    /// The name on the command line (`--faults-off net-loss,crashes`).
    pub fn name(self) -> &'static str {
        match self {
            FaultClass::NetLoss => "net-loss",
            FaultClass::NetDuplicate => "net-duplicate",
            FaultClass::NetCorrupt => "net-corrupt",
            FaultClass::NetLongDelay => "net-long-delay",
            FaultClass::Partitions => "partitions",
            FaultClass::Crashes => "crashes",
            FaultClass::Pauses => "pauses",
            FaultClass::TickDrift => "tick-drift",
            FaultClass::SlowDisk => "slow-disk",
            FaultClass::FsyncErrors => "fsync-errors",
            FaultClass::Enospc => "enospc",
            FaultClass::ReadCorruption => "read-corruption",
            FaultClass::LatentSectorErrors => "latent-sector-errors",
            FaultClass::MisdirectedWrites => "misdirected-writes",
            FaultClass::DiskLoss => "disk-loss",
            FaultClass::Membership => "membership",
            FaultClass::StaleMessages => "stale-messages",
            FaultClass::OperatorMistakes => "operator-mistakes",
        }
    }

    pub fn from_name(s: &str) -> Option<FaultClass> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// The random stream named `name` in the world of `seed`: independent of every other name's.
pub fn stream(seed: u64, name: &str) -> Rng {
    let mut h = Fnv64::default();
    h.update(name.as_bytes());
    Rng::new(seed ^ h.finish().rotate_left(17))
}

/// One owner's random streams (the world's, the supervisor's, the operator's): one per fault
/// class, and the weather (delays, disk latencies), which is no fault and always on.
#[derive(Clone, Debug)]
pub struct Streams {
    weather: Rng,
    classes: Vec<Rng>,
}

impl Streams {
    pub fn new(seed: u64, owner: &str) -> Streams {
        Streams {
            weather: stream(seed, &format!("{owner}/weather")),
            classes: FaultClass::ALL
                .iter()
                .map(|c| stream(seed, &format!("{owner}/{}", c.name())))
                .collect(),
        }
    }

    pub fn weather(&mut self) -> &mut Rng {
        &mut self.weather
    }

    /// The stream of `class`: only that class's faults draw from it.
    pub fn of(&mut self, class: FaultClass) -> &mut Rng {
        &mut self.classes[class as usize]
    }
}

/// Everything but the seed that shapes a world. The default is the world a seed names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorldOptions {
    /// Fault classes forced off (whatever the seed drew).
    pub faults_off: BTreeSet<FaultClass>,
    /// The fault phase's length in simulated seconds, if not the default.
    pub fault_secs: Option<u64>,
    /// Run without core's workaround for the raft-rs campaign-after-snapshot panic.
    pub without_raft_rs_guard: bool,
    /// Run without core's repair of raft-rs's misplaced batched appends
    /// (`node::raft_rs_guard`).
    pub without_batch_append_guard: bool,
    /// A planted bug (a `--cfg raftkv_planted_bugs` build only).
    pub plant: Option<PlantedBug>,
}

impl WorldOptions {
    /// The command-line flags that recreate these options, in a stable order.
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if !self.faults_off.is_empty() {
            let names: Vec<&str> = self.faults_off.iter().map(|c| c.name()).collect();
            a.push("--faults-off".to_string());
            a.push(names.join(","));
        }
        if let Some(s) = self.fault_secs {
            a.push("--fault-secs".to_string());
            a.push(s.to_string());
        }
        if self.without_raft_rs_guard {
            a.push("--without-raft-rs-guard".to_string());
        }
        if self.without_batch_append_guard {
            a.push("--without-batch-append-guard".to_string());
        }
        if let Some(b) = self.plant {
            a.push("--plant".to_string());
            a.push(b.name().to_string());
        }
        a
    }

    /// One shell command that replays `seed` in this world from any directory, writing its
    /// trace and history beside the repository's root.
    pub fn repro_command(&self, seed: u64) -> String {
        let root = repo_root();
        let mut flags = format!("--seed {seed}");
        for a in self.args() {
            flags.push(' ');
            flags.push_str(&a);
        }
        let build = if self.plant.is_some() {
            "RUSTFLAGS=\"--cfg madsim --cfg raftkv_planted_bugs\" cargo run --release -p raftkv-io-sim --target-dir target/planted"
        } else {
            "cargo run --release -p raftkv-io-sim"
        };
        format!(
            "(cd {} && {build} -- {flags} --trace trace.jsonl --history history.jsonl)",
            shell_quote(&root)
        )
    }
}

/// Parses `--faults-off`'s comma-separated list.
pub fn parse_fault_classes(s: &str) -> Result<BTreeSet<FaultClass>, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            FaultClass::from_name(p).ok_or_else(|| {
                let all: Vec<&str> = FaultClass::ALL.iter().map(|c| c.name()).collect();
                format!("unknown fault class {p:?}; one of: {}", all.join(", "))
            })
        })
        .collect()
}

/// The repository's root, as this crate was built from it (absolute).
fn repo_root() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent().unwrap_or(dir).display().to_string()
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_name_round_trips_and_streams_differ() {
        let mut s = Streams::new(7, "world");
        let mut firsts = BTreeSet::new();
        for (i, c) in FaultClass::ALL.into_iter().enumerate() {
            assert_eq!(c as usize, i, "ALL is in declaration order");
            assert_eq!(FaultClass::from_name(c.name()), Some(c));
            firsts.insert(s.of(c).next_u64());
        }
        firsts.insert(s.weather().next_u64());
        assert_eq!(firsts.len(), FaultClass::ALL.len() + 1);
        // Drawing from one stream leaves another's sequence as it was.
        let mut a = Streams::new(7, "world");
        let mut b = Streams::new(7, "world");
        for _ in 0..100 {
            a.of(FaultClass::NetLoss).next_u64();
        }
        assert_eq!(
            a.of(FaultClass::Crashes).next_u64(),
            b.of(FaultClass::Crashes).next_u64()
        );
        assert_ne!(
            Streams::new(7, "world").of(FaultClass::Crashes).next_u64(),
            Streams::new(8, "world").of(FaultClass::Crashes).next_u64()
        );
    }

    #[test]
    fn the_repro_line_carries_every_option() {
        let o = WorldOptions {
            faults_off: parse_fault_classes("crashes,net-loss").unwrap(),
            fault_secs: Some(6),
            without_raft_rs_guard: true,
            without_batch_append_guard: true,
            plant: Some(PlantedBug::AckBeforeSync),
        };
        let line = o.repro_command(42);
        for part in [
            "--seed 42",
            "--faults-off net-loss,crashes",
            "--fault-secs 6",
            "--without-raft-rs-guard",
            "--without-batch-append-guard",
            "--plant ack-before-sync",
            "raftkv_planted_bugs",
            "(cd /",
        ] {
            assert!(line.contains(part), "{part:?} missing from {line}");
        }
        assert!(parse_fault_classes("crashes,bogus").is_err());
        assert_eq!(WorldOptions::default().args(), Vec::<String>::new());
    }
}
