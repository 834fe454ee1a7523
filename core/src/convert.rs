//! Conversions between raft-rs's protobuf types and our own record types.
//!
//! Only our types cross a disk or network boundary; raft's types stay in memory.

use crate::wal::{ConfStateRec, EntryKind, EntryRec, HardStateRec};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState};

pub fn entry_to_rec(e: &Entry) -> EntryRec {
    EntryRec {
        index: e.index,
        term: e.term,
        kind: match e.get_entry_type() {
            EntryType::EntryNormal => EntryKind::Normal,
            EntryType::EntryConfChange => EntryKind::ConfChange,
            EntryType::EntryConfChangeV2 => EntryKind::ConfChangeV2,
        },
        data: e.data.to_vec(),
        context: e.context.to_vec(),
    }
}

pub fn rec_to_entry(r: &EntryRec) -> Entry {
    rec_into_entry(r.clone())
}

/// [`rec_to_entry`] that moves the bytes instead of copying them.
pub fn rec_into_entry(r: EntryRec) -> Entry {
    let mut e = Entry {
        index: r.index,
        term: r.term,
        data: r.data.into(),
        context: r.context.into(),
        ..Default::default()
    };
    e.set_entry_type(match r.kind {
        EntryKind::Normal => EntryType::EntryNormal,
        EntryKind::ConfChange => EntryType::EntryConfChange,
        EntryKind::ConfChangeV2 => EntryType::EntryConfChangeV2,
    });
    e
}

pub fn hs_to_rec(h: &HardState) -> HardStateRec {
    HardStateRec {
        term: h.term,
        vote: h.vote,
        commit: h.commit,
    }
}

pub fn rec_to_hs(r: &HardStateRec) -> HardState {
    HardState {
        term: r.term,
        vote: r.vote,
        commit: r.commit,
        ..Default::default()
    }
}

pub fn cs_to_rec(c: &ConfState) -> ConfStateRec {
    ConfStateRec {
        voters: c.voters.clone(),
        learners: c.learners.clone(),
        voters_outgoing: c.voters_outgoing.clone(),
        learners_next: c.learners_next.clone(),
        auto_leave: c.auto_leave,
    }
}

pub fn rec_to_cs(r: &ConfStateRec) -> ConfState {
    ConfState {
        voters: r.voters.clone(),
        learners: r.learners.clone(),
        voters_outgoing: r.voters_outgoing.clone(),
        learners_next: r.learners_next.clone(),
        auto_leave: r.auto_leave,
        ..Default::default()
    }
}
