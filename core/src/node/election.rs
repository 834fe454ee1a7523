//! Seeded election timeouts, a sub-state: the node's seeded RNG and the (term, role, leader) at
//! the last draw.
//!
//! raft-rs draws election timeouts from its thread-local, OS-seeded RNG, which no simulator can
//! seed. The node draws its own from this RNG whenever raft may have drawn a new one, and
//! installs it before raft reads it (only `tick` reads it). raft-rs draws exactly when it resets
//! (`Raft::reset`, on every become_follower/candidate/leader), and a reset always zeroes
//! `election_elapsed`; so the signals are: (term, role, leader) changed, or the elapsed count is
//! zero. Both evolve deterministically, which matters: a signal that depended on raft's own
//! random value would itself leak it. (Keying on (term, role, leader) alone missed PreCandidate
//! -> Follower at the same term, which the simulator caught as a trace that differed between
//! runs of one seed.) Timeouts are drawn from raft-rs's default range, [election_tick,
//! 2 * election_tick).

use crate::rng::Rng;
use crate::storage::NodeStorage;
use raft::{Raft, StateRole};

pub(super) struct ElectionTimeouts {
    rng: Rng,
    /// (term, role, leader) at the last draw.
    key: Option<(u64, StateRole, u64)>,
    election_tick: u64,
}

impl ElectionTimeouts {
    /// `rng` may have drawn already (the node's first ids): the draws here continue its stream.
    pub(super) fn new(rng: Rng, election_tick: usize) -> ElectionTimeouts {
        ElectionTimeouts {
            rng,
            key: None,
            election_tick: election_tick as u64,
        }
    }

    /// Installs a fresh timeout in `raft` if raft may have drawn one since the last call.
    pub(super) fn fix(&mut self, raft: &mut Raft<NodeStorage>) {
        let key = (raft.term, raft.state, raft.leader_id);
        if self.key == Some(key) && raft.election_elapsed != 0 {
            return;
        }
        self.key = Some(key);
        let (lo, hi) = (self.election_tick, 2 * self.election_tick);
        let t = self.rng.range(lo, hi) as usize;
        raft.set_randomized_election_timeout(t);
    }
}
