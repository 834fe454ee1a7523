//! Command-line interface: raftexample-compatible flags plus what a real deployment needs.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "raftkv",
    version,
    about = "A Raft-replicated key-value store (raft-rs, etcd raftexample lineage)."
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one node (the default when no subcommand is given).
    Run(RunArgs),
    /// Start a local cluster of N nodes as child processes (ports 12379/12380, 22379/22380, ...).
    Cluster(ClusterArgs),
    /// HTTP load generator for raftkv, etcd's v3 gateway or raftexample (like etcd's `benchmark`).
    Bench(raftkv_loadgen::BenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// A TOML file of flags (keys are flag names, e.g. `data-dir = "/var/lib/raftkv"`), as
    /// etcd's --config-file. Command line over environment (RAFTKV_*) over file over defaults.
    #[arg(long, env = "RAFTKV_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// This node's id: its 1-based position in --cluster.
    #[arg(long, env = "RAFTKV_ID", default_value_t = 1)]
    pub id: u64,
    /// Comma-separated peer URLs of every member; member i+1 listens for peers on the i-th URL.
    #[arg(long, env = "RAFTKV_CLUSTER", default_value = "http://127.0.0.1:12379")]
    pub cluster: String,
    /// Port of the HTTP key-value API.
    #[arg(long, env = "RAFTKV_PORT", default_value_t = 12380)]
    pub port: u16,
    /// Address the HTTP API binds to.
    #[arg(long, env = "RAFTKV_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Join a running cluster (after `POST /{id}` on a member) instead of bootstrapping one.
    #[arg(long, env = "RAFTKV_JOIN")]
    pub join: bool,
    /// Data directory (WAL segments and snapshot files). Default: ./raftkv-{id}.
    #[arg(long, env = "RAFTKV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Snapshot after this many applied entries (raftexample's snapCount), or sooner, once the
    /// entries applied since the last snapshot hold more than a quarter of the state's key and
    /// value bytes (at least 1 MiB): memory stays within a small multiple of the state.
    #[arg(long, env = "RAFTKV_SNAP_COUNT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snap_count: u64,
    /// Entries kept in memory below a snapshot for slow followers (at most a quarter of the
    /// state's bytes, or 1 MiB, whichever is more).
    #[arg(long, env = "RAFTKV_CATCH_UP_ENTRIES", default_value_t = 5_000)]
    pub catch_up_entries: u64,
    /// Snapshot files kept on disk (with the WAL needed to recover from each).
    #[arg(long, env = "RAFTKV_MAX_SNAPSHOTS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub max_snapshots: u64,
    /// Raft tick interval in milliseconds.
    #[arg(long, env = "RAFTKV_TICK_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub tick_ms: u64,
    /// Election timeout in ticks (randomised in [n, 2n)).
    #[arg(long, env = "RAFTKV_ELECTION_TICKS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=1000))]
    pub election_ticks: u64,
    /// Heartbeat interval in ticks.
    #[arg(long, env = "RAFTKV_HEARTBEAT_TICKS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub heartbeat_ticks: u64,
    /// WAL segment size (preallocated).
    #[arg(long, env = "RAFTKV_SEGMENT_SIZE_BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(4096..))]
    pub segment_size_bytes: u64,
    /// Zero-fill the WAL's next segment in the background, so a cut renames it into place and
    /// the WAL's syncs never allocate (etcd's file pipeline). `false`: each cut creates and
    /// preallocates its segment (posix_fallocate) on the WAL's own lane.
    #[arg(long, env = "RAFTKV_WAL_SPARE_SEGMENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub wal_spare_segments: bool,
    /// Largest HTTP request body accepted (larger bodies get 413, from their Content-Length
    /// before they are read).
    #[arg(long, env = "RAFTKV_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Largest peer frame accepted or sent: an append batch, or a chunk of a snapshot file
    /// (snapshots stream in chunks of at most 1 MiB, so this does not bound the state's size).
    #[arg(long, env = "RAFTKV_MAX_FRAME_BYTES", default_value_t = 64 << 20)]
    pub max_frame_bytes: usize,
    /// Deadline for a client request once proposed or forwarded, after which its outcome is
    /// reported unknown (504). One that finds no leader is answered 503 (not applied) after at
    /// most two election timeouts.
    #[arg(long, env = "RAFTKV_REQUEST_TIMEOUT_MS", default_value_t = 5_000)]
    pub request_timeout_ms: u64,
    /// Cluster token: nodes only talk to peers with the same token.
    #[arg(long, env = "RAFTKV_CLUSTER_TOKEN", default_value = "raftkv")]
    pub cluster_token: String,
    /// Threads for the HTTP API and peer connections. 1 (the default) runs them on the event
    /// loop's own thread, which is fastest when cores are few; more spread HTTP parsing out.
    #[arg(long, env = "RAFTKV_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: u64,
    /// Messages queued per peer before new ones are dropped.
    #[arg(long, env = "RAFTKV_PEER_QUEUE_LEN", default_value_t = 4096)]
    pub peer_queue_len: usize,
}

