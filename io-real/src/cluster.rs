//! `raftkv cluster`: raftexample's Procfile as a subcommand. It runs N nodes as child processes,
//! prefixes every line they print with `[node i]`, and passes SIGTERM/SIGINT on to them and waits,
//! so stopping the supervisor (a service manager, `kill`, Ctrl-C) never leaves nodes running.

use crate::cli::ClusterArgs;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::signal::unix::SignalKind;
use tokio::sync::mpsc;

/// How long nodes get to shut down after the signal before they are killed.
const GRACE: Duration = Duration::from_secs(30);

/// Why `raftkv cluster` failed. Context-style variants keep the cause as their `source`.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The runtime, or finding our own executable.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("installing a {signal} handler")]
    Signal {
        signal: &'static str,
        #[source]
        error: std::io::Error,
    },
    #[error("starting node {id}")]
    Spawn {
        id: u64,
        #[source]
        error: std::io::Error,
    },
    /// Nodes that exited with a failure, each with its status.
    #[error("{}", .0.join("; "))]
    NodesFailed(Vec<String>),
}

/// Runs the cluster until every node has exited; an error if any failed.
pub fn run(args: ClusterArgs) -> Result<(), ClusterError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(supervise(args))
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Copies `from` line by line to our own stdout or stderr, each line prefixed with the node id.
/// Bytes, not text: a node's line is passed on even if it is not UTF-8.
async fn prefix_lines(id: u64, from: impl AsyncRead + Unpin, to: Stream) {
    let prefix = format!("[node {id}] ");
    let mut lines = BufReader::new(from).split(b'\n');
    while let Ok(Some(line)) = lines.next_segment().await {
        let mut out = Vec::with_capacity(prefix.len() + line.len() + 1);
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(&line);
        out.push(b'\n');
        // One write per line under the lock: lines of different nodes never mix.
        let _ = match to {
            Stream::Stdout => std::io::stdout().lock().write_all(&out),
            Stream::Stderr => std::io::stderr().lock().write_all(&out),
        };
    }
}

fn send_signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions. The pid is a child not yet reported
    // exited, so not yet reaped: it cannot have been reused.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

async fn supervise(args: ClusterArgs) -> Result<(), ClusterError> {
    let exe = std::env::current_exe()?;
    let urls: Vec<String> = (1..=args.nodes)
        .map(|i| format!("http://127.0.0.1:{}", i * 10000 + 2379))
        .collect();
    // Installed before the first child starts, so no signal between two spawns is missed.
    let handler = |kind, signal| {
        tokio::signal::unix::signal(kind).map_err(|error| ClusterError::Signal { signal, error })
    };
    let mut term = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut int = handler(SignalKind::interrupt(), "SIGINT")?;
    let (exited_tx, mut exited) = mpsc::unbounded_channel::<(u64, std::io::Result<ExitStatus>)>();
    let mut running: BTreeMap<u64, u32> = BTreeMap::new();
    let mut pumps = Vec::new();
    for i in 1..=args.nodes {
        let spawned = tokio::process::Command::new(&exe)
            .arg("run")
            .args(["--id", &i.to_string()])
            .args(["--cluster", &urls.join(",")])
            .args(["--port", &(i * 10000 + 2380).to_string()])
            .arg("--data-dir")
            .arg(args.data_root.join(format!("raftkv-{i}")))
            .args(&args.node_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| ClusterError::Spawn { id: i, error });
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                for &pid in running.values() {
                    send_signal(pid, libc::SIGTERM);
                }
                while !running.is_empty() {
                    if let Some((id, _)) = exited.recv().await {
                        running.remove(&id);
                    }
                }
                return Err(e);
            }
        };
        let pid = child.id().expect("a child just spawned has a pid");
        println!(
            "node {i}: peer {} api http://127.0.0.1:{} (pid {pid})",
            urls[i as usize - 1],
            i * 10000 + 2380,
        );
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(prefix_lines(i, out, Stream::Stdout)));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(prefix_lines(i, err, Stream::Stderr)));
        }
        running.insert(i, pid);
        let tx = exited_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send((i, child.wait().await));
        });
    }

    let mut failed = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    while !running.is_empty() {
        let sig = tokio::select! {
            Some((id, status)) = exited.recv() => {
                running.remove(&id);
                match status {
                    Ok(s) if s.success() => {}
                    Ok(s) => failed.push(format!("node {id} {s}")),
                    Err(e) => failed.push(format!("node {id}: {e}")),
                }
                continue;
            }
            _ = term.recv() => libc::SIGTERM,
            _ = int.recv() => libc::SIGINT,
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await },
                if deadline.is_some() => libc::SIGKILL,
        };
        if sig == libc::SIGKILL {
            eprintln!(
                "raftkv cluster: nodes {:?} still running {GRACE:?} after the signal; killing them",
                running.keys().collect::<Vec<_>>()
            );
            deadline = None;
        } else {
            deadline.get_or_insert(tokio::time::Instant::now() + GRACE);
        }
        for &pid in running.values() {
            send_signal(pid, sig);
        }
    }
    // The children are gone: their pipes end, and the pumps finish with the last lines.
    for p in pumps {
        let _ = p.await;
    }
    if !failed.is_empty() {
        return Err(ClusterError::NodesFailed(failed));
    }
    Ok(())
}
