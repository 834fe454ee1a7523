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
    /// `cum_bytes[i]` is `bytes_base` plus the payload bytes of `entries[..=i]`: the bytes of
    /// any run of entries in O(1), which compaction weighs against the state.
    cum_bytes: Vec<u64>,
    /// Payload bytes of every entry ever appended below the first one held.
    bytes_base: u64,
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
        self.cum_bytes.clear();
        self.bytes_base = 0;
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
        self.count_bytes();
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
        self.count_bytes();
        self.check_contiguous();
    }

    /// Extends `cum_bytes` over entries appended since.
    fn count_bytes(&mut self) {
        let mut total = self.cum_bytes.last().copied().unwrap_or(self.bytes_base);
        let from = self.cum_bytes.len();
        self.cum_bytes.extend(self.entries[from..].iter().map(|e| {
            total += payload_bytes(e);
            total
        }));
        debug_assert_eq!(self.cum_bytes.len(), self.entries.len());
    }

    /// Payload bytes (data and context) of the entries held with an index in `lo..=hi`.
    pub fn log_bytes(&self, lo: u64, hi: u64) -> u64 {
        let lo = lo.max(self.first_index());
        let hi = hi.min(self.last_index());
        if lo > hi {
            return 0;
        }
        self.cum_at(hi) - self.cum_at(lo - 1)
    }

    /// `bytes_base` plus the payload bytes of every entry held up to `index` (at least the
    /// compaction point).
    fn cum_at(&self, index: u64) -> u64 {
        if index <= self.compacted_index {
            self.bytes_base
        } else {
            self.cum_bytes[(index - self.compacted_index - 1) as usize]
        }
    }

    /// The lowest index from which the entries held up to `upto` hold at most `budget_bytes`
    /// (`upto + 1` when entry `upto` alone holds more; at least the first index held).
    pub fn first_index_within(&self, budget_bytes: u64, upto: u64) -> u64 {
        let upto = upto.min(self.last_index());
        if upto < self.first_index() {
            return self.first_index();
        }
        let end = self.cum_at(upto);
        // cum_at(i - 1) only grows with i: find the first i with end - cum_at(i - 1) <= budget.
        let held = &self.cum_bytes[..(upto - self.compacted_index) as usize];
        let fits = |cum_before: u64| end - cum_before <= budget_bytes;
        if fits(self.bytes_base) {
            return self.first_index();
        }
        // held[j] is cum_at(first_index + j); the answer is first_index + j + 1 for the first j
        // where fits(held[j]).
        let j = held.partition_point(|&c| !fits(c));
        self.first_index() + j as u64 + 1
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
        let keep = (first_index - self.compacted_index - 1) as usize;
        self.entries.truncate(keep);
        self.cum_bytes.truncate(keep);
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
        self.bytes_base = self.cum_bytes[n - 1];
        self.cum_bytes.drain(..n);
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

/// Bytes an entry's payload holds in memory (what compaction counts; the fixed per-entry
/// overhead is bounded by `snap_count` instead).
fn payload_bytes(e: &Entry) -> u64 {
    (e.data.len() + e.context.len()) as u64
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(index: u64, bytes: usize) -> Entry {
        Entry {
            index,
            term: 1,
            data: vec![7u8; bytes].into(),
            ..Default::default()
        }
    }

    /// What the prefix sums must agree with: a walk over the entries held.
    fn naive_bytes(s: &NodeStorage, lo: u64, hi: u64) -> u64 {
        s.entries
            .iter()
            .filter(|e| e.index >= lo && e.index <= hi)
            .map(payload_bytes)
            .sum()
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Append `sizes` starting `back` entries below the end (a conflicting suffix replaced).
        Append {
            back: u64,
            sizes: Vec<usize>,
        },
        Compact {
            ahead: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..4, prop::collection::vec(0usize..300, 1..8))
                .prop_map(|(back, sizes)| Op::Append { back, sizes }),
            1 => (0u64..10).prop_map(|ahead| Op::Compact { ahead }),
        ]
    }

    proptest! {
        #[test]
        fn log_bytes_and_first_index_within_match_a_walk(
            ops in prop::collection::vec(op(), 1..40),
            budget in 0u64..2000,
        ) {
            let mut s = NodeStorage::new();
            for op in ops {
                match op {
                    Op::Append { back, sizes } => {
                        let first = (s.last_index() + 1)
                            .saturating_sub(back)
                            .max(s.first_index());
                        let ents: Vec<Entry> = sizes
                            .iter()
                            .enumerate()
                            .map(|(i, &b)| entry(first + i as u64, b))
                            .collect();
                        s.append(&ents);
                    }
                    Op::Compact { ahead } => {
                        s.compact((s.first_index() + ahead).min(s.last_index() + 1));
                    }
                }
                let (first, last) = (s.first_index(), s.last_index());
                for lo in first.saturating_sub(1)..=last + 1 {
                    for hi in lo..=last + 1 {
                        prop_assert_eq!(s.log_bytes(lo, hi), naive_bytes(&s, lo, hi));
                    }
                }
                for upto in first.saturating_sub(1)..=last {
                    let i = s.first_index_within(budget, upto);
                    let upto_held = upto.min(last);
                    prop_assert!(i >= first);
                    prop_assert!(naive_bytes(&s, i, upto_held) <= budget);
                    // The lowest such index: one more entry would not fit.
                    if i > first && upto_held >= first {
                        prop_assert!(naive_bytes(&s, i - 1, upto_held) > budget);
                    }
                }
            }
        }
    }
}
