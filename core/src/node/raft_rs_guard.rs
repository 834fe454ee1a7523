//! Repairs for messages raft-rs 0.7 gets wrong, applied to every message before it is encoded.
//!
//! `Raft::try_batching` (with `batch_append`, which the node needs: without it every proposal
//! is a message per peer) merges new entries into a `MsgAppend` to the same peer still waiting
//! in raft's outbox. It checks that they follow the entries already there
//! (`util::is_continuous_ents`), but a message with no entries passes that check whatever its
//! index. So a commit-only append at index `i`, then a rejection that moves the peer's next
//! index back to `j + 1 <= i` before the outbox is taken, leaves one message at index `i`
//! carrying entries from `j + 1`. The follower finds them "conflicting" with entries it has
//! committed and panics inside raft-rs (`entry j+1 conflict with committed entry ...`).
//! Found by core's cluster test `a_follower_catches_up_under_load_with_one_snapshot` once the
//! WAL's spare segments moved when disk jobs completed; `raftkv` answers several frames per
//! Ready, so the real shell can meet it too.
//!
//! The repair restores the message raft meant to send: the same entries after index `j`, with
//! the term of `j` in the leader's log (raft just read the entries after it, so it is there).

use super::Event;
use raft::eraftpb::{Message, MessageType};

/// What [`repair_batched_append`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Repair {
    /// The message was well formed.
    None,
    /// Index and log term moved back to the entry before the first one carried.
    Reindexed { from: u64, to: u64 },
    /// The term before the entries is unknown here: the entries were dropped and the message
    /// kept as the commit-only append it was (the follower's answer brings them again).
    EntriesDropped { count: usize },
}

impl Repair {
    /// What a repair of a message to `to` is reported as.
    pub(super) fn event(self, to: u64) -> Option<Event> {
        match self {
            Repair::None => None,
            Repair::Reindexed { from, to: index } => Some(Event::AppendReindexed {
                to,
                index_was: from,
                index,
            }),
            Repair::EntriesDropped { count } => Some(Event::AppendEntriesDropped { to, count }),
        }
    }
}

/// Makes a `MsgAppend`'s entries follow its index; `term_of(index)` is the leader's log term.
pub(super) fn repair_batched_append(
    m: &mut Message,
    term_of: impl Fn(u64) -> Option<u64>,
) -> Repair {
    if m.get_msg_type() != MessageType::MsgAppend {
        return Repair::None;
    }
    let Some(first) = m.entries.first().map(|e| e.index) else {
        return Repair::None;
    };
    if first == m.index + 1 {
        return Repair::None;
    }
    let prev = first - 1;
    // raft-rs answers 0 for an index outside the log: not a term.
    match term_of(prev).filter(|&t| t != 0) {
        Some(term) => {
            let from = m.index;
            m.index = prev;
            m.log_term = term;
            Repair::Reindexed { from, to: prev }
        }
        None => {
            let count = m.entries.len();
            m.entries.clear();
            Repair::EntriesDropped { count }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Entry;

    fn append(index: u64, log_term: u64, entries: std::ops::Range<u64>) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.index = index;
        m.log_term = log_term;
        m.commit = 197;
        m.entries = entries
            .map(|index| Entry {
                index,
                term: 2,
                ..Default::default()
            })
            .collect();
        m
    }

    #[test]
    fn a_merged_append_is_reindexed_to_its_entries() {
        // raft-rs's message: index 197, entries from 149 (the harness's case).
        let mut m = append(197, 2, 149..198);
        let r = repair_batched_append(&mut m, |i| (i == 148).then_some(1));
        assert_eq!(r, Repair::Reindexed { from: 197, to: 148 });
        assert_eq!((m.index, m.log_term, m.commit), (148, 1, 197));
        assert_eq!(m.entries.len(), 49);
    }

    #[test]
    fn well_formed_messages_are_untouched() {
        for mut m in [append(148, 1, 149..151), append(197, 2, 198..198)] {
            let before = m.clone();
            assert_eq!(repair_batched_append(&mut m, |_| None), Repair::None);
            assert_eq!(m, before);
        }
        let mut hb = Message::default();
        hb.set_msg_type(MessageType::MsgHeartbeat);
        assert_eq!(repair_batched_append(&mut hb, |_| None), Repair::None);
    }

    #[test]
    fn without_the_term_the_entries_are_dropped_not_sent_misplaced() {
        let mut m = append(197, 2, 149..152);
        let r = repair_batched_append(&mut m, |_| None);
        assert_eq!(r, Repair::EntriesDropped { count: 3 });
        assert_eq!((m.index, m.log_term), (197, 2));
        assert!(m.entries.is_empty());
    }
}
