//! Recovery of a data directory holding 1,000,000 entries, end to end through
//! `recovery::recover`: listing, reading every file (a copy out of the `MemDir`, standing in for
//! reading files from disk), decoding and verifying every WAL frame, picking and verifying the snapshot,
//! and replaying the log after it.
//!
//! The directory is what a bootstrapped node leaves behind: the initial snapshot at index 1 and
//! its marker, then 1,000,000 client puts (100-byte values, `Proposal` encoding, request ids) at
//! term 2 in group commits of 100 entries, each followed by a HardState, in default 64 MiB
//! segments. Entries/s is printed by criterion (`thrpt`).
//!
//! Run: `cargo bench -p raftkv-core --bench recovery`

mod common;

use common::ID;
use criterion::{black_box, criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use raftkv_core::memdir::MemDir;
use raftkv_core::recovery::{recover, Recovered};
use raftkv_core::wal::WalConfig;
use std::time::Duration;

const ENTRIES: u64 = 1_000_000;

fn run(dir: &MemDir) -> Recovered {
    recover(&dir.list(), ID, &mut |n, at, max| dir.read_at(n, at, max))
        .expect("recovers")
        .expect("not a fresh directory")
}

fn bench_recovery(c: &mut Criterion) {
    let dir = common::data_dir(ENTRIES, 100, WalConfig::default(), 100);
    let files = dir.list();
    let bytes: usize = files
        .iter()
        .map(|n| dir.read(n).expect("listed").len())
        .sum();
    eprintln!(
        "recovery: generated {} files, {} bytes ({:.1} MiB)",
        files.len(),
        bytes,
        bytes as f64 / (1 << 20) as f64
    );

    // One checked run before measuring: the directory must recover to exactly what was written.
    let rec = run(&dir);
    assert_eq!(rec.entries.len() as u64, ENTRIES);
    assert_eq!(rec.report.snapshot, Some((1, 1)));
    assert_eq!(rec.hard_state.commit, ENTRIES + 1);
    assert!(rec.ops.is_empty() && rec.report.torn_tail.is_none());
    drop(rec);

    let mut g = c.benchmark_group("recovery");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(ENTRIES));
    g.bench_function("1M_entries_100B", |b| {
        b.iter_with_large_drop(|| run(black_box(&dir)))
    });
    g.finish();
}

criterion_group!(benches, bench_recovery);
criterion_main!(benches);
