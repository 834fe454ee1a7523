//! The pending tables, a sub-state: every client request the node holds and has not answered
//! yet, and where its answer goes. Proposals wait for their entry to apply, reads for their
//! ReadIndex and the apply index, forwards for the leader's reply, and requests that found no
//! leader for one to be elected.
//!
//! Invariants (asserted, in release builds too):
//! - no table grows past its bound (`max_pending_proposals`, `max_pending_reads`): a full table
//!   is refused as `Busy` before anything is added;
//! - a request leaves its table before it is answered, so it is answered once;
//! - at most one proposal per log index.
//!
//! The stop rule lives here too: what was proposed or forwarded may still be applied, what never
//! left this node is definitely not.

use super::{ClientError, ClientReply, ClientRequest, RejectReason, ReplyTo};
use std::collections::{BTreeMap, VecDeque};

/// A request held while no leader is known (one may be elected meanwhile).
#[derive(Debug)]
pub(super) struct AwaitingLeader {
    pub(super) arrived_tick: u64,
    /// Answered `NoLeader` (definite) at this tick if no leader is known by then.
    pub(super) hold_until_tick: u64,
    /// The request's own deadline, which it keeps once a leader takes it.
    pub(super) deadline_tick: u64,
    pub(super) req: ClientRequest,
}

#[derive(Debug)]
pub(super) struct ForwardedRequest {
    pub(super) handle: u64,
    pub(super) deadline_tick: u64,
    /// The node it was forwarded to: only its reply counts.
    pub(super) leader: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PendingKind {
    Write,
    Member,
}

#[derive(Debug)]
pub(super) struct PendingProposal {
    pub(super) handle: ReplyTo,
    pub(super) term: u64,
    pub(super) kind: PendingKind,
    pub(super) deadline_tick: u64,
}

#[derive(Debug)]
pub(super) struct PendingRead {
    pub(super) handle: ReplyTo,
    pub(super) key: Vec<u8>,
    pub(super) deadline_tick: u64,
    /// Set once raft answered the ReadIndex; served when applied reaches it.
    pub(super) read_index: Option<u64>,
}

pub(super) struct Pending {
    /// By the log index the proposal was appended at.
    proposals: BTreeMap<u64, PendingProposal>,
    reads: BTreeMap<u64, PendingRead>,
    /// Reads waiting for the new leader to commit an entry of its term (raft-rs would drop them).
    reads_waiting: VecDeque<u64>,
    next_read_id: u64,
    /// Requests that arrived while no leader was known, never proposed.
    awaiting_leader: VecDeque<AwaitingLeader>,
    /// Requests this follower forwarded to the leader, by forward id.
    forwarded: BTreeMap<u64, ForwardedRequest>,
    next_forward_id: u64,
    max_proposals: usize,
    max_reads: usize,
}

impl Pending {
    /// Read and forward ids start at random points per incarnation, so a late reply meant for a
    /// previous incarnation of this node cannot answer a request of this one.
    pub(super) fn new(
        max_proposals: usize,
        max_reads: usize,
        first_read_id: u64,
        first_forward_id: u64,
    ) -> Pending {
        Pending {
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            reads_waiting: VecDeque::new(),
            next_read_id: first_read_id,
            awaiting_leader: VecDeque::new(),
            forwarded: BTreeMap::new(),
            next_forward_id: first_forward_id,
            max_proposals,
            max_reads,
        }
    }

    pub(super) fn proposal_count(&self) -> usize {
        self.proposals.len()
    }

    pub(super) fn read_count(&self) -> usize {
        self.reads.len()
    }

    // ---- proposals ----

    pub(super) fn proposals_full(&self) -> bool {
        self.proposals.len() >= self.max_proposals
    }

    pub(super) fn add_proposal(&mut self, index: u64, p: PendingProposal) {
        assert!(!self.proposals_full(), "proposal table past its bound");
        let earlier = self.proposals.insert(index, p);
        assert!(earlier.is_none(), "two proposals at index {index}");
    }

    fn take_proposal(&mut self, index: u64) -> Option<PendingProposal> {
        self.proposals.remove(&index)
    }

