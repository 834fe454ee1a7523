//! This node's own place in the membership, a sub-state: the peer URL it listens on and
//! advertises, a changed URL no member has confirmed yet, and its own removal (it lingers as a
//! voter while members may still count on it, then stops). Beside it the rules a membership change must pass before
//! the leader proposes it ([`Rules`], a borrowed view of exactly what they read), and how an
//! applied change becomes a raft conf change and an event.
//!
//! Invariants (asserted, in release builds too):
//! - the URL is set once, at start, and a changed one waits a deadline in the future;
//! - once removed, a node stays removed; the voters it may be counted by only grow.
//!
//! The rules refuse (a `RejectReason`, the client's 409), never assert: their inputs are requests.

use super::config::{linger_ticks, url_confirm_ticks};
use super::peers::Peers;
use super::{Event, NodeConfig, RejectReason, StopReason};
use crate::command::MemberChange;
use crate::kv::KvState;
use raft::eraftpb::{ConfChange, ConfChangeType};
use raft::ProgressTracker;
use std::collections::BTreeSet;

/// A node started with a peer URL its directory does not know (see `boot`): confirmed by the
/// first frame a member sends it there, or it stops at `deadline_tick`.
#[derive(Clone, Debug)]
struct UrlChange {
    recorded: String,
    flag: String,
    deadline_tick: u64,
}

/// This node's removal, as far as it knows it.
#[derive(Clone, Debug)]
struct Removal {
    /// The last tick a member counted on this node (sent it a raft message), or the removal's.
    needed_at_tick: u64,
    /// Voters of the configurations it knew once removed (itself apart): every one of them may
    /// count it.
    voters: BTreeSet<u64>,
    /// Those that reported the removal applied.
    reported: BTreeSet<u64>,
}

#[derive(Debug, Default)]
pub(super) struct Membership {
    /// The peer URL this node listens on (its flags), advertised in every frame.
    own_url: Option<String>,
    url_change: Option<UrlChange>,
    removal: Option<Removal>,
    /// `set_own_url` ran (once, at start).
    url_set: bool,
}

impl Membership {
    /// The URL from the flags; `moved` is (recorded, flag) when they disagree with the directory:
    /// the event that says so, and a deadline for a member to confirm the new one.
    pub(super) fn set_own_url(
        &mut self,
        cfg: &NodeConfig,
        now_tick: u64,
        own_url: Option<String>,
        moved: Option<(String, String)>,
    ) -> Option<Event> {
        assert!(!self.url_set, "the peer URL is set once, at start");
        self.url_set = true;
        self.own_url = own_url;
        let change = moved.map(|(recorded, flag)| UrlChange {
            recorded,
            flag,
            deadline_tick: now_tick + url_confirm_ticks(cfg),
        });
        let event = change.as_ref().map(|c| Event::PeerUrlUnconfirmed {
            recorded: c.recorded.clone(),
            flag: c.flag.clone(),
        });
        self.url_change = change;
        assert!(self
            .url_change
            .as_ref()
            .is_none_or(|c| c.deadline_tick > now_tick));
        event
    }

    pub(super) fn own_url(&self) -> Option<&str> {
        self.own_url.as_deref()
    }

    /// A member reached this node: a changed peer URL is confirmed (the event, the first time).
    pub(super) fn member_reached_us(&mut self) -> Option<Event> {
        let c = self.url_change.take()?;
        Some(Event::PeerUrlConfirmed { url: c.flag })
    }

    pub(super) fn url_unconfirmed(&self) -> bool {
        self.url_change.is_some()
    }

    /// This node learned at `now_tick` that it was removed: it applied its own removal, or a
    /// member that applied it said so. `voters` are the other voters it knows of. It lingers as
    /// a voter of the old configuration: peers that have the removal in their log but have not
    /// applied it (raft-rs changes the configuration on apply) still count this node in their
    /// quorum, and with another member lost they could never elect without its vote. So it stops
    /// only once every one of `voters` has reported the removal applied, or once no member has
    /// counted on it (sent it a raft message) for the linger. One report is not enough: the
    /// simulator found a removed node that stopped when the leader reported, the leader's disk
    /// then failed, and the two voters left, which had not learned the removal was committed,
    /// counted the stopped node and never elected again (seed 100326). A leader lingers too:
    /// it alone knows the removal is committed, and had it stopped at once its followers would
    /// keep the old configuration and, with one more member lost, never elect again (seed 896).
    /// raft-rs cannot lead a configuration it is not in (it panics committing), so it steps
    /// down first (`Node::step_down_if_removed`), with a last round of heartbeats that carries
    /// the commit; it still votes in the old configuration, so its peers elect a leader that
    /// commits the removal. While it lingers it serves no request and proposes nothing.
    pub(super) fn removed(&mut self, now_tick: u64, voters: BTreeSet<u64>) {
        // Told of its removal before applying it, it knew an older configuration: the one it
        // applies later may name voters that one did not.
        let r = self.removal.get_or_insert_with(|| Removal {
            needed_at_tick: now_tick,
            voters: BTreeSet::new(),
            reported: BTreeSet::new(),
        });
        assert!(r.needed_at_tick <= now_tick, "removed in the future");
        r.voters.extend(voters);
    }

