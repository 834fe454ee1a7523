//! The replicated state machine: an ordered map of byte keys to byte values, the membership
//! (id -> peer address), and the client sessions that make retried writes idempotent.
//!
//! Every map is ordered, so iteration order (and therefore snapshot bytes and hashes) is a
//! function of the contents alone. The large maps (data, sessions) are persistent B-trees
//! (`imbl`): cloning the state is O(1) and later writes copy only the nodes they touch, which is
//! what lets a snapshot be serialised off the event loop while writes go on. Values are
//! reference-counted (`Bytes`), so a copied leaf shares its values with the snapshot's: without
//! that, overwriting random keys while a snapshot job runs copied up to 16 values per write, and
//! held about a second copy of the state until the job ended.

use crate::client::RejectReason;
use crate::command::{Command, MemberChange, RequestId};
use bytes::Bytes;
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

mod stream;
pub use stream::{Decoder as SnapshotDecoder, Encoder as SnapshotEncoder, MAX_RECORD_BYTES};

/// Sessions kept for de-duplication; the least recently used is evicted beyond this.
pub const MAX_SESSIONS: usize = 100_000;
/// 1: before incarnations; 2: with incarnations and learners (both one postcard value, still
/// decoded); 3: a stream of records (`stream`), written and read in bounded pieces.
const SNAPSHOT_VERSION_2: u8 = 2;
const SNAPSHOT_VERSION_1: u8 = 1;
/// Pieces the whole-payload helpers (`encode_snapshot`, `hash`) work in.
const PIECE_BYTES: usize = 1 << 16;

/// See [`KvState::payload_decoder`].
pub enum PayloadDecoder {
    Start,
    /// Boxed: the decoder holds a whole `KvState` while the other variants are a pointer or two.
    Stream(Box<SnapshotDecoder>),
    Whole(Vec<u8>),
}

impl PayloadDecoder {
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), KvError> {
        if let (PayloadDecoder::Start, Some(&version)) = (&*self, bytes.first()) {
            *self = match version {
                stream::VERSION => PayloadDecoder::Stream(Box::default()),
                SNAPSHOT_VERSION_1 | SNAPSHOT_VERSION_2 => PayloadDecoder::Whole(Vec::new()),
                _ => return Err(KvError::BadSnapshot),
            };
        }
        match self {
            PayloadDecoder::Start => Ok(()),
            PayloadDecoder::Stream(d) => d.feed(bytes),
            PayloadDecoder::Whole(all) => {
                all.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    pub fn finish(self) -> Result<KvState, KvError> {
        match self {
            PayloadDecoder::Start => Err(KvError::BadSnapshot),
            PayloadDecoder::Stream(d) => (*d).finish(),
            PayloadDecoder::Whole(all) => KvState::decode_snapshot(&all),
        }
    }
}

/// Result of applying a write, returned to the client (and cached for retries).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteResult {
    /// Put applied; `previous` tells whether the key existed before.
    Put { existed: bool },
    /// Delete applied; `existed` tells whether there was anything to delete.
    Delete { existed: bool },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    last_seq: u64,
    result: WriteResult,
    /// Applied index of the last write: the LRU clock for eviction.
    last_index: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    #[serde(with = "crate::as_bytes::map")]
    data: OrdMap<Vec<u8>, Bytes>,
    members: BTreeMap<u64, String>,
    /// Ids ever removed: never to be reused (a node whose data was wiped must not come back).
    removed: BTreeSet<u64>,
    #[serde(deserialize_with = "sessions_unhinted")]
    sessions: OrdMap<u64, Session>,
    applied_index: u64,
    /// Member id -> the incarnation of the data directory it speaks with (see `identity`).
    /// Absent until the leader first hears from the member and records it.
    incarnations: BTreeMap<u64, u64>,
    /// Members that do not vote (yet), and whether the leader promotes them once caught up.
    learners: BTreeMap<u64, bool>,
    /// (last applied index, client) of every session: the eviction order. Derived from
    /// `sessions`, so not serialised; rebuilt when a snapshot is decoded.
    #[serde(skip)]
    session_lru: OrdSet<(u64, u64)>,
    /// Key plus value bytes of `data`: what compaction weighs the log against. Derived, so not
    /// serialised; counted again when a snapshot is decoded.
    #[serde(skip)]
    data_bytes: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KvError {
    #[error("state-machine snapshot does not decode")]
    BadSnapshot,
}

/// The state as snapshot format 1 laid it out (no incarnations).
#[derive(Deserialize)]
struct KvStateV1 {
    #[serde(with = "crate::as_bytes::map")]
    data: OrdMap<Vec<u8>, Bytes>,
    members: BTreeMap<u64, String>,
    removed: BTreeSet<u64>,
    #[serde(deserialize_with = "sessions_unhinted")]
    sessions: OrdMap<u64, Session>,
    applied_index: u64,
}

/// The sessions map of a format 1 or 2 payload, built entry by entry: imbl's own `Deserialize`
/// reserves the length the bytes claim up front, so a damaged length panicked (capacity
/// overflow) or exhausted memory before the first entry was read (found by
/// fuzz/fuzz_targets/snapshot_payload.rs).
fn sessions_unhinted<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<OrdMap<u64, Session>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = OrdMap<u64, Session>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of sessions")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            let mut m = OrdMap::new();
            while let Some((k, v)) = a.next_entry()? {
                m.insert(k, v);
            }
            Ok(m)
        }
    }
    d.deserialize_map(V)
}

