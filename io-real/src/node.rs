//! Running one node: the flags checked, the data directory created and locked, the node booted
//! from it (`core::boot`), then served: the event loop (`server`), the disk lanes (`disk`), the
//! peers (`peer`) and the HTTP API (`http`) wired together, until SIGTERM/SIGINT or the node
//! stops.

use crate::cli::{self, RunArgs};
use crate::disk::DataDirError;
use crate::{disk, http, metrics, peer, server};
use raftkv_core::boot::{boot, BootError, StartFlags};
use raftkv_core::compaction::CompactionConfig;
use raftkv_core::fileop::ReadFailure;
use raftkv_core::node::{Node, NodeConfig, StopReason};
use raftkv_core::wal::WalConfig;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Inputs queued for the event loop before HTTP gets 503 and peer readers wait.
const INPUT_QUEUE_LEN: usize = 16 * 1024;

/// Why a node did not start, or stopped with a failure. Context-style variants keep the cause
/// as their `source`, so `{:#}` prints "context: cause" as it always has.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("--cluster needs at least one peer URL")]
    NoPeers,
    #[error("--max-frame-bytes {got} is too small: a peer frame must hold at least {MIN_FRAME_BYTES} bytes")]
    FrameTooSmall { got: usize },
    /// A `--cluster` URL that is not `http://host:port`.
    #[error(transparent)]
    PeerUrl(#[from] cli::PeerUrlError),
    #[error("--cluster has an empty peer URL at position {id}: member ids are positions in the list, so every member needs its URL there")]
    EmptyPeerUrl { id: u64 },
    #[error("--id {id} is not a position in --cluster (1..={members})")]
    IdNotInCluster { id: u64, members: usize },
    #[error("--heartbeat-ticks must be smaller than --election-ticks")]
    HeartbeatNotBelowElection,
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("data directory {}", path.display())]
    Boot {
        path: PathBuf,
        #[source]
        error: BootError,
    },
    #[error("cannot bind the peer address {addr}")]
    BindPeer {
        addr: String,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot bind the HTTP address {addr}")]
    BindApi {
        addr: String,
        #[source]
        error: std::io::Error,
    },
    #[error(transparent)]
    Metrics(#[from] metrics::InstallError),
    /// The runtime or a disk thread could not be started.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The node stopped for a reason other than its removal (a disk failure, a refusal).
    #[error("{0}")]
    Stopped(StopReason),
}

fn node_config(args: &RunArgs) -> NodeConfig {
    // The seed drives election timeouts and a fresh directory's incarnation: it must differ per
    // process and per machine, so it comes from the OS's randomness (std's RandomState keys).
    let seed = {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one((std::process::id(), args.id))
    };
    let mut cfg = NodeConfig::new(args.id, seed);
    cfg.election_tick = args.election_ticks as usize;
    cfg.heartbeat_tick = args.heartbeat_ticks as usize;
    cfg.compaction = CompactionConfig {
        snap_count: args.snap_count,
        catch_up_entries: args.catch_up_entries,
        max_snapshots: args.max_snapshots as usize,
        ..CompactionConfig::default()
    };
    cfg.wal = WalConfig {
        segment_size_bytes: args.segment_size_bytes,
    };
    cfg.snapshot_chunk_bytes = snapshot_chunk_bytes(args.max_frame_bytes);
    cfg.wal_spare_segments = args.wal_spare_segments;
    cfg
}

const MIN_FRAME_BYTES: usize = 128 << 10;
/// Room in a frame for the envelope and an entry's own framing around a request body.
const FRAME_OVERHEAD_BYTES: usize = 64 << 10;

/// Snapshot files stream in chunks that leave half a frame for the envelope, up to 1 MiB.
fn snapshot_chunk_bytes(max_frame_bytes: usize) -> usize {
    (max_frame_bytes / 2).min(1 << 20)
}

/// Runs the node `args` describe until it is shut down (Ok) or stops (Ok if it was removed).
/// `--cluster`: the peer URL of each member, in id order (member i+1 is the i-th).
fn parse_cluster(cluster: &str) -> Result<Vec<String>, NodeError> {
    let mut urls: Vec<String> = cluster.split(',').map(|s| s.trim().to_string()).collect();
    // A trailing comma is forgiven; an empty URL inside the list is not: ids are positions, and
    // skipping it would give every later member the id of the one before.
    if urls.len() > 1 && urls.last().is_some_and(String::is_empty) {
        urls.pop();
    }
    if urls.iter().all(String::is_empty) {
        return Err(NodeError::NoPeers);
    }
    if let Some(i) = urls.iter().position(String::is_empty) {
        return Err(NodeError::EmptyPeerUrl { id: i as u64 + 1 });
    }
    // A repeated URL is checked by boot, which knows whether the list bootstraps a cluster (a
    // replacement may reuse the address of a removed member whose position it must still fill).
    for u in &urls {
        cli::peer_socket_addr(u).map_err(NodeError::PeerUrl)?;
    }
    Ok(urls)
}

pub fn run(args: RunArgs) -> Result<(), NodeError> {
    let urls = parse_cluster(&args.cluster)?;
    if args.max_frame_bytes < MIN_FRAME_BYTES {
        return Err(NodeError::FrameTooSmall {
            got: args.max_frame_bytes,
        });
    }
    if args.id == 0 || args.id as usize > urls.len() {
        return Err(NodeError::IdNotInCluster {
            id: args.id,
            members: urls.len(),
        });
    }
    if args.heartbeat_ticks >= args.election_ticks {
        return Err(NodeError::HeartbeatNotBelowElection);
    }
    let members: BTreeMap<u64, String> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| (i as u64 + 1, u.clone()))
        .collect();
    let peer_addr = cli::peer_socket_addr(&urls[args.id as usize - 1]).expect("validated");
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("raftkv-{}", args.id)));
    disk::create_dir(&data_dir)?;
    let _lock = disk::lock_dir(&data_dir)?;

    let names = disk::list(&data_dir)?;
    let flags = StartFlags {
        peers: members,
        token: args.cluster_token.clone(),
        join: args.join,
    };
    let node = boot(
        node_config(&args),
        &flags,
        &names,
        &mut |name, offset, max_bytes| {
            let path = data_dir.join(name);
            disk::read_for_recovery(&path, offset, max_bytes).map_err(ReadFailure::from)
        },
    )
    .map_err(|error| NodeError::Boot {
        path: data_dir.clone(),
        error,
    })?;

    // One thread avoids a cross-thread wake-up per request; on the 2-core benchmark machine it
    // raised the 64-client put rate by about a fifth (BENCHMARKS.md).
    let rt = match args.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n as usize)
            .enable_all()
            .build()?,
    };
    rt.block_on(serve(args, node, data_dir, peer_addr))
}

