//! The file-system model crash states are enumerated over: the weakest one the crash-consistency
//! research uses (ALICE, OSDI'14; CrashMonkey, OSDI'18). Since a file's last sync, each write and
//! each length change persists or not on its own, or tears (a prefix of it persists); since the
//! directory's last sync, each directory operation (create, rename, remove) persists or not on its
//! own, independently of file data (no ext4 `data=ordered` assumption).
//!
//! `CrashDir` executes `FileOp`s like `core::memdir::MemDir`, but remembers every unsynced unit
//! (a write, a length change, a directory operation), so `states` can list what a crash at this
//! moment may leave: every combination when there are few units, a systematic bounded subset
//! (every single deviation from "all persisted" and from "none persisted", and every pair of
//! neighbouring units) when there are many.

use raftkv_core::fileop::{is_plain_name, FileOp};
use std::collections::BTreeMap;

/// Combinations enumerated in full up to this many; beyond it, the bounded subset.
pub const FULL_LIMIT: u64 = 4096;
/// Neighbouring units whose pairs of deviations the bounded subset covers.
const PAIR_WINDOW: usize = 4;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Inode {
    /// What a reader sees (the page cache).
    data: Vec<u8>,
    /// What survives a crash for certain (as of the last sync of this file).
    durable: Vec<u8>,
    /// Unsynced changes since then, in order.
    pending: Vec<DataOp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum DataOp {
    Write { offset: usize, bytes: Vec<u8> },
    SetLen(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum DirOp {
    Link { name: String, ino: u64 },
    Rename { from: String, to: String, ino: u64 },
    Unlink { name: String, ino: u64 },
}

/// One unsynced unit's fate in a crash state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Persisted,
    Lost,
    /// A write of which only a prefix (cut at an 8-byte boundary, half way) persisted.
    Torn,
}

#[derive(Clone, Debug, Default)]
pub struct CrashDir {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    pending_dir: Vec<DirOp>,
}

/// An unsynced unit, in the order it was issued.
#[derive(Clone, Copy, Debug)]
enum Unit {
    Data { ino: u64, i: usize, tearable: bool },
    Dir(usize),
}

impl CrashDir {
    /// A directory holding exactly `files`, all durable (a crash state, to recover from).
    pub fn from_files(files: BTreeMap<String, Vec<u8>>) -> Self {
        let mut d = CrashDir::default();
        for (name, bytes) in files {
            let ino = d.next_inode;
            d.next_inode += 1;
            d.inodes.insert(
                ino,
                Inode {
                    data: bytes.clone(),
                    durable: bytes,
                    pending: Vec::new(),
                },
            );
            d.names.insert(name.clone(), ino);
            d.durable_names.insert(name, ino);
        }
        d
    }

    pub fn list(&self) -> Vec<String> {
        self.names.keys().cloned().collect()
    }

    pub fn read(&self, name: &str) -> Option<&[u8]> {
        self.names.get(name).map(|i| self.inodes[i].data.as_slice())
    }

    /// A [`raftkv_core::fileop::ReadAt`] read of what a process would see.
    pub fn read_at(
        &self,
        name: &str,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<u8>, raftkv_core::fileop::ReadFailure> {
        let file = self
            .read(name)
            .ok_or(raftkv_core::fileop::ReadFailure::NOT_FOUND)?;
        Ok(raftkv_core::fileop::slice_at(file, offset, max_bytes))
    }

    fn ino(&self, name: &str) -> Result<u64, String> {
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| format!("no such file: {name}"))
    }

    pub fn apply(&mut self, op: &FileOp) -> Result<(), String> {
        if let Some(n) = op.file_name().filter(|n| !is_plain_name(n)) {
            return Err(format!("bad name {n:?}"));
        }
        match op {
            FileOp::Create { name, size_bytes } => {
                let ino = self.next_inode;
                self.next_inode += 1;
                let size = *size_bytes as usize;
                let pending = if size > 0 {
                    vec![DataOp::SetLen(size)]
                } else {
                    Vec::new()
                };
                self.inodes.insert(
                    ino,
                    Inode {
                        data: vec![0; size],
                        durable: Vec::new(),
                        pending,
                    },
                );
                self.names.insert(name.clone(), ino);
                self.pending_dir.push(DirOp::Link {
                    name: name.clone(),
                    ino,
                });
            }
            FileOp::WriteAt {
                name,
                offset,
                bytes,
            } => {
                let ino = self.ino(name)?;
                let i = self.inodes.get_mut(&ino).expect("named");
                let at = *offset as usize;
                write_into(&mut i.data, at, bytes);
                i.pending.push(DataOp::Write {
                    offset: at,
                    bytes: bytes.clone(),
                });
            }
            FileOp::WriteZeros {
                name,
                offset,
                len_bytes,
            } => {
                let ino = self.ino(name)?;
                let i = self.inodes.get_mut(&ino).expect("named");
                let (at, zeros) = (*offset as usize, vec![0; *len_bytes as usize]);
                write_into(&mut i.data, at, &zeros);
                i.pending.push(DataOp::Write {
                    offset: at,
                    bytes: zeros,
                });
            }
            FileOp::SetLen { name, len } => {
                let ino = self.ino(name)?;
                let i = self.inodes.get_mut(&ino).expect("named");
                i.data.resize(*len as usize, 0);
                i.pending.push(DataOp::SetLen(*len as usize));
            }
            FileOp::SyncFile { name } => {
                let ino = self.ino(name)?;
                let i = self.inodes.get_mut(&ino).expect("named");
                i.durable = i.data.clone();
                i.pending.clear();
            }
            FileOp::SyncDir => {
                self.durable_names = self.names.clone();
                self.pending_dir.clear();
                self.collect_garbage();
            }
            FileOp::Rename { from, to } => {
                if !is_plain_name(to) {
                    return Err(format!("bad name {to:?}"));
                }
                let ino = self
                    .names
                    .remove(from)
                    .ok_or(format!("no such file: {from}"))?;
                self.names.insert(to.clone(), ino);
                self.pending_dir.push(DirOp::Rename {
                    from: from.clone(),
                    to: to.clone(),
                    ino,
                });
            }
            FileOp::Remove { name } => {
                if let Some(ino) = self.names.remove(name) {
                    self.pending_dir.push(DirOp::Unlink {
                        name: name.clone(),
                        ino,
                    });
                }
            }
        }
        Ok(())
    }

    fn collect_garbage(&mut self) {
        let live: std::collections::BTreeSet<u64> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .chain(self.pending_dir.iter().map(|d| match d {
                DirOp::Link { ino, .. } | DirOp::Rename { ino, .. } | DirOp::Unlink { ino, .. } => {
                    ino
                }
            }))
            .copied()
            .collect();
        self.inodes.retain(|i, _| live.contains(i));
    }

    /// Files whose contents or names are not all durable, among `names` (what a completed job
    /// touched): the job claimed durability it does not have.
    pub fn not_durable(&self, names: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for n in names {
            let data_pending = self
                .names
                .get(n)
                .is_some_and(|i| !self.inodes[i].pending.is_empty());
            let dir_pending = self.pending_dir.iter().any(|d| match d {
                DirOp::Link { name, .. } | DirOp::Unlink { name, .. } => name == n,
                DirOp::Rename { from, to, .. } => from == n || to == n,
            });
            if data_pending || dir_pending {
                out.push(n.clone());
            }
        }
        out
    }

    fn units(&self) -> Vec<Unit> {
        // Data units of every inode a crash state could name (live, durable or pending names).
        let mut units = Vec::new();
        for (&ino, i) in &self.inodes {
            for (k, op) in i.pending.iter().enumerate() {
                let tearable = matches!(op, DataOp::Write { bytes, .. } if bytes.len() > 8);
                units.push(Unit::Data {
                    ino,
                    i: k,
                    tearable,
                });
            }
        }
        units.extend((0..self.pending_dir.len()).map(Unit::Dir));
        units
    }

    /// Number of unsynced units a crash now decides about.
    pub fn unsynced_units(&self) -> usize {
        self.units().len()
    }

    /// Every crash state this moment may leave, as durable directories, with the count of
    /// combinations a full enumeration would need (`states.len()` is smaller when bounded).
    pub fn states(&self) -> (Vec<CrashDir>, u64, bool) {
        let units = self.units();
        let fates = |u: &Unit| -> &'static [Fate] {
            match u {
                Unit::Data { tearable: true, .. } => &[Fate::Persisted, Fate::Lost, Fate::Torn],
                _ => &[Fate::Persisted, Fate::Lost],
            }
        };
        let full: u64 = units
            .iter()
            .map(|u| fates(u).len() as u64)
            .try_fold(1u64, |a, b| a.checked_mul(b))
            .unwrap_or(u64::MAX);
        let mut choices: Vec<Vec<Fate>> = Vec::new();
        if full <= FULL_LIMIT {
            let mut c = vec![0usize; units.len()];
            loop {
                choices.push(c.iter().zip(&units).map(|(&k, u)| fates(u)[k]).collect());
                // Odometer over each unit's fates.
                let mut j = 0;
                loop {
                    if j == units.len() {
                        break;
                    }
                    c[j] += 1;
                    if c[j] < fates(&units[j]).len() {
                        break;
                    }
                    c[j] = 0;
                    j += 1;
                }
                if j == units.len() {
                    break;
                }
            }
        } else {
            for base in [Fate::Persisted, Fate::Lost] {
                let all = vec![base; units.len()];
                choices.push(all.clone());
                for (j, u) in units.iter().enumerate() {
                    for &f in fates(u).iter().filter(|&&f| f != base) {
                        let mut c = all.clone();
                        c[j] = f;
                        choices.push(c);
                    }
                }
            }
            let all = vec![Fate::Persisted; units.len()];
            for a in 0..units.len() {
                for b in a + 1..(a + PAIR_WINDOW).min(units.len()) {
                    let mut c = all.clone();
                    c[a] = Fate::Lost;
                    c[b] = Fate::Lost;
                    choices.push(c);
                }
            }
        }
        let bounded = full > FULL_LIMIT;
        let states = choices.iter().map(|c| self.realise(&units, c)).collect();
        (states, full, bounded)
    }

    /// The directory a power loss that keeps nothing unsynced leaves.
    pub fn after_power_loss(&self) -> CrashDir {
        let units = self.units();
        self.realise(&units, &vec![Fate::Lost; units.len()])
    }

    /// The durable directory a crash with these fates leaves.
    fn realise(&self, units: &[Unit], fates: &[Fate]) -> CrashDir {
        let mut data_fate: BTreeMap<(u64, usize), Fate> = BTreeMap::new();
        let mut names = self.durable_names.clone();
        for (u, &f) in units.iter().zip(fates) {
            match *u {
                Unit::Data { ino, i, .. } => {
                    data_fate.insert((ino, i), f);
                }
                Unit::Dir(k) if f == Fate::Persisted => match &self.pending_dir[k] {
                    DirOp::Link { name, ino } => {
                        names.insert(name.clone(), *ino);
                    }
                    DirOp::Rename { from, to, ino } => {
                        if names.get(from) == Some(ino) {
                            names.remove(from);
                        }
                        names.insert(to.clone(), *ino);
                    }
                    DirOp::Unlink { name, ino } => {
                        if names.get(name) == Some(ino) {
                            names.remove(name);
                        }
                    }
                },
                Unit::Dir(_) => {}
            }
        }
        let mut files = BTreeMap::new();
        for (name, ino) in names {
            let i = &self.inodes[&ino];
            let mut bytes = i.durable.clone();
            for (k, op) in i.pending.iter().enumerate() {
                match (op, data_fate.get(&(ino, k)).copied().unwrap_or(Fate::Lost)) {
                    (_, Fate::Lost) => {}
                    (DataOp::Write { offset, bytes: b }, Fate::Persisted) => {
                        write_into(&mut bytes, *offset, b)
                    }
                    (DataOp::Write { offset, bytes: b }, Fate::Torn) => {
                        let cut = (b.len() / 2) & !7;
                        write_into(&mut bytes, *offset, &b[..cut.max(8).min(b.len())]);
                    }
                    (DataOp::SetLen(len), _) => bytes.resize(*len, 0),
                }
            }
            files.insert(name, bytes);
        }
        CrashDir::from_files(files)
    }
}

fn write_into(buf: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let end = at + bytes.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[at..end].copy_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(d: &mut CrashDir, ops: &[FileOp]) {
        for op in ops {
            d.apply(op).unwrap();
        }
    }

    /// The atomic-write protocol leaves the old file or the new one, never a mix, in every
    /// enumerated state; the same ops without the data sync leave a torn file in some.
    #[test]
    fn every_state_of_an_atomic_write_is_old_or_new() {
        let new = vec![7u8; 100];
        let write = |sync: bool| {
            let mut v = vec![
                FileOp::Create {
                    name: "f.tmp".into(),
                    size_bytes: 0,
                },
                FileOp::WriteAt {
                    name: "f.tmp".into(),
                    offset: 0,
                    bytes: new.clone(),
                },
            ];
            if sync {
                v.push(FileOp::SyncFile {
                    name: "f.tmp".into(),
                });
            }
            v.push(FileOp::Rename {
                from: "f.tmp".into(),
                to: "f".into(),
            });
            v
        };
        for sync in [true, false] {
            let mut d = CrashDir::from_files([("f".to_string(), vec![1u8; 50])].into());
            ops(&mut d, &write(sync));
            let (states, full, bounded) = d.states();
            assert!(!bounded && full as usize == states.len());
            let mixed = states.iter().any(|s| {
                let f = s.read("f").unwrap();
                f != [1u8; 50].as_slice() && f != new.as_slice()
            });
            assert_eq!(mixed, !sync, "sync {sync}");
        }
    }
}
