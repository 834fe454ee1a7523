//! Per-seed configuration of the simulated world. Every knob is drawn from the seed, so a seed
//! names one world; `describe` prints it with a failure.

use raftkv_core::rng::Rng;
use serde::Serialize;

/// Network faults (per message unless stated).
#[derive(Clone, Debug, Serialize)]
pub struct NetFaults {
    pub loss: f64,
    pub duplicate: f64,
    pub corrupt: f64,
    /// Base one-way delay in microseconds and the mean of an exponential tail on top.
    pub delay_base_us: u64,
    pub delay_tail_us: u64,
    /// Chance that a message gets a long (100x tail) delay: reordering well past others.
    pub long_tail: f64,
    /// Mean simulated seconds between partition changes (0: none).
    pub partition_every_s: f64,
}

/// Disk behaviour.
#[derive(Clone, Debug, Serialize)]
pub struct DiskFaults {
    /// Per-op latency in microseconds (write, sync) and a tail.
    pub op_us: u64,
    pub sync_us: u64,
    pub tail_us: u64,
}

/// Process faults.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessFaults {
    /// Mean simulated seconds between crashes (0: none).
    pub crash_every_s: f64,
    /// Chance a crash is a power loss (unsynced data lost) rather than a process crash.
    pub power_loss: f64,
    /// Chance the victim is picked among nodes with disk I/O in flight.
    pub prefer_busy: f64,
    /// How long a crashed node stays down (max, seconds).
    pub down_max_s: f64,
}

/// Which fault classes are on in this seed (swarm testing: each seed draws its own mix, so some
/// seeds are calm and some brutal; a failure prints the mix).
#[derive(Clone, Debug, Serialize)]
pub struct Swarm {
    pub net_loss: bool,
    pub net_duplicate: bool,
    pub net_corrupt: bool,
    pub net_long_delay: bool,
    pub partitions: bool,
    pub crashes: bool,
    pub pauses: bool,
    pub tick_drift: bool,
    pub slow_disk: bool,
    pub fsync_errors: bool,
    pub enospc: bool,
    pub read_corruption: bool,
    pub latent_sector_errors: bool,
    pub misdirected_writes: bool,
    pub disk_loss: bool,
    pub membership: bool,
    pub stale_messages: bool,
    /// The operator errs: restarts a wiped disk under its old id, starts a node on a stale or
    /// another node's directory, or with a changed `--cluster`.
    pub operator_mistakes: bool,
}

/// Rare disk faults, per operation (or per restart for read faults).
#[derive(Clone, Debug, Serialize)]
pub struct RareDisk {
    pub fsync_error: f64,
    pub enospc: f64,
    pub misdirected: f64,
    /// Per restart of a node with a bad disk.
    pub read_corruption: f64,
    pub latent_error: f64,
    /// Per crash.
    pub disk_loss: f64,
    /// Per crash (a wiped disk restarted under its old id) and per restart (a stale or another
    /// node's directory, a changed `--cluster`), when operator mistakes are on.
    pub mistake: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: u64,
    pub clients: u64,
    pub keys: u64,
    /// Simulated seconds with faults on, then with faults off (liveness), then settling.
    pub fault_s: u64,
    pub calm_s: u64,
    pub tick_ms: u64,
    pub snap_count: u64,
    pub catch_up_entries: u64,
    pub segment_size_bytes: u64,
    pub client_timeout_ms: u64,
    pub net: NetFaults,
    pub disk: DiskFaults,
    pub process: ProcessFaults,
    pub swarm: Swarm,
    pub rare: RareDisk,
    /// Per-node tick-rate multipliers (1.0 without drift) and disk slowness multipliers.
    pub drift: Vec<f64>,
    pub slowness: Vec<u64>,
    /// Mean seconds between membership changes (add, remove) when on.
    pub membership_every_s: f64,
    pub pause_every_s: f64,
    /// Snapshot files stream in chunks this small, so one transfer is many chunks long.
    pub snapshot_chunk_bytes: usize,
    pub snapshot_window_chunks: usize,
    /// Compaction's byte floor: small in half the worlds, so that the log's bytes, not only its
    /// entry count, trigger snapshots and bound the catch-up entries kept.
    pub log_bytes_floor: u64,
    /// A snapshot job's serialisation takes this long (a large state on a busy CPU) in a third
    /// of the worlds, none elsewhere: writes then outrun the job, and a leader whose log goes
    /// over its limit refuses them (`ClientError::TooManyRequests`) until the job is saved.
    pub snapshot_cpu_ms: u64,
}

