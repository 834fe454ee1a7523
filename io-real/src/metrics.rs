//! Prometheus metrics through the `metrics` facade and its Prometheus exporter, in base units
//! (seconds, bytes; Prometheus's convention). Latencies are histograms, recorded where they are
//! measured; the node's gauges and counters are copied in from the event loop's view at each
//! scrape, so the hot path keeps its plain counters.

use crate::server::StatusView;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Client requests, from the HTTP handler's call to the node's answer. Labels: `op` (put, delete,
/// get, get_local, member) and `result` (ok, not_applied, unknown).
pub const REQUEST_SECONDS: &str = "raftkv_request_duration_seconds";
/// Each fsync (file or directory) of the WAL lane, as etcd's `etcd_disk_wal_fsync_duration_seconds`.
pub const WAL_FSYNC_SECONDS: &str = "raftkv_wal_fsync_duration_seconds";
/// A whole WAL-lane disk job: its writes and its syncs.
pub const DISK_JOB_SECONDS: &str = "raftkv_disk_job_duration_seconds";
/// Serialising and writing one snapshot file (the snapshot lane).
pub const SNAPSHOT_SAVE_SECONDS: &str = "raftkv_snapshot_save_duration_seconds";

/// From half a millisecond (an fsync on a fast device) to 10 s (past the request deadline).
const BUCKETS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why the metrics recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("metrics buckets: {0}")]
    Buckets(#[from] metrics_exporter_prometheus::BuildError),
    /// Another recorder is installed already (one per process).
    #[error("{0}")]
    Recorder(String),
}

/// Installs the process-wide recorder; the handle renders `/metrics`.
pub fn install() -> Result<PrometheusHandle, InstallError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(BUCKETS_SECONDS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| InstallError::Recorder(e.to_string()))?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_histogram!(REQUEST_SECONDS, Unit::Seconds, "Client request latency.");
    describe_histogram!(WAL_FSYNC_SECONDS, Unit::Seconds, "WAL fsync latency.");
    describe_histogram!(
        DISK_JOB_SECONDS,
        Unit::Seconds,
        "WAL disk job latency (writes and syncs)."
    );
    describe_histogram!(
        SNAPSHOT_SAVE_SECONDS,
        Unit::Seconds,
        "Time to serialise and write a snapshot file."
    );
    for (name, help) in GAUGES {
        describe_gauge!(*name, *help);
    }
    for (name, help) in COUNTERS {
        describe_counter!(*name, *help);
    }
}

const GAUGES: &[(&str, &str)] = &[
    ("raftkv_is_leader", "1 if this node is the leader."),
    (
        "raftkv_ready",
        "1 if every readiness check passes (/readyz).",
    ),
    ("raftkv_term", "Current raft term."),
    ("raftkv_commit_index", "Highest committed index."),
    ("raftkv_applied_index", "Highest applied index."),
    ("raftkv_snapshot_index", "Index of the latest snapshot."),
    (
        "raftkv_log_entries_in_memory",
        "Raft log entries held in memory.",
    ),
    (
        "raftkv_log_bytes_in_memory",
        "Payload bytes of the raft log entries held in memory.",
    ),
    (
        "raftkv_state_bytes",
        "Key plus value bytes of the state machine.",
    ),
    ("raftkv_members", "Cluster members."),
    (
        "raftkv_pending_proposals",
        "Proposals waiting for commit and apply.",
    ),
    ("raftkv_pending_reads", "Linearizable reads waiting."),
];