/// Outcome of a de-duplicated write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Fresh(WriteResult),
    /// The same request id was applied before: its original result.
    Duplicate(WriteResult),
    /// An older request of this client: its result is no longer known.
    Stale,
    /// A membership bookkeeping command (no session, no data change).
    Admin(Result<(), RejectReason>),
}

impl KvState {
    pub fn with_members(members: BTreeMap<u64, String>) -> Self {
        KvState {
            members,
            ..Default::default()
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.data.get(key).map(|v| &v[..])
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Key plus value bytes of every entry: the state's size as compaction weighs it.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    fn count_bytes(data: &OrdMap<Vec<u8>, Bytes>) -> u64 {
        data.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
    }

    /// Sets `key`; whether it existed.
    fn put(&mut self, key: Vec<u8>, value: Bytes) -> bool {
        let added = (key.len() + value.len()) as u64;
        let klen = key.len() as u64;
        let old = self.data.insert(key, value);
        if let Some(old) = &old {
            self.data_bytes -= klen + old.len() as u64;
        }
        self.data_bytes += added;
        old.is_some()
    }

    /// Removes `key`; whether it existed.
    fn delete(&mut self, key: &[u8]) -> bool {
        let old = self.data.remove(key);
        if let Some(old) = &old {
            self.data_bytes -= (key.len() + old.len()) as u64;
        }
        old.is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn members(&self) -> &BTreeMap<u64, String> {
        &self.members
    }

    pub fn was_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// Ids ever removed.
    pub fn removed(&self) -> &BTreeSet<u64> {
        &self.removed
    }

    /// The incarnation recorded for member `id`, if the leader has recorded one yet.
    pub fn incarnation(&self, id: u64) -> Option<u64> {
        self.incarnations.get(&id).copied()
    }

    pub fn incarnations(&self) -> &BTreeMap<u64, u64> {
        &self.incarnations
    }

    /// Learners (non-voting members), each with its auto-promotion flag.
    pub fn learners(&self) -> &BTreeMap<u64, bool> {
        &self.learners
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Marks `index` applied without a state change (empty entries, skipped entries).
    pub fn advance(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "apply out of order: {index} after {}",
            self.applied_index
        );
        self.applied_index = index;
    }

    pub fn apply_command(
        &mut self,
        index: u64,
        request_id: Option<RequestId>,
        cmd: &Command,
    ) -> Applied {
        self.advance(index);
        match cmd {
            Command::RecordIncarnation { id, incarnation } => {
                // First record wins, and only for a current member: every replica applies the
                // same rule to the same log, so all agree on who a member is.
                if self.members.contains_key(id) && *incarnation != 0 {
                    self.incarnations.entry(*id).or_insert(*incarnation);
                }
                return Applied::Admin(Ok(()));
            }
            Command::SetPeerUrl { id, addr } => {
                if !self.members.contains_key(id) {
                    return Applied::Admin(Err(RejectReason::NotMember { id: *id }));
                }
                if let Some((&other, _)) = self.members.iter().find(|(o, a)| *a == addr && *o != id)
                {
                    return Applied::Admin(Err(RejectReason::UrlInUse {
                        id: other,
                        addr: addr.clone(),
                    }));
                }
                self.members.insert(*id, addr.clone());
                return Applied::Admin(Ok(()));
            }
            Command::Put { .. } | Command::Delete { .. } => {}
        }
        if let Some(rid) = request_id {
            if let Some(s) = self.sessions.get(&rid.client) {
                if rid.seq == s.last_seq {
                    return Applied::Duplicate(s.result.clone());
                }
                if rid.seq < s.last_seq {
                    return Applied::Stale;
                }
            }
        }
        let result = match cmd {
            Command::Put { key, value } => WriteResult::Put {
                existed: self.put(key.clone(), value.clone()),
            },
            Command::Delete { key } => WriteResult::Delete {
                existed: self.delete(key),
            },
            Command::RecordIncarnation { .. } | Command::SetPeerUrl { .. } => {
                unreachable!("handled above")
            }
        };
        if let Some(rid) = request_id {
            let session = Session {
                last_seq: rid.seq,
                result: result.clone(),
                last_index: index,
            };
            if let Some(old) = self.sessions.insert(rid.client, session) {
                self.session_lru.remove(&(old.last_index, rid.client));
            }
            self.session_lru.insert((index, rid.client));
            if self.sessions.len() > MAX_SESSIONS {
                // Evict the least recently used session: O(log n), never a scan (any client
                // picks its own id, so a scan per write would be a denial of service).
                let (_, c) = self.session_lru.remove_min().expect("non-empty");
                self.sessions.remove(&c);
            }
            debug_assert_eq!(self.sessions.len(), self.session_lru.len());
        }
        Applied::Fresh(result)
    }

    pub fn apply_member_change(&mut self, index: u64, change: &MemberChange) {
        self.advance(index);
        match change {
            MemberChange::Add { id, addr } => {
                self.members.insert(*id, addr.clone());
            }
            MemberChange::Remove { id } => {
                self.members.remove(id);
                self.removed.insert(*id);
                self.incarnations.remove(id);
                self.learners.remove(id);
            }
            MemberChange::AddLearner {
                id,
                addr,
                auto_promote,
            } => {
                self.members.insert(*id, addr.clone());
                self.learners.insert(*id, *auto_promote);
            }
            MemberChange::Promote { id } => {
                self.learners.remove(id);
            }
        }
    }

    /// The whole snapshot payload in one buffer (small states and tests; snapshot files and
    /// transfers use [`SnapshotEncoder`] piece by piece).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in SnapshotEncoder::new(self, PIECE_BYTES) {
            out.extend_from_slice(&piece);
        }
        out
    }

