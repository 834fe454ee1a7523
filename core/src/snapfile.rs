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

/// What raft's `Snapshot.data` carries instead of the state: the length of the snapshot file, which
/// travels beside the message (see `transfer`).
pub fn descriptor(file_bytes: u64) -> Vec<u8> {
    file_bytes.to_le_bytes().to_vec()
}

/// The file length in a descriptor, if `data` is one.
pub fn parse_descriptor(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.try_into().ok()?))
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

/// The bytes before the payload: magic, version, metadata, payload length.
fn head(meta: &SnapshotMeta, data_len: u64) -> Vec<u8> {
    let meta = postcard::to_allocvec(meta).expect("postcard encoding of snapshot meta");
    let mut out = Vec::with_capacity(24 + meta.len());
    out.extend_from_slice(&SNAP_MAGIC);
    out.extend_from_slice(&crate::wal::record::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&data_len.to_le_bytes());
    out
}

fn trailer(crc: u32) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&crc.to_le_bytes());
    t[4..].copy_from_slice(&SNAP_END_MAGIC);
    t
}

/// Size of the file holding `meta` and a payload of `data_len` bytes.
pub fn file_len(meta: &SnapshotMeta, data_len: u64) -> u64 {
    head(meta, data_len).len() as u64 + data_len + 8
}

pub fn encode(file: &SnapshotFile) -> Vec<u8> {
    let mut out = head(&file.meta, file.data.len() as u64);
    out.extend_from_slice(&file.data);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&trailer(crc));
    out
}

/// Writes a snapshot file from payload pieces without holding it whole: the ops of
/// [`write_ops`], with one `WriteAt` per piece. An iterator, so a shell executes each op as it is
/// produced and memory stays at one piece.
pub struct StreamWriter<I> {
    tmp: String,
    name: String,
    head: Option<Vec<u8>>,
    pieces: I,
    data_len: u64,
    written_data: u64,
    offset: u64,
    crc: crc32fast::Hasher,
    step: u8,
}

impl<I: Iterator<Item = Vec<u8>>> StreamWriter<I> {
    /// `pieces` must yield exactly `data_len` bytes.
    pub fn new(meta: &SnapshotMeta, data_len: u64, pieces: I) -> Self {
        let name = file_name(meta.term, meta.index);
        StreamWriter {
            tmp: format!("{name}{TEMP_SUFFIX}"),
            name,
            head: Some(head(meta, data_len)),
            pieces,
            data_len,
            written_data: 0,
            offset: 0,
            crc: crc32fast::Hasher::new(),
            step: 0,
        }
    }

    /// The final file name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, bytes: Vec<u8>) -> FileOp {
        let op = FileOp::WriteAt {
            name: self.tmp.clone(),
            offset: self.offset,
            bytes,
        };
        if let FileOp::WriteAt { bytes, .. } = &op {
            self.offset += bytes.len() as u64;
        }
        op
    }
}

impl<I: Iterator<Item = Vec<u8>>> Iterator for StreamWriter<I> {
    type Item = FileOp;

    fn next(&mut self) -> Option<FileOp> {
        loop {
            let op = match self.step {
                0 => FileOp::Create {
                    name: self.tmp.clone(),
                    size_bytes: 0,
                },
                1 => {
                    let head = self.head.take().expect("written once");
                    self.crc.update(&head);
                    self.step += 1;
                    return Some(self.write(head));
                }
                2 => match self.pieces.next() {
                    Some(piece) if piece.is_empty() => continue,
                    Some(piece) => {
                        self.written_data += piece.len() as u64;
                        assert!(
                            self.written_data <= self.data_len,
                            "payload longer than announced"
                        );
                        self.crc.update(&piece);
                        return Some(self.write(piece));
                    }
                    None => {
                        assert_eq!(self.written_data, self.data_len, "payload length");
                        self.step += 1;
                        let crc = std::mem::take(&mut self.crc).finalize();
                        return Some(self.write(trailer(crc).to_vec()));
                    }
                },
                3 | 4
                    if crate::planted::active(
                        crate::planted::PlantedBug::SnapshotRenameBeforeSync,
                    ) =>
                {
                    if self.step == 3 {
                        FileOp::Rename {
                            from: self.tmp.clone(),
                            to: self.name.clone(),
                        }
                    } else {
                        FileOp::SyncFile {
                            name: self.name.clone(),
                        }
                    }
                }
                3 => FileOp::SyncFile {
                    name: self.tmp.clone(),
                },
                4 => FileOp::Rename {
                    from: self.tmp.clone(),
                    to: self.name.clone(),
                },
                5 => FileOp::SyncDir,
                _ => return None,
            };
            self.step += 1;
            return Some(op);
        }
    }
}