    /// Member `by` reports that it applied this node's removal. True the first time this node
    /// learns it was removed.
    pub(super) fn removal_reported(
        &mut self,
        by: u64,
        now_tick: u64,
        voters: BTreeSet<u64>,
    ) -> bool {
        let first = self.removal.is_none();
        self.removed(now_tick, voters);
        let r = self.removal.as_mut().expect("removed");
        r.reported.insert(by);
        first
    }

    /// A member sent this node a raft message: it still counts this node as a voter.
    pub(super) fn counted_on(&mut self, now_tick: u64) {
        if let Some(r) = &mut self.removal {
            r.needed_at_tick = r.needed_at_tick.max(now_tick);
        }
    }

    pub(super) fn is_removed(&self) -> bool {
        self.removal.is_some()
    }

    /// Why the node must stop at `now_tick`, if it must: its linger after removal is over, or no
    /// member confirmed its changed peer URL in time.
    pub(super) fn stop_due(&self, cfg: &NodeConfig, now_tick: u64) -> Option<StopReason> {
        if let Some(r) = &self.removal {
            if r.voters.is_subset(&r.reported) {
                return Some(StopReason::RemovalConfirmed);
            }
            if r.needed_at_tick + linger_ticks(cfg) <= now_tick {
                return Some(StopReason::Removed);
            }
        }
        let c = self
            .url_change
            .as_ref()
            .filter(|c| c.deadline_tick <= now_tick)?;
        Some(StopReason::PeerUrlNotConfirmed {
            id: cfg.id,
            recorded: c.recorded.clone(),
            flag: c.flag.clone(),
            waited_ticks: url_confirm_ticks(cfg),
        })
    }
}

/// A client's membership request: a raft conf change, or a member's new peer URL (no conf
/// change: an ordinary entry every replica applies to its membership).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum MemberOp {
    Change(MemberChange),
    SetUrl { id: u64, addr: String },
}

/// What a membership change is checked against before the leader proposes it: the applied
/// membership, raft's progress of each peer, when each was last heard from.
pub(super) struct Rules<'a> {
    pub(super) cfg: &'a NodeConfig,
    pub(super) kv: &'a KvState,
    pub(super) prs: &'a ProgressTracker,
    pub(super) peers: &'a Peers,
    pub(super) now_tick: u64,
    /// The leader's last log index.
    pub(super) last_index: u64,
}