    /// Decodes a whole payload of any format version (3 also piece by piece: [`SnapshotDecoder`]).
    pub fn decode_snapshot(bytes: &[u8]) -> Result<Self, KvError> {
        let mut s = match bytes.split_first() {
            Some((&stream::VERSION, rest)) => {
                let mut d = SnapshotDecoder::after_version();
                d.feed(rest)?;
                return d.finish();
            }
            Some((&SNAPSHOT_VERSION_2, rest)) => match postcard::take_from_bytes::<KvState>(rest) {
                Ok((s, [])) => s,
                _ => return Err(KvError::BadSnapshot),
            },
            Some((&SNAPSHOT_VERSION_1, rest)) => match postcard::take_from_bytes::<KvStateV1>(rest)
            {
                Ok((v1, [])) => KvState {
                    data: v1.data,
                    members: v1.members,
                    removed: v1.removed,
                    sessions: v1.sessions,
                    applied_index: v1.applied_index,
                    incarnations: BTreeMap::new(),
                    learners: BTreeMap::new(),
                    session_lru: OrdSet::new(),
                    data_bytes: 0,
                },
                _ => return Err(KvError::BadSnapshot),
            },
            _ => return Err(KvError::BadSnapshot),
        };
        s.session_lru = s.sessions.iter().map(|(c, s)| (s.last_index, *c)).collect();
        s.data_bytes = Self::count_bytes(&s.data);
        Ok(s)
    }

    /// A payload of any format version decoded piece by piece (recovery reads a snapshot file
    /// this way): version 3 record by record, versions 1 and 2, each one postcard value written
    /// whole before payloads streamed, gathered and then decoded.
    pub fn payload_decoder() -> PayloadDecoder {
        PayloadDecoder::Start
    }