impl SimConfig {
    /// The world of `seed`: which fault classes are on (swarm) and at what rates.
    pub fn from_seed(seed: u64) -> SimConfig {
        let mut r = Rng::new(seed ^ 0x5EED_C0F1_6000_0001);
        let pick = |r: &mut Rng, lo: f64, hi: f64| {
            lo + (hi - lo) * (r.below(1_000_000) as f64 / 1_000_000.0)
        };
        // One seed in twenty is calm (no fault class at all); otherwise each class is a coin
        // weighted towards on.
        let calm = r.below(20) == 0;
        let on = |r: &mut Rng, p: f64| !calm && r.chance(p);
        let swarm = Swarm {
            net_loss: on(&mut r, 0.8),
            net_duplicate: on(&mut r, 0.7),
            net_corrupt: on(&mut r, 0.7),
            net_long_delay: on(&mut r, 0.6),
            partitions: on(&mut r, 0.8),
            crashes: on(&mut r, 0.85),
            pauses: on(&mut r, 0.5),
            tick_drift: on(&mut r, 0.5),
            slow_disk: on(&mut r, 0.4),
            fsync_errors: on(&mut r, 0.4),
            enospc: on(&mut r, 0.4),
            read_corruption: on(&mut r, 0.5),
            latent_sector_errors: on(&mut r, 0.4),
            misdirected_writes: on(&mut r, 0.4),
            disk_loss: on(&mut r, 0.4),
            membership: on(&mut r, 0.5),
            stale_messages: on(&mut r, 0.5),
            operator_mistakes: false,
        };
        let nodes = if r.below(4) == 0 { 5 } else { 3 };
        let drift = (0..nodes)
            .map(|_| {
                if swarm.tick_drift {
                    pick(&mut r, 0.8, 1.25)
                } else {
                    1.0
                }
            })
            .collect();
        let slowness = (0..nodes)
            .map(|_| {
                if swarm.slow_disk && r.below(3) == 0 {
                    r.range(5, 40)
                } else {
                    1
                }
            })
            .collect();
        let mut cfg = SimConfig {
            seed,
            nodes,
            clients: r.range(3, 7),
            keys: r.range(2, 6),
            fault_s: 20,
            calm_s: 10,
            tick_ms: 20,
            snap_count: r.range(20, 80),
            catch_up_entries: r.range(5, 20),
            segment_size_bytes: 4096 * r.range(1, 5),
            client_timeout_ms: 1500,
            net: NetFaults {
                loss: if swarm.net_loss {
                    pick(&mut r, 0.001, 0.08)
                } else {
                    0.0
                },
                duplicate: if swarm.net_duplicate {
                    pick(&mut r, 0.001, 0.05)
                } else {
                    0.0
                },
                corrupt: if swarm.net_corrupt {
                    pick(&mut r, 0.001, 0.03)
                } else {
                    0.0
                },
                delay_base_us: r.range(100, 2_000),
                delay_tail_us: r.range(100, 5_000),
                long_tail: if swarm.net_long_delay {
                    pick(&mut r, 0.001, 0.02)
                } else {
                    0.0
                },
                partition_every_s: if swarm.partitions {
                    pick(&mut r, 1.0, 6.0)
                } else {
                    0.0
                },
            },
            disk: DiskFaults {
                op_us: r.range(10, 200),
                sync_us: r.range(100, 3_000),
                tail_us: r.range(10, 2_000),
            },
            process: ProcessFaults {
                crash_every_s: if swarm.crashes {
                    pick(&mut r, 1.0, 5.0)
                } else {
                    0.0
                },
                power_loss: pick(&mut r, 0.3, 0.9),
                prefer_busy: pick(&mut r, 0.3, 0.9),
                down_max_s: pick(&mut r, 0.2, 3.0),
            },
            rare: RareDisk {
                fsync_error: pick(&mut r, 0.0005, 0.003),
                enospc: pick(&mut r, 0.0005, 0.003),
                misdirected: pick(&mut r, 0.0005, 0.003),
                read_corruption: pick(&mut r, 0.2, 0.6),
                latent_error: pick(&mut r, 0.05, 0.2),
                disk_loss: pick(&mut r, 0.05, 0.2),
                mistake: 0.0,
            },
            swarm,
            drift,
            slowness,
            membership_every_s: pick(&mut r, 3.0, 8.0),
            pause_every_s: pick(&mut r, 2.0, 6.0),
            snapshot_chunk_bytes: 0,
            snapshot_window_chunks: 0,
            log_bytes_floor: 0,
            snapshot_cpu_ms: 0,
        };
        // Drawn last, so adding this class left every earlier draw of a seed as it was.
        cfg.swarm.operator_mistakes = on(&mut r, 0.5);
        cfg.rare.mistake = pick(&mut r, 0.1, 0.4);
        cfg.snapshot_chunk_bytes = r.range(16, 256) as usize;
        cfg.snapshot_window_chunks = r.range(1, 5) as usize;
        cfg.log_bytes_floor = if r.chance(0.5) {
            r.range(64, 1024)
        } else {
            raftkv_core::compaction::CompactionConfig::default().log_bytes_floor
        };
        cfg.snapshot_cpu_ms = if r.chance(0.33) { r.range(20, 400) } else { 0 };
        cfg
    }

