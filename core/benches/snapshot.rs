//! Snapshot encode and decode throughput, for a state machine holding 100k keys (10-byte keys,
//! 100-byte values, written by 64 clients with request ids, so 64 sessions).
//!
//! - `kv_snapshot`: `KvState::encode_snapshot` / `decode_snapshot` (the state-machine payload).
//! - `snapfile`: `snapfile::encode` / `decode` of a snapshot file around that payload (framing,
//!   crc32 and copies). Bytes are the payload (or file) length.
//!
//! Run: `cargo bench -p raftkv-core --bench snapshot`

mod common;

use common::put_proposal;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use raftkv_core::kv::KvState;
use raftkv_core::snapfile::{self, SnapshotFile, SnapshotMeta};
use std::time::Duration;

const KEYS: u64 = 100_000;

fn state() -> KvState {
    let mut kv = KvState::with_members(
        [
            (1, "http://10.0.0.1:12380".to_string()),
            (2, "http://10.0.0.2:12380".to_string()),
            (3, "http://10.0.0.3:12380".to_string()),
        ]
        .into(),
    );
    kv.advance(1);
    for i in 0..KEYS {
        let p = put_proposal(i, 100);
        kv.apply_command(i + 2, p.request_id, &p.command);
    }
    assert_eq!(kv.len() as u64, KEYS);
    kv
}

fn bench_snapshot(c: &mut Criterion) {
    let kv = state();
    let payload = kv.encode_snapshot();
    let file = SnapshotFile {
        meta: SnapshotMeta {
            index: KEYS + 1,
            term: 2,
            conf_state: common::conf(),
        },
        data: payload.clone(),
    };
    let file_bytes = snapfile::encode(&file);
    assert_eq!(snapfile::decode(&file_bytes).expect("decodes"), file);
    eprintln!(
        "snapshot: {KEYS} keys, payload {} bytes, file {} bytes",
        payload.len(),
        file_bytes.len()
    );

    let mut g = c.benchmark_group("kv_snapshot");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(20);
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("encode", |b| {
        b.iter_with_large_drop(|| black_box(&kv).encode_snapshot())
    });
    g.bench_function("decode", |b| {
        b.iter_with_large_drop(|| KvState::decode_snapshot(black_box(&payload)).expect("decodes"))
    });
    g.finish();

    let mut g = c.benchmark_group("snapfile");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(20);
    g.throughput(Throughput::Bytes(file_bytes.len() as u64));
    g.bench_function("encode", |b| {
        b.iter_with_large_drop(|| snapfile::encode(black_box(&file)))
    });
    g.bench_function("decode", |b| {
        b.iter_with_large_drop(|| snapfile::decode(black_box(&file_bytes)).expect("decodes"))
    });
    g.finish();
}

criterion_group!(benches, bench_snapshot);
criterion_main!(benches);
