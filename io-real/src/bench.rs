//! `raftkv bench`: a closed-loop HTTP/1.1 load generator in the spirit of etcd's `benchmark`.
//!
//! Every client owns one keep-alive connection and has exactly one request outstanding; client
//! `i` talks to endpoint `i mod n`. The HTTP client is a small hand-written one (request bytes
//! built in place, responses parsed with `httparse`, `Content-Length`, chunked and
//! read-to-EOF bodies), so the generator costs little CPU next to the servers it measures.
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

use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bounds that keep a typo from turning into a denial of service or an OOM.
const MAX_CLIENTS: u64 = 1024;
const MAX_ENDPOINTS: usize = 64;
const MAX_DURATION: Duration = Duration::from_secs(3600);
const MIN_DURATION: Duration = Duration::from_millis(100);
const MAX_TOTAL: u64 = 1_000_000_000;
const MAX_KEYS: u64 = 100_000_000;
const MAX_KEY_SIZE: u64 = 1024;
const MAX_VALUE_SIZE: u64 = 1 << 20;
/// Largest response head and body accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 16 << 20;
/// How long the sentinel may take to become visible before the run reports failure.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a sentinel may stay invisible before it is written again.
const SENTINEL_REWRITE: Duration = Duration::from_secs(5);

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// raftkv: PUT/GET /v1/kv/{key}.
    Raftkv,
    /// etcd v3 JSON gateway: POST /v3/kv/put and /v3/kv/range (base64 keys and values).
    Etcd,
    /// etcd's raftexample: PUT/GET /{key} (acknowledges puts before commit; reads are local).
    Raftexample,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// raftkv: ReadIndex read; etcd: linearizable range.
    Linearizable,
    /// raftkv: ?consistency=local; etcd: serializable range.
    #[value(alias = "serializable")]
    Local,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Which HTTP API to drive.
    #[arg(long, value_enum, default_value_t = Mode::Raftkv)]
    pub mode: Mode,
    /// Comma-separated http://host:port of the nodes to load (only these are contacted);
    /// client i uses endpoint i mod n.
    #[arg(long, default_value = "http://127.0.0.1:12380")]
    pub endpoints: String,
    /// Concurrent clients, each with one keep-alive connection and one request in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=MAX_CLIENTS))]
    pub clients: u64,
    /// Run for this long (e.g. 10s, 1500ms, 2m; at most 1h). Default 10s unless --total is given.
    #[arg(long, conflicts_with = "total", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests in all (at most 10^9).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_TOTAL))]
    pub total: Option<u64>,
    /// Number of distinct keys; each request picks one uniformly at random.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_KEYS))]
    pub keys: u64,
    /// Key length in bytes (keys are zero-padded decimal numbers).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_KEY_SIZE))]
    pub key_size: u64,
    /// Value length in bytes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=MAX_VALUE_SIZE))]
    pub value_size: u64,
    /// Fraction of requests that are puts (0 = only gets, 1 = only puts).
    #[arg(long, default_value_t = 1.0, value_parser = parse_ratio)]
    pub put_ratio: f64,
    /// Consistency of gets (raftexample only has stale local reads and ignores this).
    #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
    pub consistency: Consistency,
    /// Before the measured run, put every key once (not measured).
    #[arg(long)]
    pub prefill: bool,
    /// After the run, write a sentinel through every endpoint and time until it is visible there.
    #[arg(long)]
    pub sentinel: bool,
    /// Per-request timeout in milliseconds; a timed-out connection is replaced.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub timeout_ms: u64,
    /// Progress line on stderr every this many milliseconds (0: none).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub progress_ms: u64,
    /// Print the result as one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Seed for key choice and the put/get mix (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Exit non-zero if more than this fraction of the measured requests failed (any error:
    /// a non-success status, a timeout, a broken connection). 1 never fails on the ratio.
    #[arg(long, default_value_t = 0.01, value_parser = parse_ratio)]
    pub max_error_ratio: f64,
    /// Exit non-zero if more than this many connection errors happened (refused, reset, closed
    /// mid-response): a node down or restarting makes numbers that describe nothing.
    #[arg(long, default_value_t = 0)]
    pub max_connection_errors: u64,
}

