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
    Bench(crate::bench::BenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// This node's id: its 1-based position in --cluster.
    #[arg(long, default_value_t = 1)]
    pub id: u64,
    /// Comma-separated peer URLs of every member; member i+1 listens for peers on the i-th URL.
    #[arg(long, default_value = "http://127.0.0.1:12379")]
    pub cluster: String,
    /// Port of the HTTP key-value API.
    #[arg(long, default_value_t = 12380)]
    pub port: u16,
    /// Address the HTTP API binds to.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Join a running cluster (after `POST /{id}` on a member) instead of bootstrapping one.
    #[arg(long)]
    pub join: bool,
    /// Data directory (WAL segments and snapshot files). Default: ./raftkv-{id}.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Snapshot after this many applied entries (raftexample's snapCount).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snap_count: u64,
    /// Entries kept in memory below a snapshot for slow followers.
    #[arg(long, default_value_t = 5_000)]
    pub catch_up_entries: u64,
    /// Snapshot files kept on disk (with the WAL needed to recover from each).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub max_snapshots: u64,
    /// Raft tick interval in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub tick_ms: u64,
    /// Election timeout in ticks (randomised in [n, 2n)).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=1000))]
    pub election_ticks: u64,
    /// Heartbeat interval in ticks.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub heartbeat_ticks: u64,
    /// WAL segment size (preallocated).
    #[arg(long, default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(4096..))]
    pub segment_size_bytes: u64,
    /// Largest HTTP request body accepted (larger bodies get 413, from their Content-Length
    /// before they are read).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Largest peer frame accepted or sent: an append batch, or a chunk of a snapshot file
    /// (snapshots stream in chunks of at most 1 MiB, so this does not bound the state's size).
    #[arg(long, default_value_t = 64 << 20)]
    pub max_frame_bytes: usize,
    /// Deadline for a client request once proposed or forwarded, after which its outcome is
    /// reported unknown (504). One that finds no leader is answered 503 (not applied) after at
    /// most two election timeouts.
    #[arg(long, default_value_t = 5_000)]
    pub request_timeout_ms: u64,
    /// Cluster token: nodes only talk to peers with the same token.
    #[arg(long, default_value = "raftkv")]
    pub cluster_token: String,
    /// Threads for the HTTP API and peer connections. 1 (the default) runs them on the event
    /// loop's own thread, which is fastest when cores are few; more spread HTTP parsing out.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: u64,
    /// Messages queued per peer before new ones are dropped.
    #[arg(long, default_value_t = 4096)]
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

/// Peer URL -> "host:port". Accepts `http://host:port` with an optional trailing slash.
pub fn peer_socket_addr(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("peer URL {url:?} must start with http://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        return Err(format!("peer URL {url:?} must look like http://host:port"));
    }
    let (host, port) = rest.rsplit_once(':').expect("contains ':'");
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("peer URL {url:?} has a bad host or port"));
    }
    Ok(rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
