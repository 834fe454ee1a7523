//! WAL record types: our own serde structs, encoded with postcard.
//!
//! raft-rs hands us protobuf types; we never write protobuf to disk (protobuf v2 parsing is
//! advisory-flagged, and our framing must own every byte). `convert` maps between the two.

use serde::{Deserialize, Serialize};

/// Version of the WAL and snapshot file formats. Bump on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// Type byte of each frame. Values are part of the on-disk format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    SegmentHeader = 1,
    Entry = 2,
    HardState = 3,
    Snapshot = 4,
}

impl RecordType {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::SegmentHeader),
            2 => Some(Self::Entry),
            3 => Some(Self::HardState),
            4 => Some(Self::Snapshot),
            _ => None,
        }
    }
}

/// First record of every segment: the metadata record of the format, plus the chain link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHeader {
    pub format_version: u32,
    pub cluster_id: u64,
    pub node_id: u64,
    /// Sequence number of this segment; also in its file name.
    pub seq: u64,
    /// Index of the first entry expected in this segment; also in its file name.
    pub first_index: u64,
    /// Chained checksum of the last frame of the previous segment (0 for the first segment).
    pub prev_crc: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Normal,
    ConfChange,
    ConfChangeV2,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRec {
    pub index: u64,
    pub term: u64,
    pub kind: EntryKind,
    #[serde(with = "crate::as_bytes")]
    pub data: Vec<u8>,
    #[serde(with = "crate::as_bytes")]
    pub context: Vec<u8>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardStateRec {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfStateRec {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub voters_outgoing: Vec<u64>,
    pub learners_next: Vec<u64>,
    pub auto_leave: bool,
}

impl ConfStateRec {
    /// True if `id` is a member in any role, i.e. would accept a snapshot with this ConfState.
    pub fn contains(&self, id: u64) -> bool {
        self.voters.contains(&id)
            || self.learners.contains(&id)
            || self.voters_outgoing.contains(&id)
            || self.learners_next.contains(&id)
    }
}

/// A snapshot marker: "a snapshot at (index, term) with this ConfState was made durable".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMarker {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfStateRec,
    /// True for a snapshot received from the leader: raft discarded every entry after `index`
    /// that was written before this marker. False for a snapshot this node made of its own log.
    pub log_reset: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    SegmentHeader(SegmentHeader),
    Entry(EntryRec),
    HardState(HardStateRec),
    Snapshot(SnapshotMarker),
}

impl Record {
    pub fn record_type(&self) -> RecordType {
        match self {
            Record::SegmentHeader(_) => RecordType::SegmentHeader,
            Record::Entry(_) => RecordType::Entry,
            Record::HardState(_) => RecordType::HardState,
            Record::Snapshot(_) => RecordType::Snapshot,
        }
    }

    pub fn encode_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_payload_into(&mut out);
        out
    }

    /// Appends the payload to `out` (no intermediate buffer: the WAL's hot path).
    pub fn encode_payload_into(&self, out: &mut Vec<u8>) {
        let buf = std::mem::take(out);
        let res = match self {
            Record::SegmentHeader(r) => postcard::to_extend(r, buf),
            Record::Entry(r) => postcard::to_extend(r, buf),
            Record::HardState(r) => postcard::to_extend(r, buf),
            Record::Snapshot(r) => postcard::to_extend(r, buf),
        };
        // Serialising plain structs into a Vec cannot fail.
        *out = res.expect("postcard encoding of a WAL record");
    }

    /// Decodes a payload; the whole payload must be consumed (no trailing bytes) and must be the
    /// canonical encoding of the record. postcard's decoder accepts over-long varints (`[0x81,
    /// 0x00]` for 1); rejecting them gives every record exactly one encoding, so the bytes a crc
    /// covers have one meaning and a decoded record re-encodes byte for byte.
    pub fn decode_payload(kind: RecordType, payload: &[u8]) -> Option<Record> {
        fn exact<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Option<T> {
            match postcard::take_from_bytes::<T>(b) {
                Ok((v, [])) => Some(v),
                _ => None,
            }
        }
        let record = match kind {
            RecordType::SegmentHeader => Record::SegmentHeader(exact(payload)?),
            RecordType::Entry => Record::Entry(exact(payload)?),
            RecordType::HardState => Record::HardState(exact(payload)?),
            RecordType::Snapshot => Record::Snapshot(exact(payload)?),
        };
        (record.encode_payload() == payload).then_some(record)
    }
}
