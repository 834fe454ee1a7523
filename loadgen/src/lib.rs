//! raftkv-loadgen, `raftkv bench`: a closed-loop HTTP/1.1 load generator in the spirit of etcd's
//! `benchmark`.
//!
//! Every client owns one keep-alive connection and has exactly one request outstanding; client
//! `i` talks to endpoint `i mod n`. The HTTP client is a small hand-written one (`http`: request
//! bytes built in place, responses parsed with `httparse`), not hyper's: on the 2-core
//! benchmark machine hyper's client cost the generator about 1.5 times the CPU per request,
//! CPU taken from the servers it measures (BENCHMARKS.md, "The load generator's own cost").
//!
//! One tool drives every system compared in `bench/compare.sh`:
//!
//! | mode          | put                         | get                                            |
//! |---------------|-----------------------------|------------------------------------------------|
//! | `raftkv`      | `PUT /v1/kv/{key}` (204)    | `GET /v1/kv/{key}` or `?consistency=local`     |
//! | `etcd`        | `POST /v3/kv/put` (JSON)    | `POST /v3/kv/range`, `"serializable": true` for local |
//! | `raftexample` | `PUT /{key}` (204)          | `GET /{key}` (always a local, possibly stale read) |
//!
//! Latencies go into a log-linear histogram (64 sub-buckets per power of two, under 1.6 %
//! relative error, a few KiB per client), so memory does not grow with the run's length.
//!
//! `--sentinel` measures how fast puts really commit on systems that acknowledge before commit
//! (raftexample): when the load stops, a sentinel key is written through every endpoint and read
//! back locally from the same endpoint until it is visible; the committed rate is the
//! acknowledged puts divided by the time from the start of the load until the last sentinel
//! became visible.
//!
//! Modules: `args` (flags), `load` (clients, phases, sentinel), `http` (the HTTP client),
//! `dialect` (each system's requests and responses), `histogram`, `stats` (counts and the
//! verdict that sets the exit status), `report` (text and `--json`).

mod args;
mod dialect;
mod histogram;
mod http;
mod load;
mod report;
mod stats;

pub use args::{BenchArgs, Consistency, Mode};
pub use stats::Verdict;

use args::parse_endpoints;
use dialect::{base64, Dialect};
use load::{run_phase, sentinel, Config, Phase};
use report::report;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why `raftkv bench` failed: it could not start, or its numbers should not be trusted.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// `--endpoints` is not a list of `http://host:port`.
    #[error("{0}")]
    Endpoints(String),
    #[error("--keys {keys} needs keys of at least {digits} bytes (--key-size {key_size})")]
    KeySize {
        keys: u64,
        digits: u64,
        key_size: u64,
    },
    #[error(transparent)]
    Runtime(std::io::Error),
    #[error("no request succeeded ({errors} errors)")]
    NoSuccess { errors: u64 },
    #[error(transparent)]
    Verdict(#[from] Verdict),
}

/// Runs `raftkv bench`: the load, then the report on stdout; an error if the run's numbers
/// should not be trusted (after the report) or the run could not start.
pub fn run(args: BenchArgs) -> Result<(), BenchError> {
    let endpoints = parse_endpoints(&args.endpoints).map_err(BenchError::Endpoints)?;
    let key_digits = (args.keys - 1).max(1).ilog10() as u64 + 1;
    if key_digits > args.key_size {
        return Err(BenchError::KeySize {
            keys: args.keys,
            digits: key_digits,
            key_size: args.key_size,
        });
    }
    if args.mode == Mode::Raftexample && args.consistency == Consistency::Linearizable {
        tracing::debug!("raftexample has no linearizable read; its GET is a local read");
    }
    let duration = match (args.duration, args.total) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let value: Vec<u8> = {
        let mut r = fastrand::Rng::with_seed(seed ^ 0x5555);
        (0..args.value_size).map(|_| r.u8(b'a'..=b'z')).collect()
    };
    let dialects = endpoints
        .iter()
        .map(|e| Dialect {
            mode: args.mode,
            consistency: args.consistency,
            host: e.clone(),
        })
        .collect();
    let cfg = Arc::new(Config {
        endpoints: endpoints.clone(),
        dialects,
        clients: args.clients,
        keys: args.keys,
        key_size: args.key_size as usize,
        value_b64: base64(&value),
        value,
        timeout: Duration::from_millis(args.timeout_ms),
        seed,
    });
    let progress = (args.progress_ms > 0).then(|| Duration::from_millis(args.progress_ms));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    rt.block_on(async move {
        let prefill = if args.prefill {
            let r = run_phase(
                &cfg,
                Phase {
                    duration: None,
                    total: Some(args.keys),
                    put_ratio: 1.0,
                    sequential: true,
                    progress,
                    label: "prefill",
                },
            )
            .await;
            if !args.json {
                println!(
                    "prefill: {} keys in {:.2}s, {} errors",
                    r.stats.put.count,
                    r.elapsed.as_secs_f64(),
                    r.stats.error_count()
                );
            }
            Some(r)
        } else {
            None
        };
        let main = run_phase(
            &cfg,
            Phase {
                duration,
                total: args.total,
                put_ratio: args.put_ratio,
                sequential: false,
                progress,
                label: "load",
            },
        )
        .await;
        let stopped = Instant::now();
        let sentinel = if args.sentinel {
            let nonce = fastrand::Rng::with_seed(seed ^ 0xABCD).u64(..);
            let waits: Vec<_> = (0..endpoints.len())
                .map(|ep| tokio::spawn(sentinel(cfg.clone(), ep, nonce, stopped)))
                .collect();
            let mut worst = Duration::ZERO;
            let mut err = None;
            for w in waits {
                match w.await {
                    Ok(Ok(d)) => worst = worst.max(d),
                    Ok(Err(e)) => err = Some(e),
                    Err(e) => err = Some(e.to_string()),
                }
            }
            Some(match err {
                Some(e) => Err(e),
                None => Ok(worst),
            })
        } else {
            None
        };
        report(&args, &endpoints, seed, prefill.as_ref(), &main, sentinel);
        let s = &main.stats;
        if s.put.count + s.get.count == 0 && s.error_count() > 0 {
            return Err(BenchError::NoSuccess {
                errors: s.error_count(),
            });
        }
        s.verdict(args.max_error_ratio, args.max_connection_errors)?;
        Ok(())
    })
}
