//! The generator's command line: `raftkv bench`'s flags, their bounds, and the parsers of
//! durations, ratios and endpoint URLs.

use clap::{Args, ValueEnum};
use std::time::Duration;

/// Upper bounds that keep a typo from turning into a denial of service or an OOM.
pub(crate) const MAX_CLIENTS: u64 = 1024;
pub(crate) const MAX_ENDPOINTS: usize = 64;
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(3600);
pub(crate) const MIN_DURATION: Duration = Duration::from_millis(100);
pub(crate) const MAX_TOTAL: u64 = 1_000_000_000;
pub(crate) const MAX_KEYS: u64 = 100_000_000;
pub(crate) const MAX_KEY_SIZE: u64 = 1024;
pub(crate) const MAX_VALUE_SIZE: u64 = 1 << 20;

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

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
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

pub(crate) fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a number between 0 and 1")),
    }
}

/// `http://host:port[/]` -> `host:port`; anything else is refused.
pub(crate) fn parse_endpoints(s: &str) -> Result<Vec<String>, String> {
    let eps: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(endpoint_addr)
        .collect::<Result<_, _>>()?;
    if eps.is_empty() {
        return Err("--endpoints needs at least one http://host:port".into());
    }
    if eps.len() > MAX_ENDPOINTS {
        return Err(format!("at most {MAX_ENDPOINTS} endpoints"));
    }
    Ok(eps)
}

/// Endpoint URL -> "host:port". Accepts `http://host:port` with an optional trailing slash,
/// exactly what a node's `--cluster` accepts for a peer URL.
pub(crate) fn endpoint_addr(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("endpoint {url:?} must start with http://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        return Err(format!("endpoint {url:?} must look like http://host:port"));
    }
    let (host, port) = rest.rsplit_once(':').expect("contains ':'");
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("endpoint {url:?} has a bad host or port"));
    }
    Ok(rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// `raftkv bench`'s flags as clap parses them under the subcommand.
    #[derive(clap::Parser, Debug)]
    struct Bench {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(argv: &[&str]) -> Result<BenchArgs, clap::Error> {
        use clap::Parser;
        Bench::try_parse_from(std::iter::once("bench").chain(argv.iter().copied())).map(|b| b.args)
    }

    #[test]
    fn flag_defaults_are_the_documented_ones() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.mode, Mode::Raftkv);
        assert_eq!(a.endpoints, "http://127.0.0.1:12380");
        assert_eq!(
            (a.clients, a.keys, a.key_size, a.value_size),
            (16, 1000, 10, 100)
        );
        assert_eq!(a.put_ratio, 1.0);
        assert_eq!(a.consistency, Consistency::Linearizable);
        assert_eq!((a.duration, a.total), (None, None));
        assert_eq!((a.timeout_ms, a.progress_ms), (10_000, 1000));
        assert_eq!(a.max_error_ratio, 0.01);
        assert_eq!(a.max_connection_errors, 0);
        assert!(!a.json && !a.prefill && !a.sentinel && a.seed.is_none());
    }

    #[test]
    fn flags_the_scripts_pass_parse() {
        // bench/compare.sh, bench/snapshot_p99.sh and bench/snapshot_scale.py use these.
        let a = parse(&[
            "--mode",
            "etcd",
            "--endpoints",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--clients",
            "64",
            "--duration",
            "10s",
            "--keys",
            "100000",
            "--key-size",
            "16",
            "--value-size",
            "256",
            "--put-ratio",
            "0.5",
            "--consistency",
            "serializable",
            "--progress-ms",
            "2000",
            "--json",
            "--prefill",
            "--sentinel",
            "--seed",
            "7",
            "--max-error-ratio",
            "1",
            "--max-connection-errors",
            "1000000000",
        ])
        .unwrap();
        assert_eq!(a.mode, Mode::Etcd);
        assert_eq!(
            a.consistency,
            Consistency::Local,
            "serializable is local's alias"
        );
        assert_eq!(a.duration, Some(Duration::from_secs(10)));
        assert_eq!(
            (a.clients, a.keys, a.key_size, a.value_size),
            (64, 100_000, 16, 256)
        );
        assert_eq!((a.put_ratio, a.max_error_ratio), (0.5, 1.0));
        assert_eq!(a.max_connection_errors, 1_000_000_000);
        assert_eq!(a.seed, Some(7));
        assert!(a.json && a.prefill && a.sentinel);
        assert_eq!(
            parse(&["--mode", "raftexample"]).unwrap().mode,
            Mode::Raftexample
        );
        assert_eq!(parse(&["--total", "5"]).unwrap().total, Some(5));
    }

    #[test]
    fn flags_out_of_bounds_are_refused() {
        for bad in [
            &["--clients", "0"][..],
            &["--clients", "1025"],
            &["--duration", "1s", "--total", "10"],
            &["--total", "0"],
            &["--keys", "0"],
            &["--key-size", "1025"],
            &["--value-size", "1048577"],
            &["--put-ratio", "2"],
            &["--max-error-ratio", "-0.1"],
            &["--timeout-ms", "0"],
            &["--mode", "redis"],
            &["--consistency", "eventual"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn endpoint_errors_name_the_endpoint() {
        let e = parse_endpoints("127.0.0.1:1").unwrap_err();
        assert_eq!(e, "endpoint \"127.0.0.1:1\" must start with http://");
        let e = parse_endpoints("http://h:99999").unwrap_err();
        assert_eq!(e, "endpoint \"http://h:99999\" has a bad host or port");
        let many = vec!["http://h:1"; MAX_ENDPOINTS + 1].join(",");
        assert_eq!(parse_endpoints(&many).unwrap_err(), "at most 64 endpoints");
        assert_eq!(
            parse_endpoints(&many[..many.len() - 11]).unwrap().len(),
            MAX_ENDPOINTS
        );
    }
}
