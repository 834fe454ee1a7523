//! Readiness: whether a node should be sent clients (etcd's `/readyz`), as opposed to whether
//! its process serves at all (`/livez`, the shell's business). A node is ready when it runs, knows
//! a leader, has applied close to what the leader committed, and is a member of the configuration
//! it knows. Decided here so every shell reports the same thing; a shell only renders it.

use crate::node::StopReason;
use thiserror::Error;

/// The checks, in the order they are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Running,
    Leader,
    CaughtUp,
    Membership,
}

impl Check {
    pub const ALL: [Check; 4] = [
        Check::Running,
        Check::Leader,
        Check::CaughtUp,
        Check::Membership,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Check::Running => "running",
            Check::Leader => "leader",
            Check::CaughtUp => "caught_up",
            Check::Membership => "membership",
        }
    }
}

/// Why a check failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NotReady {
    #[error("node stopped: {0}")]
    Stopped(StopReason),
    #[error("shutting down")]
    ShuttingDown,
    #[error("no leader known")]
    NoLeader,
    #[error(
        "applied index {applied} is {} behind the leader's commit {leader_commit} (ready within {bound})",
        leader_commit - applied
    )]
    Behind {
        applied: u64,
        leader_commit: u64,
        bound: u64,
    },
    #[error(
        "receiving the leader's snapshot at index {index}: {received_bytes} of {file_bytes} bytes"
    )]
    ReceivingSnapshot {
        index: u64,
        received_bytes: u64,
        file_bytes: u64,
    },
    #[error("node {id} is not a member of the configuration it knows")]
    NotAMember { id: u64 },
    #[error("node {id} applied its own removal and is about to stop")]
    Removed { id: u64 },
    #[error("the peer URL in --cluster is not confirmed by any member yet")]
    PeerUrlUnconfirmed,
}

/// What readiness is computed from (a node's view; see `Node::readiness`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs {
    pub id: u64,
    pub stopped: Option<StopReason>,
    pub shutting_down: bool,
    /// 0 when none is known.
    pub leader: u64,
    pub applied: u64,
    /// The highest commit index the current leader has told this node (its own, on the leader).
    pub leader_commit: u64,
    /// How far behind the leader's commit a ready node may be applied.
    pub bound: u64,
    /// The leader's snapshot being received (index, bytes received, file bytes): a follower
    /// that needs one is behind whatever the commit it heard (a heartbeat only carries the part
    /// of the leader's commit the follower has matched).
    pub receiving_snapshot: Option<(u64, u64, u64)>,
    pub is_member: bool,
    pub removed: bool,
    pub url_unconfirmed: bool,
}

/// Every check with its outcome, failures named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub checks: Vec<(Check, Result<(), NotReady>)>,
}

impl Readiness {
    pub fn evaluate(i: &Inputs) -> Readiness {
        let running = match (&i.stopped, i.shutting_down) {
            (Some(r), _) => Err(NotReady::Stopped(r.clone())),
            (None, true) => Err(NotReady::ShuttingDown),
            (None, false) => Ok(()),
        };
        let leader = if i.leader == 0 {
            Err(NotReady::NoLeader)
        } else {
            Ok(())
        };
        let caught_up = if let Some((index, received_bytes, file_bytes)) = i.receiving_snapshot {
            Err(NotReady::ReceivingSnapshot {
                index,
                received_bytes,
                file_bytes,
            })
        } else if i.leader_commit > i.applied.saturating_add(i.bound) {
            Err(NotReady::Behind {
                applied: i.applied,
                leader_commit: i.leader_commit,
                bound: i.bound,
            })
        } else {
            Ok(())
        };
        let membership = if i.removed {
            Err(NotReady::Removed { id: i.id })
        } else if !i.is_member {
            Err(NotReady::NotAMember { id: i.id })
        } else if i.url_unconfirmed {
            Err(NotReady::PeerUrlUnconfirmed)
        } else {
            Ok(())
        };
        Readiness {
            checks: vec![
                (Check::Running, running),
                (Check::Leader, leader),
                (Check::CaughtUp, caught_up),
                (Check::Membership, membership),
            ],
        }
    }

    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|(_, r)| r.is_ok())
    }

    /// The first failed check, if any.
    pub fn failure(&self) -> Option<(Check, &NotReady)> {
        self.checks
            .iter()
            .find_map(|(c, r)| r.as_ref().err().map(|e| (*c, e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Inputs {
        Inputs {
            id: 2,
            stopped: None,
            shutting_down: false,
            leader: 1,
            applied: 100,
            leader_commit: 120,
            bound: 50,
            receiving_snapshot: None,
            is_member: true,
            removed: false,
            url_unconfirmed: false,
        }
    }

    fn failed(i: &Inputs) -> Vec<Check> {
        Readiness::evaluate(i)
            .checks
            .into_iter()
            .filter(|(_, r)| r.is_err())
            .map(|(c, _)| c)
            .collect()
    }

    #[test]
    fn each_check_fails_on_its_own() {
        assert!(Readiness::evaluate(&healthy()).is_ready());
        let cases: Vec<(Inputs, Check)> = vec![
            (
                Inputs {
                    stopped: Some(StopReason::Removed),
                    ..healthy()
                },
                Check::Running,
            ),
            (
                Inputs {
                    shutting_down: true,
                    ..healthy()
                },
                Check::Running,
            ),
            (
                Inputs {
                    leader: 0,
                    ..healthy()
                },
                Check::Leader,
            ),
            (
                Inputs {
                    leader_commit: 151,
                    ..healthy()
                },
                Check::CaughtUp,
            ),
            (
                Inputs {
                    receiving_snapshot: Some((500, 10, 100)),
                    ..healthy()
                },
                Check::CaughtUp,
            ),
            (
                Inputs {
                    is_member: false,
                    ..healthy()
                },
                Check::Membership,
            ),
            (
                Inputs {
                    removed: true,
                    ..healthy()
                },
                Check::Membership,
            ),
            (
                Inputs {
                    url_unconfirmed: true,
                    ..healthy()
                },
                Check::Membership,
            ),
        ];
        for (inputs, check) in cases {
            assert_eq!(failed(&inputs), vec![check], "{inputs:?}");
        }
        // At the bound exactly: still ready.
        let at_bound = Inputs {
            leader_commit: 150,
            ..healthy()
        };
        assert!(Readiness::evaluate(&at_bound).is_ready());
    }

    #[test]
    fn a_failure_says_what_failed() {
        let r = Readiness::evaluate(&Inputs {
            applied: 10,
            leader_commit: 6010,
            bound: 5000,
            ..healthy()
        });
        let (check, why) = r.failure().unwrap();
        assert_eq!(check, Check::CaughtUp);
        assert_eq!(
            why.to_string(),
            "applied index 10 is 6000 behind the leader's commit 6010 (ready within 5000)"
        );
    }
}