    /// The answer to the proposal waiting at `index`, whose entry applied in `term` with
    /// `result`; `None` if none waits there (proposals at lower indexes that were never applied
    /// were overwritten). One of another term was overwritten by a later leader's entry
    /// (`leader`, if known): outcome unknown. A result of the other kind (a write answered with
    /// members, or a change with a write) is refused.
    pub(super) fn take_applied(
        &mut self,
        index: u64,
        term: u64,
        result: Result<ClientReply, ClientError>,
        leader: Option<u64>,
    ) -> Option<(ReplyTo, Result<ClientReply, ClientError>)> {
        let p = self.take_proposal(index)?;
        if p.term != term {
            return Some((p.handle, Err(ClientError::LeaderChanged { leader })));
        }
        let result = match (p.kind, result) {
            (PendingKind::Write, Ok(ClientReply::Members(_)))
            | (PendingKind::Member, Ok(ClientReply::Written(_))) => {
                Err(ClientError::Rejected(RejectReason::KindMismatch))
            }
            (_, r) => r,
        };
        Some((p.handle, result))
    }

    /// The newest proposal answering to `to` (planted bug only).
    pub(super) fn take_latest_proposal_for(&mut self, to: ReplyTo) -> Option<PendingProposal> {
        let index = self
            .proposals
            .iter()
            .rev()
            .find(|(_, p)| p.handle == to)
            .map(|(i, _)| *i)?;
        self.proposals.remove(&index)
    }

    // ---- reads ----

    /// Registers a linearizable read; `None` if the table is full. A read that must wait for
    /// the leader to commit in its term is queued (`waiting`).
    pub(super) fn add_read(&mut self, read: PendingRead, waiting: bool) -> Option<u64> {
        if self.reads.len() >= self.max_reads {
            return None;
        }
        let id = self.next_read_id;
        self.next_read_id += 1;
        self.reads.insert(id, read);
        if waiting {
            self.reads_waiting.push_back(id);
        }
        assert!(self.reads.len() <= self.max_reads);
        Some(id)
    }

    /// raft answered the ReadIndex whose context is `ctx` (a read id): the read is served once
    /// applied reaches `index`. A context that names no pending read (answered already, or not
    /// ours) changes nothing.
    pub(super) fn read_index_known(&mut self, ctx: &[u8], index: u64) {
        let Ok(id) = <[u8; 8]>::try_from(ctx).map(u64::from_le_bytes) else {
            return;
        };
        if let Some(r) = self.reads.get_mut(&id) {
            r.read_index = Some(index);
        }
    }

    pub(super) fn has_waiting_reads(&self) -> bool {
        !self.reads_waiting.is_empty()
    }

    /// The queued reads still pending, in order; the queue is emptied.
    pub(super) fn take_waiting_reads(&mut self) -> Vec<u64> {
        let reads = &self.reads;
        self.reads_waiting
            .drain(..)
            .filter(|id| reads.contains_key(id))
            .collect()
    }

    /// Reads whose ReadIndex is at or below `applied`, removed.
    pub(super) fn take_servable_reads(&mut self, applied: u64) -> Vec<PendingRead> {
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.read_index.is_some_and(|i| i <= applied))
            .map(|(id, _)| *id)
            .collect();
        ready
            .into_iter()
            .map(|id| self.reads.remove(&id).expect("listed"))
            .collect()
    }

    // ---- forwards ----

    /// Registers a request forwarded to `leader`; `None` if the table is full.
    pub(super) fn add_forward(
        &mut self,
        handle: u64,
        deadline_tick: u64,
        leader: u64,
    ) -> Option<u64> {
        if self.forwarded.len() >= self.max_proposals {
            return None;
        }
        let forward_id = self.next_forward_id;
        self.next_forward_id += 1;
        self.forwarded.insert(
            forward_id,
            ForwardedRequest {
                handle,
                deadline_tick,
                leader,
            },
        );
        assert!(self.forwarded.len() <= self.max_proposals);
        Some(forward_id)
    }

    /// The forward `forward_id`, if it went to `from` (only that node's reply counts).
    pub(super) fn take_forward_from(
        &mut self,
        forward_id: u64,
        from: u64,
    ) -> Option<ForwardedRequest> {
        if self
            .forwarded
            .get(&forward_id)
            .is_some_and(|f| f.leader == from)
        {
            self.forwarded.remove(&forward_id)
        } else {
            None
        }
    }

    pub(super) fn take_forward(&mut self, forward_id: u64) -> Option<ForwardedRequest> {
        self.forwarded.remove(&forward_id)
    }

