//! The disk executors: run the node's `FileOp`s against the data directory on dedicated threads.
//!
//! Two lanes, each its own thread: WAL jobs run strictly in order, one at a time (group commit
//! happens in `core`, which batches everything that arrives while a job runs into the next one);
//! two background lanes run beside them, at a lower priority, what would hold up a WAL sync:
//! snapshot jobs (serialising the state machine and writing its file), and on a thread of its
//! own, so a snapshot never waits behind one, the WAL's spare segments (a whole segment of zeros,
//! written and synced). An I/O error is fatal: after a
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
use std::time::{Duration, Instant};

/// A job of the background lane, in the order the node issued it.
pub enum BackgroundJob {
    Snapshot(Box<SnapshotJob>),
    /// A file the WAL will need, prepared ahead (its next segment, zero-filled).
    Prepare(DiskJob),
}

pub enum DiskResult {
    Done {
        id: u64,
        /// How long each sync of the job took, in order.
        syncs: Vec<Duration>,
        elapsed: Duration,
    },
    SnapshotSaved {
        id: u64,
        size_bytes: u64,
        elapsed: Duration,
    },
    /// A prepare job (the background lane's) completed.
    Prepared { id: u64, elapsed: Duration },
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
        FileOp::WriteAt { .. } | FileOp::WriteZeros { .. } => "write",
        FileOp::SetLen { .. } => "truncate",
        FileOp::SyncFile { .. } => "fsync",
        FileOp::SyncDir => "fsync of the directory",
        FileOp::Rename { .. } => "rename",
        FileOp::Remove { .. } => "remove",
    }
}

/// The file-system calls the executors make, and nothing else: the real one is std + libc; a
/// test records them beneath the executor to check they are exactly, and in order, the ops core
/// asked for (`tests::the_calls_made_are_the_ops_asked_for`).
pub trait Fs {
    type File;
    /// open(O_RDWR | O_CREAT | O_TRUNC)
    fn create(&mut self, path: &Path) -> io::Result<Self::File>;
    /// open(O_RDWR)
    fn open(&mut self, path: &Path) -> io::Result<Self::File>;
    /// posix_fallocate(0, len), or a sparse length where the file system has none.
    fn allocate(&mut self, f: &Self::File, len: u64) -> io::Result<()>;
    /// pwrite of all of `buf` at `at`.
    fn write_at(&mut self, f: &Self::File, buf: &[u8], at: u64) -> io::Result<()>;
    /// sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER): writeback, not durability.
    fn write_back(&mut self, f: &Self::File, at: u64, len: u64) -> io::Result<()>;
    /// ftruncate
    fn set_len(&mut self, f: &Self::File, len: u64) -> io::Result<()>;
    /// fdatasync
    fn sync_data(&mut self, f: &Self::File) -> io::Result<()>;
    /// fsync of the directory
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    /// unlink; a missing file is `NotFound`.
    fn remove(&mut self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Default)]
pub struct RealFs;

impl Fs for RealFs {
    type File = File;
    fn create(&mut self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }
    fn open(&mut self, path: &Path) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).open(path)
    }
    fn allocate(&mut self, f: &File, len: u64) -> io::Result<()> {
        preallocate(f, len)
    }
    fn write_at(&mut self, f: &File, buf: &[u8], at: u64) -> io::Result<()> {
        f.write_all_at(buf, at)
    }
    fn write_back(&mut self, f: &File, at: u64, len: u64) -> io::Result<()> {
        write_back(f, at, len)
    }
    fn set_len(&mut self, f: &File, len: u64) -> io::Result<()> {
        f.set_len(len)
    }
    fn sync_data(&mut self, f: &File) -> io::Result<()> {
        f.sync_data()
    }
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&mut self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}

pub struct Disk<F: Fs = RealFs> {
    dir: PathBuf,
    fs: F,
    files: HashMap<String, F::File>,
    /// Write large buffers in chunks, each written back before the next (the snapshot lane).
    paced: bool,
}

/// A paced write hands the device at most this much at once, so a WAL sync queued behind it
/// waits for one chunk, not for a whole snapshot file.
const PACED_CHUNK_BYTES: usize = 1 << 20;

/// Starts and waits for the writeback of a range (sync_file_range: no metadata, no device cache
/// flush; a later fdatasync still makes it durable). A no-op off Linux.
fn write_back(file: &File, at: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        let rc = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                at as libc::off64_t,
                len as libc::off64_t,
                flags,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let _ = (file, at, len);
    Ok(())
}

