//! The state machine's snapshot payload, format 3: a stream of records that is written and read
//! in bounded pieces, so neither making, sending nor installing a snapshot ever holds its bytes
//! whole (a follower decodes chunks as they arrive; a leader encodes straight into its file).
//!
//! ```text
//! u8 version = 3
//! record*:  u8 kind, u32 LE payload length, payload
//!   1 Header   postcard Header { members, removed, applied_index, incarnations, learners,
//!                                data_count, session_count }           exactly one, first
//!   2 Data     u32 LE key length, key, value                           data_count, keys ascending
//!   3 Session  postcard (client id, Session)                           session_count, ids ascending
//!   4 End      empty                                                   exactly one, last
//! ```
//! Everything is canonical: one state has exactly one encoding (orders strict, counts exact,
//! postcard payloads re-encode to their own bytes), so a decoded payload re-encodes identically.

use super::{KvError, KvState, Session};
use bytes::Bytes;
use imbl::OrdSet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub(super) const VERSION: u8 = 3;
const KIND_HEADER: u8 = 1;
const KIND_DATA: u8 = 2;
const KIND_SESSION: u8 = 3;
const KIND_END: u8 = 4;
const RECORD_HEAD_BYTES: usize = 5;
/// Largest record a decoder buffers: bounds what a peer's bytes can make it allocate.
pub const MAX_RECORD_BYTES: usize = 256 << 20;

#[derive(Serialize, Deserialize)]
struct Header {
    members: BTreeMap<u64, String>,
    removed: BTreeSet<u64>,
    applied_index: u64,
    incarnations: BTreeMap<u64, u64>,
    learners: BTreeMap<u64, bool>,
    data_count: u64,
    session_count: u64,
}

type DataIter<'a> = Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Bytes)> + Send + 'a>;
type SessionIter<'a> = Box<dyn Iterator<Item = (&'a u64, &'a Session)> + Send + 'a>;

enum Stage<'a> {
    Start,
    Data(DataIter<'a>),
    Sessions(SessionIter<'a>),
    Done,
}

/// Encodes a state in pieces of about `piece_bytes` (a piece exceeds it only by one record).
pub struct Encoder<'a> {
    kv: &'a KvState,
    stage: Stage<'a>,
    piece_bytes: usize,
}

fn record_head(out: &mut Vec<u8>, kind: u8, len: usize) {
    let len = u32::try_from(len).expect("a record fits a u32 length");
    out.push(kind);
    out.extend_from_slice(&len.to_le_bytes());
}

fn data_record(out: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    record_head(out, KIND_DATA, 4 + k.len() + v.len());
    out.extend_from_slice(&(k.len() as u32).to_le_bytes());
    out.extend_from_slice(k);
    out.extend_from_slice(v);
}

fn postcard_record<T: Serialize>(out: &mut Vec<u8>, kind: u8, value: &T) {
    let bytes = postcard::to_allocvec(value).expect("postcard encoding of a snapshot record");
    record_head(out, kind, bytes.len());
    out.extend_from_slice(&bytes);
}

fn header_of(kv: &KvState) -> Header {
    Header {
        members: kv.members.clone(),
        removed: kv.removed.clone(),
        applied_index: kv.applied_index,
        incarnations: kv.incarnations.clone(),
        learners: kv.learners.clone(),
        data_count: kv.data.len() as u64,
        session_count: kv.sessions.len() as u64,
    }
}

impl<'a> Encoder<'a> {
    pub fn new(kv: &'a KvState, piece_bytes: usize) -> Self {
        assert!(piece_bytes > 0, "pieces of nothing");
        Encoder {
            kv,
            stage: Stage::Start,
            piece_bytes,
        }
    }

    /// Bytes the whole encoding takes, computed without encoding the data (a file's length
    /// field comes before its payload).
    pub fn encoded_len(kv: &KvState) -> u64 {
        let head = RECORD_HEAD_BYTES as u64;
        let header = postcard::to_allocvec(&header_of(kv))
            .expect("postcard")
            .len() as u64;
        let data: u64 = kv
            .data
            .iter()
            .map(|(k, v)| head + 4 + (k.len() + v.len()) as u64)
            .sum();
        let sessions: u64 = kv
            .sessions
            .iter()
            .map(|(c, s)| head + postcard::to_allocvec(&(c, s)).expect("postcard").len() as u64)
            .sum();
        1 + head + header + data + sessions + head
    }
}

impl Iterator for Encoder<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(self.piece_bytes.min(1 << 20) + 64);
        while out.len() < self.piece_bytes {
            match &mut self.stage {
                Stage::Start => {
                    out.push(VERSION);
                    postcard_record(&mut out, KIND_HEADER, &header_of(self.kv));
                    self.stage = Stage::Data(Box::new(self.kv.data.iter()));
                }
                Stage::Data(it) => match it.next() {
                    Some((k, v)) => data_record(&mut out, k, v),
                    None => self.stage = Stage::Sessions(Box::new(self.kv.sessions.iter())),
                },
                Stage::Sessions(it) => match it.next() {
                    Some((c, s)) => postcard_record(&mut out, KIND_SESSION, &(c, s)),
                    None => {
                        record_head(&mut out, KIND_END, 0);
                        self.stage = Stage::Done;
                        break;
                    }
                },
                Stage::Done => break,
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// Where a decoder is in the stream.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Version,
    Header,
    Body,
    Nothing,
}

/// Decodes a payload fed in pieces of any size; holds at most one partial record besides the
/// state it builds.
pub struct Decoder {
    expect: Expect,
    buf: Vec<u8>,
    kv: KvState,
    data_count: u64,
    session_count: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            expect: Expect::Version,
            buf: Vec::new(),
            kv: KvState::default(),
            data_count: 0,
            session_count: 0,
        }
    }
}

