//! Admission of a peer frame, a pure step: from the decoded envelope and exactly what it reads
//! (this node's id and identity, the applied membership and its incarnations) it returns a
//! verdict; the node turns the verdict into effects, in the order the verdict lists them. Then
//! the checks a raft message must pass before raft-rs sees it, and the one a refusal must pass
//! before it stops this node.
//!
//! Identity rules: a frame names the cluster and both ends' incarnations. A frame for another
//! node or cluster is dropped; one for an earlier incarnation of this node means this directory
//! will never be accepted; one from an incarnation the membership does not record is refused
//! (its votes and acks never count), and a removed sender is told so.

use super::{PeerError, StopReason};
use crate::identity::{Identity, UNKNOWN_CLUSTER};
use crate::kv::KvState;
use crate::msgcodec::{Body, Envelope, Recipient, Refusal};
use crate::planted::{active as planted, PlantedBug};
use raft::eraftpb::{Message, MessageType};

/// What admission reads of the node.
pub(super) struct View<'a> {
    pub id: u64,
    pub identity: &'a Identity,
    pub kv: &'a KvState,
}

/// What becomes of a frame, before its body is looked at.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// Not for this node (another recipient or cluster, no sender, itself): nothing changes.
    Drop(PeerError),
    /// From a peer of this cluster. A joining node first adopts `adopt_cluster` (only a member
    /// of that cluster that was told this node's address sends to it); then `verdict`.
    Peer {
        adopt_cluster: Option<u64>,
        verdict: Verdict,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Addressed to an earlier incarnation of this node (its directory was since replaced):
    /// what it says describes a log this directory never had. The sender addressed what its
    /// applied membership records for this id, and a record never changes: this directory will
    /// never be accepted, so the node stops (peers that only ever send to it would otherwise
    /// leave it campaigning forever) and drops the frame.
    NotRecognized { stop: StopReason, error: PeerError },
    /// The sender speaks with another incarnation than the one recorded: its votes and
    /// acknowledgements must never count. Refused and reported; `answer` (to a raft message):
    /// tell it, so it stops with an error its operator can act on instead of campaigning
    /// forever.
    StaleSender {
        answer: Option<Refusal>,
        error: PeerError,
    },
    /// The sender was removed: tell it (it never sees the entry that removed it, and would
    /// campaign forever) and drop the frame, after learning what `learn` says.
    Removed { learn: Learn, error: PeerError },
    /// Accepted, after learning what `learn` says; `member`: the sender is a member (heard now).
    Accept { learn: Learn, member: bool },
}

/// What a frame teaches the node about its sender.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Learn {
    Nothing,
    /// A member's incarnation, not yet recorded (the leader records it through the log).
    Incarnation(u64),
    /// The address of a sender that is no member: one added after the state this node applied
    /// (it lags), or one since removed; replies must still reach it.
    Address,
}

/// The verdict on `env` (decoded, its body unread).
pub(super) fn admit(env: &Envelope, v: &View<'_>) -> Admission {
    if env.to != v.id {
        return Admission::Drop(PeerError::WrongRecipient(env.to));
    }
    if env.from == 0 || env.from == v.id {
        return Admission::Drop(PeerError::UnknownSender(env.from));
    }
    let mut adopt_cluster = None;
    if env.cluster_id != v.identity.cluster_id {
        if v.identity.cluster_id != UNKNOWN_CLUSTER || env.cluster_id == UNKNOWN_CLUSTER {
            return Admission::Drop(PeerError::WrongCluster(env.cluster_id));
        }
        adopt_cluster = Some(env.cluster_id);
    }
    let verdict = peer_verdict(env, v);
    Admission::Peer {
        adopt_cluster,
        verdict,
    }
}

fn peer_verdict(env: &Envelope, v: &View<'_>) -> Verdict {
    let ignore_incarnations = planted(PlantedBug::IgnoreIncarnation);
    if env.to_incarnation != 0
        && env.to_incarnation != v.identity.incarnation
        && !ignore_incarnations
    {
        let (addressed, mine) = (env.to_incarnation, v.identity.incarnation);
        return Verdict::NotRecognized {
            stop: StopReason::NotRecognized {
                by: env.from,
                id: v.id,
                recorded: addressed,
                mine,
            },
            error: PeerError::OldIncarnation { addressed, mine },
        };
    }
    let recorded = v.kv.incarnation(env.from);
    if let Some(recorded) = recorded {
        if recorded != env.from_incarnation && !ignore_incarnations {
            let answer =
                matches!(env.body, Body::Raft(_)).then_some(Refusal::StaleIncarnation { recorded });
            let error = PeerError::StaleIncarnation {
                from: env.from,
                sent: env.from_incarnation,
                recorded,
            };
            return Verdict::StaleSender { answer, error };
        }
    }
    let member = v.kv.members().contains_key(&env.from);
    let learn = if recorded.is_none() && env.from_incarnation != 0 && member {
        Learn::Incarnation(env.from_incarnation)
    } else if !member && !env.from_addr.is_empty() {
        Learn::Address
    } else {
        Learn::Nothing
    };
    if v.kv.was_removed(env.from) {
        let error = PeerError::UnknownSender(env.from);
        return Verdict::Removed { learn, error };
    }
    Verdict::Accept { learn, member }
}

