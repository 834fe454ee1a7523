//! Who a data directory belongs to: the identity file, written once when a directory is first
//! initialised and read before anything else on every start.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "RKVIDNT\x01"
//! 8       4     crc32 of the body
//! 12      4     body_len u32 LE
//! 16      n     body: postcard Identity
//! ```
//!
//! The file is written like a snapshot file (temp -> sync -> rename -> sync dir) before the first
//! WAL segment, so a directory holding a WAL always holds its identity; a directory with a WAL and
//! no identity file is one of data-directory format 1 (before identities) and is upgraded.
//!
//! The cluster id is derived, etcd's way, from the cluster token and the initial members' ids and
//! peer URLs: every initial member computes the same id without talking to the others, and two
//! clusters started from different member lists (a single-node run, then a three-node one) differ
//! even under one token. A node that joins a running cluster cannot derive it: it starts with
//! [`UNKNOWN_CLUSTER`] and adopts the id of the first member that reaches it.
//!
//! The incarnation is drawn at random when the directory is initialised. The replicated
//! membership records each member's incarnation, so a node whose directory was wiped and
//! re-initialised under its old id is a different incarnation and is refused by its peers.

use crate::fileop::FileOp;
use crate::rng::Fnv64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

pub const IDENTITY_FILE: &str = "raftkv.identity";
pub const IDENTITY_MAGIC: [u8; 8] = *b"RKVIDNT\x01";
/// Version of the data directory as a whole. 1: WAL and snapshots only (no identity file).
/// 2: identity file, incarnations in the membership.
pub const DATA_DIR_FORMAT: u32 = 2;
/// The cluster id of a joining node that has not heard from its cluster yet.
pub const UNKNOWN_CLUSTER: u64 = 0;
/// Bound on the body, checked before allocating.
const MAX_BODY_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub format_version: u32,
    /// [`UNKNOWN_CLUSTER`] until a joining node adopts its cluster's id.
    pub cluster_id: u64,
    pub node_id: u64,
    /// Random, never 0: which initialisation of this node's directory this is.
    pub incarnation: u64,
    /// Hash of the cluster token the directory was created with.
    pub token_hash: u64,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IdentityError {
    #[error("identity file truncated ({0} bytes)")]
    Truncated(usize),
    #[error("identity file has a bad magic number (not a raftkv data directory?)")]
    BadMagic,
    #[error("identity file checksum mismatch")]
    BadChecksum,
    #[error("identity file body does not decode")]
    BadBody,
    #[error("data directory format {found} is newer than this binary understands ({DATA_DIR_FORMAT}); run a newer raftkv")]
    TooNew { found: u32 },
    #[error("identity file names incarnation 0")]
    ZeroIncarnation,
}

/// The cluster id of a new cluster: the token and the initial members, in id order.
pub fn derive_cluster_id(token: &str, members: &BTreeMap<u64, String>) -> u64 {
    let mut h = Fnv64::default();
    h.update(b"raftkv-cluster\0");
    h.update(token.as_bytes());
    for (id, url) in members {
        h.update_u64(*id);
        h.update_u64(url.len() as u64);
        h.update(url.as_bytes());
    }
    // 0 means "unknown"; a derived id never is.
    h.finish().max(1)
}

pub fn token_hash(token: &str) -> u64 {
    let mut h = Fnv64::default();
    h.update(b"raftkv-token\0");
    h.update(token.as_bytes());
    h.finish()
}

impl Identity {
    pub fn encode(&self) -> Vec<u8> {
        let body = postcard::to_allocvec(self).expect("postcard encoding of the identity");
        let mut out = Vec::with_capacity(16 + body.len());
        out.extend_from_slice(&IDENTITY_MAGIC);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Identity, IdentityError> {
        if bytes.len() < 16 {
            return Err(IdentityError::Truncated(bytes.len()));
        }
        if bytes[..8] != IDENTITY_MAGIC {
            return Err(IdentityError::BadMagic);
        }
        let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
        if len > MAX_BODY_BYTES || bytes.len() != 16 + len {
            return Err(IdentityError::Truncated(bytes.len()));
        }
        let body = &bytes[16..];
        if crc32fast::hash(body) != crc {
            return Err(IdentityError::BadChecksum);
        }
        // Canonical encodings only (postcard accepts over-long varints): one meaning per byte
        // string under the crc. The fuzzer found the non-canonical case.
        let id: Identity = match postcard::take_from_bytes(body) {
            Ok((id, [])) if postcard::to_allocvec(&id).is_ok_and(|b| b == body) => id,
            _ => return Err(IdentityError::BadBody),
        };
        if id.format_version > DATA_DIR_FORMAT {
            return Err(IdentityError::TooNew {
                found: id.format_version,
            });
        }
        if id.incarnation == 0 {
            return Err(IdentityError::ZeroIncarnation);
        }
        Ok(id)
    }

    /// Ops that make this identity durable under [`IDENTITY_FILE`], replacing any older one:
    /// temp file, sync, rename, sync dir. A crash leaves the old file or the new one, never a mix.
    pub fn write_ops(&self, ops: &mut Vec<FileOp>) {
        crate::fileop::atomic_write_ops(IDENTITY_FILE, self.encode(), ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Identity {
        Identity {
            format_version: DATA_DIR_FORMAT,
            cluster_id: 7,
            node_id: 2,
            incarnation: 0xABCD,
            token_hash: token_hash("raftkv"),
        }
    }

    #[test]
    fn round_trip_and_every_flip_detected() {
        let id = sample();
        let bytes = id.encode();
        assert_eq!(Identity::decode(&bytes), Ok(id));
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(Identity::decode(&b).is_err(), "flip at {i}.{bit} accepted");
            }
        }
        for n in 0..bytes.len() {
            assert!(Identity::decode(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn cluster_ids_tell_member_lists_apart() {
        let one: BTreeMap<u64, String> = [(1, "http://127.0.0.1:12379".to_string())].into();
        let mut three = one.clone();
        three.insert(2, "http://127.0.0.1:22379".into());
        three.insert(3, "http://127.0.0.1:32379".into());
        let a = derive_cluster_id("raftkv", &one);
        let b = derive_cluster_id("raftkv", &three);
        assert_ne!(a, b);
        assert_ne!(a, derive_cluster_id("other", &one));
        assert_eq!(b, derive_cluster_id("raftkv", &three.clone()));
        assert_ne!(a, UNKNOWN_CLUSTER);
    }

    #[test]
    fn over_long_varints_are_refused() {
        // Found by fuzz/fuzz_targets/identity_file.rs: format_version 2 as [0x82, 0x00].
        let id = sample();
        let body = postcard::to_allocvec(&id).unwrap();
        let mut long = vec![0x82, 0x00];
        long.extend_from_slice(&body[1..]);
        let mut bytes = IDENTITY_MAGIC.to_vec();
        bytes.extend_from_slice(&crc32fast::hash(&long).to_le_bytes());
        bytes.extend_from_slice(&(long.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&long);
        assert_eq!(Identity::decode(&bytes), Err(IdentityError::BadBody));
    }

    #[test]
    fn newer_format_is_refused() {
        let mut id = sample();
        id.format_version = DATA_DIR_FORMAT + 1;
        assert_eq!(
            Identity::decode(&id.encode()),
            Err(IdentityError::TooNew {
                found: DATA_DIR_FORMAT + 1
            })
        );
    }
}