/// Most nodes `raftkv cluster` runs: ports follow raftexample ({i}2379 for peers, {i}2380 for the
/// API), and a seventh node's 72379 is no port.
pub const MAX_CLUSTER_NODES: u64 = 6;

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Number of nodes, 1 to 6 (ports follow raftexample: {i}2379 for peers, {i}2380 for the API).
    #[arg(long, default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=MAX_CLUSTER_NODES))]
    pub nodes: u64,
    /// Directory under which each node's data directory (raftkv-{id}) is created.
    #[arg(long, default_value = ".")]
    pub data_root: PathBuf,
    /// Extra flags passed to every node (e.g. --snap-count 100).
    #[arg(last = true)]
    pub node_args: Vec<String>,
}

/// Why the command line could not be turned into a [`Cli`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// clap's own (usage, help, version): it knows how to print and exit.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {} is not TOML: {error}", path.display())]
    Parse {
        path: PathBuf,
        error: Box<toml::de::Error>,
    },
    #[error("config file {}: unknown key {key:?} (keys are the flag names: {known})", path.display())]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error("config file {}: {key} must be a string, number or boolean{}", path.display(),
            if key == "cluster" { " (or a list of peer URLs)" } else { "" })]
    BadValue { path: PathBuf, key: String },
}

/// Parses the command line, with `RAFTKV_*` environment variables (clap's `env`) and, when
/// `--config-file` (or `RAFTKV_CONFIG_FILE`) names one, a TOML file of flags under them: the
/// file's values become the flags' defaults, so clap's own order decides, command line over
/// environment over file over built-in default.
pub fn parse_from<I, T>(args: I) -> Result<Cli, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let first = Cli::try_parse_from(&args)?;
    let path = match &first.command {
        Some(Command::Run(r)) => r.config_file.clone(),
        None => first.run.config_file.clone(),
        Some(_) => None,
    };
    let Some(path) = path else {
        return Ok(first);
    };
    let defaults = read_config_file(&path)?;
    let mut cmd = Cli::command();
    cmd = with_defaults(cmd, &defaults);
    cmd = cmd.mut_subcommand("run", |run| with_defaults(run, &defaults));
    let matches = cmd.try_get_matches_from(&args)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// Node flags a config file may set: every flag of `raftkv run`, by its long name.
fn file_keys() -> Vec<String> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let run = cmd.find_subcommand("run").expect("run subcommand");
    run.get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "config-file" && *l != "help")
        .map(str::to_string)
        .collect()
}

/// (flag long name, value) pairs from a TOML file whose keys are flag names (`data-dir`, or
/// `data_dir` as TOML writers prefer).
fn read_config_file(path: &std::path::Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let table: toml::Table = text.parse().map_err(|error| ConfigError::Parse {
        path: path.to_path_buf(),
        error: Box::new(error),
    })?;
    let known = file_keys();
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        if !known.contains(&flag) {
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key,
                known: known.join(", "),
            });
        }
        let bad = || ConfigError::BadValue {
            path: path.to_path_buf(),
            key: flag.clone(),
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(urls) if flag == "cluster" => urls
                .into_iter()
                .map(|u| u.as_str().map(str::to_string).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            _ => return Err(bad()),
        };
        out.push((flag, value));
    }
    Ok(out)
}

fn with_defaults(mut cmd: clap::Command, defaults: &[(String, String)]) -> clap::Command {
    for (flag, value) in defaults {
        let id = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()))
            .map(|a| a.get_id().clone());
        if let Some(id) = id {
            let value = value.clone();
            cmd = cmd.mut_arg(id, move |a| a.default_value(value));
        }
    }
    cmd
}

/// A peer URL that is not `http://host:port`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerUrlError {
    #[error("peer URL {0:?} must start with http://")]
    NotHttp(String),
    #[error("peer URL {0:?} must look like http://host:port")]
    NotHostPort(String),
    #[error("peer URL {0:?} has a bad host or port")]
    BadHostOrPort(String),
}

