//! Where a starting node's state comes from: what recovery found in its data directory, or, on
//! an empty one, the first snapshot every initial member writes alike (a new cluster) or an
//! empty log that waits for the leader's snapshot (a joiner). Pure: it returns the state
//! machine, raft's storage, the WAL writer and the first job's ops; `Node::start` wires them.
//! The commit index restored never claims entries the log does not hold (it is lowered: raft
//! re-learns it from the leader). A new cluster's node is one of its initial members (asserted:
//! boot refuses other flags with an error first).

use super::snapshots::raft_snapshot;
use super::{Bootstrap, Event, NodeConfig, NodeError};
use crate::compaction::SnapshotOnDisk;
use crate::convert::{cs_to_rec, hs_to_rec, rec_into_entry, rec_to_hs};
use crate::fileop::FileOp;
use crate::kv::KvState;
use crate::recovery::Recovered;
use crate::snapfile::{self, SnapshotFile, SnapshotMeta};
use crate::storage::NodeStorage;
use crate::wal::{Record, SnapshotMarker, WalIdentity, WalWriter};
use raft::eraftpb::Entry;
use std::collections::BTreeMap;

/// What recovery found, with the state machine already decoded from its snapshot (boot checks
/// the membership in it before the node starts).
pub struct Restored {
    pub recovered: Recovered,
    pub kv: KvState,
}

/// A starting node's state, before raft-rs is built over `storage`.
pub(super) struct Start {
    pub(super) kv: KvState,
    pub(super) wal: WalWriter,
    pub(super) storage: NodeStorage,
    /// The first disk job's ops (after boot's own): repairs, WAL creation, the first snapshot.
    pub(super) ops: Vec<FileOp>,
    /// What the node reports first.
    pub(super) events: Vec<Event>,
    pub(super) snapshots_on_disk: Vec<SnapshotOnDisk>,
}

/// The state to start from: `restored` if recovery found a log, else a fresh one as `bootstrap`
/// says. `ops` run first (boot's identity file). A directory whose own state says it was
/// removed is refused.
pub(super) fn start_state(
    cfg: &NodeConfig,
    cluster_id: u64,
    restored: Option<Restored>,
    bootstrap: &Bootstrap,
    ops: Vec<FileOp>,
) -> Result<Start, NodeError> {
    let id = WalIdentity {
        cluster_id,
        node_id: cfg.id,
    };
    match (restored, bootstrap) {
        (Some(Restored { recovered, kv }), _) => from_recovery(cfg, recovered, kv, ops),
        (None, Bootstrap::NewCluster { members }) => Ok(new_cluster(cfg, id, members, ops)),
        (None, Bootstrap::Join { members }) => {
            let mut ops = ops;
            let mut wal = WalWriter::create(id, cfg.wal, 1, &mut ops);
            wal.sync(&mut ops);
            Ok(Start {
                kv: KvState::with_members(members.clone()),
                wal,
                storage: NodeStorage::new(),
                ops,
                events: Vec::new(),
                snapshots_on_disk: Vec::new(),
            })
        }
    }
}

fn from_recovery(
    cfg: &NodeConfig,
    rec: Recovered,
    kv: KvState,
    mut ops: Vec<FileOp>,
) -> Result<Start, NodeError> {
    let mut storage = NodeStorage::new();
    let mut events = Vec::new();
    ops.extend(rec.ops.iter().cloned());
    // New segments carry the id the log was created with (a joiner's stays unknown after it
    // adopts its cluster's: the identity file is the authority), so every segment of one log
    // agrees.
    let id = WalIdentity {
        cluster_id: rec.wal.header.cluster_id,
        node_id: cfg.id,
    };
    let mut wal = WalWriter::resume(id, cfg.wal, &rec.wal, &mut ops);
    if let Some(meta) = &rec.snapshot {
        events.push(Event::LoadingSnapshot {
            term: meta.term,
            index: meta.index,
        });
        storage.apply_snapshot(raft_snapshot(meta, rec.snapshot_file_bytes));
    }
    if kv.was_removed(cfg.id) {
        return Err(NodeError::Removed);
    }
    let entry_count = rec.entries.len();
    let entries: Vec<Entry> = rec.entries.into_iter().map(rec_into_entry).collect();
    storage.append_owned(entries);
    let mut hs = rec_to_hs(&rec.hard_state);
    let last = storage.last_index();
    if hs.commit > last {
        // Commit is only a hint that raft re-learns from the leader; lowering it is safe,
        // claiming entries we do not have is not.
        events.push(Event::CommitClamped {
            from: hs.commit,
            to: last,
        });
        hs.commit = last;
    }
    let snap_hs = storage.hard_state().clone();
    hs.commit = hs.commit.max(snap_hs.commit);
    hs.term = hs.term.max(snap_hs.term);
    storage.set_hard_state(hs);
    events.push(Event::Recovered {
        report: rec.report.clone(),
        entry_count,
        commit: storage.hard_state().commit,
        hard_state: rec.hard_state,
    });
    let snapshots_on_disk = rec
        .snapshots_on_disk
        .iter()
        .map(|(name, term, index)| SnapshotOnDisk {
            name: name.clone(),
            term: *term,
            index: *index,
        })
        .collect();
    wal.flush(&mut ops);
    Ok(Start {
        kv,
        wal,
        storage,
        ops,
        events,
        snapshots_on_disk,
    })
}

/// Every initial member writes the same first snapshot at (index 1, term 1): the initial
/// configuration and member addresses, as ordinary durable state.
fn new_cluster(
    cfg: &NodeConfig,
    id: WalIdentity,
    members: &BTreeMap<u64, String>,
    mut ops: Vec<FileOp>,
) -> Start {
    // boot refuses such flags with an error before getting here.
    assert!(
        members.contains_key(&cfg.id),
        "node {} is not among the initial members",
        cfg.id
    );
    let mut storage = NodeStorage::new();
    let mut wal = WalWriter::create(id, cfg.wal, 2, &mut ops);
    let mut kv = KvState::with_members(members.clone());
    kv.advance(1);
    let cs = raft::eraftpb::ConfState {
        voters: members.keys().copied().collect(),
        ..Default::default()
    };
    let meta = SnapshotMeta {
        index: 1,
        term: 1,
        conf_state: cs_to_rec(&cs),
    };
    let file = SnapshotFile {
        meta: meta.clone(),
        data: kv.encode_snapshot(),
    };
    let file_bytes = snapfile::file_len(&meta, file.data.len() as u64);
    let name = snapfile::write_ops(&file, &mut ops);
    wal.append(
        &Record::Snapshot(SnapshotMarker {
            index: 1,
            term: 1,
            conf_state: meta.conf_state.clone(),
            log_reset: true,
        }),
        &mut ops,
    );
    storage.apply_snapshot(raft_snapshot(&meta, file_bytes));
    wal.append(
        &Record::HardState(hs_to_rec(storage.hard_state())),
        &mut ops,
    );
    wal.sync(&mut ops);
    Start {
        kv,
        wal,
        storage,
        ops,
        events: Vec::new(),
        snapshots_on_disk: vec![SnapshotOnDisk {
            name,
            term: 1,
            index: 1,
        }],
    }
}