    /// Forwards that went to a node other than `leader`, removed.
    pub(super) fn take_forwards_not_to(&mut self, leader: u64) -> Vec<ForwardedRequest> {
        let stale: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, f)| f.leader != leader)
            .map(|(id, _)| *id)
            .collect();
        stale
            .into_iter()
            .map(|id| self.forwarded.remove(&id).expect("listed"))
            .collect()
    }

    // ---- requests waiting for a leader ----

    /// Holds a request until a leader is known; false if the table is full.
    pub(super) fn hold(&mut self, a: AwaitingLeader) -> bool {
        if self.awaiting_leader.len() >= self.max_proposals {
            return false;
        }
        self.awaiting_leader.push_back(a);
        true
    }

    pub(super) fn has_awaiting(&self) -> bool {
        !self.awaiting_leader.is_empty()
    }

    pub(super) fn take_awaiting(&mut self) -> VecDeque<AwaitingLeader> {
        std::mem::take(&mut self.awaiting_leader)
    }

    // ---- answers due without a reply from raft ----

    /// Everything whose time is up at `now`, with its answer: past their deadline, proposals,
    /// reads and forwards time out (outcome unknown); a request held for a leader past its hold
    /// was never proposed (`NoLeader`, definite).
    pub(super) fn take_expired(&mut self, now: u64) -> Vec<(ReplyTo, ClientError)> {
        let mut out = Vec::new();
        for p in take_expired(&mut self.proposals, now, |p| p.deadline_tick) {
            out.push((p.handle, ClientError::Timeout));
        }
        for r in take_expired(&mut self.reads, now, |r| r.deadline_tick) {
            out.push((r.handle, ClientError::Timeout));
        }
        let reads = &self.reads;
        self.reads_waiting.retain(|id| reads.contains_key(id));
        for f in take_expired(&mut self.forwarded, now, |f| f.deadline_tick) {
            out.push((ReplyTo::Local(f.handle), ClientError::Timeout));
        }
        let (due, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.awaiting_leader)
            .into_iter()
            .partition(|a| a.hold_until_tick <= now);
        self.awaiting_leader = held.into();
        for a in due {
            let waited_ticks = now - a.arrived_tick;
            out.push((
                ReplyTo::Local(a.req.handle),
                ClientError::NoLeader { waited_ticks },
            ));
        }
        out
    }

    /// Proposals and reads, removed (leadership was lost: answered with one error).
    pub(super) fn take_proposals_and_reads(&mut self) -> Vec<ReplyTo> {
        let proposals = std::mem::take(&mut self.proposals);
        let reads = std::mem::take(&mut self.reads);
        self.reads_waiting.clear();
        proposals
            .values()
            .map(|p| p.handle)
            .chain(reads.values().map(|r| r.handle))
            .collect()
    }

    /// Everything, with a stopping node's answers: what it proposed, or forwarded to a leader
    /// that may have proposed it, may still be applied (`StoppedWhilePending`); what was still
    /// waiting for a leader never left this node (`Stopped`, definite). Reads change nothing, so
    /// theirs is definite too.
    pub(super) fn take_all_for_stop(&mut self) -> Vec<(ReplyTo, ClientError)> {
        let proposals = std::mem::take(&mut self.proposals);
        let reads = std::mem::take(&mut self.reads);
        self.reads_waiting.clear();
        let forwarded = std::mem::take(&mut self.forwarded);
        let awaiting = std::mem::take(&mut self.awaiting_leader);
        proposals
            .values()
            .map(|p| (p.handle, ClientError::StoppedWhilePending))
            .chain(
                forwarded
                    .values()
                    .map(|f| (ReplyTo::Local(f.handle), ClientError::StoppedWhilePending)),
            )
            .chain(reads.values().map(|r| (r.handle, ClientError::Stopped)))
            .chain(
                awaiting
                    .iter()
                    .map(|a| (ReplyTo::Local(a.req.handle), ClientError::Stopped)),
            )
            .collect()
    }
}

/// Removes and returns the entries of `map` whose deadline has come, in key order.
fn take_expired<T>(
    map: &mut BTreeMap<u64, T>,
    now_tick: u64,
    deadline_tick: impl Fn(&T) -> u64,
) -> Vec<T> {
    let due: Vec<u64> = map
        .iter()
        .filter(|(_, v)| deadline_tick(v) <= now_tick)
        .map(|(k, _)| *k)
        .collect();
    due.into_iter()
        .map(|k| map.remove(&k).expect("listed"))
        .collect()
}
