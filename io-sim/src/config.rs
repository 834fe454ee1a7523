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
}

impl SimConfig {
    /// The world of `seed`. Rates vary per seed (some calm, some brutal) but every fault class of
    /// the world issue is on in every seed.
    pub fn from_seed(seed: u64) -> SimConfig {
        let mut r = Rng::new(seed ^ 0x5EED_C0F1_6000_0001);
        let pick = |r: &mut Rng, lo: f64, hi: f64| {
            lo + (hi - lo) * (r.below(1_000_000) as f64 / 1_000_000.0)
        };
        SimConfig {
            seed,
            nodes: if r.below(4) == 0 { 5 } else { 3 },
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
                loss: pick(&mut r, 0.0, 0.08),
                duplicate: pick(&mut r, 0.0, 0.05),
                corrupt: pick(&mut r, 0.0, 0.03),
                delay_base_us: r.range(100, 2_000),
                delay_tail_us: r.range(100, 5_000),
                long_tail: pick(&mut r, 0.0, 0.02),
                partition_every_s: pick(&mut r, 1.0, 6.0),
            },
            disk: DiskFaults {
                op_us: r.range(10, 200),
                sync_us: r.range(100, 3_000),
                tail_us: r.range(10, 2_000),
            },
            process: ProcessFaults {
                crash_every_s: pick(&mut r, 1.0, 5.0),
                power_loss: pick(&mut r, 0.3, 0.9),
                prefer_busy: pick(&mut r, 0.3, 0.9),
                down_max_s: pick(&mut r, 0.2, 3.0),
            },
        }
    }

    pub fn describe(&self) -> String {
        serde_json::to_string(self).expect("config serialises")
    }
}
