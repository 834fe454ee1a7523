//! Raft's Log Matching property, checked across the wire: an append carries a fingerprint of the
//! leader's entry just before its entries, and a follower holding an entry of the same index and
//! term compares it with its own.
//!
//! Raft assumes two entries of one index and term are the same entry (one leader per term, which
//! holds if no voter forgets its vote), and raft-rs checks only terms. A member restarted from an
//! old copy of its directory forgets its vote: two leaders can then be elected in one term and
//! write different entries under it, and raft-rs would take a follower's entry for the leader's
//! and append the leader's after it, mixing two histories that nothing reports (found with real
//! processes: one node down, a second restored from an old copy while the third, the only holder
//! of an acknowledged write, was down; the two elected a leader in the term the holder had led).
//! A follower that finds its entry differs stops instead.
//!
//! The fingerprint travels in the `MsgAppend`'s `context`, which raft-rs leaves empty and
//! ignores in appends: a follower of an older build ignores it too, and an append from an older
//! leader, without one, is not checked. It is taken off before raft-rs sees the message.

use crate::rng::Fnv64;
use raft::eraftpb::{Entry, Message, MessageType};
use raft::{GetEntriesContext, RaftLog, Storage};

/// `context` of a stamped append: this tag, then the fingerprint (u64 LE).
const TAG: &[u8; 2] = b"LM";
const STAMP_BYTES: usize = TAG.len() + 8;

/// Everything raft replicates of an entry, hashed.
fn fingerprint(e: &Entry) -> u64 {
    let mut h = Fnv64::default();
    h.update(&e.term.to_le_bytes());
    h.update(&(e.get_entry_type() as i32).to_le_bytes());
    h.update(&(e.data.len() as u64).to_le_bytes());
    h.update(&e.data);
    h.update(&e.context);
    h.finish()
}

/// The entry at `index`, where the log holds it (not below its snapshot).
fn entry_at<S: Storage>(log: &RaftLog<S>, index: u64) -> Option<Entry> {
    if index < log.first_index() || index > log.last_index() {
        return None;
    }
    let mut one = log
        .slice(index, index + 1, None, GetEntriesContext::empty(false))
        .ok()?;
    one.pop().filter(|e| e.index == index)
}

/// Stamps an outgoing append with the fingerprint of the leader's entry at its index.
pub(super) fn stamp<S: Storage>(m: &mut Message, log: &RaftLog<S>) {
    if m.get_msg_type() != MessageType::MsgAppend || !m.context.is_empty() {
        return;
    }
    let Some(prev) = entry_at(log, m.index).filter(|e| e.term == m.log_term) else {
        return;
    };
    let mut context = Vec::with_capacity(STAMP_BYTES);
    context.extend_from_slice(TAG);
    context.extend_from_slice(&fingerprint(&prev).to_le_bytes());
    m.context = context.into();
}

/// Takes the stamp off an incoming append; `Err(index)` if this node holds an entry of that
/// index and term that is not the leader's.
pub(super) fn check<S: Storage>(m: &mut Message, log: &RaftLog<S>) -> Result<(), u64> {
    if m.get_msg_type() != MessageType::MsgAppend
        || m.context.len() != STAMP_BYTES
        || &m.context[..TAG.len()] != TAG
    {
        return Ok(());
    }
    let theirs = u64::from_le_bytes(m.context[TAG.len()..].try_into().expect("8 bytes"));
    m.context = Vec::new().into();
    match entry_at(log, m.index) {
        Some(mine) if mine.term == m.log_term && fingerprint(&mine) != theirs => Err(m.index),
        _ => Ok(()),
    }
}