    /// Stable fingerprint of the whole state (data, members, sessions, applied index).
    pub fn hash(&self) -> u64 {
        let mut h = crate::rng::Fnv64::default();
        for piece in SnapshotEncoder::new(self, PIECE_BYTES) {
            h.update(&piece);
        }
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Command {
        Command::Put {
            key: k.into(),
            value: Bytes::copy_from_slice(v.as_bytes()),
        }
    }

    #[test]
    fn retried_request_is_applied_once() {
        let mut kv = KvState::default();
        let rid = Some(RequestId { client: 9, seq: 1 });
        assert_eq!(
            kv.apply_command(1, rid, &put("a", "1")),
            Applied::Fresh(WriteResult::Put { existed: false })
        );
        assert_eq!(
            kv.apply_command(2, None, &Command::Delete { key: b"a".to_vec() }),
            Applied::Fresh(WriteResult::Delete { existed: true })
        );
        // The retry of request 1 must not resurrect the deleted key.
        assert_eq!(
            kv.apply_command(3, rid, &put("a", "1")),
            Applied::Duplicate(WriteResult::Put { existed: false })
        );
        assert_eq!(kv.get(b"a"), None);
        assert_eq!(
            kv.apply_command(4, Some(RequestId { client: 9, seq: 0 }), &put("a", "0")),
            Applied::Stale
        );
        assert_eq!(kv.get(b"a"), None);
    }

    #[test]
    fn snapshot_round_trips_and_hash_tracks_contents() {
        let mut kv = KvState::with_members([(1, "http://a".to_string())].into());
        kv.apply_command(1, None, &put("k", "v"));
        let bytes = kv.encode_snapshot();
        let back = KvState::decode_snapshot(&bytes).unwrap();
        assert_eq!(back, kv);
        assert_eq!(back.hash(), kv.hash());
        kv.apply_command(2, None, &put("k", "w"));
        assert_ne!(back.hash(), kv.hash());
        assert!(KvState::decode_snapshot(&bytes[..bytes.len() - 1]).is_err());
    }

    /// Format 2 (the state laid out in std `BTreeMap`s, one postcard value) still decodes to the
    /// same state, which format 3 then carries in pieces of any size.
    #[test]
    fn format_2_snapshots_decode_and_format_3_round_trips() {
        #[derive(Serialize)]
        struct Mirror {
            data: BTreeMap<serde_bytes_mirror::B, serde_bytes_mirror::B>,
            members: BTreeMap<u64, String>,
            removed: BTreeSet<u64>,
            sessions: BTreeMap<u64, Session>,
            applied_index: u64,
            incarnations: BTreeMap<u64, u64>,
            learners: BTreeMap<u64, bool>,
        }
        mod serde_bytes_mirror {
            #[derive(PartialEq, Eq, PartialOrd, Ord)]
            pub struct B(pub Vec<u8>);
            impl serde::Serialize for B {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    s.serialize_bytes(&self.0)
                }
            }
        }
        let mut kv = KvState::with_members([(1, "http://a".into()), (2, "http://b".into())].into());
        for i in 0..300u64 {
            let key = format!("k{}", i * 7919 % 257).into_bytes();
            let rid = Some(RequestId {
                client: i % 5,
                seq: i,
            });
            if i % 11 == 0 {
                kv.apply_command(i + 1, rid, &Command::Delete { key });
            } else {
                kv.apply_command(
                    i + 1,
                    rid,
                    &Command::Put {
                        key,
                        value: i.to_le_bytes().to_vec().into(),
                    },
                );
            }
        }
        kv.apply_member_change(301, &MemberChange::Remove { id: 2 });
        kv.apply_command(
            302,
            None,
            &Command::RecordIncarnation {
                id: 1,
                incarnation: 77,
            },
        );
        let mirror = Mirror {
            data: kv
                .data
                .iter()
                .map(|(k, v)| {
                    (
                        serde_bytes_mirror::B(k.clone()),
                        serde_bytes_mirror::B(v.to_vec()),
                    )
                })
                .collect(),
            members: kv.members.clone(),
            removed: kv.removed.clone(),
            sessions: kv.sessions.iter().map(|(c, s)| (*c, s.clone())).collect(),
            applied_index: kv.applied_index,
            incarnations: kv.incarnations.clone(),
            learners: kv.learners.clone(),
        };
        let mut v2 = vec![SNAPSHOT_VERSION_2];
        v2.extend(postcard::to_allocvec(&mirror).unwrap());
        assert_eq!(KvState::decode_snapshot(&v2).unwrap(), kv);
        // Format 3 carries the same state, in any piece size, and re-encodes to itself.
        let v3 = kv.encode_snapshot();
        assert_eq!(SnapshotEncoder::encoded_len(&kv), v3.len() as u64);
        for piece_bytes in [1, 7, 64, 1 << 20] {
            let pieces: Vec<Vec<u8>> = SnapshotEncoder::new(&kv, piece_bytes).collect();
            assert_eq!(pieces.concat(), v3);
        }
        let back = KvState::decode_snapshot(&v3).unwrap();
        assert_eq!(back, kv);
        assert_eq!(back.encode_snapshot(), v3);
    }