/// `T` from postcard bytes, only in its canonical encoding (postcard accepts over-long varints).
fn canonical<T: Serialize + for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, KvError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) if postcard::to_allocvec(&v).is_ok_and(|b| b == bytes) => Ok(v),
        _ => Err(KvError::BadSnapshot),
    }
}

impl Decoder {
    /// A decoder for a payload whose version byte was already read.
    pub(super) fn after_version() -> Self {
        Decoder {
            expect: Expect::Header,
            ..Default::default()
        }
    }

    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), KvError> {
        if self.expect == Expect::Version {
            let Some((&v, rest)) = bytes.split_first() else {
                return Ok(());
            };
            if v != VERSION {
                return Err(KvError::BadSnapshot);
            }
            self.expect = Expect::Header;
            bytes = rest;
        }
        while !bytes.is_empty() {
            if self.expect == Expect::Nothing {
                return Err(KvError::BadSnapshot);
            }
            if !self.buf.is_empty() {
                // A record split across pieces: its head first, then the payload it announces.
                if self.buf.len() < RECORD_HEAD_BYTES {
                    let take = (RECORD_HEAD_BYTES - self.buf.len()).min(bytes.len());
                    self.buf.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.buf.len() < RECORD_HEAD_BYTES {
                        return Ok(());
                    }
                }
                let need = self.pending_need()?;
                let take = (need - self.buf.len()).min(bytes.len());
                self.buf.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.buf.len() < need {
                    return Ok(());
                }
                let buf = std::mem::take(&mut self.buf);
                self.record(&buf)?;
                continue;
            }
            // Whole records straight from the input; only a record split across pieces is copied.
            if bytes.len() >= RECORD_HEAD_BYTES {
                let len = u32::from_le_bytes(bytes[1..5].try_into().expect("4")) as usize;
                if len > MAX_RECORD_BYTES {
                    return Err(KvError::BadSnapshot);
                }
                if bytes.len() >= RECORD_HEAD_BYTES + len {
                    let used = self.record(bytes)?;
                    bytes = &bytes[used..];
                    continue;
                }
            }
            self.buf.extend_from_slice(bytes);
            return Ok(());
        }
        Ok(())
    }

    /// Bytes the buffered record needs in all (its head is whole).
    fn pending_need(&self) -> Result<usize, KvError> {
        let len = u32::from_le_bytes(self.buf[1..5].try_into().expect("4")) as usize;
        if len > MAX_RECORD_BYTES {
            return Err(KvError::BadSnapshot);
        }
        Ok(RECORD_HEAD_BYTES + len)
    }

    /// Decodes the one whole record at the start of `bytes`; returns its length.
    fn record(&mut self, bytes: &[u8]) -> Result<usize, KvError> {
        let kind = bytes[0];
        let len = u32::from_le_bytes(bytes[1..5].try_into().expect("4")) as usize;
        if len > MAX_RECORD_BYTES {
            return Err(KvError::BadSnapshot);
        }
        let payload = &bytes[RECORD_HEAD_BYTES..RECORD_HEAD_BYTES + len];
        match (&self.expect, kind) {
            (Expect::Header, KIND_HEADER) => {
                let h: Header = canonical(payload)?;
                let kv = &mut self.kv;
                kv.members = h.members;
                kv.removed = h.removed;
                kv.applied_index = h.applied_index;
                kv.incarnations = h.incarnations;
                kv.learners = h.learners;
                self.data_count = h.data_count;
                self.session_count = h.session_count;
                self.expect = Expect::Body;
            }
            (Expect::Body, KIND_DATA) => {
                if self.kv.data.len() as u64 >= self.data_count || !self.kv.sessions.is_empty() {
                    return Err(KvError::BadSnapshot);
                }
                let klen = payload
                    .get(..4)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize)
                    .filter(|&k| k <= payload.len() - 4)
                    .ok_or(KvError::BadSnapshot)?;
                let (key, value) = payload[4..].split_at(klen);
                if self
                    .kv
                    .data
                    .get_max()
                    .is_some_and(|(last, _)| key <= &last[..])
                {
                    return Err(KvError::BadSnapshot);
                }
                self.kv.put(key.to_vec(), Bytes::copy_from_slice(value));
            }
            (Expect::Body, KIND_SESSION) => {
                if (self.kv.data.len() as u64) < self.data_count
                    || self.kv.sessions.len() as u64 >= self.session_count
                {
                    return Err(KvError::BadSnapshot);
                }
                let (client, session): (u64, Session) = canonical(payload)?;
                if self
                    .kv
                    .sessions
                    .get_max()
                    .is_some_and(|(last, _)| client <= *last)
                {
                    return Err(KvError::BadSnapshot);
                }
                self.kv.sessions.insert(client, session);
            }
            (Expect::Body, KIND_END) => {
                if len != 0
                    || self.kv.data.len() as u64 != self.data_count
                    || self.kv.sessions.len() as u64 != self.session_count
                {
                    return Err(KvError::BadSnapshot);
                }
                self.expect = Expect::Nothing;
            }
            _ => return Err(KvError::BadSnapshot),
        }
        Ok(RECORD_HEAD_BYTES + len)
    }

    /// The decoded state; an error unless the stream ended exactly at its End record.
    pub fn finish(self) -> Result<KvState, KvError> {
        if self.expect != Expect::Nothing || !self.buf.is_empty() {
            return Err(KvError::BadSnapshot);
        }
        let mut kv = self.kv;
        kv.session_lru = kv
            .sessions
            .iter()
            .map(|(c, s)| (s.last_index, *c))
            .collect::<OrdSet<_>>();
        Ok(kv)
    }
}