/// Where a [`StreamDecoder`] is in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Collecting magic, version and the metadata length (16 bytes).
    Prefix,
    /// Collecting the metadata and the payload length.
    Meta {
        meta_len: usize,
    },
    Payload {
        left: u64,
    },
    Trailer,
    End,
}

/// Checks a snapshot file fed in pieces of any size, handing its payload on as it passes (to a
/// state-machine decoder), so a file received in chunks is verified without being held whole.
pub struct StreamDecoder {
    at: At,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    seen: u64,
    meta: Option<SnapshotMeta>,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        StreamDecoder {
            at: At::Prefix,
            buf: Vec::new(),
            crc: crc32fast::Hasher::new(),
            seen: 0,
            meta: None,
        }
    }
}

impl StreamDecoder {
    /// The metadata, once its bytes have passed.
    pub fn meta(&self) -> Option<&SnapshotMeta> {
        self.meta.as_ref()
    }

    /// Consumes `bytes`; every payload byte goes to `payload` in order.
    pub fn feed<E>(
        &mut self,
        mut bytes: &[u8],
        payload: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), StreamError<E>> {
        self.seen += bytes.len() as u64;
        while !bytes.is_empty() {
            match self.at {
                At::Prefix | At::Meta { .. } | At::Trailer => {
                    let want = match self.at {
                        At::Prefix => 16,
                        At::Meta { meta_len } => meta_len + 8,
                        _ => 8,
                    };
                    let take = (want - self.buf.len()).min(bytes.len());
                    self.buf.extend_from_slice(&bytes[..take]);
                    if self.at != At::Trailer {
                        self.crc.update(&bytes[..take]);
                    }
                    bytes = &bytes[take..];
                    if self.buf.len() == want {
                        let buf = std::mem::take(&mut self.buf);
                        self.section(&buf).map_err(StreamError::File)?;
                    }
                }
                At::Payload { left } => {
                    let take = (left.min(bytes.len() as u64)) as usize;
                    self.crc.update(&bytes[..take]);
                    payload(&bytes[..take]).map_err(StreamError::Payload)?;
                    bytes = &bytes[take..];
                    self.at = match left - take as u64 {
                        0 => At::Trailer,
                        left => At::Payload { left },
                    };
                }
                At::End => return Err(StreamError::File(SnapFileError::Trailing)),
            }
        }
        Ok(())
    }

    fn section(&mut self, buf: &[u8]) -> Result<(), SnapFileError> {
        match self.at {
            At::Prefix => {
                if buf[..8] != SNAP_MAGIC {
                    return Err(SnapFileError::BadMagic);
                }
                let version = u32::from_le_bytes(buf[8..12].try_into().expect("4"));
                if version != crate::wal::record::FORMAT_VERSION {
                    return Err(SnapFileError::Version(version));
                }
                let meta_len = u32::from_le_bytes(buf[12..16].try_into().expect("4")) as usize;
                if meta_len > MAX_META_BYTES {
                    return Err(SnapFileError::BadMeta);
                }
                self.at = At::Meta { meta_len };
            }
            At::Meta { meta_len } => {
                let meta_bytes = &buf[..meta_len];
                // Exactly the canonical encoding: postcard accepts over-long varints, which would
                // give one snapshot several valid files (see `wal::record::Record::decode_payload`).
                let meta = match postcard::take_from_bytes::<SnapshotMeta>(meta_bytes) {
                    Ok((m, [])) if postcard::to_allocvec(&m).is_ok_and(|b| b == meta_bytes) => m,
                    _ => return Err(SnapFileError::BadMeta),
                };
                self.meta = Some(meta);
                let left = u64::from_le_bytes(buf[meta_len..].try_into().expect("8"));
                self.at = if left == 0 {
                    At::Trailer
                } else {
                    At::Payload { left }
                };
            }
            At::Trailer => {
                let crc = u32::from_le_bytes(buf[..4].try_into().expect("4"));
                if buf[4..] != SNAP_END_MAGIC {
                    return Err(SnapFileError::BadMagic);
                }
                if std::mem::take(&mut self.crc).finalize() != crc {
                    return Err(SnapFileError::BadChecksum);
                }
                self.at = At::End;
            }
            At::Payload { .. } | At::End => unreachable!("not a buffered section"),
        }
        Ok(())
    }

