//! The raft log as raft-rs sees it: an in-memory `raft::Storage` rebuilt from disk at start.
//!
//! Durability is the WAL's job; this type is the read side that raft consults. It also holds the
//! latest snapshot's metadata and a descriptor of its file (never the state: the file is streamed
//! to followers, see `transfer`), and refuses to hand out a snapshot whose
//! ConfState is not the current one or does not contain the receiver: raft-rs followers silently
//! ignore a snapshot that does not list them, so the node makes a fresh one instead.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use std::cell::Cell;

#[derive(Default)]
pub struct NodeStorage {
    hs: HardState,
    /// Configuration as of the applied index.
    cs: ConfState,
    /// Everything at or below this index is compacted away.
    compacted_index: u64,
    compacted_term: u64,
    /// `entries[i].index == compacted_index + 1 + i`.
    entries: Vec<Entry>,
    latest_snapshot: Option<Snapshot>,
    /// Set when raft asked for a snapshot that could not be served; the node makes a fresh one.
    snapshot_wanted: Cell<bool>,
}

fn store_err(e: StorageError) -> raft::Error {
    raft::Error::Store(e)
}

pub fn conf_contains(cs: &ConfState, id: u64) -> bool {
    cs.voters.contains(&id)
        || cs.learners.contains(&id)
        || cs.voters_outgoing.contains(&id)
        || cs.learners_next.contains(&id)
}

impl NodeStorage {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hs
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hs = hs;
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.cs
    }

    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.cs = cs;
    }

    pub fn latest_snapshot(&self) -> Option<&Snapshot> {
        self.latest_snapshot.as_ref()
    }

    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    pub fn first_index(&self) -> u64 {
        self.compacted_index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.compacted_index + self.entries.len() as u64
    }

    /// Number of entries held in memory.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Replaces the log with a snapshot (received from a leader, or loaded at start).
    pub fn apply_snapshot(&mut self, snap: Snapshot) {
        let meta = snap.get_metadata();
        assert!(
            meta.index >= self.compacted_index,
            "snapshot {} older than compaction point {}",
            meta.index,
            self.compacted_index
        );
        self.compacted_index = meta.index;
        self.compacted_term = meta.term;
        self.entries.clear();
        self.hs.term = self.hs.term.max(meta.term);
        self.hs.commit = self.hs.commit.max(meta.index);
        self.cs = meta.get_conf_state().clone();
        self.latest_snapshot = Some(snap);
    }

    /// Records a snapshot this node made of its own state; the log is compacted separately.
    pub fn set_latest_snapshot(&mut self, snap: Snapshot) {
        self.latest_snapshot = Some(snap);
    }

    /// Forgets the latest snapshot (its file turned out damaged): raft's next request for one
    /// makes the node take a fresh one.
    pub fn forget_latest_snapshot(&mut self) {
        self.latest_snapshot = None;
    }

    /// Appends entries, replacing any conflicting suffix.
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        self.truncate_for(first.index);
        self.entries.extend_from_slice(ents);
        self.check_contiguous();
    }

    /// [`Self::append`] of entries the caller gives up (a restart's log, moved not copied).
    pub fn append_owned(&mut self, ents: Vec<Entry>) {
        let Some(first) = ents.first() else { return };
        self.truncate_for(first.index);
        if self.entries.is_empty() {
            self.entries = ents;
        } else {
            self.entries.extend(ents);
        }
        self.check_contiguous();
    }

    /// Drops the suffix an append starting at `first_index` replaces.
    fn truncate_for(&mut self, first_index: u64) {
        assert!(
            first_index > self.compacted_index,
            "append {} at or below compaction point {}",
            first_index,
            self.compacted_index
        );
        assert!(
            first_index <= self.last_index() + 1,
            "gap: append {} after {}",
            first_index,
            self.last_index()
        );
        self.entries
            .truncate((first_index - self.compacted_index - 1) as usize);
    }

    fn check_contiguous(&self) {
        debug_assert!(self
            .entries
            .windows(2)
            .all(|w| w[1].index == w[0].index + 1));
    }

    /// Drops entries below `index` (kept: `index..`). Never past the last entry.
    pub fn compact(&mut self, index: u64) {
        if index <= self.first_index() {
            return;
        }
        assert!(
            index <= self.last_index() + 1,
            "compact {index} past last index {}",
            self.last_index()
        );
        let n = (index - self.first_index()) as usize;
        self.compacted_term = self.entries[n - 1].term;
        self.compacted_index = index - 1;
        self.entries.drain(..n);
    }

    pub fn term_of(&self, idx: u64) -> Option<u64> {
        if idx == self.compacted_index {
            return Some(self.compacted_term);
        }
        if idx < self.compacted_index || idx > self.last_index() {
            return None;
        }
        Some(self.entries[(idx - self.compacted_index - 1) as usize].term)
    }
}

impl raft::Storage for NodeStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hs.clone(),
            conf_state: self.cs.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _ctx: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.compacted_index {
            return Err(store_err(StorageError::Compacted));
        }
        assert!(
            high <= self.last_index() + 1,
            "entries({low}, {high}) past last index {}",
            self.last_index()
        );
        let lo = (low - self.compacted_index - 1) as usize;
        let hi = (high - self.compacted_index - 1) as usize;
        let mut out = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.compacted_index {
            return Err(store_err(StorageError::Compacted));
        }
        self.term_of(idx)
            .ok_or_else(|| store_err(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        if let Some(s) = &self.latest_snapshot {
            let meta = s.get_metadata();
            let planted =
                crate::planted::active(crate::planted::PlantedBug::SnapshotWithoutConfState);
            if meta.index >= request_index
                && (planted || (meta.get_conf_state() == &self.cs && conf_contains(&self.cs, to)))
            {
                return Ok(s.clone());
            }
        }
        self.snapshot_wanted.set(true);
        Err(store_err(StorageError::SnapshotTemporarilyUnavailable))
    }
}