const COUNTERS: &[(&str, &str)] = &[
    ("raftkv_client_requests_total", "Client requests received."),
    (
        "raftkv_client_errors_total",
        "Client requests answered with an error.",
    ),
    ("raftkv_peer_frames_in_total", "Peer frames received."),
    ("raftkv_peer_frames_rejected_total", "Peer frames rejected."),
    (
        "raftkv_peer_frames_out_total",
        "Peer frames queued for sending.",
    ),
    (
        "raftkv_peer_frames_dropped_total",
        "Peer frames dropped (unreachable, queue full).",
    ),
    ("raftkv_disk_jobs_total", "WAL disk jobs executed."),
    (
        "raftkv_disk_syncs_total",
        "fsync/fdatasync calls of the WAL lane.",
    ),
    (
        "raftkv_wal_spares_prepared_total",
        "WAL segments zero-filled ahead of the cut that takes them.",
    ),
    (
        "raftkv_snapshot_bytes_total",
        "Bytes of snapshot files written.",
    ),
    ("raftkv_snapshots_saved_total", "Snapshots taken."),
    (
        "raftkv_snapshots_installed_total",
        "Snapshots received from the leader.",
    ),
    (
        "raftkv_snapshot_sent_bytes_total",
        "Bytes of snapshot files read to stream to followers.",
    ),
    (
        "raftkv_snapshot_sends_failed_total",
        "Snapshot transfers to followers that failed (raft retries them).",
    ),
    ("raftkv_compactions_total", "In-memory log compactions."),
    (
        "raftkv_purges_total",
        "Purges of old WAL segments and snapshot files.",
    ),
    (
        "raftkv_elections_won_total",
        "Times this node became leader.",
    ),
];

/// Copies the event loop's view into the recorder (called at each scrape).
pub fn update(v: &StatusView) {
    let s = &v.status;
    let c = &v.counters;
    let gauges: [(&'static str, f64); 12] = [
        (
            "raftkv_is_leader",
            f64::from(u8::from(s.role == raftkv_core::node::StateRole::Leader)),
        ),
        ("raftkv_ready", f64::from(u8::from(v.readiness.is_ready()))),
        ("raftkv_term", s.term as f64),
        ("raftkv_commit_index", s.commit_index as f64),
        ("raftkv_applied_index", s.applied_index as f64),
        ("raftkv_snapshot_index", s.snapshot_index as f64),
        (
            "raftkv_log_entries_in_memory",
            s.log_entries_in_memory as f64,
        ),
        ("raftkv_log_bytes_in_memory", s.log_bytes_in_memory as f64),
        ("raftkv_state_bytes", s.state_bytes as f64),
        ("raftkv_members", s.members.len() as f64),
        ("raftkv_pending_proposals", s.pending_proposals as f64),
        ("raftkv_pending_reads", s.pending_reads as f64),
    ];
    for (name, value) in gauges {
        metrics::gauge!(name).set(value);
    }
    let counters: [(&'static str, u64); 17] = [
        ("raftkv_client_requests_total", c.client_requests),
        ("raftkv_client_errors_total", c.client_errors),
        ("raftkv_peer_frames_in_total", c.peer_frames_in),
        ("raftkv_peer_frames_rejected_total", c.peer_frames_rejected),
        ("raftkv_peer_frames_out_total", c.peer_frames_out),
        ("raftkv_peer_frames_dropped_total", c.peer_frames_dropped),
        ("raftkv_disk_jobs_total", c.disk_jobs),
        ("raftkv_disk_syncs_total", c.disk_syncs),
        ("raftkv_wal_spares_prepared_total", c.wal_spares_prepared),
        ("raftkv_snapshot_bytes_total", c.snapshot_bytes_total),
        ("raftkv_snapshots_saved_total", c.snapshots_saved),
        ("raftkv_snapshots_installed_total", c.snapshots_installed),
        ("raftkv_snapshot_sent_bytes_total", c.snapshot_bytes_sent),
        (
            "raftkv_snapshot_sends_failed_total",
            c.snapshot_sends_failed,
        ),
        ("raftkv_compactions_total", c.compactions),
        ("raftkv_purges_total", c.purges),
        ("raftkv_elections_won_total", c.elections_won),
    ];
    for (name, value) in counters {
        metrics::counter!(name).absolute(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_with_buckets_in_seconds() {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS_SECONDS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            metrics::histogram!(WAL_FSYNC_SECONDS).record(0.003);
        });
        let text = handle.render();
        assert!(
            text.contains(&format!("{WAL_FSYNC_SECONDS}_bucket{{le=\"0.005\"}} 1")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{WAL_FSYNC_SECONDS}_bucket{{le=\"0.002\"}} 0")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{WAL_FSYNC_SECONDS}_count 1")),
            "{text}"
        );
    }
}