fn preallocate(file: &File, size_bytes: u64) -> io::Result<()> {
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
        Disk::with_fs(dir, RealFs)
    }
}

impl<F: Fs> Disk<F> {
    pub fn with_fs(dir: PathBuf, fs: F) -> Self {
        Disk {
            dir,
            fs,
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

    fn file(&mut self, name: &str) -> io::Result<&F::File> {
        if !self.files.contains_key(name) {
            let path = self.path(name)?;
            let f = self.fs.open(&path)?;
            self.files.insert(name.to_string(), f);
        }
        Ok(&self.files[name])
    }

    pub fn apply(&mut self, op: &FileOp) -> io::Result<()> {
        match op {
            FileOp::Create { name, size_bytes } => {
                let path = self.path(name)?;
                let f = self.fs.create(&path)?;
                if *size_bytes > 0 {
                    self.fs.allocate(&f, *size_bytes)?;
                }
                self.files.insert(name.clone(), f);
            }
            FileOp::WriteAt {
                name,
                offset,
                bytes,
            } => {
                // Every write of the snapshot lane is paced: its files come in pieces of up to a
                // chunk, and unpaced pieces would reach the device in one burst at the fsync.
                let paced = self.paced;
                self.file(name)?;
                let file = &self.files[name.as_str()];
                if paced {
                    // Chunk by chunk, each written back before the next: without it, a 12 MB
                    // snapshot file reaches the device in one burst at its fsync, and every WAL
                    // sync in the meantime queues behind the burst.
                    for (i, chunk) in bytes.chunks(PACED_CHUNK_BYTES).enumerate() {
                        let at = offset + (i * PACED_CHUNK_BYTES) as u64;
                        self.fs.write_at(file, chunk, at)?;
                        self.fs.write_back(file, at, chunk.len() as u64)?;
                    }
                } else {
                    self.fs.write_at(file, bytes, *offset)?
                }
            }
            FileOp::WriteZeros {
                name,
                offset,
                len_bytes,
            } => {
                // Real writes, chunk by chunk (written back on the paced lane): the point is
                // blocks that are allocated *and* initialised, which fallocate does not give.
                static ZEROS: [u8; PACED_CHUNK_BYTES] = [0; PACED_CHUNK_BYTES];
                let paced = self.paced;
                self.file(name)?;
                let file = &self.files[name.as_str()];
                let end = offset + len_bytes;
                let mut at = *offset;
                while at < end {
                    let n = (end - at).min(PACED_CHUNK_BYTES as u64);
                    self.fs.write_at(file, &ZEROS[..n as usize], at)?;
                    if paced {
                        self.fs.write_back(file, at, n)?;
                    }
                    at += n;
                }
            }
            FileOp::SetLen { name, len } => {
                self.file(name)?;
                self.fs.set_len(&self.files[name.as_str()], *len)?
            }
            FileOp::SyncFile { name } => {
                self.file(name)?;
                self.fs.sync_data(&self.files[name.as_str()])?
            }
            FileOp::SyncDir => self.fs.sync_dir(&self.dir)?,
            FileOp::Rename { from, to } => {
                let (a, b) = (self.path(from)?, self.path(to)?);
                self.fs.rename(&a, &b)?;
                self.files.remove(to);
                if let Some(f) = self.files.remove(from) {
                    self.files.insert(to.clone(), f);
                }
            }
            FileOp::Remove { name } => {
                self.files.remove(name);
                let path = self.path(name)?;
                match self.fs.remove(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Applies `ops` in order; how long each sync took, or the first error (with the path).
    fn apply_all(&mut self, ops: &[FileOp]) -> Result<Vec<Duration>, (DiskFailure, String)> {
        let mut syncs = Vec::new();
        for op in ops {
            let start = op.is_sync().then(Instant::now);
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
            if let Some(start) = start {
                syncs.push(start.elapsed());
            }
        }
        Ok(syncs)
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
                Ok(syncs) => done(DiskResult::Done {
                    id: job.id,
                    syncs,
                    elapsed: start.elapsed(),
                }),
            }
        }
    }

    /// The background lane: snapshot jobs (each job's state serialised off the event loop and
    /// written to its file) and prepare jobs, one at a time in the order they came.
    pub fn run_background(
        mut self,
        jobs: mpsc::Receiver<BackgroundJob>,
        done: impl Fn(DiskResult),
    ) {
        lower_thread_priority();
        for job in jobs {
            let start = Instant::now();
            let (id, result) = match job {
                BackgroundJob::Prepare(job) => {
                    let ops = job.ops.iter().cloned();
                    let r = self.apply_each(ops);
                    (
                        job.id,
                        r.map(|()| DiskResult::Prepared {
                            id: job.id,
                            elapsed: start.elapsed(),
                        }),
                    )
                }
                BackgroundJob::Snapshot(job) => {
                    // Encoded piece by piece as the ops are taken: never the whole file in memory.
                    let (size_bytes, ops) = job.write();
                    let r = self.apply_each(ops);
                    let saved = |()| DiskResult::SnapshotSaved {
                        id: job.id,
                        size_bytes,
                        elapsed: start.elapsed(),
                    };
                    (job.id, r.map(saved))
                }
            };
            // Purges (on the WAL lane) remove old snapshot files: hold no descriptor past a job,
            // or removed files would keep their space.
            self.files.clear();
            match result {
                Err((failure, detail)) => {
                    done(DiskResult::Failed {
                        id,
                        failure,
                        detail,
                    });
                    return; // never carry on after a failed write or sync
                }
                Ok(r) => done(r),
            }
        }
    }

    /// Applies ops one at a time as an iterator yields them; the first error, with the path.
    fn apply_each(
        &mut self,
        ops: impl Iterator<Item = FileOp>,
    ) -> Result<(), (DiskFailure, String)> {
        for op in ops {
            self.apply_all(std::slice::from_ref(&op))?;
        }
        Ok(())
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

/// What went wrong with the data directory before the node could start: each names the path
/// and the operation, since a bare `Permission denied (os error 13)` says neither. The I/O error
/// is part of the message, not a `source`: anyhow's `{:#}` would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data directory {}: {error}", path.display())]
    Create { path: PathBuf, error: io::Error },
    #[error(
        "--data-dir {} is a regular file, not a directory: give the path of a directory (it is \
         created if missing)",
        path.display()
    )]
    NotADirectory { path: PathBuf },
    #[error("cannot list data directory {}: {error}", path.display())]
    List { path: PathBuf, error: io::Error },
    #[error("cannot open lock file {}: {error}", path.display())]
    OpenLock { path: PathBuf, error: io::Error },
    #[error("cannot lock {}: {error}", path.display())]
    Lock { path: PathBuf, error: io::Error },
    #[error("data directory {} is in use by another raftkv process", path.display())]
    InUse { path: PathBuf },
}

/// Creates the data directory if it is missing; refuses a path that is something else.
pub fn create_dir(dir: &Path) -> Result<(), DataDirError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(DataDirError::NotADirectory {
                path: dir.to_path_buf(),
            })
        }
        Err(_) => {}
    }
    std::fs::create_dir_all(dir).map_err(|error| DataDirError::Create {
        path: dir.to_path_buf(),
        error,
    })
}

