//! An in-memory data directory that executes `FileOp`s with a page-cache durability model.
//!
//! Used by the pure test harness in `core` and by the simulator's disk in `io-sim` (which adds
//! timing and fault injection around it). Contents written but not synced live only in the
//! "page cache"; names created, renamed or removed are durable only after `SyncDir`.
//! `crash` models what survives: a process crash keeps the page cache, a power loss keeps each
//! unsynced sector, drops it, or tears it (a prefix of the new bytes over the old ones).

use crate::fileop::{is_plain_name, FileOp};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

pub const SECTOR_BYTES: usize = 512;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MemDirError {
    #[error("no such file: {0}")]
    NotFound(String),
    #[error("invalid file name: {0:?}")]
    BadName(String),
}

#[derive(Clone, Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Sectors whose bytes may differ between `data` and `durable`.
    dirty: BTreeSet<usize>,
}

/// What a crash loses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashKind {
    /// The process died; the OS page cache and directory survive, unsynced as they were.
    Process,
    /// Power loss: only synced state is guaranteed; unsynced sectors are kept, dropped or torn.
    PowerLoss,
}

#[derive(Clone, Debug, Default)]
pub struct MemDir {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
}

impl MemDir {
    pub fn new() -> Self {
        Self::default()
    }

    fn inode_mut(&mut self, name: &str) -> Result<&mut Inode, MemDirError> {
        let id = *self
            .names
            .get(name)
            .ok_or_else(|| MemDirError::NotFound(name.to_string()))?;
        Ok(self.inodes.get_mut(&id).expect("named inode exists"))
    }

    /// Executes one op.
    pub fn apply(&mut self, op: &FileOp) -> Result<(), MemDirError> {
        for n in [
            op.file_name(),
            if let FileOp::Rename { to, .. } = op {
                Some(to.as_str())
            } else {
                None
            },
        ]
        .into_iter()
        .flatten()
        {
            if !is_plain_name(n) {
                return Err(MemDirError::BadName(n.to_string()));
            }
        }
        match op {
            FileOp::Create { name, size_bytes } => {
                let id = self.next_inode;
                self.next_inode += 1;
                let size = *size_bytes as usize;
                let dirty = (0..size.div_ceil(SECTOR_BYTES)).collect();
                self.inodes.insert(
                    id,
                    Inode {
                        data: vec![0; size],
                        durable: Vec::new(),
                        dirty,
                    },
                );
                self.names.insert(name.clone(), id);
            }
            FileOp::WriteAt {
                name,
                offset,
                bytes,
            } => {
                let ino = self.inode_mut(name)?;
                let at = *offset as usize;
                let end = at + bytes.len();
                if ino.data.len() < end {
                    ino.data.resize(end, 0);
                }
                ino.data[at..end].copy_from_slice(bytes);
                if !bytes.is_empty() {
                    ino.dirty
                        .extend(at / SECTOR_BYTES..=(end - 1) / SECTOR_BYTES);
                }
            }
            FileOp::WriteZeros {
                name,
                offset,
                len_bytes,
            } => {
                let ino = self.inode_mut(name)?;
                let at = *offset as usize;
                let end = at + *len_bytes as usize;
                if ino.data.len() < end {
                    ino.data.resize(end, 0);
                }
                ino.data[at..end].fill(0);
                if end > at {
                    ino.dirty
                        .extend(at / SECTOR_BYTES..=(end - 1) / SECTOR_BYTES);
                }
            }
            FileOp::SetLen { name, len } => {
                let ino = self.inode_mut(name)?;
                let len = *len as usize;
                let old = ino.data.len();
                ino.data.resize(len, 0);
                let (a, b) = (old.min(len), old.max(len));
                if b > a {
                    ino.dirty.extend(a / SECTOR_BYTES..=(b - 1) / SECTOR_BYTES);
                }
            }
            FileOp::SyncFile { name } => {
                let ino = self.inode_mut(name)?;
                ino.durable = ino.data.clone();
                ino.dirty.clear();
            }
            FileOp::SyncDir => {
                self.durable_names = self.names.clone();
                self.collect_garbage();
            }
            FileOp::Rename { from, to } => {
                let id = self
                    .names
                    .remove(from)
                    .ok_or_else(|| MemDirError::NotFound(from.clone()))?;
                self.names.insert(to.clone(), id);
            }
            FileOp::Remove { name } => {
                self.names.remove(name);
            }
        }
        Ok(())
    }

    fn collect_garbage(&mut self) {
        let live: BTreeSet<u64> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .collect();
        self.inodes.retain(|id, _| live.contains(id));
    }

    /// File names, sorted.
    pub fn list(&self) -> Vec<String> {
        self.names.keys().cloned().collect()
    }

    pub fn read(&self, name: &str) -> Option<&[u8]> {
        let id = self.names.get(name)?;
        Some(&self.inodes[id].data)
    }

