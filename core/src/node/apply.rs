//! One committed entry, decoded once: what it asks of the state machine (a command, a
//! membership change, nothing), or why every replica skips it. Also the client's answer to an
//! applied command, and the entry's hash for checkers that compare replicas (computed only when
//! `NodeConfig::trace_applied` asks for it: production has no reader for it).
//!
//! Entries come from the log, which holds what peers sent: an entry that does not decode is
//! skipped with a reason (the same on every replica, so state machines stay equal), never
//! asserted on.

use super::{ClientError, ClientReply, RejectReason};
use crate::command::{MemberChange, MemberProposal, Proposal, RequestId};
use crate::kv::{Applied, KvState};
use raft::eraftpb::{Entry, EntryType};

/// What a committed entry asks for.
#[derive(Debug)]
pub(super) enum Decoded {
    /// An empty normal entry: a new leader's first entry of its term. A proposal that raft
    /// placed at its index was overwritten by it.
    Empty,
    Command(Proposal),
    Member(MemberChange),
    /// raft's automatic leave-joint entry (an empty `ConfChangeV2`).
    LeaveJoint,
    /// Not applied (only the index advances), for this reason.
    Skip(RejectReason),
}

impl Decoded {
    pub(super) fn of(e: &Entry) -> Decoded {
        match e.get_entry_type() {
            EntryType::EntryNormal if e.data.is_empty() => Decoded::Empty,
            EntryType::EntryNormal => Proposal::decode_shared(&e.data)
                .map_or(Decoded::Skip(RejectReason::Undecodable), Decoded::Command),
            EntryType::EntryConfChange => MemberProposal::decode(&e.context)
                .map_or(Decoded::Skip(RejectReason::Undecodable), |mp| {
                    Decoded::Member(mp.change)
                }),
            // We never propose joint changes: only raft's own leave-joint entry can appear.
            EntryType::EntryConfChangeV2 if e.data.is_empty() => Decoded::LeaveJoint,
            EntryType::EntryConfChangeV2 => Decoded::Skip(RejectReason::JointChange),
        }
    }

    /// The client request id an applied entry is reported with: a command's (a membership
    /// change's is not reported).
    pub(super) fn request_id(&self) -> Option<RequestId> {
        match self {
            Decoded::Command(p) => p.request_id,
            _ => None,
        }
    }
}

/// The entry's identity for replica comparison: type, data and context (FNV-1a).
pub(super) fn entry_hash(e: &Entry) -> u64 {
    let mut h = crate::rng::Fnv64::default();
    h.update_u64(e.get_entry_type() as u64);
    h.update(&e.data);
    h.update(&e.context);
    h.finish()
}

/// Applies command `p` at `index` to `kv`: the answer its client gets.
pub(super) fn apply_command(
    kv: &mut KvState,
    index: u64,
    p: &Proposal,
) -> Result<ClientReply, ClientError> {
    let applied = kv.apply_command(index, p.request_id, &p.command);
    assert_eq!(
        kv.applied_index(),
        index,
        "a command applied at another index"
    );
    match applied {
        Applied::Fresh(r) | Applied::Duplicate(r) => Ok(ClientReply::Written(r)),
        Applied::Stale => Err(ClientError::Rejected(RejectReason::StaleRequest)),
        Applied::Admin(Ok(())) => Ok(ClientReply::Members(kv.members().clone())),
        Applied::Admin(Err(why)) => Err(ClientError::Rejected(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    #[test]
    fn an_applied_put_holds_its_entrys_bytes_not_a_copy() {
        let mut kv = KvState::default();
        for (i, value) in [vec![], vec![7; 3], vec![9; 70_000]]
            .into_iter()
            .enumerate()
        {
            let p = Proposal {
                request_id: Some(RequestId {
                    client: 1,
                    seq: i as u64 + 1,
                }),
                command: Command::Put {
                    key: b"key".to_vec(),
                    value: value.clone().into(),
                },
            };
            let e = Entry {
                data: p.encode().into(),
                ..Default::default()
            };
            let Decoded::Command(decoded) = Decoded::of(&e) else {
                panic!("a put decodes");
            };
            assert_eq!(decoded, p);
            apply_command(&mut kv, i as u64 + 1, &decoded).unwrap();
            let held = kv.get(b"key").unwrap();
            assert_eq!(held, &value[..]);
            let within = e.data.as_ptr_range();
            assert!(
                value.is_empty() || within.contains(&held.as_ptr()),
                "a copy of the entry's value"
            );
        }
    }
}
