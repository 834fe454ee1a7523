//! Recovery: from the bytes of a data directory to the state a node restarts from.
//!
//! One rule picks the snapshot for both raft storage and the state machine (raftexample used two
//! and could disagree): the newest snapshot file that verifies *and* matches a WAL snapshot
//! marker (a marked snapshot is committed by construction: see `recover`). A file that fails to verify is set aside
//! (renamed `.broken`) and the next older one is tried. Then the WAL after that snapshot is
//! replayed. Repairs are returned as `FileOp`s for the shell to perform before anything else:
//! truncating a torn tail, setting aside broken snapshots, removing temp files and snapshot
//! files that never got their WAL marker (a crash between the two writes).
//!
//! Every file is read in pieces (`LOAD_PIECE_BYTES`): the snapshot's state machine is decoded
//! as its pieces pass, while the file's checksum is verified, and the WAL's segments are read one
//! at a time, frame by frame. The entries to replay are then moved out of the WAL's records, so a
//! restart holds the state and each entry once, never a file beside them (segments are
//! preallocated, and a young one is mostly zeros).

use crate::fileop::{FileOp, ReadAt, ReadFailure};
use crate::kv::{KvError, KvState};
use crate::snapfile::{self, SnapFileError, SnapshotMeta, StreamError, BROKEN_SUFFIX};
use crate::wal::{
    read_segments_at, ConfStateRec, EntryRec, HardStateRec, ReadSegmentsError, SegmentName,
    TornTail, WalContents, WalError, WalIdentity,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("cannot read {name}: {reason}")]
    Read { name: String, reason: ReadFailure },
    #[error("the WAL continues a snapshot, but no snapshot file it marks is usable ({last}{}): snapshot files were deleted or damaged. Restore the directory from a backup, or replace the member (see README, \"Replacing a failed node\")", .from_start.as_ref().map(|e| format!("; {e}")).unwrap_or_default())]
    NoUsableSnapshot {
        /// Why the last snapshot tried (the oldest marked one) was not used.
        last: Box<SnapshotRejected>,
        /// Why the WAL cannot be replayed from its beginning instead, where it starts at the
        /// first index but has a gap.
        from_start: Option<Box<WalError>>,
    },
    #[error("the data directory has snapshot files but no WAL segment: the WAL was deleted, and with it the node's vote and the entries after its snapshot. Restore the directory from a backup, or replace the member (see README, \"Replacing a failed node\")")]
    SnapshotsWithoutWal,
    #[error("persisted commit {commit} is below snapshot index {snapshot_index}")]
    CommitBelowSnapshot { commit: u64, snapshot_index: u64 },
    #[error("snapshot file {name} is intact (its checksum verifies) but its state does not decode ({error}): it was written by a newer raftkv, or by a bug. Start the directory with the raftkv that wrote it, or replace the member (see README, \"Replacing a failed node\")")]
    UndecodableSnapshot { name: String, error: KvError },
}

/// Why recovery passed over a snapshot file (or found none to try).
#[derive(Debug, Error)]
pub enum SnapshotRejected {
    #[error("no snapshot marker in the WAL")]
    NoneMarked,
    /// The WAL does not continue it.
    #[error(transparent)]
    LogGap(WalError),
    #[error("{name}: {error}")]
    Damaged { name: String, error: SnapFileError },
}

/// Pieces a snapshot file is read in at recovery.
pub const LOAD_PIECE_BYTES: usize = 1 << 20;

/// What recovery found and did, for logs and coverage counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    pub torn_tail: Option<TornTail>,
    /// (file, reason) of snapshot files set aside as broken (traces record the reason as it
    /// prints).
    #[serde(serialize_with = "serialize_set_aside")]
    pub set_aside: Vec<(String, SnapFileError)>,
    pub removed_temp_files: Vec<String>,
    pub removed_orphan_snapshots: Vec<String>,
    /// (term, index) of the snapshot recovered from.
    pub snapshot: Option<(u64, u64)>,
    pub entry_count: usize,
}