/// What this node knows that raft-rs is not told, for the checks on a raft message.
pub(super) struct RaftView<'a> {
    /// A leader's snapshot is installed but not yet durable (`Node::snapshot_unpersisted`).
    pub snapshot_unpersisted: bool,
    pub last_index: u64,
    /// raft's current term and commit index.
    pub term: u64,
    pub committed: u64,
    /// The term of this node's entry at an index, where its log (or its snapshot) knows it.
    pub term_at: &'a dyn Fn(u64) -> Option<u64>,
}

/// Why a raft message from an admitted peer is not stepped, if it is not.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RaftCheck {
    Step,
    /// A campaign now would panic inside raft-rs: deferred until the snapshot is durable.
    CampaignDeferred,
    /// raft-rs would panic (`to_commit N is out of range`): the leader knows this node matched
    /// entries its log no longer has. A node whose directory lost synced writes under an
    /// unchanged incarnation must not vote again: it stops.
    CommitBeyondLog {
        stop: StopReason,
        error: PeerError,
    },
    /// A leader's log disagrees with an entry this node committed. Raft rules it out (a leader
    /// holds every committed entry), so the cluster lost committed writes: a quorum restarted
    /// from stale copies, say, elected a leader without them. raft-rs would take the leader's
    /// word below the commit index (an append below it is answered as matched, a snapshot at
    /// or below it ignored) and mix this node's history with the leader's; it stops instead.
    CommittedConflict {
        stop: StopReason,
        error: PeerError,
    },
}

/// The first (index, this node's term, the leader's term) at or below the commit index where
/// an append or a snapshot from a leader of the current term or a later one disagrees with
/// this node's log. An older leader's message may disagree honestly (what it sent was never
/// committed) and raft-rs drops it for its term.
fn committed_conflict(m: &Message, v: &RaftView<'_>) -> Option<(u64, u64, u64)> {
    if m.term < v.term {
        return None;
    }
    // A leader term of 0 is not a term but "unknown" (raft-rs's `term()` out of range, which the
    // batch-append repair can put in a message whose log moved on before it was sent).
    let disagrees = |index: u64, leader_term: u64| {
        (index <= v.committed && index > 0 && leader_term != 0)
            .then(|| (v.term_at)(index))
            .flatten()
            .filter(|&term| term != 0 && term != leader_term)
            .map(|term| (index, term, leader_term))
    };
    match m.get_msg_type() {
        MessageType::MsgAppend => disagrees(m.index, m.log_term)
            .or_else(|| m.entries.iter().find_map(|e| disagrees(e.index, e.term))),
        MessageType::MsgSnapshot => {
            let meta = m.get_snapshot().get_metadata();
            disagrees(meta.index, meta.term)
        }
        _ => None,
    }
}

/// The check on raft message `m` from `from`.
pub(super) fn check_raft(from: u64, m: &Message, v: &RaftView<'_>) -> RaftCheck {
    let (commit, last_index) = (m.commit, v.last_index);
    if let Some((index, term, leader_term)) = committed_conflict(m, v) {
        return RaftCheck::CommittedConflict {
            stop: StopReason::CommittedEntryConflict {
                leader: from,
                index,
                term,
                leader_term,
            },
            error: PeerError::CommittedEntryConflict {
                index,
                term,
                leader_term,
            },
        };
    }
    match m.get_msg_type() {
        MessageType::MsgTimeoutNow if v.snapshot_unpersisted => RaftCheck::CampaignDeferred,
        MessageType::MsgHeartbeat if commit > last_index => RaftCheck::CommitBeyondLog {
            stop: StopReason::LogBehindLeader {
                leader: from,
                commit,
                last_index,
            },
            error: PeerError::CommitBeyondLog { commit, last_index },
        },
        _ => RaftCheck::Step,
    }
}