    /// A decoder fed a payload split at any point (and in pieces of any size) builds the same
    /// state, and refuses every truncation.
    #[test]
    fn streamed_snapshots_decode_in_any_pieces() {
        let mut kv = KvState::with_members([(1, "http://a".to_string())].into());
        for i in 0..40u64 {
            let rid = Some(RequestId {
                client: i % 3,
                seq: i,
            });
            kv.apply_command(
                i + 1,
                rid,
                &put(&format!("key{i:02}"), &"v".repeat(i as usize)),
            );
        }
        let bytes = kv.encode_snapshot();
        for cut in 0..bytes.len() {
            let mut d = SnapshotDecoder::default();
            d.feed(&bytes[..cut]).unwrap();
            d.feed(&bytes[cut..]).unwrap();
            assert_eq!(d.finish().unwrap(), kv, "split at {cut}");
            let mut d = SnapshotDecoder::default();
            d.feed(&bytes[..cut]).unwrap();
            assert!(d.finish().is_err(), "truncation to {cut} accepted");
        }
        for step in [1, 3, 17] {
            let mut d = SnapshotDecoder::default();
            for piece in bytes.chunks(step) {
                d.feed(piece).unwrap();
            }
            assert_eq!(d.finish().unwrap(), kv);
        }
        let mut d = SnapshotDecoder::default();
        d.feed(&bytes).unwrap();
        assert!(d.feed(&[0]).is_err(), "bytes after the end record");
    }

    /// Found by fuzz/fuzz_targets/snapshot_payload.rs: a format-2 payload claiming 2^64 sessions
    /// panicked with a capacity overflow instead of being refused.
    #[test]
    fn a_damaged_session_count_is_refused_not_reserved() {
        let bytes = [
            0x02, 0x00, 0x00, 0x0b, 0x08, 0x00, 0x00, 0x6b, 0x65, 0x79, 0x31, 0x38, 0xfb, 0x00,
            0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x65, 0x65, 0x79,
        ];
        assert_eq!(KvState::decode_snapshot(&bytes), Err(KvError::BadSnapshot));
    }

