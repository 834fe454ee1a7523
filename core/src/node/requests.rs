//! Request routing, pure: where a client request goes ([`route`]: answered now, held for a
//! leader, forwarded, or served here) and what serving it here is ([`serve`]: an answer, a
//! ReadIndex read, a proposal), from borrowed views of exactly what each reads. The node carries
//! the decision out (pending tables, frames, raft-rs).
//!
//! `ClientOp` crosses the network as one enum; here it is split ([`Op`]) into data ops and
//! membership ops, so a membership op is served knowing it is one.
//!
//! Answers decided here are definite (never proposed); only what the node proposes or forwards
//! can be "outcome unknown".

use super::membership::{MemberOp, Rules};
use super::pending::PendingKind;
use super::{ClientError, ClientOp, ClientReply, ClientRequest, RejectReason};
use crate::command::{Command, MemberChange, MemberProposal, Proposal, RequestId};
use crate::kv::{KvState, WriteResult};
use crate::planted::{active as planted, PlantedBug};

/// A client op by what serving it takes.
enum Op {
    Data(DataOp),
    Member(MemberOp),
}

enum DataOp {
    /// Linearizable: through ReadIndex, on the leader.
    Get {
        key: Vec<u8>,
    },
    /// From this node's state machine, on any node.
    GetLocal {
        key: Vec<u8>,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
}

impl From<ClientOp> for Op {
    fn from(op: ClientOp) -> Op {
        match op {
            ClientOp::Get { key } => Op::Data(DataOp::Get { key }),
            ClientOp::GetLocal { key } => Op::Data(DataOp::GetLocal { key }),
            ClientOp::Put { key, value } => Op::Data(DataOp::Put { key, value }),
            ClientOp::Delete { key } => Op::Data(DataOp::Delete { key }),
            ClientOp::AddNode { id, addr } => {
                Op::Member(MemberOp::Change(MemberChange::Add { id, addr }))
            }
            ClientOp::RemoveNode { id } => {
                Op::Member(MemberOp::Change(MemberChange::Remove { id }))
            }
            ClientOp::AddLearner {
                id,
                addr,
                auto_promote,
            } => Op::Member(MemberOp::Change(MemberChange::AddLearner {
                id,
                addr,
                auto_promote,
            })),
            ClientOp::PromoteNode { id } => {
                Op::Member(MemberOp::Change(MemberChange::Promote { id }))
            }
            ClientOp::UpdateNode { id, addr } => Op::Member(MemberOp::SetUrl { id, addr }),
        }
    }
}

/// What routing reads of the node.
pub(super) struct RouteView {
    pub id: u64,
    /// Stopped, shutting down, or removed (lingering only as a voter): it serves nobody.
    pub closed: bool,
    pub is_leader: bool,
    /// raft's own view of the leader, not the one cached at the last Ready: a leader that
    /// stepped down earlier in this batch still has itself cached, and a forward to itself
    /// would be dropped (frames from one's own id are refused) and wait out its deadline.
    pub raft_leader: u64,
    pub now_tick: u64,
    /// How long a request waits for an election when no leader is known.
    pub hold_ticks: u64,
}

/// Where a client request goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// Answered at once, never proposed.
    Refuse(ClientError),
    /// Held for an election to settle rather than failed fast, but not for the whole deadline:
    /// unproposed, its answer is definite whenever it comes.
    Hold {
        hold_until_tick: u64,
        deadline_tick: u64,
    },
    /// Sent to the leader, which answers it.
    Forward { leader: u64, deadline_tick: u64 },
    /// Served by this node.
    Serve,
}

/// Where a client request goes. On a follower, writes and linearizable reads go to the leader
/// when one is known, and wait for one when none is.
pub(super) fn route(req: &ClientRequest, v: &RouteView) -> Route {
    if v.closed {
        return Route::Refuse(ClientError::Stopped);
    }
    let forwardable = !matches!(req.op, ClientOp::GetLocal { .. });
    if v.is_leader || !forwardable {
        return Route::Serve;
    }
    let deadline_tick = v.now_tick + req.timeout_ticks.max(1);
    match Some(v.raft_leader).filter(|&l| l != 0 && l != v.id) {
        None => Route::Hold {
            hold_until_tick: deadline_tick.min(v.now_tick + v.hold_ticks),
            deadline_tick,
        },
        Some(leader) => Route::Forward {
            leader,
            deadline_tick,
        },
    }
}

/// The answer to a request another node forwarded, when this one must not serve it: forwarded
/// requests are served only by a leader and never forwarded twice.
pub(super) fn refuse_forwarded(op: &ClientOp, removed: bool) -> Option<ClientError> {
    if removed {
        // Removed, lingering only as a voter: it serves nobody (never proposed).
        Some(ClientError::NotLeader { leader: None })
    } else if matches!(op, ClientOp::GetLocal { .. }) {
        Some(ClientError::Rejected(RejectReason::LocalReadForwarded))
    } else {
        None
    }
}

/// What serving reads of the node.
pub(super) struct ServeView<'a> {
    pub is_leader: bool,
    /// The leader as of the last Ready, named in `NotLeader`.
    pub leader: Option<u64>,
    pub kv: &'a KvState,
    pub rules: Rules<'a>,
    /// Writes are refused with this while the log is over its limit beyond the latest snapshot
    /// (`compaction::write_limit_bytes`); reads and membership changes are not.
    pub writes_refused: Option<ClientError>,
}