/// Peer URL -> "host:port". Accepts `http://host:port` with an optional trailing slash.
pub fn peer_socket_addr(url: &str) -> Result<String, PeerUrlError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| PeerUrlError::NotHttp(url.to_string()))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        return Err(PeerUrlError::NotHostPort(url.to_string()));
    }
    let (host, port) = rest.rsplit_once(':').expect("contains ':'");
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(PeerUrlError::BadHostOrPort(url.to_string()));
    }
    Ok(rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(cli: Cli) -> RunArgs {
        match cli.command {
            Some(Command::Run(r)) => r,
            None => cli.run,
            Some(other) => panic!("not a node command: {other:?}"),
        }
    }

    /// The one test that sets RAFTKV_* variables (the environment is the process's): the others
    /// parse only flags no variable here names.
    #[test]
    fn command_line_over_environment_over_config_file_over_defaults() {
        let dir = std::env::temp_dir().join(format!("raftkv-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("raftkv.toml");
        std::fs::write(
            &file,
            "snap-count = 100\ntick-ms = 50\nport = 1111\njoin = true\n\
             cluster = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\n\
             data_dir = \"/from/file\"\n",
        )
        .unwrap();
        std::env::set_var("RAFTKV_TICK_MS", "60");
        std::env::set_var("RAFTKV_PORT", "2222");
        for sub in [&[][..], &["run"][..]] {
            let mut argv = vec!["raftkv"];
            argv.extend_from_slice(sub);
            argv.extend(["--config-file", file.to_str().unwrap(), "--port", "3333"]);
            let a = run_args(parse_from(&argv).unwrap());
            assert_eq!(a.snap_count, 100, "file over default");
            assert_eq!(a.tick_ms, 60, "environment over file");
            assert_eq!(a.port, 3333, "command line over environment");
            assert!(a.join, "a boolean from the file");
            assert_eq!(a.cluster, "http://127.0.0.1:1,http://127.0.0.1:2");
            assert_eq!(a.data_dir, Some(PathBuf::from("/from/file")), "key with _");
            assert_eq!(a.election_ticks, 10, "built-in default");
        }
        // The file named by the environment.
        std::env::set_var("RAFTKV_CONFIG_FILE", &file);
        let a = run_args(parse_from(["raftkv"]).unwrap());
        assert_eq!((a.snap_count, a.tick_ms, a.port), (100, 60, 2222));
        std::env::remove_var("RAFTKV_CONFIG_FILE");
        // Without a file: environment over default.
        let a = run_args(parse_from(["raftkv"]).unwrap());
        assert_eq!((a.snap_count, a.tick_ms, a.port), (10_000, 60, 2222));
        assert!(!a.join);
        std::env::set_var("RAFTKV_JOIN", "true");
        assert!(
            run_args(parse_from(["raftkv"]).unwrap()).join,
            "a boolean flag's variable"
        );
        std::env::remove_var("RAFTKV_JOIN");
        std::env::remove_var("RAFTKV_TICK_MS");
        std::env::remove_var("RAFTKV_PORT");
        // A value from the file is checked like one from the command line.
        std::fs::write(&file, "tick-ms = 0\n").unwrap();
        let argv = ["raftkv", "--config-file", file.to_str().unwrap()];
        assert!(matches!(parse_from(argv), Err(ConfigError::Clap(_))));
        std::fs::write(&file, "no-such-flag = 1\n").unwrap();
        let e = parse_from(argv).unwrap_err();
        assert!(matches!(e, ConfigError::UnknownKey { .. }), "{e}");
        assert!(e.to_string().contains("\"no-such-flag\""), "{e}");
        std::fs::write(&file, "port = [1]\n").unwrap();
        assert!(matches!(
            parse_from(argv).unwrap_err(),
            ConfigError::BadValue { .. }
        ));
        let missing = dir.join("missing.toml");
        let e = parse_from(["raftkv", "--config-file", missing.to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().starts_with("cannot read config file "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_node_flag_has_its_environment_variable() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").unwrap();
        for a in run.get_arguments().filter(|a| a.get_long() != Some("help")) {
            let long = a.get_long().expect("a long flag");
            let want = format!("RAFTKV_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(
                a.get_env().and_then(|e| e.to_str()),
                Some(want.as_str()),
                "--{long}"
            );
        }
    }

    #[test]
    fn cluster_nodes_accepts_exactly_what_it_can_run() {
        let parse = |n: &str| Cli::try_parse_from(["raftkv", "cluster", "--nodes", n]);
        for n in 1..=MAX_CLUSTER_NODES {
            assert!(parse(&n.to_string()).is_ok(), "{n}");
        }
        let err = parse(&(MAX_CLUSTER_NODES + 1).to_string()).unwrap_err();
        assert!(err.to_string().contains("1..=6"), "{err}");
        assert!(parse("0").is_err());
    }

    #[test]
    fn peer_urls() {
        assert_eq!(
            peer_socket_addr("http://127.0.0.1:12379").unwrap(),
            "127.0.0.1:12379"
        );
        assert_eq!(
            peer_socket_addr("http://localhost:1/").unwrap(),
            "localhost:1"
        );
        for bad in [
            "127.0.0.1:1",
            "http://",
            "http://host",
            "http://h:99999",
            "http://h:1/x",
            "https://h:1",
        ] {
            assert!(peer_socket_addr(bad).is_err(), "{bad}");
        }
    }
}