    #[test]
    fn format_1_snapshots_still_decode() {
        #[derive(Serialize)]
        struct V1<'a> {
            data: BTreeMap<u8, u8>,
            members: &'a BTreeMap<u64, String>,
            removed: BTreeSet<u64>,
            sessions: BTreeMap<u64, Session>,
            applied_index: u64,
        }
        let members: BTreeMap<u64, String> = [(1, "http://a".to_string())].into();
        let mut bytes = vec![SNAPSHOT_VERSION_1];
        bytes.extend(
            postcard::to_allocvec(&V1 {
                data: BTreeMap::new(),
                members: &members,
                removed: [4].into(),
                sessions: BTreeMap::new(),
                applied_index: 9,
            })
            .unwrap(),
        );
        let kv = KvState::decode_snapshot(&bytes).unwrap();
        assert_eq!(kv.members(), &members);
        assert!(kv.was_removed(4));
        assert_eq!(kv.applied_index(), 9);
        assert_eq!(kv.incarnation(1), None);
    }

    #[test]
    fn first_incarnation_record_wins_and_removal_forgets_it() {
        let mut kv = KvState::with_members([(1, "a".into()), (2, "b".into())].into());
        let rec = |id, incarnation| Command::RecordIncarnation { id, incarnation };
        kv.apply_command(1, None, &rec(2, 5));
        kv.apply_command(2, None, &rec(2, 6));
        kv.apply_command(3, None, &rec(3, 7));
        assert_eq!(kv.incarnation(2), Some(5));
        assert_eq!(kv.incarnation(3), None, "not a member");
        assert_eq!(
            kv.apply_command(
                4,
                None,
                &Command::SetPeerUrl {
                    id: 1,
                    addr: "b".into()
                }
            ),
            Applied::Admin(Err(RejectReason::UrlInUse {
                id: 2,
                addr: "b".into()
            }))
        );
        kv.apply_member_change(5, &MemberChange::Remove { id: 2 });
        assert_eq!(kv.incarnation(2), None);
    }

    #[test]
    fn a_write_beside_a_snapshot_clone_shares_every_value_it_does_not_replace() {
        // What a snapshot job holds (`Node::create_snapshot` clones the state) must not be
        // copied value by value when a write copies the B-tree leaf it touches.
        let mut kv = KvState::default();
        for i in 0..1000u32 {
            kv.apply_command(
                u64::from(i) + 1,
                None,
                &put(&format!("k{i:04}"), "v".repeat(64).as_str()),
            );
        }
        let held = kv.clone();
        for (n, i) in (0..1000u32).step_by(7).enumerate() {
            kv.apply_command(1001 + n as u64, None, &put(&format!("k{i:04}"), "w"));
        }
        for i in 0..1000u32 {
            let key = format!("k{i:04}");
            let (now, then) = (
                kv.get(key.as_bytes()).unwrap(),
                held.get(key.as_bytes()).unwrap(),
            );
            if i % 7 == 0 {
                assert_eq!((now, then.len()), (&b"w"[..], 64), "{key}");
            } else {
                assert_eq!(now.as_ptr(), then.as_ptr(), "{key}: its value was copied");
            }
        }
    }

    #[test]
    fn data_bytes_follow_puts_overwrites_deletes_and_snapshots() {
        let mut kv = KvState::default();
        let mut rng = crate::rng::Rng::new(5);
        for i in 1..=2000u64 {
            let key = format!("k{}", rng.range(0, 300));
            let cmd = if rng.range(0, 4) == 0 {
                Command::Delete {
                    key: key.into_bytes(),
                }
            } else {
                put(&key, &"v".repeat(rng.range(0, 50) as usize))
            };
            kv.apply_command(i, None, &cmd);
            assert_eq!(kv.data_bytes(), KvState::count_bytes(&kv.data), "after {i}");
        }
        assert!(kv.data_bytes() > 0);
        let decoded = KvState::decode_snapshot(&kv.encode_snapshot()).unwrap();
        assert_eq!(decoded.data_bytes(), kv.data_bytes());
        let mut d = KvState::payload_decoder();
        for piece in kv.encode_snapshot().chunks(7) {
            d.feed(piece).unwrap();
        }
        assert_eq!(d.finish().unwrap().data_bytes(), kv.data_bytes());
    }

    #[test]
    fn a_clone_is_a_frozen_view() {
        let mut kv = KvState::default();
        for i in 0..1000u64 {
            kv.apply_command(i + 1, None, &put(&format!("k{i}"), "v"));
        }
        let view = kv.clone();
        let before = view.encode_snapshot();
        kv.apply_command(1001, None, &put("k1", "changed"));
        kv.apply_command(
            1002,
            None,
            &Command::Delete {
                key: b"k2".to_vec(),
            },
        );
        assert_eq!(
            view.encode_snapshot(),
            before,
            "writes after the clone do not reach it"
        );
        assert_eq!(view.get(b"k1"), Some(&b"v"[..]));
        assert_eq!(kv.get(b"k1"), Some(&b"changed"[..]));
    }

    #[test]
    fn the_least_recently_used_session_is_evicted_and_survives_snapshots() {
        let mut kv = KvState::default();
        let mut index = 0;
        let mut put = |kv: &mut KvState, client: u64| {
            index += 1;
            kv.apply_command(
                index,
                Some(RequestId { client, seq: 1 }),
                &Command::Put {
                    key: b"k".to_vec(),
                    value: Bytes::from_static(b"v"),
                },
            )
        };
        for c in 0..MAX_SESSIONS as u64 {
            put(&mut kv, c);
        }
        // Client 0 writes again (most recent now); client 1 is the oldest.
        let again = |kv: &mut KvState, idx: u64| {
            kv.apply_command(
                idx,
                Some(RequestId { client: 0, seq: 2 }),
                &Command::Delete { key: b"x".to_vec() },
            )
        };
        again(&mut kv, MAX_SESSIONS as u64 + 1);
        let kv2 = KvState::decode_snapshot(&kv.encode_snapshot()).unwrap();
        assert_eq!(kv2, kv, "the eviction index is rebuilt from the sessions");
        let mut kv = kv2;
        kv.apply_command(
            MAX_SESSIONS as u64 + 2,
            Some(RequestId {
                client: 999_999,
                seq: 1,
            }),
            &Command::Delete { key: b"y".to_vec() },
        );
        assert_eq!(kv.sessions.len(), MAX_SESSIONS);
        assert!(
            !kv.sessions.contains_key(&1),
            "the least recently used session goes"
        );
        assert!(kv.sessions.contains_key(&0));
    }
}