fn serialize_set_aside<S: serde::Serializer>(
    set_aside: &[(String, SnapFileError)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(set_aside.iter().map(|(name, e)| (name, e.to_string())))
}

/// The state to restart from.
#[derive(Debug)]
pub struct Recovered {
    /// The newest usable snapshot's metadata.
    pub snapshot: Option<SnapshotMeta>,
    /// The state machine decoded from that snapshot (boot takes it).
    pub state: Option<KvState>,
    /// Length of that snapshot's file (what its descriptor says to followers it is sent to).
    pub snapshot_file_bytes: u64,
    pub hard_state: HardStateRec,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<EntryRec>,
    /// ConfState as of the snapshot (later conf changes are re-applied from `entries`).
    pub conf_state: ConfStateRec,
    /// The WAL as read, for resuming it: its entries' bytes moved to `entries`, and of each run
    /// of entries only the last kept (`WalContents::take_entries`).
    pub wal: WalContents,
    /// Durable snapshot files with a WAL marker, (name, term, index), including the chosen one.
    pub snapshots_on_disk: Vec<(String, u64, u64)>,
    /// Repairs to execute before the node starts.
    pub ops: Vec<FileOp>,
    pub report: RecoveryReport,
}

/// Why one snapshot file could not be loaded.
enum LoadFailure {
    /// The file is damaged: it is set aside and an older one tried.
    Corrupt(SnapFileError),
    /// Intact, but its state does not decode: nothing older can be trusted to replace it.
    Undecodable(KvError),
    Read(ReadFailure),
}

/// Reads snapshot file `name` a piece at a time, verifying it and decoding its state as the
/// pieces pass. Returns the metadata, the state and the file's length.
fn load_snapshot(
    name: &str,
    read: &mut ReadAt<'_>,
) -> Result<(SnapshotMeta, KvState, u64), LoadFailure> {
    let mut file = snapfile::StreamDecoder::default();
    let mut state = Some(KvState::payload_decoder());
    let mut undecodable = None;
    let mut offset = 0u64;
    loop {
        let piece = read(name, offset, LOAD_PIECE_BYTES).map_err(LoadFailure::Read)?;
        if piece.is_empty() {
            break;
        }
        offset += piece.len() as u64;
        // A payload that does not decode is told apart from a damaged file only by the file's
        // checksum at its end: the decoder is dropped and the file read on.
        let fed = file.feed(&piece, &mut |payload: &[u8]| {
            if let Some(Err(e)) = state.as_mut().map(|d| d.feed(payload)) {
                undecodable = Some(e);
                state = None;
            }
            Ok::<(), std::convert::Infallible>(())
        });
        match fed {
            Ok(()) => {}
            Err(StreamError::File(e)) => return Err(LoadFailure::Corrupt(e)),
            Err(StreamError::Payload(never)) => match never {},
        }
    }
    let meta = file.finish().map_err(LoadFailure::Corrupt)?;
    snapfile::check_name(name, &meta).map_err(LoadFailure::Corrupt)?;
    if let Some(e) = undecodable {
        return Err(LoadFailure::Undecodable(e));
    }
    let state = state.expect("kept unless undecodable");
    let kv = state.finish().map_err(LoadFailure::Undecodable)?;
    Ok((meta, kv, offset))
}

fn read_wal(
    names: &[String],
    read: &mut ReadAt<'_>,
    needed_above: u64,
) -> Result<WalContents, RecoveryError> {
    read_segments_at(names, read, LOAD_PIECE_BYTES, needed_above).map_err(|e| match e {
        ReadSegmentsError::Wal(e) => RecoveryError::Wal(e),
        ReadSegmentsError::Read { name, reason } => RecoveryError::Read { name, reason },
    })
}

/// Recovers from a directory listing, reading files through `read`. `Ok(None)` means the
/// directory holds no WAL and no snapshot: a fresh node.
pub fn recover(
    names: &[String],
    id: WalIdentity,
    read: &mut ReadAt<'_>,
) -> Result<Option<Recovered>, RecoveryError> {
    let mut ops = Vec::new();
    let mut report = RecoveryReport::default();
    let mut segment_names = Vec::new();
    let mut snap_names: Vec<(u64, u64, &String)> = Vec::new();
    for name in names {
        if name.ends_with(snapfile::TEMP_SUFFIX) {
            ops.push(FileOp::Remove { name: name.clone() });
            report.removed_temp_files.push(name.clone());
        } else if SegmentName::parse(name).is_some() {
            segment_names.push(name.clone());
        } else if let Some((term, index)) = snapfile::parse_name(name) {
            snap_names.push((index, term, name));
        }
    }
    if segment_names.is_empty() {
        if snap_names.is_empty() {
            if !ops.is_empty() {
                ops.push(FileOp::SyncDir);
            }
            return Ok(None);
        }
        return Err(RecoveryError::SnapshotsWithoutWal);
    }
    // Only entries after a snapshot can be replayed, so those at or below the oldest snapshot
    // file are read without their bytes; if no snapshot turns out usable, the WAL is read again
    // whole below.
    let needed_above = snap_names
        .iter()
        .map(|(index, _, _)| *index)
        .min()
        .unwrap_or(0);
    let mut wal = read_wal(&segment_names, read, needed_above)?;
    let h = &wal.header;
    // A joining node's WAL is created before it learns its cluster's id (identity.rs): an
    // unknown cluster id in the WAL defers to the identity file.
    let cluster_ok =
        h.cluster_id == id.cluster_id || h.cluster_id == crate::identity::UNKNOWN_CLUSTER;
    if !cluster_ok || h.node_id != id.node_id {
        return Err(WalError::WrongMember {
            cluster: id.cluster_id,
            node: id.node_id,
            found_cluster: h.cluster_id,
            found_node: h.node_id,
        }
        .into());
    }
    report.torn_tail = wal.torn.clone();
    let mut hard_state = wal.hard_state().unwrap_or_default();
    let markers: Vec<(u64, u64)> = wal.markers().map(|(_, m)| (m.index, m.term)).collect();
    // Every snapshot our writers mark is of committed state (a node snapshots what it applied; a
    // leader sends what it applied; the bootstrap snapshot is the initial configuration), so a
    // marked snapshot is committed by construction. Its HardState is written after the marker,
    // and a failure in between (ENOSPC on the segment cut that follows, a power loss tearing the
    // next sector: the simulator found both) must not make the directory unrecoverable.

    // Newest first; only marked snapshots are candidates.
    snap_names.sort_by_key(|(index, term, _)| std::cmp::Reverse((*index, *term)));
    let mut chosen: Option<(SnapshotMeta, KvState)> = None;
    let mut chosen_file_bytes = 0;
    let mut entries = None;
    let mut on_disk = Vec::new();
    let mut last_rejected = SnapshotRejected::NoneMarked;
    for (index, term, name) in &snap_names {
        let marked = markers.contains(&(*index, *term));
        if !marked {
            // Written, but the crash came before its WAL marker: never part of the state.
            ops.push(FileOp::Remove {
                name: (*name).clone(),
            });
            report.removed_orphan_snapshots.push((*name).clone());
            continue;
        }
        if chosen.is_some() {
            on_disk.push(((*name).clone(), *term, *index));
            continue;
        }
        // The log must continue the snapshot before its state is worth decoding (the name's
        // index is checked against the file's own as it loads).
        let ents = match wal.entry_positions_after(*index) {
            Ok(ents) => ents,
            Err(e) => {
                last_rejected = SnapshotRejected::LogGap(e);
                continue;
            }
        };
        match load_snapshot(name, read) {
            Ok((meta, kv, file_bytes)) => {
                chosen_file_bytes = file_bytes;
                on_disk.push(((*name).clone(), *term, *index));
                entries = Some(ents);
                chosen = Some((meta, kv));
            }
            Err(LoadFailure::Corrupt(e)) => {
                ops.push(FileOp::Rename {
                    from: (*name).clone(),
                    to: format!("{name}{BROKEN_SUFFIX}"),
                });
                report.set_aside.push(((*name).clone(), e.clone()));
                last_rejected = SnapshotRejected::Damaged {
                    name: (*name).clone(),
                    error: e,
                };
            }
            Err(LoadFailure::Undecodable(error)) => {
                return Err(RecoveryError::UndecodableSnapshot {
                    name: (*name).clone(),
                    error,
                })
            }
            Err(LoadFailure::Read(reason)) => {
                return Err(RecoveryError::Read {
                    name: (*name).clone(),
                    reason,
                })
            }
        }
    }
    let entries = match entries {
        Some(e) => e,
        None => {
            // No snapshot: the log must be replayable from its very beginning.
            if needed_above > 0 {
                wal = read_wal(&segment_names, read, 0)?;
            }
            let starts_at_one = wal.segments.first().is_some_and(|s| s.1 == 0);
            match wal.entry_positions_after(0) {
                Ok(e) if starts_at_one => e,
                Ok(_) => {
                    return Err(RecoveryError::NoUsableSnapshot {
                        last: Box::new(last_rejected),
                        from_start: None,
                    })
                }
                Err(e) => {
                    return Err(RecoveryError::NoUsableSnapshot {
                        last: Box::new(last_rejected),
                        from_start: Some(Box::new(e)),
                    })
                }
            }
        }
    };
    let entries = wal.take_entries(&entries);
    let snap_index = chosen.as_ref().map_or(0, |(meta, _)| meta.index);
    hard_state.commit = hard_state.commit.max(snap_index);
    if hard_state.commit < snap_index {
        return Err(RecoveryError::CommitBelowSnapshot {
            commit: hard_state.commit,
            snapshot_index: snap_index,
        });
    }
    report.snapshot = chosen.as_ref().map(|(meta, _)| (meta.term, meta.index));
    report.entry_count = entries.len();
    let conf_state = chosen
        .as_ref()
        .map(|(meta, _)| meta.conf_state.clone())
        .unwrap_or_default();
    // What was read may be only in the page cache: a process that stopped between a write and
    // its fsync (killed, or a job that failed part-way) leaves writes a restart reads back but a
    // power loss then drops. The first job makes them durable, and the node acknowledges nothing
    // before it completes (jobs complete in order), so no peer is ever told of entries that can
    // still vanish. Fsync of a file with nothing dirty costs one round trip. The simulator found
    // this: a follower stopped by ENOSPC mid-job, restarted, acknowledged the unsynced tail of
    // its log, then lost it to a power loss (a leader believed it held entries it no longer had).
    for (name, _, _) in &wal.segments {
        ops.push(FileOp::SyncFile { name: name.clone() });
    }
    // A rename (a segment cut, a snapshot installed) may not be durable either.
    ops.push(FileOp::SyncDir);
    let (snapshot, state) = chosen.unzip();
    Ok(Some(Recovered {
        snapshot,
        state,
        snapshot_file_bytes: chosen_file_bytes,
        hard_state,
        entries,
        conf_state,
        wal,
        snapshots_on_disk: on_disk,
        ops,
        report,
    }))
}