/// File names in the data directory (regular files only).
pub fn list(dir: &Path) -> Result<Vec<String>, DataDirError> {
    let err = |error| DataDirError::List {
        path: dir.to_path_buf(),
        error,
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(err)? {
        let e = e.map_err(err)?;
        if e.file_type().map_err(err)?.is_file() {
            if let Some(name) = e.file_name().to_str() {
                out.push(name.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Up to `max_bytes` of a file from `offset`, as the device holds them, for recovery (a
/// [`raftkv_core::fileop::ReadAt`]). Before a file's first read (offset 0), clean cached pages
/// are dropped (`POSIX_FADV_DONTNEED`): after a failed fsync the kernel may keep the unwritten
/// data in the page cache marked clean, and a restart that read it would take for durable what
/// the device never got. Dirty pages (a process killed before its fsync) stay cached and are
/// read; the startup job's syncs make them durable (FORMAT.md, section 9). Best effort: pages
/// another process has mapped or locked stay cached, and directory entries are not covered (a
/// rename whose directory fsync failed is still read as done).
pub fn read_for_recovery(path: &Path, offset: u64, max_bytes: usize) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path)?;
    if offset == 0 {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // Advice only: if it fails, the read is what it always was.
            // SAFETY: the descriptor is open for the call's duration.
            let _ =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    } else {
        file.seek(SeekFrom::Start(offset))?;
    }
    let mut bytes = Vec::new();
    file.take(u64::try_from(max_bytes).unwrap_or(u64::MAX))
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Holds an exclusive lock on the data directory for the life of the process.
pub struct DirLock {
    _file: File,
}

pub fn lock_dir(dir: &Path) -> Result<DirLock, DataDirError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| DataDirError::OpenLock {
            path: path.clone(),
            error,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(DataDirError::InUse {
            path: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(error)) => Err(DataDirError::Lock { path, error }),
    }
}

#[cfg(test)]
mod tests;
