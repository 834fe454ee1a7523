//! State-machine apply throughput: `KvState::apply_command` for puts (ops/s).
//!
//! The state is long-lived and pre-filled with 100k keys (10-byte keys, 100-byte values), so the
//! measured puts overwrite keys in a map of realistic size. Cases:
//!
//! - `puts_64_clients`: request ids from 64 clients, each with an increasing seq (the common
//!   case: a few long-lived client processes).
//! - `puts_no_request_id`: writes without a session (no de-duplication work).
//! - `puts_new_client_each_at_cap`: every put from a client never seen before while the session
//!   table is full (`MAX_SESSIONS`), so every put evicts the least recently used session.
//!
//! Run: `cargo bench -p raftkv-core --bench apply`

mod common;

use common::{key, value};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use raftkv_core::command::{Command, RequestId};
use raftkv_core::kv::{KvState, MAX_SESSIONS};
use std::time::Duration;

const KEYS: u64 = 100_000;

/// The puts cycled through: one per key.
fn commands() -> Vec<Command> {
    (0..KEYS)
        .map(|i| Command::Put {
            key: key(i),
            value: value(i, 100).into(),
        })
        .collect()
}

/// A state holding every key once, written without request ids; returns it and its last index.
fn prefilled(cmds: &[Command]) -> (KvState, u64) {
    let mut kv = KvState::default();
    kv.advance(1);
    let mut index = 1;
    for c in cmds {
        index += 1;
        kv.apply_command(index, None, c);
    }
    (kv, index)
}

fn bench_apply(c: &mut Criterion) {
    let cmds = commands();
    let mut g = c.benchmark_group("apply");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(30);

    const BATCH: u64 = 1000;
    g.throughput(Throughput::Elements(BATCH));
    {
        let (mut kv, mut index) = prefilled(&cmds);
        let mut n: u64 = 0;
        g.bench_function("puts_64_clients", |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    index += 1;
                    let rid = RequestId {
                        client: 1 + n % 64,
                        seq: 1 + n / 64,
                    };
                    let cmd = &cmds[(n % KEYS) as usize];
                    black_box(kv.apply_command(index, Some(rid), cmd));
                    n += 1;
                }
            })
        });
    }
    {
        let (mut kv, mut index) = prefilled(&cmds);
        let mut n: u64 = 0;
        g.bench_function("puts_no_request_id", |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    index += 1;
                    let cmd = &cmds[(n % KEYS) as usize];
                    black_box(kv.apply_command(index, None, cmd));
                    n += 1;
                }
            })
        });
    }
    {
        // Fill the session table: MAX_SESSIONS distinct clients, one write each.
        let (mut kv, mut index) = prefilled(&cmds);
        let mut client: u64 = 0;
        for _ in 0..MAX_SESSIONS {
            index += 1;
            client += 1;
            let rid = RequestId { client, seq: 1 };
            kv.apply_command(index, Some(rid), &cmds[(client % KEYS) as usize]);
        }
        const SMALL_BATCH: u64 = 100;
        g.throughput(Throughput::Elements(SMALL_BATCH));
        g.sample_size(10);
        g.bench_function("puts_new_client_each_at_cap", |b| {
            b.iter(|| {
                for _ in 0..SMALL_BATCH {
                    index += 1;
                    client += 1;
                    let rid = RequestId { client, seq: 1 };
                    let cmd = &cmds[(client % KEYS) as usize];
                    black_box(kv.apply_command(index, Some(rid), cmd));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