/// What serving a request here is.
pub(super) enum Serve {
    /// Answered now: from this node's state machine, or refused (definite).
    Answer(Result<ClientReply, ClientError>),
    /// A linearizable read through ReadIndex.
    Read { key: Vec<u8> },
    /// An ordinary entry. `early` (a planted bug only) answers it as soon as it is proposed.
    Propose {
        proposal: Proposal,
        kind: PendingKind,
        early: Option<WriteResult>,
    },
    /// A raft conf change.
    ProposeChange(MemberProposal),
}

/// What serving `op` here is. A local read is answered from the state machine anywhere;
/// everything else only by the leader (a follower routed what it forwards already, so what
/// reaches this on a follower is a forwarded request or one that raced a leadership change).
pub(super) fn serve(op: ClientOp, request_id: Option<RequestId>, v: &ServeView<'_>) -> Serve {
    let read =
        |key: &[u8]| Serve::Answer(Ok(ClientReply::Value(v.kv.get(key).map(|v| v.to_vec()))));
    let op = match Op::from(op) {
        Op::Data(DataOp::GetLocal { key }) => return read(&key),
        _ if !v.is_leader => {
            return Serve::Answer(Err(ClientError::NotLeader { leader: v.leader }))
        }
        Op::Data(DataOp::Get { key }) if planted(PlantedBug::LocalLinearizableReads) => {
            return read(&key)
        }
        Op::Data(DataOp::Get { key }) => return Serve::Read { key },
        Op::Data(DataOp::Put { .. } | DataOp::Delete { .. }) if v.writes_refused.is_some() => {
            return Serve::Answer(Err(v.writes_refused.clone().expect("checked")))
        }
        Op::Data(DataOp::Put { key, value }) => {
            let existed = v.kv.get(&key).is_some();
            let early = planted(PlantedBug::AckBeforeSync).then_some(WriteResult::Put { existed });
            let value = value.into();
            return write(request_id, Command::Put { key, value }, early);
        }
        Op::Data(DataOp::Delete { key }) => {
            return write(request_id, Command::Delete { key }, None)
        }
        Op::Member(op) => op,
    };
    // A membership change: refused (definite) unless the rules allow it now.
    if let Some(why) = v.rules.refusal(&op) {
        return Serve::Answer(Err(ClientError::Rejected(why)));
    }
    match op {
        MemberOp::SetUrl { id, addr } => Serve::Propose {
            proposal: Proposal {
                request_id,
                command: Command::SetPeerUrl { id, addr },
            },
            kind: PendingKind::Member,
            early: None,
        },
        MemberOp::Change(change) => Serve::ProposeChange(MemberProposal { request_id, change }),
    }
}

fn write(request_id: Option<RequestId>, command: Command, early: Option<WriteResult>) -> Serve {
    Serve::Propose {
        proposal: Proposal {
            request_id,
            command,
        },
        kind: PendingKind::Write,
        early,
    }
}

/// What became of a proposal raft was handed, given the last log index before and after: the
/// index of its entry, or the answer (definite, except an entry raft accepted and did not
/// append, which cannot happen on a leader: be honest, the outcome is unknown).
pub(super) fn proposed(
    result: raft::Result<()>,
    before: u64,
    after: u64,
) -> Result<u64, ClientError> {
    match result {
        Ok(()) if after != before + 1 => Err(ClientError::LeaderChanged { leader: None }),
        Ok(()) => Ok(after),
        Err(raft::Error::ProposalDropped) => Err(ClientError::Busy),
        Err(_) => Err(ClientError::Rejected(RejectReason::ProposalRefused)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(op: ClientOp, timeout_ticks: u64) -> ClientRequest {
        ClientRequest {
            handle: 1,
            request_id: None,
            timeout_ticks,
            op,
        }
    }

    fn follower(raft_leader: u64) -> RouteView {
        RouteView {
            id: 1,
            closed: false,
            is_leader: false,
            raft_leader,
            now_tick: 100,
            hold_ticks: 20,
        }
    }

    #[test]
    fn a_follower_forwards_to_a_known_leader_and_holds_without_one() {
        let put = request(
            ClientOp::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            50,
        );
        assert_eq!(
            route(&put, &follower(2)),
            Route::Forward {
                leader: 2,
                deadline_tick: 150
            }
        );
        // Itself as leader (it stepped down in this batch) is no leader to forward to.
        for leader in [0, 1] {
            assert_eq!(
                route(&put, &follower(leader)),
                Route::Hold {
                    hold_until_tick: 120,
                    deadline_tick: 150
                }
            );
        }
        let short = request(put.op.clone(), 5);
        assert_eq!(
            route(&short, &follower(0)),
            Route::Hold {
                hold_until_tick: 105,
                deadline_tick: 105
            }
        );
    }

    #[test]
    fn local_reads_are_served_anywhere_and_a_closed_node_serves_nothing() {
        let local = request(ClientOp::GetLocal { key: b"k".to_vec() }, 50);
        assert_eq!(route(&local, &follower(0)), Route::Serve);
        let closed = RouteView {
            closed: true,
            ..follower(2)
        };
        assert_eq!(route(&local, &closed), Route::Refuse(ClientError::Stopped));
    }

    #[test]
    fn a_proposal_raft_accepted_without_appending_is_outcome_unknown() {
        assert_eq!(proposed(Ok(()), 7, 8), Ok(8));
        let unknown = proposed(Ok(()), 7, 7).unwrap_err();
        assert!(unknown.outcome_unknown());
        assert_eq!(
            proposed(Err(raft::Error::ProposalDropped), 7, 7),
            Err(ClientError::Busy)
        );
    }
}