    /// The metadata of a file that ended exactly where it should, checksum verified.
    pub fn finish(self) -> Result<SnapshotMeta, SnapFileError> {
        match (self.at, self.meta) {
            (At::End, Some(meta)) => Ok(meta),
            _ => Err(SnapFileError::Truncated(self.seen as usize)),
        }
    }
}

/// Why a streamed file was refused: the file's framing, or the payload's consumer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StreamError<E> {
    #[error(transparent)]
    File(SnapFileError),
    #[error("snapshot payload refused")]
    Payload(E),
}

pub fn decode(bytes: &[u8]) -> Result<SnapshotFile, SnapFileError> {
    let mut d = StreamDecoder::default();
    let mut data = Vec::new();
    d.feed(bytes, &mut |p: &[u8]| {
        data.extend_from_slice(p);
        Ok::<(), std::convert::Infallible>(())
    })
    .map_err(|e| match e {
        StreamError::File(e) => e,
        StreamError::Payload(never) => match never {},
    })?;
    Ok(SnapshotFile {
        meta: d.finish()?,
        data,
    })
}

/// Checks that a file's metadata agrees with its name (`snap-{term}-{index}`).
pub fn check_name(name: &str, meta: &SnapshotMeta) -> Result<(), SnapFileError> {
    if let Some((name_term, name_index)) = parse_name(name) {
        if (name_term, name_index) != (meta.term, meta.index) {
            return Err(SnapFileError::NameMismatch {
                name_term,
                name_index,
                term: meta.term,
                index: meta.index,
            });
        }
    }
    Ok(())
}

/// Decodes and checks that the contents agree with the file name.
pub fn decode_named(name: &str, bytes: &[u8]) -> Result<SnapshotFile, SnapFileError> {
    let f = decode(bytes)?;
    check_name(name, &f.meta)?;
    Ok(f)
}

/// The ops that make `file` durable under its final name: temp, sync, rename, sync dir.
pub fn write_ops(file: &SnapshotFile, ops: &mut Vec<FileOp>) -> String {
    let name = file_name(file.meta.term, file.meta.index);
    debug_assert_eq!(TEMP_SUFFIX, ".tmp");
    crate::fileop::atomic_write_ops(&name, encode(file), ops);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotFile {
        SnapshotFile {
            meta: SnapshotMeta {
                index: 9,
                term: 3,
                conf_state: Default::default(),
            },
            data: (0..300u32).map(|i| (i * 7) as u8).collect(),
        }
    }

    /// The streaming writer and decoder speak exactly the whole-file format, in any pieces.
    #[test]
    fn streamed_files_match_whole_files() {
        let file = sample();
        let whole = encode(&file);
        let pieces = file.data.chunks(41).map(|c| c.to_vec());
        let mut written = Vec::new();
        for op in StreamWriter::new(&file.meta, file.data.len() as u64, pieces) {
            if let FileOp::WriteAt { offset, bytes, .. } = op {
                assert_eq!(offset as usize, written.len());
                written.extend(bytes);
            }
        }
        assert_eq!(written, whole);
        assert_eq!(
            file_len(&file.meta, file.data.len() as u64),
            whole.len() as u64
        );
        for step in [1, 5, 64, whole.len()] {
            let mut d = StreamDecoder::default();
            let mut data = Vec::new();
            for piece in whole.chunks(step) {
                d.feed(piece, &mut |p: &[u8]| {
                    data.extend_from_slice(p);
                    Ok::<(), ()>(())
                })
                .unwrap();
            }
            assert_eq!(d.finish().unwrap(), file.meta);
            assert_eq!(data, file.data);
        }
        let name = file_name(3, 9);
        assert_eq!(decode_named(&name, &whole), Ok(file.clone()));
        let mut bad = whole.clone();
        bad[30] ^= 1;
        assert!(decode_named(&name, &bad).is_err());
        assert!(matches!(
            decode_named(&file_name(3, 10), &whole),
            Err(SnapFileError::NameMismatch { .. })
        ));
    }
}
