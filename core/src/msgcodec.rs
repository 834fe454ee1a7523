//! Peer messages on the wire: our own envelope and codec, never protobuf.
//!
//! ```text
//! 0  4  magic "RKV2"
//! 4  4  crc32 of the body
//! 8  .  body: postcard Envelope { cluster_id, from, from_incarnation, from_addr, to,
//!                                 to_incarnation, message }
//! ```
//! Identity travels in every frame: the cluster id, the sender's incarnation (which data
//! directory it speaks for) and the incarnation the sender believes the recipient has (0 when
//! unknown), so a node whose directory was wiped is told apart from the one it replaced, and a
//! message meant for a previous incarnation of the recipient is dropped.
//! The transport adds its own length prefix. The checksum makes a corrupted frame an error rather
//! than a different valid message (a flipped bit in a term would otherwise be believed). Only
//! message types that legitimately cross the network decode; local types (`MsgHup`, `MsgBeat`,
//! ...) and `MsgPropose` (raft-rs would parse its protobuf payload; we never forward proposals)
//! are rejected.

use crate::client::{ClientError, ClientOp, ClientReply};
use crate::command::RequestId;
use crate::convert::{cs_to_rec, entry_to_rec, rec_to_cs, rec_to_entry};
use crate::transfer::{Ack, SnapKey};
use crate::wal::{ConfStateRec, EntryRec};
use raft::eraftpb::{Message, MessageType, Snapshot};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// "RKVM" was format 1 (no identity fields); its frames are refused as a bad magic.
pub const MSG_MAGIC: [u8; 4] = *b"RKV2";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame too short ({0} bytes)")]
    Short(usize),
    #[error("bad magic")]
    BadMagic,
    #[error("checksum mismatch")]
    BadChecksum,
    #[error("body does not decode")]
    BadBody,
    #[error("message type {0} is not accepted from the network")]
    BadType(i32),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct WireSnapshot {
    index: u64,
    term: u64,
    conf_state: ConfStateRec,
    #[serde(with = "crate::as_bytes")]
    data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct WireMessage {
    msg_type: i32,
    to: u64,
    from: u64,
    term: u64,
    log_term: u64,
    index: u64,
    entries: Vec<EntryRec>,
    commit: u64,
    commit_term: u64,
    snapshot: Option<WireSnapshot>,
    request_snapshot: u64,
    reject: bool,
    reject_hint: u64,
    context: Vec<u8>,
    priority: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct WireEnvelope {
    cluster_id: u64,
    from: u64,
    from_incarnation: u64,
    /// The sender's peer address, so a node that has not yet learned of a newer member (it
    /// lags behind the membership change) can still answer it.
    from_addr: String,
    to: u64,
    to_incarnation: u64,
    body: WireBody,
}

/// Who is sending: the routing header every frame carries.
#[derive(Clone, Copy, Debug)]
pub struct Sender<'a> {
    pub cluster_id: u64,
    pub id: u64,
    pub incarnation: u64,
    pub addr: &'a str,
}

/// Who a frame is for: the id, and the incarnation the sender believes it has (0: unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recipient {
    pub id: u64,
    pub incarnation: u64,
}

/// Why a node refuses to talk to a sender; sent back so the sender can stop with a clear error
/// instead of retrying forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The membership records another incarnation for the sender's id: its data directory is
    /// not the one the cluster knows (wiped and re-initialised, or replaced).
    StaleIncarnation { recorded: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum WireBody {
    Raft(WireMessage),
    Removed,
    Refused(Refusal),
    Forward(Forward),
    ForwardReply {
        forward_id: u64,
        result: Result<ClientReply, ClientError>,
    },
    SnapshotChunk(WireChunk),
    SnapshotAck(Ack),
}

/// One chunk of a snapshot file, with the `MsgSnapshot` it belongs to (small: metadata and a
/// descriptor), so a receiver can start from any transfer's first chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct WireChunk {
    message: WireMessage,
    key: SnapKey,
    offset: u64,
    #[serde(with = "crate::as_bytes")]
    bytes: Vec<u8>,
}

/// A client request a follower forwards to the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub forward_id: u64,
    pub request_id: Option<RequestId>,
    pub timeout_ticks: u64,
    pub op: ClientOp,
}

/// What a frame carries.
#[derive(Clone, Debug)]
pub enum Body {
    Raft(Message),
    /// "You were removed from the cluster": raft has no message for this, and a removed node
    /// never learns of its removal through raft once the leader stops replicating to it.
    Removed,
    /// "I refuse your messages, and why".
    Refused(Refusal),
    /// A client request forwarded by a follower to the leader.
    Forward(Forward),
    /// The leader's answer to a forwarded request.
    ForwardReply {
        forward_id: u64,
        result: Result<ClientReply, ClientError>,
    },
    /// A chunk of the snapshot file `message` (a `MsgSnapshot`) describes.
    SnapshotChunk {
        message: Message,
        key: SnapKey,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// The receiver's answer to chunks.
    SnapshotAck(Ack),
}

/// A decoded peer frame with its routing header.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub cluster_id: u64,
    pub from: u64,
    pub from_incarnation: u64,
    /// The sender's peer address as it advertises it (may be empty).
    pub from_addr: String,
    pub to: u64,
    pub to_incarnation: u64,
    pub body: Body,
}