/// A peer refused this node's frames for a stale incarnation (`recorded`): the node stops only
/// if a member says so (only a member speaks for the membership) about this incarnation, and
/// the record is another one.
pub(super) fn refusal_stops(env: &Envelope, recorded: u64, v: &View<'_>) -> Option<StopReason> {
    let mine = v.identity.incarnation;
    (v.kv.members().contains_key(&env.from) && recorded != mine && env.to_incarnation == mine)
        .then_some(StopReason::NotRecognized {
            by: env.from,
            id: v.id,
            recorded,
            mine,
        })
}

/// The sender of `env` as a recipient of this node's answer.
pub(super) fn sender_of(env: &Envelope) -> Recipient {
    Recipient {
        id: env.from,
        incarnation: env.from_incarnation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(to: u64, from: u64, cluster_id: u64) -> Envelope {
        Envelope {
            cluster_id,
            from,
            from_incarnation: 0,
            from_addr: String::new(),
            to,
            to_incarnation: 0,
            body: Body::Removed,
        }
    }

    fn identity(cluster_id: u64) -> Identity {
        Identity {
            format_version: 1,
            cluster_id,
            node_id: 1,
            incarnation: 5,
            token_hash: 0,
        }
    }

    #[test]
    fn frames_for_others_are_dropped_before_anything_is_learned() {
        let kv = KvState::default();
        let id = identity(9);
        let v = View {
            id: 1,
            identity: &id,
            kv: &kv,
        };
        assert_eq!(
            admit(&env(2, 3, 9), &v),
            Admission::Drop(PeerError::WrongRecipient(2))
        );
        assert_eq!(
            admit(&env(1, 1, 9), &v),
            Admission::Drop(PeerError::UnknownSender(1))
        );
        assert_eq!(
            admit(&env(1, 3, 8), &v),
            Admission::Drop(PeerError::WrongCluster(8))
        );
    }

    #[test]
    fn a_joiner_adopts_the_cluster_then_judges_the_incarnation() {
        let kv = KvState::default();
        let id = identity(UNKNOWN_CLUSTER);
        let v = View {
            id: 1,
            identity: &id,
            kv: &kv,
        };
        let mut e = env(1, 3, 9);
        e.to_incarnation = 4;
        assert_eq!(
            admit(&e, &v),
            Admission::Peer {
                adopt_cluster: Some(9),
                verdict: Verdict::NotRecognized {
                    stop: StopReason::NotRecognized {
                        by: 3,
                        id: 1,
                        recorded: 4,
                        mine: 5,
                    },
                    error: PeerError::OldIncarnation {
                        addressed: 4,
                        mine: 5,
                    },
                },
            }
        );
    }

    #[test]
    fn a_leader_that_disagrees_below_the_commit_index_is_a_conflict_an_old_one_is_not() {
        // This node: entries 1..=10 of term 2, committed to 8, in term 3.
        let term_at = |i: u64| (1..=10).contains(&i).then_some(2);
        let v = RaftView {
            snapshot_unpersisted: false,
            last_index: 10,
            term: 3,
            committed: 8,
            term_at: &term_at,
        };
        let append = |term: u64, index: u64, log_term: u64, entries: &[(u64, u64)]| {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgAppend);
            m.term = term;
            m.index = index;
            m.log_term = log_term;
            m.entries = entries
                .iter()
                .map(|&(index, term)| raft::eraftpb::Entry {
                    index,
                    term,
                    ..Default::default()
                })
                .collect();
            m
        };
        let conflict =
            |m: &Message| matches!(check_raft(7, m, &v), RaftCheck::CommittedConflict { .. });
        assert!(
            conflict(&append(3, 5, 4, &[])),
            "the previous entry disagrees"
        );
        assert!(
            conflict(&append(4, 4, 2, &[(5, 2), (6, 4)])),
            "an entry disagrees"
        );
        assert!(
            !conflict(&append(2, 5, 1, &[])),
            "a leader of an older term"
        );
        assert!(
            !conflict(&append(3, 8, 2, &[(9, 3), (10, 3)])),
            "above the commit: raft's to repair"
        );
        assert!(!conflict(&append(3, 20, 3, &[])), "beyond the log: unknown");
        assert!(
            !conflict(&append(3, 5, 0, &[])),
            "the leader's term unknown"
        );
        let mut snap = Message::default();
        snap.set_msg_type(MessageType::MsgSnapshot);
        snap.term = 3;
        snap.mut_snapshot().mut_metadata().index = 6;
        snap.mut_snapshot().mut_metadata().term = 3;
        assert!(
            conflict(&snap),
            "a snapshot at or below the commit that disagrees"
        );
        snap.mut_snapshot().mut_metadata().term = 2;
        assert!(!conflict(&snap));
    }
}
