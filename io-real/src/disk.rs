//! The disk executor: runs the node's `FileOp`s against the data directory on a dedicated thread.
//!
//! Jobs run strictly in order, one at a time; group commit happens in `core`, which batches
//! everything that arrives while a job runs into the next one. An I/O error is fatal: after a
//! failed fsync the page cache may already be marked clean, so retrying could report durable
//! data that is not. The node stops instead.

use raftkv_core::fileop::{is_plain_name, FileOp};
use raftkv_core::node::DiskJob;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

pub enum DiskResult {
    Done {
        id: u64,
        sync_count: u32,
        elapsed_us: u64,
    },
    Failed {
        id: u64,
        error: String,
    },
}

pub struct Disk {
    dir: PathBuf,
    files: HashMap<String, File>,
}

fn preallocate(file: &File, size_bytes: u64) -> io::Result<()> {
    if size_bytes == 0 {
        return Ok(());
    }
    // Real allocation, so later writes cannot hit ENOSPC mid-segment; fall back to a sparse
    // length on filesystems without fallocate.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size_bytes as libc::off_t) };
    if rc == 0 {
        Ok(())
    } else if rc == libc::EOPNOTSUPP || rc == libc::EINVAL {
        file.set_len(size_bytes)
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

impl Disk {
    pub fn new(dir: PathBuf) -> Self {
        Disk {
            dir,
            files: HashMap::new(),
        }
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        if !is_plain_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad file name {name:?}"),
            ));
        }
        Ok(self.dir.join(name))
    }

    fn file(&mut self, name: &str) -> io::Result<&File> {
        if !self.files.contains_key(name) {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.path(name)?)?;
            self.files.insert(name.to_string(), f);
        }
        Ok(&self.files[name])
    }

    pub fn apply(&mut self, op: &FileOp) -> io::Result<()> {
        match op {
            FileOp::Create { name, size_bytes } => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(self.path(name)?)?;
                preallocate(&f, *size_bytes)?;
                self.files.insert(name.clone(), f);
            }
            FileOp::WriteAt {
                name,
                offset,
                bytes,
            } => self.file(name)?.write_all_at(bytes, *offset)?,
            FileOp::SetLen { name, len } => self.file(name)?.set_len(*len)?,
            FileOp::SyncFile { name } => self.file(name)?.sync_data()?,
            FileOp::SyncDir => File::open(&self.dir)?.sync_all()?,
            FileOp::Rename { from, to } => {
                std::fs::rename(self.path(from)?, self.path(to)?)?;
                self.files.remove(to);
                if let Some(f) = self.files.remove(from) {
                    self.files.insert(to.clone(), f);
                }
            }
            FileOp::Remove { name } => {
                self.files.remove(name);
                match std::fs::remove_file(self.path(name)?) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Runs jobs from `jobs` until the sender is dropped; reports each on `done`.
    pub fn run(mut self, jobs: mpsc::Receiver<DiskJob>, done: impl Fn(DiskResult)) {
        for job in jobs {
            let start = Instant::now();
            let mut sync_count = 0;
            let mut failed = None;
            for op in &job.ops {
                if op.is_sync() {
                    sync_count += 1;
                }
                if let Err(e) = self.apply(op) {
                    failed = Some(format!("{op:?}: {e}"));
                    break;
                }
            }
            match failed {
                Some(error) => {
                    done(DiskResult::Failed { id: job.id, error });
                    return; // never carry on after a failed write or sync
                }
                None => done(DiskResult::Done {
                    id: job.id,
                    sync_count,
                    elapsed_us: start.elapsed().as_micros() as u64,
                }),
            }
        }
    }
}

/// File names in the data directory (regular files only).
pub fn list(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            if let Some(name) = e.file_name().to_str() {
                out.push(name.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Holds an exclusive lock on the data directory for the life of the process.
pub struct DirLock {
    _file: File,
}

pub fn lock_dir(dir: &Path) -> anyhow::Result<DirLock> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!(
                "data directory {} is in use by another raftkv process",
                dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}
