//! Forwarded requests this node has already taken, per sender, so each is handled once.
//!
//! A follower answers its client from the first reply to a forward; "not leader" from a node that
//! is not leading is *definite* (never applied). That holds only if no other copy of the same
//! forward frame can be proposed later: a duplicate the network made, or a copy it delayed,
//! arriving once this node leads. The simulator found exactly that (seed 5191 of the tree before
//! this file: a restarted old leader answered a forward "not leader", a duplicate of the frame
//! reached it after it won the election, and the write the client was told never happened was
//! applied). So a node remembers which forward ids it has taken from each sender's incarnation
//! and drops any copy it has already taken.
//!
//! Forward ids of one sender incarnation start at a random point and grow by one per request
//! (`Pending`), so a window of the latest ids per sender, with everything below it counted as
//! taken, is exact for duplicates and safe for reordering within the window; a copy older than
//! the window is dropped too, which only leaves its request to its deadline ("outcome unknown"),
//! never applies it twice or after a definite answer. A frame addressed to an earlier incarnation
//! of this node never reaches here, so memory of one incarnation suffices.
//!
//! Invariants (asserted, in release builds too): at most `MAX_SENDERS` senders and
//! `WINDOW_IDS` ids per sender are remembered.

use std::collections::{BTreeMap, BTreeSet};

/// Forward ids remembered per sender: more than a sender's pending table may hold at once.
const WINDOW_IDS: usize = 8192;
/// Senders remembered (the lowest id goes first beyond it).
const MAX_SENDERS: usize = 64;

#[derive(Default)]
struct Window {
    incarnation: u64,
    ids: BTreeSet<u64>,
    /// Every id below this counts as taken (the window moved past it).
    floor: u64,
}

#[derive(Default)]
pub(super) struct ForwardsSeen {
    senders: BTreeMap<u64, Window>,
}

impl ForwardsSeen {
    /// True the first time forward `id` of `from`'s `incarnation` arrives: take it. False for a
    /// copy of one already taken (or older than the window): drop it, its first answer stands.
    pub(super) fn first_sight(&mut self, from: u64, incarnation: u64, id: u64) -> bool {
        if !self.senders.contains_key(&from) && self.senders.len() >= MAX_SENDERS {
            self.senders.pop_first();
        }
        let w = self.senders.entry(from).or_default();
        if w.incarnation != incarnation {
            // A new incarnation of the sender numbers its forwards afresh.
            *w = Window {
                incarnation,
                ..Window::default()
            };
        }
        if id < w.floor || !w.ids.insert(id) {
            return false;
        }
        if w.ids.len() > WINDOW_IDS {
            let oldest = w.ids.pop_first().expect("over the bound, so not empty");
            w.floor = oldest + 1;
        }
        assert!(w.ids.len() <= WINDOW_IDS && self.senders.len() <= MAX_SENDERS);
        true
    }

    /// `id` left the membership.
    pub(super) fn forget(&mut self, id: u64) {
        self.senders.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_of_a_forward_already_taken_is_dropped() {
        let mut s = ForwardsSeen::default();
        assert!(s.first_sight(2, 7, 100));
        assert!(!s.first_sight(2, 7, 100), "a duplicate");
        assert!(s.first_sight(2, 7, 102));
        assert!(s.first_sight(2, 7, 101), "reordered, not seen: taken");
        assert!(s.first_sight(3, 7, 100), "another sender");
        assert!(s.first_sight(2, 8, 100), "a new incarnation numbers afresh");
        assert!(!s.first_sight(2, 8, 100));
    }

    #[test]
    fn the_window_is_bounded_and_what_fell_out_of_it_counts_as_taken() {
        let mut s = ForwardsSeen::default();
        for id in 1000..1000 + WINDOW_IDS as u64 + 10 {
            assert!(s.first_sight(2, 1, id));
        }
        assert!(!s.first_sight(2, 1, 1005), "below the window");
        assert!(!s.first_sight(2, 1, 999), "below the window");
        for from in 0..MAX_SENDERS as u64 + 5 {
            s.first_sight(100 + from, 1, 1);
        }
        assert!(s.senders.len() <= MAX_SENDERS);
    }
}