fn accepted_from_network(t: MessageType) -> bool {
    use MessageType::*;
    matches!(
        t,
        MsgAppend
            | MsgAppendResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
            | MsgHeartbeat
            | MsgHeartbeatResponse
            | MsgTimeoutNow
            | MsgTransferLeader
    )
}

fn to_wire(m: &Message) -> WireMessage {
    let snapshot = m
        .snapshot
        .as_ref()
        .filter(|s| !s.is_empty())
        .map(|s: &Snapshot| {
            let meta = s.get_metadata();
            WireSnapshot {
                index: meta.index,
                term: meta.term,
                conf_state: cs_to_rec(meta.get_conf_state()),
                data: s.data.to_vec(),
            }
        });
    WireMessage {
        msg_type: m.get_msg_type() as i32,
        to: m.to,
        from: m.from,
        term: m.term,
        log_term: m.log_term,
        index: m.index,
        entries: m.entries.iter().map(entry_to_rec).collect(),
        commit: m.commit,
        commit_term: m.commit_term,
        snapshot,
        request_snapshot: m.request_snapshot,
        reject: m.reject,
        reject_hint: m.reject_hint,
        context: m.context.to_vec(),
        priority: m.priority,
    }
}

/// `MsgSnapshot` is accepted only inside a chunk (`snapshot_chunk`), never on its own: its file
/// travels beside it.
fn from_wire(w: WireMessage, snapshot_chunk: bool) -> Result<Message, DecodeError> {
    use protobuf::ProtobufEnum;
    let t = MessageType::from_i32(w.msg_type).ok_or(DecodeError::BadType(w.msg_type))?;
    let allowed = if snapshot_chunk {
        t == MessageType::MsgSnapshot
    } else {
        accepted_from_network(t)
    };
    if !allowed {
        return Err(DecodeError::BadType(w.msg_type));
    }
    let mut m = Message::default();
    m.set_msg_type(t);
    m.to = w.to;
    m.from = w.from;
    m.term = w.term;
    m.log_term = w.log_term;
    m.index = w.index;
    m.entries = w
        .entries
        .iter()
        .map(rec_to_entry)
        .collect::<Vec<_>>()
        .into();
    m.commit = w.commit;
    m.commit_term = w.commit_term;
    if let Some(s) = w.snapshot {
        // Encoders omit empty snapshots (index 0); one on the wire would decode to a message that
        // re-encodes differently (found by fuzz/fuzz_targets/peer_frame.rs).
        if s.index == 0 {
            return Err(DecodeError::BadBody);
        }
        let mut snap = Snapshot {
            data: s.data.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = s.index;
        meta.term = s.term;
        meta.set_conf_state(rec_to_cs(&s.conf_state));
        m.set_snapshot(snap);
    }
    m.request_snapshot = w.request_snapshot;
    m.reject = w.reject;
    m.reject_hint = w.reject_hint;
    m.context = w.context.into();
    m.priority = w.priority;
    Ok(m)
}

fn envelope(from: &Sender, to: Recipient, body: WireBody) -> Vec<u8> {
    seal(&WireEnvelope {
        cluster_id: from.cluster_id,
        from: from.id,
        from_incarnation: from.incarnation,
        from_addr: from.addr.to_string(),
        to: to.id,
        to_incarnation: to.incarnation,
        body,
    })
}

/// Encodes a raft message (its `from` and `to` must match the sender and recipient).
pub fn encode(from: &Sender, to_incarnation: u64, m: &Message) -> Vec<u8> {
    debug_assert_eq!(from.id, m.from);
    let to = Recipient {
        id: m.to,
        incarnation: to_incarnation,
    };
    envelope(from, to, WireBody::Raft(to_wire(m)))
}

/// Encodes one chunk of the snapshot file that `m` (a `MsgSnapshot`) describes.
pub fn encode_chunk(
    from: &Sender,
    to_incarnation: u64,
    m: &Message,
    key: SnapKey,
    offset: u64,
    bytes: Vec<u8>,
) -> Vec<u8> {
    debug_assert_eq!(m.get_msg_type(), MessageType::MsgSnapshot);
    let to = Recipient {
        id: m.to,
        incarnation: to_incarnation,
    };
    let chunk = WireChunk {
        message: to_wire(m),
        key,
        offset,
        bytes,
    };
    envelope(from, to, WireBody::SnapshotChunk(chunk))
}

/// Encodes a receiver's acknowledgement of snapshot chunks.
pub fn encode_ack(from: &Sender, to: Recipient, ack: Ack) -> Vec<u8> {
    envelope(from, to, WireBody::SnapshotAck(ack))
}

/// Encodes a "you were removed" notice.
pub fn encode_removed(from: &Sender, to: Recipient) -> Vec<u8> {
    envelope(from, to, WireBody::Removed)
}

/// Encodes a refusal.
pub fn encode_refused(from: &Sender, to: Recipient, why: Refusal) -> Vec<u8> {
    envelope(from, to, WireBody::Refused(why))
}

/// Encodes a forwarded client request.
pub fn encode_forward(from: &Sender, to: Recipient, fwd: Forward) -> Vec<u8> {
    envelope(from, to, WireBody::Forward(fwd))
}

/// Encodes the answer to a forwarded request.
pub fn encode_forward_reply(
    from: &Sender,
    to: Recipient,
    forward_id: u64,
    result: Result<ClientReply, ClientError>,
) -> Vec<u8> {
    envelope(from, to, WireBody::ForwardReply { forward_id, result })
}

fn seal(env: &WireEnvelope) -> Vec<u8> {
    let body = postcard::to_allocvec(env).expect("postcard encoding of a message");
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&MSG_MAGIC);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes and validates a frame body (the transport's length prefix already removed).
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    if bytes.len() < 8 {
        return Err(DecodeError::Short(bytes.len()));
    }
    if bytes[0..4] != MSG_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let body = &bytes[8..];
    if crc32fast::hash(body) != crc {
        return Err(DecodeError::BadChecksum);
    }
    let env = match postcard::take_from_bytes::<WireEnvelope>(body) {
        Ok((e, [])) => e,
        _ => return Err(DecodeError::BadBody),
    };
    let body = match env.body {
        WireBody::Raft(m) => {
            if m.from != env.from || m.to != env.to {
                return Err(DecodeError::BadBody);
            }
            Body::Raft(from_wire(m, false)?)
        }
        WireBody::SnapshotChunk(c) => {
            if c.message.from != env.from || c.message.to != env.to {
                return Err(DecodeError::BadBody);
            }
            let message = from_wire(c.message, true)?;
            // The message must describe exactly the file the chunk belongs to.
            let s = message.get_snapshot();
            let meta = s.get_metadata();
            let described = (
                meta.index,
                meta.term,
                crate::snapfile::parse_descriptor(&s.data),
            );
            if described != (c.key.index, c.key.term, Some(c.key.file_bytes))
                || c.offset
                    .checked_add(c.bytes.len() as u64)
                    .is_none_or(|end| end > c.key.file_bytes)
            {
                return Err(DecodeError::BadBody);
            }
            Body::SnapshotChunk {
                message,
                key: c.key,
                offset: c.offset,
                bytes: c.bytes,
            }
        }
        WireBody::SnapshotAck(a) => Body::SnapshotAck(a),
        WireBody::Removed => Body::Removed,
        WireBody::Refused(r) => Body::Refused(r),
        WireBody::Forward(f) => Body::Forward(f),
        WireBody::ForwardReply { forward_id, result } => Body::ForwardReply { forward_id, result },
    };
    Ok(Envelope {
        cluster_id: env.cluster_id,
        from: env.from,
        from_incarnation: env.from_incarnation,
        from_addr: env.from_addr,
        to: env.to,
        to_incarnation: env.to_incarnation,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Entry;

    #[test]
    fn round_trip_and_rejections() {
        let e = Entry {
            index: 7,
            term: 5,
            data: b"x".to_vec().into(),
            ..Default::default()
        };
        let mut m = Message {
            from: 1,
            to: 2,
            term: 5,
            entries: vec![e].into(),
            ..Default::default()
        };
        m.set_msg_type(MessageType::MsgAppend);
        let sender = Sender {
            cluster_id: 42,
            id: 1,
            incarnation: 9,
            addr: "a",
        };
        let bytes = encode(&sender, 11, &m);
        let env = decode(&bytes).unwrap();
        assert_eq!(
            (
                env.cluster_id,
                env.from,
                env.from_incarnation,
                env.to,
                env.to_incarnation
            ),
            (42, 1, 9, 2, 11)
        );
        assert!(matches!(env.body, Body::Raft(ref got) if *got == m));
        assert!(matches!(
            decode(&encode_removed(
                &sender,
                Recipient {
                    id: 2,
                    incarnation: 0
                }
            ))
            .unwrap()
            .body,
            Body::Removed
        ));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip at byte {i} accepted");
        }
        let mut p = m.clone();
        p.set_msg_type(MessageType::MsgPropose);
        assert_eq!(
            decode(&encode(&sender, 0, &p)).unwrap_err(),
            DecodeError::BadType(2)
        );
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    /// Found by fuzz/fuzz_targets/peer_frame.rs: a present but empty snapshot decoded to a
    /// message that re-encoded without it.
    #[test]
    fn an_empty_snapshot_on_the_wire_is_refused() {
        let mut w = to_wire(&Message::default());
        w.msg_type = MessageType::MsgAppend as i32;
        w.snapshot = Some(WireSnapshot {
            index: 0,
            term: 0,
            conf_state: ConfStateRec {
                auto_leave: true,
                ..Default::default()
            },
            data: Vec::new(),
        });
        assert_eq!(from_wire(w, false).unwrap_err(), DecodeError::BadBody);
    }
}