    /// The world of `seed` shaped by `opts`: the classes it turns off are off (their rates
    /// zero), everything else exactly as the seed drew it.
    pub fn for_world(seed: u64, opts: &crate::options::WorldOptions) -> SimConfig {
        let mut cfg = SimConfig::from_seed(seed);
        for &c in &opts.faults_off {
            cfg.turn_off(c);
        }
        if let Some(s) = opts.fault_secs {
            cfg.fault_s = s;
        }
        cfg
    }

    /// Turns one fault class off.
    pub fn turn_off(&mut self, class: crate::options::FaultClass) {
        use crate::options::FaultClass::*;
        let sw = &mut self.swarm;
        match class {
            NetLoss => (sw.net_loss, self.net.loss) = (false, 0.0),
            NetDuplicate => (sw.net_duplicate, self.net.duplicate) = (false, 0.0),
            NetCorrupt => (sw.net_corrupt, self.net.corrupt) = (false, 0.0),
            NetLongDelay => (sw.net_long_delay, self.net.long_tail) = (false, 0.0),
            Partitions => (sw.partitions, self.net.partition_every_s) = (false, 0.0),
            Crashes => (sw.crashes, self.process.crash_every_s) = (false, 0.0),
            Pauses => sw.pauses = false,
            TickDrift => {
                sw.tick_drift = false;
                self.drift.iter_mut().for_each(|d| *d = 1.0);
            }
            SlowDisk => {
                sw.slow_disk = false;
                self.slowness.iter_mut().for_each(|s| *s = 1);
            }
            FsyncErrors => sw.fsync_errors = false,
            Enospc => sw.enospc = false,
            ReadCorruption => sw.read_corruption = false,
            LatentSectorErrors => sw.latent_sector_errors = false,
            MisdirectedWrites => sw.misdirected_writes = false,
            DiskLoss => sw.disk_loss = false,
            Membership => sw.membership = false,
            StaleMessages => sw.stale_messages = false,
            OperatorMistakes => sw.operator_mistakes = false,
        }
    }

    /// Node `id`'s tick-rate multiplier (1.0 for nodes added later).
    pub fn drift_of(&self, id: u64) -> f64 {
        self.drift.get((id - 1) as usize).copied().unwrap_or(1.0)
    }

    /// Node `id`'s disk slowness multiplier (1 for nodes added later).
    pub fn slowness_of(&self, id: u64) -> u64 {
        self.slowness.get((id - 1) as usize).copied().unwrap_or(1)
    }

    /// Whether a fault class is on in this world.
    pub fn is_on(&self, class: crate::options::FaultClass) -> bool {
        use crate::options::FaultClass::*;
        let sw = &self.swarm;
        match class {
            NetLoss => sw.net_loss,
            NetDuplicate => sw.net_duplicate,
            NetCorrupt => sw.net_corrupt,
            NetLongDelay => sw.net_long_delay,
            Partitions => sw.partitions,
            Crashes => sw.crashes,
            Pauses => sw.pauses,
            TickDrift => sw.tick_drift,
            SlowDisk => sw.slow_disk,
            FsyncErrors => sw.fsync_errors,
            Enospc => sw.enospc,
            ReadCorruption => sw.read_corruption,
            LatentSectorErrors => sw.latent_sector_errors,
            MisdirectedWrites => sw.misdirected_writes,
            DiskLoss => sw.disk_loss,
            Membership => sw.membership,
            StaleMessages => sw.stale_messages,
            OperatorMistakes => sw.operator_mistakes,
        }
    }

    pub fn describe(&self) -> String {
        serde_json::to_string(self).expect("config serialises")
    }
}
