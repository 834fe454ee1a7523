//! WAL encode and decode throughput.
//!
//! - `wal_append_*`: `WalWriter::append` of a batch of entries then `flush` (the coalesced
//!   `WriteAt` a group commit hands to the shell), on one long-lived writer with the default
//!   64 MiB segments, so segment cuts happen at their real rate. Bytes are frame bytes (what is
//!   written to the segment file). This is CPU only: no disk is involved.
//! - `wal_decode_*`: `read_segments` over segment files written by the writer into a `MemDir`
//!   (two 16 MiB segments, the second nearly full). Bytes are whole file bytes, as recovery reads
//!   them, including the zeros of the unused tail that the reader scans.
//!
//! Each case is reported twice: in a `*_bytes` group (bytes/s) and a `*_records` group
//! (entries/s), because criterion shows one throughput per benchmark.
//!
//! Run: `cargo bench -p raftkv-core --bench wal`

mod common;

use common::{put_entry, segment_files, written_bytes, ID};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use raftkv_core::fileop::FileOp;
use raftkv_core::wal::frame::encode_frame;
use raftkv_core::wal::{read_segments, Record, WalConfig, WalWriter};
use std::time::Duration;

struct Case {
    name: &'static str,
    value_len: usize,
    /// Entries per append batch (one flush per batch).
    batch: u64,
}

const CASES: [Case; 2] = [
    Case {
        name: "100B",
        value_len: 100,
        batch: 1000,
    },
    Case {
        name: "4KiB",
        value_len: 4096,
        batch: 64,
    },
];

fn bench_append(c: &mut Criterion) {
    for case in &CASES {
        let records: Vec<Record> = (0..case.batch)
            .map(|i| Record::Entry(put_entry(1000 + i, 2, case.value_len)))
            .collect();
        // Frame bytes of one batch.
        let mut ops = Vec::new();
        let mut w = WalWriter::create(ID, WalConfig::default(), 1, &mut ops);
        ops.clear();
        for r in &records {
            w.append(r, &mut ops);
        }
        w.flush(&mut ops);
        let batch_bytes = written_bytes(&ops);
        eprintln!(
            "wal append {}: {} entries per batch, {} frame bytes per batch ({} per entry)",
            case.name,
            case.batch,
            batch_bytes,
            batch_bytes / case.batch
        );
        for (group, tp) in [
            ("wal_append_bytes", Throughput::Bytes(batch_bytes)),
            ("wal_append_records", Throughput::Elements(case.batch)),
        ] {
            let mut g = c.benchmark_group(group);
            g.throughput(tp);
            g.warm_up_time(Duration::from_secs(1));
            g.measurement_time(Duration::from_secs(3));
            g.sample_size(30);
            let mut ops: Vec<FileOp> = Vec::new();
            let mut w = WalWriter::create(ID, WalConfig::default(), 1, &mut ops);
            g.bench_function(case.name, |b| {
                b.iter(|| {
                    ops.clear();
                    for r in &records {
                        w.append(r, &mut ops);
                    }
                    w.flush(&mut ops);
                    black_box(&ops);
                })
            });
            g.finish();
        }
    }
}

fn bench_decode(c: &mut Criterion) {
    let cfg = WalConfig {
        segment_size_bytes: 16 << 20,
    };
    for case in &CASES {
        // Enough entries for about 1.95 segments: the first sealed, the second nearly full.
        let mut frame = Vec::new();
        encode_frame(
            &Record::Entry(put_entry(100_000, 2, case.value_len)),
            0,
            &mut frame,
        );
        let entries = (cfg.segment_size_bytes * 195 / 100) / frame.len() as u64;
        let dir = common::data_dir(entries, case.value_len, cfg, 1000.min(entries));
        let files = segment_files(&dir);
        drop(dir);
        let file_bytes: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
        let wal = read_segments(&files).expect("reads");
        assert_eq!(wal.entries_after(1).expect("replays").len() as u64, entries);
        eprintln!(
            "wal decode {}: {} segments, {} file bytes, {} entries, {} records",
            case.name,
            files.len(),
            file_bytes,
            entries,
            wal.records.len()
        );
        drop(wal);
        for (group, tp) in [
            ("wal_decode_bytes", Throughput::Bytes(file_bytes)),
            ("wal_decode_records", Throughput::Elements(entries)),
        ] {
            let mut g = c.benchmark_group(group);
            g.throughput(tp);
            g.warm_up_time(Duration::from_secs(1));
            g.measurement_time(Duration::from_secs(4));
            g.sample_size(10);
            g.bench_function(case.name, |b| {
                b.iter_with_large_drop(|| read_segments(black_box(&files)).expect("reads"))
            });
            g.finish();
        }
    }
}

criterion_group!(benches, bench_append, bench_decode);
criterion_main!(benches);