async fn serve(
    args: RunArgs,
    node: Node,
    data_dir: PathBuf,
    peer_addr: String,
) -> Result<(), NodeError> {
    let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE_LEN);
    let peer_listener = tokio::net::TcpListener::bind(&peer_addr)
        .await
        .map_err(|error| NodeError::BindPeer {
            addr: peer_addr.clone(),
            error,
        })?;
    let api_addr = format!("{}:{}", args.host, args.port);
    let api_listener = tokio::net::TcpListener::bind(&api_addr)
        .await
        .map_err(|error| NodeError::BindApi {
            addr: api_addr.clone(),
            error,
        })?;

    let peers = peer::Peers::new(args.max_frame_bytes, args.peer_queue_len, input_tx.clone());
    peers.spawn_listener(peer_listener);

    // One thread per disk lane, each with its own `Disk` (file handles) and channel. Spare WAL
    // segments get a lane of their own: a 64 MiB zero-fill queued on the snapshot lane held up
    // the snapshot behind it (the e2e test of a corrupt newest snapshot found no second
    // snapshot after 400 writes).
    let (disk_tx, disk_rx) = std::sync::mpsc::channel();
    let (read_tx, read_rx) = std::sync::mpsc::channel();
    let (snap_tx, snap_rx) = std::sync::mpsc::channel();
    let (prep_tx, prep_rx) = std::sync::mpsc::channel();
    let disk_thread = spawn_lane("raftkv-disk", &data_dir, &input_tx, move |d, done| {
        d.run(disk_rx, done)
    })?;
    let read_thread = spawn_lane("raftkv-read", &data_dir, &input_tx, move |d, done| {
        d.run_reads(read_rx, done)
    })?;
    let snap_thread = spawn_lane("raftkv-snap", &data_dir, &input_tx, move |d, done| {
        d.paced().run_background(snap_rx, done)
    })?;
    // Not joined at shutdown (below).
    spawn_lane("raftkv-prep", &data_dir, &input_tx, move |d, done| {
        d.paced().run_background(prep_rx, done)
    })?;

    let timeout_ticks = (args.request_timeout_ms / args.tick_ms).max(1);
    let api = http::Api {
        inputs: input_tx.clone(),
        wait: Duration::from_millis(args.request_timeout_ms + 1000),
        metrics: metrics::install()?,
    };
    // Every write travels to the followers inside one append frame: a body that could not is
    // refused up front (413), never accepted and then stuck.
    let max_body_bytes = args
        .max_body_bytes
        .min(args.max_frame_bytes - FRAME_OVERHEAD_BYTES);
    if max_body_bytes < args.max_body_bytes {
        tracing::warn!(
            max_body_bytes = args.max_body_bytes,
            max_frame_bytes = args.max_frame_bytes,
            effective_max_body_bytes = max_body_bytes,
            "--max-body-bytes does not fit a peer frame; larger request bodies get 413"
        );
    }
    // Histogram samples wait in the recorder until drained: the exporter's own listener would
    // run this upkeep, ours must, or an unscraped node's memory grows with every request.
    let upkeep = api.metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = http::router(api, max_body_bytes);
    let (http_stop_tx, http_stop_rx) = oneshot::channel::<()>();
    let http_task = tokio::spawn(async move {
        axum::serve(api_listener, app)
            .with_graceful_shutdown(async {
                let _ = http_stop_rx.await;
            })
            .await
    });
    tracing::info!(id = args.id, %peer_addr, %api_addr, "raftkv node serving");

    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(());
    });
    let lanes = server::Lanes {
        disk: disk_tx,
        snapshots: snap_tx,
        prepares: prep_tx,
        reads: read_tx,
    };
    let mut srv = server::Server::new(node, peers, lanes, timeout_ticks);
    let exit = srv
        .run(input_rx, Duration::from_millis(args.tick_ms), stop_rx)
        .await;
    let _ = http_stop_tx.send(());
    // Let the disk thread finish the job in hand: dropping the sender ends its loop.
    srv.disk = None;
    srv.snapshots = None;
    srv.prepares = None;
    srv.reads = None;
    drop(srv);
    // The prepare thread is not waited for: a spare half written is a temp file the next start
    // removes, and a shutdown should not wait out a segment's zero-fill.
    let _ = tokio::task::spawn_blocking(move || {
        let _ = disk_thread.join();
        let _ = snap_thread.join();
        let _ = read_thread.join();
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), http_task).await;
    match exit {
        server::Exit::Shutdown => Ok(()),
        server::Exit::Stopped(reason @ (StopReason::Removed | StopReason::RemovalConfirmed)) => {
            tracing::warn!(%reason, "node stopped");
            Ok(())
        }
        server::Exit::Stopped(reason) => Err(NodeError::Stopped(reason)),
    }
}

/// Starts a disk lane's thread: `run` drives a `Disk` on `dir` and reports each result to the
/// event loop.
fn spawn_lane(
    name: &str,
    dir: &std::path::Path,
    inputs: &mpsc::Sender<server::Input>,
    run: impl FnOnce(disk::Disk, &dyn Fn(disk::DiskResult)) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (dir, inputs) = (dir.to_path_buf(), inputs.clone());
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let done = |r| {
                let _ = inputs.blocking_send(server::Input::Disk(r));
            };
            run(disk::Disk::new(dir), &done)
        })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_list_with_a_gap_is_refused() {
        let ok = parse_cluster("http://127.0.0.1:1, http://127.0.0.1:2,").unwrap();
        assert_eq!(ok, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert!(matches!(
            parse_cluster("http://127.0.0.1:1,,http://127.0.0.1:3"),
            Err(NodeError::EmptyPeerUrl { id: 2 })
        ));
        assert!(matches!(parse_cluster(""), Err(NodeError::NoPeers)));
        assert!(matches!(
            parse_cluster("127.0.0.1:1"),
            Err(NodeError::PeerUrl(_))
        ));
    }
}
