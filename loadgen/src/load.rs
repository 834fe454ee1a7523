//! The load: closed-loop clients (one connection, one request in flight each), the phases they
//! run (prefill, the measured load), and the sentinel that times when puts become visible.

use crate::args::Consistency;
use crate::dialect::{base64, Dialect, Op};
use crate::http::{connect, HttpConn, ReqError};
use crate::stats::Stats;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How long the sentinel may take to become visible before the run reports failure.
pub(crate) const SENTINEL_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest pause a `Retry-After` buys (a client of a misbehaving server still makes progress).
const MAX_RETRY_AFTER_S: u64 = 10;
/// How long a sentinel may stay invisible before it is written again.
pub(crate) const SENTINEL_REWRITE: Duration = Duration::from_secs(5);

/// One measured (or prefill) phase.
pub(crate) struct Phase {
    pub(crate) duration: Option<Duration>,
    pub(crate) total: Option<u64>,
    pub(crate) put_ratio: f64,
    /// Keys in order 0, 1, 2, ... (ticket number mod keys) instead of at random.
    pub(crate) sequential: bool,
    pub(crate) progress: Option<Duration>,
    pub(crate) label: &'static str,
}

pub(crate) struct Config {
    pub(crate) endpoints: Vec<String>,
    pub(crate) dialects: Vec<Dialect>,
    pub(crate) clients: u64,
    pub(crate) keys: u64,
    pub(crate) key_size: usize,
    pub(crate) value: Vec<u8>,
    pub(crate) value_b64: String,
    pub(crate) timeout: Duration,
    pub(crate) seed: u64,
}

#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) tickets: AtomicU64,
    pub(crate) ok: AtomicU64,
    pub(crate) errors: AtomicU64,
}

pub(crate) struct PhaseResult {
    pub(crate) stats: Stats,
    pub(crate) elapsed: Duration,
}