    /// A [`crate::fileop::ReadAt`] read of what a process would see.
    pub fn read_at(
        &self,
        name: &str,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<u8>, crate::fileop::ReadFailure> {
        let file = self
            .read(name)
            .ok_or(crate::fileop::ReadFailure::NOT_FOUND)?;
        Ok(crate::fileop::slice_at(file, offset, max_bytes))
    }

    /// Replaces a file's bytes as if by an outside hand (tests damage files with this).
    pub fn overwrite(&mut self, name: &str, bytes: Vec<u8>) -> Result<(), MemDirError> {
        let ino = self.inode_mut(name)?;
        ino.durable = bytes.clone();
        ino.data = bytes;
        ino.dirty.clear();
        Ok(())
    }

    /// True if every byte and name is durable.
    pub fn is_clean(&self) -> bool {
        self.names == self.durable_names
            && self
                .inodes
                .values()
                .all(|i| i.dirty.is_empty() && i.data == i.durable)
    }

    /// Simulates a crash. `rand(n)` must return a uniform value in `0..n`.
    /// Returns the number of unsynced sectors that did not survive intact.
    pub fn crash(&mut self, kind: CrashKind, rand: &mut dyn FnMut(u64) -> u64) -> usize {
        let mut lost = 0;
        if kind == CrashKind::PowerLoss {
            self.names = self.durable_names.clone();
            self.collect_garbage();
            for ino in self.inodes.values_mut() {
                let new = std::mem::take(&mut ino.data);
                let mut out = ino.durable.clone();
                // Size metadata is unsynced too: keep the old or the new length.
                let len = if new.len() != out.len() && rand(2) == 0 {
                    out.len()
                } else {
                    new.len()
                };
                out.resize(len, 0);
                for &s in &ino.dirty {
                    let a = s * SECTOR_BYTES;
                    if a >= len {
                        continue;
                    }
                    let b = (a + SECTOR_BYTES).min(len);
                    let fresh = |i: usize| new.get(i).copied().unwrap_or(0);
                    match rand(3) {
                        0 => (a..b).for_each(|i| out[i] = fresh(i)),
                        1 => lost += 1,
                        _ => {
                            // Torn at an 8-byte boundary: a prefix of the new bytes.
                            let cut = a + 8 * rand(((b - a) / 8) as u64 + 1) as usize;
                            (a..cut.min(b)).for_each(|i| out[i] = fresh(i));
                            lost += 1;
                        }
                    }
                }
                ino.durable = out.clone();
                ino.data = out;
                ino.dirty.clear();
            }
        }
        // A process crash changes nothing here: the page cache keeps what was written, readable
        // but no more durable than before, until a sync (or a later power loss decides).
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str, offset: u64, bytes: &[u8]) -> FileOp {
        FileOp::WriteAt {
            name: name.into(),
            offset,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn unsynced_data_and_names_are_lost_on_power_loss() {
        let mut d = MemDir::new();
        d.apply(&FileOp::Create {
            name: "a".into(),
            size_bytes: 0,
        })
        .unwrap();
        d.apply(&w("a", 0, b"hello")).unwrap();
        // Contents synced but the name never was: the file is gone after power loss.
        d.apply(&FileOp::SyncFile { name: "a".into() }).unwrap();
        let mut zero = |_| 0;
        d.crash(CrashKind::PowerLoss, &mut zero);
        assert!(d.read("a").is_none());

        d.apply(&FileOp::Create {
            name: "b".into(),
            size_bytes: 0,
        })
        .unwrap();
        d.apply(&w("b", 0, b"durable")).unwrap();
        d.apply(&FileOp::SyncFile { name: "b".into() }).unwrap();
        d.apply(&FileOp::SyncDir).unwrap();
        d.apply(&w("b", 0, b"VOLATIL")).unwrap();
        let mut drop_all = |_| 1;
        d.crash(CrashKind::PowerLoss, &mut drop_all);
        assert_eq!(d.read("b").unwrap(), b"durable");
        assert!(d.is_clean());
    }

    #[test]
    fn process_crash_keeps_the_page_cache() {
        let mut d = MemDir::new();
        d.apply(&FileOp::Create {
            name: "a".into(),
            size_bytes: 4,
        })
        .unwrap();
        d.apply(&w("a", 0, b"abcd")).unwrap();
        d.crash(CrashKind::Process, &mut |_| 1);
        assert_eq!(d.read("a").unwrap(), b"abcd");
        // Still only in the page cache: a power loss may drop it.
        assert!(!d.is_clean());
        d.crash(CrashKind::PowerLoss, &mut |_| 1);
        assert_eq!(d.read("a"), None, "the unsynced name is lost");
    }

    #[test]
    fn rename_is_durable_only_after_sync_dir() {
        let mut d = MemDir::new();
        d.apply(&FileOp::Create {
            name: "t".into(),
            size_bytes: 0,
        })
        .unwrap();
        d.apply(&w("t", 0, b"x")).unwrap();
        d.apply(&FileOp::SyncFile { name: "t".into() }).unwrap();
        d.apply(&FileOp::SyncDir).unwrap();
        d.apply(&FileOp::Rename {
            from: "t".into(),
            to: "f".into(),
        })
        .unwrap();
        d.crash(CrashKind::PowerLoss, &mut |_| 0);
        assert_eq!(d.list(), vec!["t".to_string()]);
        assert!(d
            .apply(&FileOp::Remove {
                name: "../x".into()
            })
            .is_err());
    }
}