impl Rules<'_> {
    /// Why the membership request `op` may not be proposed now, if it may not.
    pub(super) fn refusal(&self, op: &MemberOp) -> Option<RejectReason> {
        match op {
            MemberOp::Change(MemberChange::Add { id, addr }) => self
                .new_member_refused(*id, addr)
                .or_else(|| self.quorum_after(Some(*id), None)),
            MemberOp::Change(MemberChange::Remove { id }) => {
                if !self.kv.members().contains_key(id) {
                    Some(RejectReason::NotMember { id: *id })
                } else if self.kv.members().len() == 1 {
                    Some(RejectReason::LastMember)
                } else {
                    self.quorum_after(None, Some(*id))
                }
            }
            MemberOp::Change(MemberChange::AddLearner { id, addr, .. }) => {
                self.new_member_refused(*id, addr)
            }
            MemberOp::Change(MemberChange::Promote { id }) => self.promotion_refused(*id),
            MemberOp::SetUrl { id, addr } => {
                if !self.kv.members().contains_key(id) {
                    Some(RejectReason::NotMember { id: *id })
                } else {
                    self.url_in_use(*id, addr)
                }
            }
        }
    }

    /// The learner added with `auto_promote` the leader of `term` promotes now, if any: caught
    /// up (`promotion_refused` says nothing), and not proposed for promotion in this term yet.
    pub(super) fn learner_to_promote(&self, term: u64) -> Option<u64> {
        self.kv
            .learners()
            .iter()
            .filter(|(_, auto)| **auto)
            .map(|(id, _)| *id)
            .find(|id| !self.peers.promoting_in(*id, term) && self.promotion_refused(*id).is_none())
    }

    /// Why learner `id` may not be promoted now: not a learner, too far behind the leader's log
    /// (a voter that cannot vote yet would count toward the quorum), or the quorum check.
    fn promotion_refused(&self, id: u64) -> Option<RejectReason> {
        if !self.kv.learners().contains_key(&id) {
            return Some(RejectReason::NotLearner { id });
        }
        let last_index = self.last_index;
        let matched = self.prs.get(id).map_or(0, |p| p.matched);
        // Caught up means it has acknowledged entries lately, not merely that the log is short:
        // a learner that never started must never be promoted (the simulator caught one in a
        // young cluster, whose four voters then lost their quorum to one crash).
        let window = 2 * self.cfg.election_tick as u64;
        let alive = self.peers.heard_within(id, self.now_tick, window);
        if !alive
            || matched == 0
            || matched + self.cfg.compaction.catch_up_entries.max(1) < last_index
        {
            return Some(RejectReason::LearnerBehind {
                id,
                matched,
                last_index,
            });
        }
        self.quorum_after(Some(id), None)
    }

    /// etcd's strict reconfiguration check: refuse a change after which the voters this leader
    /// has heard from lately (itself included) would fall short of a quorum. A new voter counts
    /// toward the quorum before it has even started, and a dead one still counts: either makes a
    /// cluster that can never commit again (the simulator found an operator removing a healthy
    /// member while two others were lost, and another adding a voter beside a dead one).
    fn quorum_after(&self, add: Option<u64>, remove: Option<u64>) -> Option<RejectReason> {
        let mut voters: Vec<u64> = self.prs.conf().voters().ids().iter().collect();
        voters.extend(add);
        voters.retain(|v| Some(*v) != remove);
        let window = 2 * self.cfg.election_tick as u64;
        let active = voters
            .iter()
            .filter(|&&v| v == self.cfg.id || self.peers.heard_within(v, self.now_tick, window))
            .count();
        let needed = voters.len() / 2 + 1;
        (active < needed).then_some(RejectReason::WouldLoseQuorum { active, needed })
    }

    /// Why `id` at `addr` cannot join (as a voter or a learner), if it cannot.
    fn new_member_refused(&self, id: u64, addr: &str) -> Option<RejectReason> {
        if id == 0 {
            Some(RejectReason::ZeroId)
        } else if self.kv.was_removed(id) {
            Some(RejectReason::IdRemoved { id })
        } else if self.kv.members().contains_key(&id) {
            Some(RejectReason::AlreadyMember { id })
        } else {
            self.url_in_use(id, addr)
        }
    }

    fn url_in_use(&self, id: u64, addr: &str) -> Option<RejectReason> {
        self.kv
            .members()
            .iter()
            .find(|(other, a)| a.as_str() == addr && **other != id)
            .map(|(other, _)| RejectReason::UrlInUse {
                id: *other,
                addr: addr.to_string(),
            })
    }
}

/// The raft conf change that carries a membership change.
pub(super) fn conf_change_of(change: &MemberChange) -> ConfChange {
    let mut cc = ConfChange::default();
    let (t, id) = match change {
        MemberChange::Add { id, .. } | MemberChange::Promote { id } => {
            (ConfChangeType::AddNode, id)
        }
        MemberChange::AddLearner { id, .. } => (ConfChangeType::AddLearnerNode, id),
        MemberChange::Remove { id } => (ConfChangeType::RemoveNode, id),
    };
    cc.set_change_type(t);
    cc.node_id = *id;
    cc
}

/// What an applied membership change is reported as.
pub(super) fn applied_event(change: &MemberChange) -> Event {
    match change {
        MemberChange::Add { id, addr } => Event::MemberAdded {
            id: *id,
            addr: addr.clone(),
        },
        MemberChange::AddLearner { id, addr, .. } => Event::LearnerAdded {
            id: *id,
            addr: addr.clone(),
        },
        MemberChange::Promote { id } => Event::LearnerPromoted { id: *id },
        MemberChange::Remove { id } => Event::MemberRemoved { id: *id },
    }
}
