//! What this node knows of its peers beyond the membership it applied, a sub-state: when each
//! member was last heard from (the strict reconfig check, promotion), the incarnation each
//! member spoke with until it is recorded, the incarnations and promotions the leader proposed
//! (one proposal per member per term), and addresses of senders it does not know as members.
//!
//! Invariants (asserted, in release builds too):
//! - the address book of unknown senders is bounded (`MAX_PEER_HINTS`): a stream of frames from
//!   ever-new ids cannot grow it;
//! - a removed member is forgotten everywhere here (`forget`).

use crate::command::MemberChange;
use crate::kv::KvState;
use std::collections::BTreeMap;

/// Addresses of unknown senders kept (the oldest id goes first).
const MAX_PEER_HINTS: usize = 64;

#[derive(Default)]
pub(super) struct Peers {
    /// When each member last sent a frame this node accepted.
    last_heard_tick: BTreeMap<u64, u64>,
    /// The incarnation each member last spoke with, while its incarnation is unrecorded.
    seen_incarnations: BTreeMap<u64, u64>,
    /// Incarnations proposed for recording and not yet applied: member id -> term proposed in.
    recording: BTreeMap<u64, u64>,
    /// Learners the leader proposed to promote, and the term it did so in.
    promoting: BTreeMap<u64, u64>,
    /// Addresses advertised by senders that are not (yet, or no longer) known members.
    hints: BTreeMap<u64, String>,
}

impl Peers {
    /// A member's frame was accepted at `now_tick`.
    pub(super) fn heard(&mut self, id: u64, now_tick: u64) {
        self.last_heard_tick.insert(id, now_tick);
    }

    /// `id` was heard from within `window_ticks` of `now_tick`.
    pub(super) fn heard_within(&self, id: u64, now_tick: u64, window_ticks: u64) -> bool {
        self.last_heard_tick
            .get(&id)
            .is_some_and(|&t| t + window_ticks >= now_tick)
    }

    /// A member spoke with `incarnation` (not yet recorded).
    pub(super) fn saw_incarnation(&mut self, id: u64, incarnation: u64) {
        self.seen_incarnations.insert(id, incarnation);
    }

    fn seen_incarnations(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.seen_incarnations.iter().map(|(a, b)| (*a, *b))
    }

    /// What the leader of `term` proposes recording: its own incarnation (`me`) and the ones
    /// members spoke with, for members whose incarnation `kv` does not hold yet, unless proposed
    /// in this term already.
    pub(super) fn incarnations_to_record(
        &self,
        me: (u64, u64),
        kv: &KvState,
        term: u64,
    ) -> Vec<(u64, u64)> {
        std::iter::once(me)
            .chain(self.seen_incarnations())
            .filter(|(id, _)| {
                kv.members().contains_key(id)
                    && kv.incarnation(*id).is_none()
                    && !self.recording_in(*id, term)
            })
            .collect()
    }

    /// The leader proposes recording `id`'s incarnation in `term`, unless it did already.
    fn recording_in(&self, id: u64, term: u64) -> bool {
        self.recording.get(&id) == Some(&term)
    }

    pub(super) fn proposed_recording(&mut self, id: u64, term: u64) {
        self.recording.insert(id, term);
    }

    /// `id`'s incarnation is recorded: nothing more to propose or remember.
    pub(super) fn recorded(&mut self, id: u64) {
        self.recording.remove(&id);
        self.seen_incarnations.remove(&id);
    }

    pub(super) fn promoting_in(&self, id: u64, term: u64) -> bool {
        self.promoting.get(&id) == Some(&term)
    }

    pub(super) fn proposed_promotion(&mut self, id: u64, term: u64) {
        self.promoting.insert(id, term);
    }

    /// A membership change applied: a removed member is forgotten, a promoted one no longer
    /// waits for its promotion.
    pub(super) fn applied(&mut self, change: &MemberChange) {
        match *change {
            MemberChange::Remove { id } => self.forget(id),
            MemberChange::Promote { id } => {
                self.promoting.remove(&id);
            }
            MemberChange::Add { .. } | MemberChange::AddLearner { .. } => {}
        }
    }

    /// A sender this node does not know as a member advertised `addr`.
    pub(super) fn hint(&mut self, id: u64, addr: String) {
        if self.hints.len() >= MAX_PEER_HINTS && !self.hints.contains_key(&id) {
            self.hints.pop_first();
        }
        self.hints.insert(id, addr);
        assert!(self.hints.len() <= MAX_PEER_HINTS);
    }

    pub(super) fn hinted_address(&self, id: u64) -> Option<&String> {
        self.hints.get(&id)
    }

    /// `id` left the membership.
    fn forget(&mut self, id: u64) {
        self.last_heard_tick.remove(&id);
        self.seen_incarnations.remove(&id);
        assert!(
            !self.last_heard_tick.contains_key(&id) && !self.seen_incarnations.contains_key(&id)
        );
    }
}
