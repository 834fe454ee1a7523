//! The disk executors: run the node's `FileOp`s against the data directory on dedicated threads.
//!
//! Two lanes, each its own thread: WAL jobs run strictly in order, one at a time (group commit
//! happens in `core`, which batches everything that arrives while a job runs into the next one);
//! snapshot jobs serialise the state machine and write its file beside them, so a large snapshot
//! never holds up a WAL sync. An I/O error is fatal: after a
//! failed fsync the page cache may already be marked clean, so retrying could report durable
//! data that is not. The node stops instead.

use raftkv_core::fileop::{is_plain_name, FileOp};
use raftkv_core::node::{DiskFailure, DiskJob, ReadJob, SnapshotJob};
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
    SnapshotSaved {
        id: u64,
        size_bytes: u64,
        elapsed_us: u64,
    },
    /// A read of a snapshot file being streamed to a follower.
    Read {
        id: u64,
        result: Result<Vec<u8>, DiskFailure>,
    },
    Failed {
        id: u64,
        failure: DiskFailure,
        /// The OS's own words (errno text), for the log.
        detail: String,
    },
}

fn op_name(op: &FileOp) -> &'static str {
    match op {
        FileOp::Create { .. } => "create",
        FileOp::WriteAt { .. } => "write",
        FileOp::SetLen { .. } => "truncate",
        FileOp::SyncFile { .. } => "fsync",
        FileOp::SyncDir => "fsync of the directory",
        FileOp::Rename { .. } => "rename",
        FileOp::Remove { .. } => "remove",
    }
}

pub struct Disk {
    dir: PathBuf,
    files: HashMap<String, File>,
    /// Write large buffers in chunks, each written back before the next (the snapshot lane).
    paced: bool,
}

/// A paced write hands the device at most this much at once, so a WAL sync queued behind it
/// waits for one chunk, not for a whole snapshot file.
const PACED_CHUNK_BYTES: usize = 1 << 20;

/// Writes `bytes` at `offset` chunk by chunk, starting and waiting for each chunk's writeback
/// before the next (sync_file_range: no metadata, no device cache flush; the caller's later
/// fdatasync still makes it durable). Without it, a 12 MB snapshot file reaches the device in
/// one burst at its fsync and every WAL sync in the meantime queues behind the burst.
fn paced_write(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    for (i, chunk) in bytes.chunks(PACED_CHUNK_BYTES).enumerate() {
        let at = offset + (i * PACED_CHUNK_BYTES) as u64;
        file.write_all_at(chunk, at)?;
        #[cfg(target_os = "linux")]
        {
            let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            let rc = unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    at as libc::off64_t,
                    chunk.len() as libc::off64_t,
                    flags,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
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
            paced: false,
        }
    }

    /// For the snapshot lane: large writes are paced (see `paced_write`).
    pub fn paced(mut self) -> Self {
        self.paced = true;
        self
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
            } => {
                let paced = self.paced && bytes.len() > PACED_CHUNK_BYTES;
                let file = self.file(name)?;
                if paced {
                    paced_write(file, bytes, *offset)?
                } else {
                    file.write_all_at(bytes, *offset)?
                }
            }
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

    /// Applies `ops` in order; the number of syncs, or the first error (with the path).
    fn apply_all(&mut self, ops: &[FileOp]) -> Result<u32, (DiskFailure, String)> {
        let mut sync_count = 0;
        for op in ops {
            if op.is_sync() {
                sync_count += 1;
            }
            self.apply(op).map_err(|e| {
                let file = op
                    .file_name()
                    .map(|n| self.dir.join(n).display().to_string());
                let failure = DiskFailure {
                    op: op_name(op),
                    file: file.or_else(|| Some(self.dir.display().to_string())),
                    kind: e.kind(),
                };
                (failure, e.to_string())
            })?;
        }
        Ok(sync_count)
    }

    /// Runs jobs from `jobs` until the sender is dropped; reports each on `done`.
    pub fn run(mut self, jobs: mpsc::Receiver<DiskJob>, done: impl Fn(DiskResult)) {
        for job in jobs {
            let start = Instant::now();
            match self.apply_all(&job.ops) {
                Err((failure, detail)) => {
                    done(DiskResult::Failed {
                        id: job.id,
                        failure,
                        detail,
                    });
                    return; // never carry on after a failed write or sync
                }
                Ok(sync_count) => done(DiskResult::Done {
                    id: job.id,
                    sync_count,
                    elapsed_us: start.elapsed().as_micros() as u64,
                }),
            }
        }
    }

    /// The snapshot lane: serialises each job's state (off the event loop) and writes its file.
    pub fn run_snapshots(mut self, jobs: mpsc::Receiver<SnapshotJob>, done: impl Fn(DiskResult)) {
        lower_thread_priority();
        for job in jobs {
            let start = Instant::now();
            // Encoded piece by piece as the ops are taken: never the whole file in memory.
            let (size_bytes, ops) = job.write();
            let mut result = Ok(0);
            for op in ops {
                if let Err(e) = self.apply_all(std::slice::from_ref(&op)) {
                    result = Err(e);
                    break;
                }
            }
            // Purges (on the WAL lane) remove old snapshot files: hold no descriptor past a job,
            // or removed files would keep their space.
            self.files.clear();
            match result {
                Err((failure, detail)) => {
                    done(DiskResult::Failed {
                        id: job.id,
                        failure,
                        detail,
                    });
                    return;
                }
                Ok(_) => done(DiskResult::SnapshotSaved {
                    id: job.id,
                    size_bytes,
                    elapsed_us: start.elapsed().as_micros() as u64,
                }),
            }
        }
    }

    /// The read lane: chunks of snapshot files streaming to followers. Its own thread, so a
    /// transfer neither waits behind a snapshot being written nor holds up a WAL sync.
    pub fn run_reads(self, jobs: mpsc::Receiver<ReadJob>, done: impl Fn(DiskResult)) {
        for job in jobs {
            let result = self.read(&job).map_err(|e| {
                tracing::warn!(file = %job.name, offset = job.offset, error = %e, "reading a snapshot file failed");
                DiskFailure {
                    op: "read",
                    file: Some(self.dir.join(&job.name).display().to_string()),
                    kind: e.kind(),
                }
            });
            done(DiskResult::Read { id: job.id, result });
        }
    }

    fn read(&self, job: &ReadJob) -> io::Result<Vec<u8>> {
        let file = File::open(self.path(&job.name)?)?;
        let mut buf = vec![0u8; job.len];
        file.read_exact_at(&mut buf, job.offset)?;
        Ok(buf)
    }
}

/// Snapshots are background work: when cores are scarce, the event loop and the WAL lane must win
/// the CPU over serialisation, or every write waits behind it. Linux applies nice values per
/// thread; elsewhere, or if refused, the lane just runs at normal priority.
fn lower_thread_priority() {
    const SNAPSHOT_NICE: libc::c_int = 10;
    #[cfg(target_os = "linux")]
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, SNAPSHOT_NICE) != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "could not lower the snapshot lane's priority");
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
