//! Snapshot files: one file per snapshot, named `{term:016x}-{index:016x}.snap`.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "RKVSNAP\x01"
//! 8       4     format_version u32 LE
//! 12      4     meta_len u32 LE
//! 16      m     meta: postcard SnapshotMeta { index, term, conf_state }
//! 16+m    8     data_len u64 LE
//! 24+m    d     data: the state-machine payload (opaque here)
//! 24+m+d  4     crc32 of every byte before it
//! 28+m+d  4     end magic "RKVE"
//! ```
//!
//! Files are written as temp -> sync -> rename -> sync dir, so a snapshot file either exists
//! whole under its final name or not at all; a file that fails to verify anyway (bit rot, a
//! lying disk) is renamed `*.snap.broken`, never deleted, and an older snapshot is tried.

use crate::fileop::FileOp;
use crate::wal::ConfStateRec;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const SNAP_MAGIC: [u8; 8] = *b"RKVSNAP\x01";
pub const SNAP_END_MAGIC: [u8; 4] = *b"RKVE";
pub const SNAP_SUFFIX: &str = ".snap";
pub const BROKEN_SUFFIX: &str = ".broken";
pub const TEMP_SUFFIX: &str = ".tmp";
/// Bound on the metadata section, checked before allocating.
pub const MAX_META_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfStateRec,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SnapFileError {
    #[error("snapshot file truncated: {0} bytes")]
    Truncated(usize),
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported format version {0}")]
    Version(u32),
    #[error("metadata does not decode")]
    BadMeta,
    #[error("checksum mismatch")]
    BadChecksum,
    #[error("trailing bytes after the snapshot")]
    Trailing,
    #[error("file name says (term {name_term}, index {name_index}), contents say (term {term}, index {index})")]
    NameMismatch {
        name_term: u64,
        name_index: u64,
        term: u64,
        index: u64,
    },
}

pub fn file_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}{SNAP_SUFFIX}")
}

/// Parses `{term}-{index}.snap` into (term, index).
pub fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SNAP_SUFFIX)?;
    let (a, b) = stem.split_once('-')?;
    let hex = |s: &str| {
        if s.len() == 16
            && s.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            u64::from_str_radix(s, 16).ok()
        } else {
            None
        }
    };
    Some((hex(a)?, hex(b)?))
}

pub fn encode(file: &SnapshotFile) -> Vec<u8> {
    let meta = postcard::to_allocvec(&file.meta).expect("postcard encoding of snapshot meta");
    let mut out = Vec::with_capacity(32 + meta.len() + file.data.len());
    out.extend_from_slice(&SNAP_MAGIC);
    out.extend_from_slice(&crate::wal::record::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&(file.data.len() as u64).to_le_bytes());
    out.extend_from_slice(&file.data);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&SNAP_END_MAGIC);
    out
}

pub fn decode(bytes: &[u8]) -> Result<SnapshotFile, SnapFileError> {
    let short = || SnapFileError::Truncated(bytes.len());
    let take = |at: usize, n: usize| bytes.get(at..at.checked_add(n)?);
    if take(0, 8).ok_or_else(short)? != SNAP_MAGIC {
        return Err(SnapFileError::BadMagic);
    }
    let version = u32::from_le_bytes(take(8, 4).ok_or_else(short)?.try_into().expect("4"));
    if version != crate::wal::record::FORMAT_VERSION {
        return Err(SnapFileError::Version(version));
    }
    let meta_len =
        u32::from_le_bytes(take(12, 4).ok_or_else(short)?.try_into().expect("4")) as usize;
    if meta_len > MAX_META_BYTES {
        return Err(SnapFileError::BadMeta);
    }
    let meta_bytes = take(16, meta_len).ok_or_else(short)?;
    let at = 16 + meta_len;
    let data_len = u64::from_le_bytes(take(at, 8).ok_or_else(short)?.try_into().expect("8"));
    let data_len = usize::try_from(data_len).map_err(|_| short())?;
    let data = take(at + 8, data_len).ok_or_else(short)?;
    let end = at + 8 + data_len;
    let crc = u32::from_le_bytes(take(end, 4).ok_or_else(short)?.try_into().expect("4"));
    if take(end + 4, 4).ok_or_else(short)? != SNAP_END_MAGIC {
        return Err(SnapFileError::BadMagic);
    }
    if bytes.len() != end + 8 {
        return Err(SnapFileError::Trailing);
    }
    if crc32fast::hash(&bytes[..end]) != crc {
        return Err(SnapFileError::BadChecksum);
    }
    // Exactly the canonical encoding: postcard accepts over-long varints, which would give one
    // snapshot several valid files (see `wal::record::Record::decode_payload`).
    let meta = match postcard::take_from_bytes::<SnapshotMeta>(meta_bytes) {
        Ok((m, [])) if postcard::to_allocvec(&m).is_ok_and(|b| b == meta_bytes) => m,
        _ => return Err(SnapFileError::BadMeta),
    };
    Ok(SnapshotFile {
        meta,
        data: data.to_vec(),
    })
}

/// Decodes and checks that the contents agree with the file name.
pub fn decode_named(name: &str, bytes: &[u8]) -> Result<SnapshotFile, SnapFileError> {
    let f = decode(bytes)?;
    if let Some((name_term, name_index)) = parse_name(name) {
        if (name_term, name_index) != (f.meta.term, f.meta.index) {
            return Err(SnapFileError::NameMismatch {
                name_term,
                name_index,
                term: f.meta.term,
                index: f.meta.index,
            });
        }
    }
    Ok(f)
}

/// The ops that make `file` durable under its final name: temp, sync, rename, sync dir.
pub fn write_ops(file: &SnapshotFile, ops: &mut Vec<FileOp>) -> String {
    let name = file_name(file.meta.term, file.meta.index);
    debug_assert_eq!(TEMP_SUFFIX, ".tmp");
    crate::fileop::atomic_write_ops(&name, encode(file), ops);
    name
}
