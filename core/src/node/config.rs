//! Static configuration of one node, and the timings derived from it (how long a removed node
//! lingers, how long a request waits for a leader, how long a changed peer URL waits to be
//! confirmed), including the configurations handed to raft-rs and to the snapshot transfer.

use crate::compaction::CompactionConfig;
use crate::transfer::TransferConfig;
use crate::wal::WalConfig;
use std::collections::BTreeMap;

/// Static configuration of one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: u64,
    /// Seeds every random choice the node makes (election timeouts).
    pub seed: u64,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    pub max_size_per_msg_bytes: u64,
    pub max_inflight_msgs: usize,
    pub max_uncommitted_bytes: u64,
    pub compaction: CompactionConfig,
    pub wal: WalConfig,
    pub max_pending_proposals: usize,
    pub max_pending_reads: usize,
    /// Draw election timeouts from `seed` (always on outside the test that proves it matters).
    pub seeded_election_timeout: bool,
    /// Work around raft-rs 0.7's campaign-after-snapshot panic (see `snapshot_unpersisted`).
    /// Always on outside the regression test that reproduces the raft-rs bug.
    pub raft_rs_snapshot_campaign_guard: bool,
    /// Repair raft-rs 0.7's appends whose batched entries do not follow their index (see
    /// `node::raft_rs_guard`). Always on outside the tests that reproduce the raft-rs bug.
    pub raft_rs_batch_append_guard: bool,
    /// Snapshot files travel in chunks of this size (they must fit a peer frame with room for
    /// the envelope), and are written in pieces of this size.
    pub snapshot_chunk_bytes: usize,
    /// Chunks of one snapshot transfer sent and not yet acknowledged, at most.
    pub snapshot_window_chunks: usize,
    /// Hash every applied entry into its `Event::Applied` (`entry_hash`), for a checker that
    /// compares replicas entry by entry (the simulator's). Off in production: it costs a pass
    /// over every entry's bytes and nothing reads it.
    pub trace_applied: bool,
    /// Prepare the WAL's next segment off its lane (zeros written and synced by an
    /// [`super::Action::Prepare`] job) so a cut renames it into place; off, cuts create and
    /// preallocate the file on the WAL's lane (see `node::spare`).
    pub wal_spare_segments: bool,
}

impl NodeConfig {
    pub fn new(id: u64, seed: u64) -> Self {
        NodeConfig {
            id,
            seed,
            election_tick: 10,
            heartbeat_tick: 1,
            max_size_per_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            max_uncommitted_bytes: 64 << 20,
            compaction: CompactionConfig::default(),
            wal: WalConfig::default(),
            max_pending_proposals: 4096,
            max_pending_reads: 4096,
            seeded_election_timeout: true,
            raft_rs_snapshot_campaign_guard: true,
            raft_rs_batch_append_guard: true,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_window_chunks: 4,
            trace_applied: false,
            wal_spare_segments: true,
        }
    }
}

/// How a node with an empty data directory starts.
#[derive(Clone, Debug)]
pub enum Bootstrap {
    /// One of the initial members of a new cluster (all of them start with the same members).
    NewCluster { members: BTreeMap<u64, String> },
    /// Added to a running cluster with `AddNode`; waits for the leader's snapshot. `members`
    /// are the known peers until then.
    Join { members: BTreeMap<u64, String> },
}

/// Ticks a node that applied its own removal keeps answering votes (see `apply_member_change`).
pub(super) fn linger_ticks(cfg: &NodeConfig) -> u64 {
    10 * cfg.election_tick as u64
}

/// How often a joiner that no member has reached says it is still waiting.
pub(super) fn join_wait_ticks(cfg: &NodeConfig) -> u64 {
    10 * cfg.election_tick as u64
}

/// Ticks a request that finds no leader is held for one to be elected: the longest election
/// timeout raft draws (`[election_tick, 2 * election_tick)`), so a follower that lost its leader
/// has campaigned once before the request is answered `NoLeader`, and a client is never kept
/// for its whole deadline only to learn nothing.
pub fn no_leader_hold_ticks(cfg: &NodeConfig) -> u64 {
    2 * cfg.election_tick as u64
}

/// Ticks a node started on a changed peer URL waits for a member to reach it there.
pub(super) fn url_confirm_ticks(cfg: &NodeConfig) -> u64 {
    20 * cfg.election_tick as u64
}

pub(super) fn transfer_config(cfg: &NodeConfig) -> TransferConfig {
    let election = cfg.election_tick as u64;
    TransferConfig {
        chunk_bytes: cfg.snapshot_chunk_bytes,
        window_chunks: cfg.snapshot_window_chunks,
        resend_ticks: (election / 2).max(1),
        give_up_ticks: 10 * election,
    }
}

pub(super) fn raft_config(cfg: &NodeConfig, applied: u64) -> raft::Config {
    raft::Config {
        id: cfg.id,
        election_tick: cfg.election_tick,
        heartbeat_tick: cfg.heartbeat_tick,
        applied,
        max_size_per_msg: cfg.max_size_per_msg_bytes,
        max_inflight_msgs: cfg.max_inflight_msgs,
        check_quorum: true,
        pre_vote: true,
        batch_append: true,
        max_uncommitted_size: cfg.max_uncommitted_bytes,
        max_committed_size_per_ready: 16 << 20,
        ..Default::default()
    }
}