/// Why a run's numbers should not be trusted (the exit status says so).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Verdict {
    #[error("{errors} of {requests} requests failed ({:.2} %), over --max-error-ratio {max} ({})",
            100.0 * *errors as f64 / *requests as f64, kinds)]
    TooManyErrors {
        errors: u64,
        requests: u64,
        max: f64,
        kinds: String,
    },
    #[error("{count} connection errors ({kinds}), over --max-connection-errors {max}")]
    ConnectionErrors { count: u64, max: u64, kinds: String },
}

/// A connection that failed, as opposed to a request the server answered with an error.
fn is_connection_error(kind: &str) -> bool {
    kind.starts_with("connect:") || kind.starts_with("io:") || kind == "closed"
}

impl Stats {
    /// Checks the run against the thresholds; the connection check first, as the likelier cause.
    fn verdict(&self, max_error_ratio: f64, max_connection_errors: u64) -> Result<(), Verdict> {
        let list = |pick: &dyn Fn(&str) -> bool| {
            self.errors
                .iter()
                .filter(|(k, _)| pick(k))
                .map(|(k, (n, _))| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let connection: u64 = self
            .errors
            .iter()
            .filter(|(k, _)| is_connection_error(k))
            .map(|(_, (n, _))| n)
            .sum();
        if connection > max_connection_errors {
            return Err(Verdict::ConnectionErrors {
                count: connection,
                max: max_connection_errors,
                kinds: list(&is_connection_error),
            });
        }
        let errors = self.error_count();
        let requests = self.put.count + self.get.count + errors;
        if errors > 0 && errors as f64 > max_error_ratio * requests as f64 {
            return Err(Verdict::TooManyErrors {
                errors,
                requests,
                max: max_error_ratio,
                kinds: list(&|_| true),
            });
        }
        Ok(())
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (try 10s, 1500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s or m)")),
    };
    if !secs.is_finite() || secs < MIN_DURATION.as_secs_f64() || secs > MAX_DURATION.as_secs_f64() {
        return Err(format!(
            "duration {s:?} out of range ({}ms..={}s)",
            MIN_DURATION.as_millis(),
            MAX_DURATION.as_secs()
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a number between 0 and 1")),
    }
}

/// `http://host:port[/]` -> `host:port`; anything else is refused.
fn parse_endpoints(s: &str) -> Result<Vec<String>, String> {
    let eps: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| crate::cli::peer_socket_addr(e).map_err(|m| m.replace("peer URL", "endpoint")))
        .collect::<Result<_, _>>()?;
    if eps.is_empty() {
        return Err("--endpoints needs at least one http://host:port".into());
    }
    if eps.len() > MAX_ENDPOINTS {
        return Err(format!("at most {MAX_ENDPOINTS} endpoints"));
    }
    Ok(eps)
}

// ---------------------------------------------------------------------------------------------
// Histogram

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Latencies are clamped to 2^40 microseconds (12 days); the histogram never exceeds this.
const MAX_RECORDABLE_US: u64 = (1 << 40) - 1;

/// Log-linear histogram of microseconds: exact below 128, then 64 buckets per power of two.
#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    max: u64,
}

fn bucket_index(v: u64) -> usize {
    if v < 2 * SUB {
        v as usize
    } else {
        let e = 63 - v.leading_zeros() - SUB_BITS;
        (e as u64 * SUB + (v >> e)) as usize
    }
}

fn bucket_low(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < 2 * SUB {
        idx
    } else {
        let e = idx / SUB - 1;
        (idx - e * SUB) << e
    }
}

impl Histogram {
    fn record(&mut self, us: u64) {
        let us = us.min(MAX_RECORDABLE_US);
        let i = bucket_index(us);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.count += 1;
        self.sum += us as u128;
        self.max = self.max.max(us);
    }

    fn merge(&mut self, o: &Histogram) {
        if o.counts.len() > self.counts.len() {
            self.counts.resize(o.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.count += o.count;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
    }

    /// The smallest bucket upper bound covering a fraction `q` of the samples (capped at max).
    fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return (bucket_low(i + 1) - 1).min(self.max);
            }
        }
        self.max
    }

    fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "mean": (self.mean() * 10.0).round() / 10.0,
            "p50": self.quantile(0.50),
            "p90": self.quantile(0.90),
            "p99": self.quantile(0.99),
            "p99_9": self.quantile(0.999),
            "max": self.max,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client

#[derive(Debug)]
enum ReqError {
    Connect(std::io::Error),
    Io(std::io::Error),
    /// The server closed the connection before the response was complete.
    Closed,
    Timeout,
    Protocol(String),
}

impl ReqError {
    fn kind(&self) -> String {
        match self {
            ReqError::Connect(e) => format!("connect:{:?}", e.kind()),
            ReqError::Io(e) => format!("io:{:?}", e.kind()),
            ReqError::Closed => "closed".into(),
            ReqError::Timeout => "timeout".into(),
            ReqError::Protocol(_) => "bad_response".into(),
        }
    }

    fn detail(&self) -> String {
        match self {
            ReqError::Connect(e) | ReqError::Io(e) => e.to_string(),
            ReqError::Closed => "connection closed before the response was complete".into(),
            ReqError::Timeout => "no response within --timeout-ms".into(),
            ReqError::Protocol(m) => m.clone(),
        }
    }
}

struct HttpResponse {
    status: u16,
    keep_alive: bool,
}

struct HttpConn<S> {
    io: S,
    buf: Vec<u8>,
    pos: usize,
    /// Body of the last response.
    body: Vec<u8>,
}

async fn connect(addr: &str) -> Result<HttpConn<TcpStream>, ReqError> {
    let s = TcpStream::connect(addr).await.map_err(ReqError::Connect)?;
    s.set_nodelay(true).map_err(ReqError::Connect)?;
    Ok(HttpConn::new(s))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

enum Head {
    Partial,
    Done {
        len: usize,
        status: u16,
        keep_alive: bool,
        chunked: bool,
        content_length: Option<usize>,
    },
}

fn parse_head(data: &[u8]) -> Result<Head, ReqError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Head::Partial),
        Err(e) => return Err(ReqError::Protocol(format!("bad response head: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    let mut keep_alive = resp.version == Some(1);
    let mut chunked = false;
    let mut content_length = None;
    for h in resp.headers.iter() {
        let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| ReqError::Protocol(format!("bad content-length {v:?}")))?;
            if content_length.is_some_and(|c| c != n) {
                return Err(ReqError::Protocol("conflicting content-length".into()));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.split(',').any(|t| t.trim() == "chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            if v.split(',').any(|t| t.trim() == "close") {
                keep_alive = false;
            } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                keep_alive = true;
            }
        }
    }
    Ok(Head::Done {
        len,
        status,
        keep_alive,
        chunked,
        content_length,
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin> HttpConn<S> {
    fn new(io: S) -> Self {
        HttpConn {
            io,
            buf: Vec::with_capacity(16 * 1024),
            pos: 0,
            body: Vec::new(),
        }
    }

    fn avail(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    async fn read_more(&mut self) -> Result<(), ReqError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.drain(..self.pos);
            self.pos = 0;
            self.buf.reserve(16 * 1024);
        }
        let n = self
            .io
            .read_buf(&mut self.buf)
            .await
            .map_err(ReqError::Io)?;
        if n == 0 {
            return Err(ReqError::Closed);
        }
        Ok(())
    }

    async fn fill(&mut self, need: usize) -> Result<(), ReqError> {
        while self.avail().len() < need {
            self.read_more().await?;
        }
        Ok(())
    }

    /// The next CRLF-terminated line (without CRLF), consumed.
    async fn line(&mut self) -> Result<Vec<u8>, ReqError> {
        loop {
            if let Some(i) = find(self.avail(), b"\r\n") {
                let l = self.avail()[..i].to_vec();
                self.pos += i + 2;
                return Ok(l);
            }
            if self.avail().len() > 4096 {
                return Err(ReqError::Protocol("chunk line too long".into()));
            }
            self.read_more().await?;
        }
    }

    fn take_body(&mut self, n: usize) {
        self.body
            .extend_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
    }

    /// Sends one request and reads its response; the body is left in `self.body`.
    async fn roundtrip(&mut self, req: &[u8]) -> Result<HttpResponse, ReqError> {
        self.io.write_all(req).await.map_err(ReqError::Io)?;
        self.io.flush().await.map_err(ReqError::Io)?;
        self.body.clear();
        let (status, mut keep_alive, chunked, content_length) = loop {
            match parse_head(self.avail())? {
                Head::Partial => {
                    if self.avail().len() > MAX_HEAD_BYTES {
                        return Err(ReqError::Protocol("response head too large".into()));
                    }
                    self.read_more().await?;
                }
                Head::Done {
                    len,
                    status,
                    keep_alive,
                    chunked,
                    content_length,
                } => {
                    self.pos += len;
                    // Interim responses (100 Continue) precede the real one.
                    if (100..200).contains(&status) && status != 101 {
                        continue;
                    }
                    break (status, keep_alive, chunked, content_length);
                }
            }
        };
        if status == 204 || status == 304 {
            // No body, whatever the headers say.
        } else if chunked {
            loop {
                let line = self.line().await?;
                let hex = String::from_utf8_lossy(&line);
                let hex = hex.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(hex, 16)
                    .map_err(|_| ReqError::Protocol(format!("bad chunk size {hex:?}")))?;
                if size == 0 {
                    // Trailers, up to an empty line.
                    while !self.line().await?.is_empty() {}
                    break;
                }
                if self.body.len() + size > MAX_BODY_BYTES {
                    return Err(ReqError::Protocol("response body too large".into()));
                }
                self.fill(size + 2).await?;
                self.take_body(size);
                if &self.avail()[..2] != b"\r\n" {
                    return Err(ReqError::Protocol("chunk not followed by CRLF".into()));
                }
                self.pos += 2;
            }
        } else if let Some(n) = content_length {
            if n > MAX_BODY_BYTES {
                return Err(ReqError::Protocol("response body too large".into()));
            }
            self.fill(n).await?;
            self.take_body(n);
        } else {
            // No length: the body runs to the end of the connection.
            keep_alive = false;
            loop {
                if self.avail().len() > MAX_BODY_BYTES {
                    return Err(ReqError::Protocol("response body too large".into()));
                }
                match self.read_more().await {
                    Ok(()) => {}
                    Err(ReqError::Closed) => break,
                    Err(e) => return Err(e),
                }
            }
            let n = self.avail().len();
            self.take_body(n);
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(HttpResponse { status, keep_alive })
    }
}

// ---------------------------------------------------------------------------------------------
// Requests of each dialect

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Op {
    Put,
    Get,
}

/// What a request needs besides the key.
struct Dialect {
    mode: Mode,
    consistency: Consistency,
    host: String,
}

impl Dialect {
    /// Appends the request for `op` on `key` to `out`. `value_b64` is `value` in base64 (etcd).
    fn request(&self, out: &mut Vec<u8>, op: Op, key: &str, value: &[u8], value_b64: &str) {
        let host = &self.host;
        match (self.mode, op) {
            (Mode::Raftkv | Mode::Raftexample, Op::Put) => {
                let path = if self.mode == Mode::Raftkv {
                    "/v1/kv/"
                } else {
                    "/"
                };
                let _ = write!(
                    Bytes(out),
                    "PUT {path}{key} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
                    value.len()
                );
                out.extend_from_slice(value);
            }
            (Mode::Raftkv, Op::Get) => {
                let q = match self.consistency {
                    Consistency::Linearizable => "",
                    Consistency::Local => "?consistency=local",
                };
                let _ = write!(
                    Bytes(out),
                    "GET /v1/kv/{key}{q} HTTP/1.1\r\nHost: {host}\r\n\r\n"
                );
            }
            (Mode::Raftexample, Op::Get) => {
                let _ = write!(Bytes(out), "GET /{key} HTTP/1.1\r\nHost: {host}\r\n\r\n");
            }
            (Mode::Etcd, _) => {
                let k = base64(key.as_bytes());
                let (path, body) = match op {
                    Op::Put => (
                        "put",
                        format!("{{\"key\":\"{k}\",\"value\":\"{value_b64}\"}}"),
                    ),
                    Op::Get => match self.consistency {
                        Consistency::Linearizable => ("range", format!("{{\"key\":\"{k}\"}}")),
                        Consistency::Local => (
                            "range",
                            format!("{{\"key\":\"{k}\",\"serializable\":true}}"),
                        ),
                    },
                };
                let _ = write!(
                    Bytes(out),
                    "POST /v3/kv/{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        }
    }

    /// Ok(true): success with a value, Ok(false): success, key absent; Err: the error kind.
    fn classify(&self, op: Op, status: u16, body: &[u8]) -> Result<bool, String> {
        match (self.mode, op, status) {
            (Mode::Etcd, Op::Get, 200) => Ok(find(body, b"\"kvs\"").is_some()),
            (Mode::Etcd, Op::Put, 200) => Ok(true),
            (Mode::Raftkv | Mode::Raftexample, Op::Put, 200..=299) => Ok(true),
            (Mode::Raftkv | Mode::Raftexample, Op::Get, 200) => Ok(true),
            (Mode::Raftkv | Mode::Raftexample, Op::Get, 404) => Ok(false),
            _ => Err(format!("http_{status}")),
        }
    }

    /// Whether a get's body holds `value` (sentinel checks).
    fn body_has_value(&self, body: &[u8], value: &[u8]) -> bool {
        match self.mode {
            Mode::Etcd => {
                find(body, format!("\"value\":\"{}\"", base64(value)).as_bytes()).is_some()
            }
            Mode::Raftkv | Mode::Raftexample => body == value,
        }
    }
}

/// `fmt::Write` into a byte vector.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The load

/// xorshift64*: fast, and good enough to pick keys.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds diverge and 0 is fine.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One measured (or prefill) phase.
struct Phase {
    duration: Option<Duration>,
    total: Option<u64>,
    put_ratio: f64,
    /// Keys in order 0, 1, 2, ... (ticket number mod keys) instead of at random.
    sequential: bool,
    progress: Option<Duration>,
    label: &'static str,
}

struct Config {
    endpoints: Vec<String>,
    dialects: Vec<Dialect>,
    clients: u64,
    keys: u64,
    key_size: usize,
    value: Vec<u8>,
    value_b64: String,
    timeout: Duration,
    seed: u64,
}

#[derive(Default)]
struct Shared {
    tickets: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
}

#[derive(Default)]
struct Stats {
    put: Histogram,
    get: Histogram,
    not_found: u64,
    /// kind -> (count, first detail seen).
    errors: BTreeMap<String, (u64, String)>,
}

impl Stats {
    fn error(&mut self, kind: String, detail: impl FnOnce() -> String) {
        self.errors.entry(kind).or_insert_with(|| (0, detail())).0 += 1;
    }

    fn merge(&mut self, o: Stats) {
        self.put.merge(&o.put);
        self.get.merge(&o.get);
        self.not_found += o.not_found;
        for (k, (n, d)) in o.errors {
            self.errors.entry(k).or_insert((0, d)).0 += n;
        }
    }

    fn error_count(&self) -> u64 {
        self.errors.values().map(|(n, _)| n).sum()
    }
}

struct PhaseResult {
    stats: Stats,
    elapsed: Duration,
}

async fn client(
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
    let mut rng = Rng::new(cfg.seed ^ id.wrapping_mul(0xA076_1D64_78BD_642F));
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
                let pause = Instant::now() + Duration::from_millis(50);
                tokio::time::sleep_until(deadline.map_or(pause, |d| d.min(pause)).into()).await;
                continue;
            }
        }
        let c = conn.as_mut().expect("connected");
        let op = if phase.put_ratio >= 1.0 || rng.unit() < phase.put_ratio {
            Op::Put
        } else {
            Op::Get
        };
        let k = if phase.sequential {
            ticket % cfg.keys
        } else {
            rng.below(cfg.keys)
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

async fn run_phase(cfg: &Arc<Config>, phase: Phase) -> PhaseResult {
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
async fn sentinel(
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

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let endpoints = parse_endpoints(&args.endpoints).map_err(anyhow::Error::msg)?;
    let key_digits = (args.keys - 1).max(1).ilog10() as u64 + 1;
    if key_digits > args.key_size {
        anyhow::bail!(
            "--keys {} needs keys of at least {key_digits} bytes (--key-size {})",
            args.keys,
            args.key_size
        );
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
        let mut r = Rng::new(seed ^ 0x5555);
        (0..args.value_size)
            .map(|_| b'a' + r.below(26) as u8)
            .collect()
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
        .build()?;
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
            let nonce = Rng::new(seed ^ 0xABCD).next();
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
            anyhow::bail!("no request succeeded ({} errors)", s.error_count());
        }
        s.verdict(args.max_error_ratio, args.max_connection_errors)?;
        anyhow::Ok(())
    })
}

fn report(
    args: &BenchArgs,
    endpoints: &[String],
    seed: u64,
    prefill: Option<&PhaseResult>,
    main: &PhaseResult,
    sentinel: Option<Result<Duration, String>>,
) {
    let s = &main.stats;
    let secs = main.elapsed.as_secs_f64();
    let ok = s.put.count + s.get.count;
    let ops = ok as f64 / secs;
    let mut all = s.put.clone();
    all.merge(&s.get);
    let committed = match &sentinel {
        Some(Ok(d)) => Some(s.put.count as f64 / (secs + d.as_secs_f64())),
        _ => None,
    };
    let mode = format!("{:?}", args.mode).to_lowercase();
    let consistency = match (args.mode, args.consistency) {
        (Mode::Raftexample, _) => "local (stale; raftexample has no other read)",
        (Mode::Etcd, Consistency::Local) => "serializable",
        (_, Consistency::Local) => "local",
        (_, Consistency::Linearizable) => "linearizable",
    };
    if args.json {
        let errors: serde_json::Map<String, serde_json::Value> = s
            .errors
            .iter()
            .map(|(k, (n, _))| (k.clone(), (*n).into()))
            .collect();
        let error_examples: serde_json::Map<String, serde_json::Value> = s
            .errors
            .iter()
            .map(|(k, (_, d))| (k.clone(), d.clone().into()))
            .collect();
        let v = serde_json::json!({
            "mode": mode,
            "endpoints": endpoints.iter().map(|e| format!("http://{e}")).collect::<Vec<_>>(),
            "clients": args.clients,
            "keys": args.keys,
            "key_size": args.key_size,
            "value_size": args.value_size,
            "put_ratio": args.put_ratio,
            "consistency": consistency,
            "seed": seed,
            "elapsed_s": (secs * 1000.0).round() / 1000.0,
            "ok": ok,
            "puts": s.put.count,
            "gets": s.get.count,
            "not_found": s.not_found,
            "errors_total": s.error_count(),
            "errors": errors,
            "error_examples": error_examples,
            "ops_per_sec": (ops * 10.0).round() / 10.0,
            "generator_cpu_s": (own_cpu_seconds() * 1000.0).round() / 1000.0,
            "latency_us": {"all": all.json(), "put": s.put.json(), "get": s.get.json()},
            "prefill": prefill.map(|p| serde_json::json!({
                "puts": p.stats.put.count,
                "errors_total": p.stats.error_count(),
                "elapsed_s": p.elapsed.as_secs_f64(),
            })),
            "sentinel": sentinel.as_ref().map(|r| match r {
                Ok(d) => serde_json::json!({
                    "visible_after_ms": (d.as_secs_f64() * 1e4).round() / 10.0,
                    "committed_puts_per_sec": committed.map(|c| (c * 10.0).round() / 10.0),
                }),
                Err(e) => serde_json::json!({"error": e}),
            }),
        });
        println!("{v}");
        return;
    }
    println!(
        "raftkv bench: mode {mode}, {} endpoint(s), {} clients, {} keys of {} B, values of {} B, put ratio {}, reads {consistency}",
        endpoints.len(),
        args.clients,
        args.keys,
        args.key_size,
        args.value_size,
        args.put_ratio
    );
    println!(
        "{ok} ok in {secs:.2}s: {ops:.1} ops/s  (puts {}, gets {}, of which not found {}), errors {}",
        s.put.count,
        s.get.count,
        s.not_found,
        s.error_count()
    );
    let ms = |us: u64| us as f64 / 1000.0;
    if ok > 0 {
        println!(
            "latency ms  {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "count", "mean", "p50", "p90", "p99", "p99.9", "max"
        );
    }
    for (name, h) in [("put", &s.put), ("get", &s.get), ("all", &all)] {
        if h.count == 0 || (name == "all" && (s.put.count == 0 || s.get.count == 0)) {
            continue;
        }
        println!(
            "  {name:<9} {:>9} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            h.count,
            h.mean() / 1000.0,
            ms(h.quantile(0.5)),
            ms(h.quantile(0.9)),
            ms(h.quantile(0.99)),
            ms(h.quantile(0.999)),
            ms(h.max)
        );
    }
    for (kind, (n, detail)) in &s.errors {
        println!("error {kind}: {n} (e.g. {detail:?})");
    }
    println!("load generator CPU: {:.2}s", own_cpu_seconds());
    match (&sentinel, committed) {
        (Some(Ok(d)), Some(c)) => println!(
            "sentinel visible on every endpoint {:.1} ms after the load stopped: committed rate {} puts / {:.3}s = {c:.1} puts/s",
            d.as_secs_f64() * 1000.0,
            s.put.count,
            secs + d.as_secs_f64()
        ),
        (Some(Err(e)), _) => println!("sentinel: {e}"),
        _ => {}
    }
}

/// CPU time (user + system) this process has used so far, so a run can show what the load
/// generator itself cost on a shared machine.
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ok: u64, errors: &[(&str, u64)]) -> Stats {
        let mut s = Stats::default();
        for _ in 0..ok {
            s.put.record(1000);
        }
        for (kind, n) in errors {
            for _ in 0..*n {
                s.error(kind.to_string(), || "detail".into());
            }
        }
        s
    }

    #[test]
    fn a_run_fails_on_connection_errors_or_too_many_errors() {
        assert_eq!(stats(1000, &[]).verdict(0.01, 0), Ok(()));
        // 10 of 1010 is under 1 %; 11 of 1011 is over.
        assert_eq!(stats(1000, &[("http_503", 10)]).verdict(0.01, 0), Ok(()));
        let v = stats(1000, &[("http_503", 11)])
            .verdict(0.01, 0)
            .unwrap_err();
        assert!(matches!(
            v,
            Verdict::TooManyErrors {
                errors: 11,
                requests: 1011,
                ..
            }
        ));
        assert!(v.to_string().contains("http_503 11"), "{v}");
        // Any connection error, by default (the run: 1228 of them, exit status 0).
        let v = stats(100_000, &[("connect:ConnectionRefused", 1228)])
            .verdict(0.01, 0)
            .unwrap_err();
        assert_eq!(
            v.to_string(),
            "1228 connection errors (connect:ConnectionRefused 1228), over --max-connection-errors 0"
        );
        for kind in ["io:ConnectionReset", "closed"] {
            assert!(stats(100, &[(kind, 1)]).verdict(1.0, 0).is_err(), "{kind}");
            assert_eq!(stats(100, &[(kind, 1)]).verdict(1.0, 1), Ok(()), "{kind}");
        }
        // A timeout is an error, not a connection error.
        assert_eq!(stats(100, &[("timeout", 1)]).verdict(0.01, 0), Ok(()));
        assert!(stats(100, &[("timeout", 2)]).verdict(0.01, 0).is_err());
    }

    #[test]
    fn histogram_buckets_are_contiguous() {
        let mut prev = None;
        for v in 0..100_000u64 {
            let i = bucket_index(v);
            assert!(bucket_low(i) <= v && v < bucket_low(i + 1), "{v}");
            if let Some(p) = prev {
                assert!(i == p || i == p + 1, "{v}");
            }
            prev = Some(i);
        }
        for v in [1u64 << 20, (1 << 30) + 12345, MAX_RECORDABLE_US] {
            let i = bucket_index(v);
            assert!(bucket_low(i) <= v && v < bucket_low(i + 1), "{v}");
            // Relative error of a bucket under 1/64.
            assert!(
                (bucket_low(i + 1) - bucket_low(i)) as f64 / bucket_low(i) as f64 <= 1.0 / 64.0
            );
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() / want as f64 <= 0.02;
        assert!(close(h.quantile(0.5), 5000), "{}", h.quantile(0.5));
        assert!(close(h.quantile(0.99), 9900), "{}", h.quantile(0.99));
        assert_eq!(h.quantile(1.0), 10_000);
        assert_eq!(h.max, 10_000);
        let mut g = Histogram::default();
        g.record(50);
        g.merge(&h);
        assert_eq!(g.count, 10_001);
        assert!(g.counts.len() < 1024);
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn endpoints_and_options() {
        assert_eq!(
            parse_endpoints("http://127.0.0.1:1, http://localhost:2/").unwrap(),
            vec!["127.0.0.1:1", "localhost:2"]
        );
        for bad in [
            "",
            "127.0.0.1:1",
            "https://h:1",
            "http://h:1/v1",
            "http://h",
        ] {
            assert!(parse_endpoints(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        for bad in ["0", "1ms", "2h", "61m", "abc", "-1s", "1e9"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_ratio("0.5").is_ok());
        assert!(parse_ratio("1.5").is_err() && parse_ratio("NaN").is_err());
    }

    #[test]
    fn requests_of_each_dialect() {
        let d = |mode, consistency| Dialect {
            mode,
            consistency,
            host: "h:1".into(),
        };
        let req = |d: &Dialect, op| {
            let mut v = Vec::new();
            d.request(&mut v, op, "0042", b"val", &base64(b"val"));
            String::from_utf8(v).unwrap()
        };
        let lin = Consistency::Linearizable;
        let local = Consistency::Local;
        assert_eq!(
            req(&d(Mode::Raftkv, lin), Op::Put),
            "PUT /v1/kv/0042 HTTP/1.1\r\nHost: h:1\r\nContent-Length: 3\r\n\r\nval"
        );
        assert_eq!(
            req(&d(Mode::Raftkv, local), Op::Get),
            "GET /v1/kv/0042?consistency=local HTTP/1.1\r\nHost: h:1\r\n\r\n"
        );
        assert_eq!(
            req(&d(Mode::Raftexample, lin), Op::Get),
            "GET /0042 HTTP/1.1\r\nHost: h:1\r\n\r\n"
        );
        let body = "{\"key\":\"MDA0Mg==\",\"serializable\":true}";
        assert_eq!(
            req(&d(Mode::Etcd, local), Op::Get),
            format!("POST /v3/kv/range HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        );
        assert!(req(&d(Mode::Etcd, lin), Op::Put)
            .ends_with("{\"key\":\"MDA0Mg==\",\"value\":\"dmFs\"}"));
        let e = d(Mode::Etcd, lin);
        assert_eq!(e.classify(Op::Get, 200, b"{\"header\":{}}"), Ok(false));
        assert_eq!(
            e.classify(Op::Get, 200, b"{\"kvs\":[{\"value\":\"dmFs\"}]}"),
            Ok(true)
        );
        assert!(e.body_has_value(b"{\"kvs\":[{\"key\":\"x\",\"value\":\"dmFs\"}]}", b"val"));
        assert_eq!(e.classify(Op::Put, 503, b""), Err("http_503".into()));
        assert_eq!(d(Mode::Raftkv, lin).classify(Op::Get, 404, b""), Ok(false));
    }

    /// Serves canned response bytes for each request the client sends.
    async fn exchange(responses: &'static [u8], requests: usize) -> Vec<(u16, bool, Vec<u8>)> {
        let (a, b) = tokio::io::duplex(64);
        let (mut rx, mut tx) = tokio::io::split(b);
        // Drain what the client writes so it never blocks.
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = rx.read_to_end(&mut sink).await;
        });
        let server = tokio::spawn(async move {
            // Dribble the responses out in small pieces to exercise partial reads.
            for chunk in responses.chunks(7) {
                tx.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            // Closing ends a body that runs to EOF.
            tx.shutdown().await.unwrap();
        });
        let mut c = HttpConn::new(a);
        let mut out = Vec::new();
        for _ in 0..requests {
            match c.roundtrip(b"GET / HTTP/1.1\r\n\r\n").await {
                Ok(r) => out.push((r.status, r.keep_alive, c.body.clone())),
                Err(e) => panic!("{e:?}"),
            }
        }
        server.await.unwrap();
        drop(c);
        drain.await.unwrap();
        out
    }

    #[tokio::test]
    async fn parses_length_chunked_and_no_body_responses() {
        let got = exchange(
            b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
              HTTP/1.1 100 Continue\r\n\r\n\
              HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n\
              HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno\n",
            4,
        )
        .await;
        assert_eq!(
            got,
            vec![
                (204, true, b"".to_vec()),
                (200, true, b"hello".to_vec()),
                (200, true, b"abcde".to_vec()),
                (404, false, b"no\n".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn body_to_eof_and_truncation() {
        let got = exchange(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", 1).await;
        assert_eq!(got, vec![(200, false, b"until the end".to_vec())]);

        let (a, mut b) = tokio::io::duplex(1024);
        b.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
            .await
            .unwrap();
        drop(b);
        let mut c = HttpConn::new(a);
        assert!(matches!(
            c.roundtrip(b"GET / HTTP/1.1\r\n\r\n").await,
            Err(ReqError::Closed | ReqError::Io(_))
        ));
    }
}