pub(crate) async fn client(
    id: u64,
    cfg: Arc<Config>,
    phase: Arc<Phase>,
    shared: Arc<Shared>,
    ready: Arc<tokio::sync::Barrier>,
    mut go: tokio::sync::watch::Receiver<Option<Instant>>,
) -> Stats {
    let ep = (id as usize) % cfg.endpoints.len();
    let addr = &cfg.endpoints[ep];
    let dialect = &cfg.dialects[ep];
    let mut rng = fastrand::Rng::with_seed(cfg.seed ^ id.wrapping_mul(0xA076_1D64_78BD_642F));
    let mut stats = Stats::default();
    let mut key = String::with_capacity(cfg.key_size);
    let mut req = Vec::with_capacity(512 + cfg.value.len() * 2);

    // Connect before the clock starts; a failure here is retried (and counted) in the loop.
    let mut conn = tokio::time::timeout(cfg.timeout, connect(addr))
        .await
        .ok()
        .and_then(Result::ok);
    ready.wait().await;
    let start = match go.wait_for(Option::is_some).await {
        Ok(v) => v.expect("checked"),
        Err(_) => return stats,
    };
    let deadline = phase.duration.map(|d| start + d);

    loop {
        let ticket = shared.tickets.fetch_add(1, Ordering::Relaxed);
        if phase.total.is_some_and(|t| ticket >= t) {
            break;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        // The earlier of the request timeout and the end of the run; hitting the end of the
        // run abandons the request (not counted), hitting the timeout is an error.
        let limit = |t0: Instant| {
            let t = t0 + cfg.timeout;
            match deadline {
                Some(d) if d < t => (d, true),
                _ => (t, false),
            }
        };
        if conn.is_none() {
            let (lim, at_end) = limit(now);
            let e = match tokio::time::timeout_at(lim.into(), connect(addr)).await {
                Ok(Ok(c)) => {
                    conn = Some(c);
                    None
                }
                Ok(Err(e)) => Some(e),
                Err(_) if at_end => break,
                Err(_) => Some(ReqError::Timeout),
            };
            if let Some(e) = e {
                stats.error(e.kind(), || e.detail());
                shared.errors.fetch_add(1, Ordering::Relaxed);
                // Do not spin on a refused connection.
                pause(Duration::from_millis(50), deadline).await;
                continue;
            }
        }
        let c = conn.as_mut().expect("connected");
        let op = if phase.put_ratio >= 1.0 || rng.f64() < phase.put_ratio {
            Op::Put
        } else {
            Op::Get
        };
        let k = if phase.sequential {
            ticket % cfg.keys
        } else {
            rng.u64(..cfg.keys)
        };
        key.clear();
        let _ = write!(key, "{k:0width$}", width = cfg.key_size);
        req.clear();
        dialect.request(&mut req, op, &key, &cfg.value, &cfg.value_b64);

        let t0 = Instant::now();
        let (lim, at_end) = limit(t0);
        match tokio::time::timeout_at(lim.into(), c.roundtrip(&req)).await {
            Err(_) if at_end => break,
            Err(_) => {
                stats.error("timeout".into(), || ReqError::Timeout.detail());
                shared.errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
            Ok(Err(e)) => {
                stats.error(e.kind(), || e.detail());
                shared.errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
            Ok(Ok(resp)) => {
                let us = t0.elapsed().as_micros() as u64;
                match dialect.classify(op, resp.status, &c.body) {
                    Ok(found) => {
                        match op {
                            Op::Put => stats.put.record(us),
                            Op::Get => stats.get.record(us),
                        }
                        if !found {
                            stats.not_found += 1;
                        }
                        shared.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(kind) => {
                        let body = &c.body;
                        stats.error(kind, || {
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                                .trim()
                                .to_string()
                        });
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        // A refusal that says when to come back (503 + Retry-After: the
                        // server's write limit, say) is retried then, as a client should, not
                        // at once; a bogus value is capped.
                        if let Some(s) = resp.retry_after_s {
                            pause(Duration::from_secs(s.min(MAX_RETRY_AFTER_S)), deadline).await;
                        }
                    }
                }
                if !resp.keep_alive {
                    conn = None;
                }
            }
        }
    }
    stats
}

/// Waits `d`, or until the end of the run if that comes first.
async fn pause(d: Duration, deadline: Option<Instant>) {
    let until = Instant::now() + d;
    tokio::time::sleep_until(deadline.map_or(until, |end| end.min(until)).into()).await;
}

pub(crate) async fn run_phase(cfg: &Arc<Config>, phase: Phase) -> PhaseResult {
    let phase = Arc::new(phase);
    let shared = Arc::new(Shared::default());
    let ready = Arc::new(tokio::sync::Barrier::new(cfg.clients as usize + 1));
    let (go_tx, go_rx) = tokio::sync::watch::channel(None);
    let tasks: Vec<_> = (0..cfg.clients)
        .map(|id| {
            tokio::spawn(client(
                id,
                cfg.clone(),
                phase.clone(),
                shared.clone(),
                ready.clone(),
                go_rx.clone(),
            ))
        })
        .collect();
    ready.wait().await;
    let start = Instant::now();
    let _ = go_tx.send(Some(start));

    let progress = phase.progress.map(|every| {
        let shared = shared.clone();
        let phase = phase.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at((start + every).into(), every);
            let mut last = (0u64, start);
            loop {
                let now = tick.tick().await.into_std();
                let ok = shared.ok.load(Ordering::Relaxed);
                let errors = shared.errors.load(Ordering::Relaxed);
                let rate = (ok - last.0) as f64 / (now - last.1).as_secs_f64();
                last = (ok, now);
                let of = match (phase.duration, phase.total) {
                    (Some(d), _) => format!("/{:.0}s", d.as_secs_f64()),
                    (None, Some(t)) => format!(" (of {t} requests)"),
                    _ => String::new(),
                };
                eprintln!(
                    "[{:>6.1}s{of}] {}: {ok} ok, {rate:.0}/s, {errors} errors",
                    (now - start).as_secs_f64(),
                    phase.label,
                );
            }
        })
    });

    let mut stats = Stats::default();
    for t in tasks {
        match t.await {
            Ok(s) => stats.merge(s),
            Err(e) => stats.error("client_panic".into(), || e.to_string()),
        }
    }
    let elapsed = start.elapsed();
    if let Some(p) = progress {
        p.abort();
    }
    PhaseResult { stats, elapsed }
}

/// Writes a sentinel through endpoint `ep` and polls it there with local reads until visible.
/// Returns the time from `since` until it was seen.
pub(crate) async fn sentinel(
    cfg: Arc<Config>,
    ep: usize,
    nonce: u64,
    since: Instant,
) -> Result<Duration, String> {
    let give_up = Instant::now() + SENTINEL_TIMEOUT;
    let addr = &cfg.endpoints[ep];
    let put = &cfg.dialects[ep];
    let get = Dialect {
        mode: put.mode,
        consistency: Consistency::Local,
        host: put.host.clone(),
    };
    let key = format!("sentinel-{nonce:016x}-{ep}");
    let value = format!("{nonce:016x}").into_bytes();
    let value_b64 = base64(&value);
    let mut conn: Option<HttpConn<TcpStream>> = None;
    let mut req = Vec::new();
    let mut written = false;
    let mut written_at = Instant::now();
    let mut last_err = String::new();
    while Instant::now() < give_up {
        // A system that acknowledges before commit may also lose the write (a follower's
        // forwarded proposal dropped): write it again now and then.
        if written && written_at.elapsed() > SENTINEL_REWRITE {
            written = false;
        }
        if conn.is_none() {
            match tokio::time::timeout(cfg.timeout, connect(addr)).await {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(e)) => last_err = e.detail(),
                Err(_) => last_err = "connect timed out".into(),
            }
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let c = conn.as_mut().expect("connected");
        let (d, op) = if written {
            (&get, Op::Get)
        } else {
            (put, Op::Put)
        };
        req.clear();
        d.request(&mut req, op, &key, &value, &value_b64);
        match tokio::time::timeout(cfg.timeout, c.roundtrip(&req)).await {
            Ok(Ok(resp)) => {
                let ok = d.classify(op, resp.status, &c.body);
                match (op, ok) {
                    (Op::Put, Ok(_)) => {
                        written = true;
                        written_at = Instant::now();
                    }
                    (Op::Get, Ok(true)) if d.body_has_value(&c.body, &value) => {
                        return Ok(since.elapsed())
                    }
                    (Op::Get, Ok(_)) => {}
                    (_, Err(kind)) => last_err = kind,
                }
                if !resp.keep_alive {
                    conn = None;
                }
            }
            Ok(Err(e)) => {
                last_err = e.detail();
                conn = None;
            }
            Err(_) => {
                last_err = "timed out".into();
                conn = None;
            }
        }
        if written {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Err(format!(
        "sentinel via {addr} not visible after {}s (last error: {last_err})",
        SENTINEL_TIMEOUT.as_secs()
    ))
}
