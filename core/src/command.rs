//! What goes into raft entries: client commands and membership changes, in our own encoding.
//!
//! Normal entries carry `Proposal` (postcard, behind a version byte). Conf-change entries carry
//! raft's protobuf ConfChange in `data` (raft-rs writes it) *and* our `MemberChange` in
//! `context`; we only ever decode `context`, so no protobuf is parsed from disk or network.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

const VERSION: u8 = 1;

/// Identifies a client request across retries, so a retried write is applied once.
/// `seq` must grow per client; one request per client is in flight at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub client: u64,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put {
        #[serde(with = "crate::as_bytes")]
        key: Vec<u8>,
        /// Shared with the entry it was decoded from ([`Proposal::decode_shared`]): the state
        /// machine then holds the entry's bytes, not a copy, and the log and the state share
        /// what both hold. Encoded as bytes, like the key.
        value: Bytes,
    },
    Delete {
        #[serde(with = "crate::as_bytes")]
        key: Vec<u8>,
    },
    /// The incarnation member `id` speaks with, recorded by the leader on first contact. The
    /// first record for a member wins; later ones are ignored.
    RecordIncarnation { id: u64, incarnation: u64 },
    /// A member's new peer URL.
    SetPeerUrl { id: u64, addr: String },
}

impl Command {
    /// Membership bookkeeping rather than a client's data write.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Command::RecordIncarnation { .. } | Command::SetPeerUrl { .. }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub request_id: Option<RequestId>,
    pub command: Command,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    Add {
        id: u64,
        addr: String,
    },
    Remove {
        id: u64,
    },
    /// A non-voting member: it receives entries and snapshots, never votes, never counts toward
    /// a quorum. `auto_promote`: the leader promotes it once it has caught up.
    AddLearner {
        id: u64,
        addr: String,
        auto_promote: bool,
    },
    /// A learner becomes a voter (raft-rs: `AddNode` on a learner).
    Promote {
        id: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberProposal {
    pub request_id: Option<RequestId>,
    pub change: MemberChange,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    out.extend(postcard::to_allocvec(v).expect("postcard encoding of a command"));
    out
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    let (&v, rest) = bytes.split_first()?;
    if v != VERSION {
        return None;
    }
    match postcard::take_from_bytes::<T>(rest) {
        Ok((t, [])) => Some(t),
        _ => None,
    }
}

impl Proposal {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        decode(bytes)
    }

    /// [`Proposal::decode`], with a put's value a slice of `entry_data` rather than a copy.
    /// The value is the encoding's last field and nothing may follow it (`decode` refuses
    /// trailing bytes), so it is the last `value.len()` bytes of the entry.
    pub fn decode_shared(entry_data: &Bytes) -> Option<Self> {
        let mut p = Self::decode(entry_data)?;
        if let Command::Put { value, .. } = &mut p.command {
            let shared = entry_data.slice(entry_data.len() - value.len()..);
            debug_assert_eq!(shared, *value, "a put's value is the end of its entry");
            *value = shared;
        }
        Some(p)
    }
}

impl MemberProposal {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        decode(bytes)
    }
}
