//! Tests of `disk.rs`, kept beside it so the module itself stays one concern.

use super::*;

#[test]
fn data_dir_errors_name_the_path_and_the_operation() {
    let e = DataDirError::Create {
        path: "/x/y".into(),
        error: io::Error::from_raw_os_error(libc::EACCES),
    };
    assert_eq!(
        e.to_string(),
        "cannot create data directory /x/y: Permission denied (os error 13)"
    );
    let tmp = std::env::temp_dir().join(format!("raftkv-datadir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let file = tmp.join("file");
    std::fs::write(&file, b"").unwrap();
    // A regular file where the directory should be: said so, not "File exists".
    let e = create_dir(&file).unwrap_err();
    assert!(matches!(e, DataDirError::NotADirectory { .. }), "{e}");
    assert!(e
        .to_string()
        .contains(&format!("{} is a regular file", file.display())));
    // Below a file: the OS's own error, with the path and what was being done.
    let below = file.join("sub");
    let e = create_dir(&below).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "cannot create data directory {}: ",
            below.display()
        )),
        "{e}"
    );
    assert!(e.contains("os error"), "{e}");
    create_dir(&tmp.join("a/b")).unwrap();
    create_dir(&tmp.join("a/b")).unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
}
use raftkv_core::boot::{boot, StartFlags};
use raftkv_core::memdir::MemDir;
use raftkv_core::node::{Action, ClientOp, ClientRequest, NodeConfig};

/// A system call as the executor made it, naming the file it went to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Create(String),
    Open(String),
    Allocate(String, u64),
    WriteAt(String, u64, usize),
    WriteBack(String, u64, u64),
    SetLen(String, u64),
    SyncData(String),
    SyncDir,
    Rename(String, String),
    Remove(String),
}

/// The real file system, with every call recorded beneath the executor.
#[derive(Default)]
struct Recording {
    real: RealFs,
    calls: Vec<Call>,
    /// Handle id -> the name its file has now (renames move it).
    names: HashMap<u64, String>,
    next: u64,
}

fn base(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

impl Recording {
    fn handle(&mut self, f: File, p: &Path) -> (File, u64) {
        self.next += 1;
        self.names.insert(self.next, base(p));
        (f, self.next)
    }
    fn name(&self, f: &(File, u64)) -> String {
        self.names[&f.1].clone()
    }
}

impl Fs for Recording {
    type File = (File, u64);
    fn create(&mut self, p: &Path) -> io::Result<(File, u64)> {
        self.calls.push(Call::Create(base(p)));
        let f = self.real.create(p)?;
        Ok(self.handle(f, p))
    }
    fn open(&mut self, p: &Path) -> io::Result<(File, u64)> {
        self.calls.push(Call::Open(base(p)));
        let f = self.real.open(p)?;
        Ok(self.handle(f, p))
    }
    fn allocate(&mut self, f: &(File, u64), len: u64) -> io::Result<()> {
        self.calls.push(Call::Allocate(self.name(f), len));
        self.real.allocate(&f.0, len)
    }
    fn write_at(&mut self, f: &(File, u64), buf: &[u8], at: u64) -> io::Result<()> {
        self.calls.push(Call::WriteAt(self.name(f), at, buf.len()));
        self.real.write_at(&f.0, buf, at)
    }
    fn write_back(&mut self, f: &(File, u64), at: u64, len: u64) -> io::Result<()> {
        self.calls.push(Call::WriteBack(self.name(f), at, len));
        self.real.write_back(&f.0, at, len)
    }
    fn set_len(&mut self, f: &(File, u64), len: u64) -> io::Result<()> {
        self.calls.push(Call::SetLen(self.name(f), len));
        self.real.set_len(&f.0, len)
    }
    fn sync_data(&mut self, f: &(File, u64)) -> io::Result<()> {
        self.calls.push(Call::SyncData(self.name(f)));
        self.real.sync_data(&f.0)
    }
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.calls.push(Call::SyncDir);
        self.real.sync_dir(dir)
    }
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.calls.push(Call::Rename(base(from), base(to)));
        for n in self.names.values_mut() {
            if *n == base(from) {
                *n = base(to);
            }
        }
        self.real.rename(from, to)
    }
    fn remove(&mut self, p: &Path) -> io::Result<()> {
        self.calls.push(Call::Remove(base(p)));
        self.real.remove(p)
    }
}

/// The calls the durability contract allows for `ops` (core/FORMAT.md section 6): each op
/// exactly once and in order, a file opened once before its first use, a paced lane's writes
/// in written-back chunks.
fn expected(ops: &[FileOp], paced: bool) -> Vec<Call> {
    fn use_file(open: &mut std::collections::HashSet<String>, name: &str, out: &mut Vec<Call>) {
        if open.insert(name.to_string()) {
            out.push(Call::Open(name.to_string()));
        }
    }
    let mut open = std::collections::HashSet::new();
    let mut out = Vec::new();
    for op in ops {
        match op {
            FileOp::Create { name, size_bytes } => {
                out.push(Call::Create(name.clone()));
                if *size_bytes > 0 {
                    out.push(Call::Allocate(name.clone(), *size_bytes));
                }
                open.insert(name.clone());
            }
            FileOp::WriteAt {
                name,
                offset,
                bytes,
            } => {
                use_file(&mut open, name, &mut out);
                if paced {
                    for (i, c) in bytes.chunks(PACED_CHUNK_BYTES).enumerate() {
                        let at = offset + (i * PACED_CHUNK_BYTES) as u64;
                        out.push(Call::WriteAt(name.clone(), at, c.len()));
                        out.push(Call::WriteBack(name.clone(), at, c.len() as u64));
                    }
                } else {
                    out.push(Call::WriteAt(name.clone(), *offset, bytes.len()));
                }
            }
            FileOp::WriteZeros {
                name,
                offset,
                len_bytes,
            } => {
                use_file(&mut open, name, &mut out);
                let mut at = *offset;
                while at < offset + len_bytes {
                    let n = (offset + len_bytes - at).min(PACED_CHUNK_BYTES as u64);
                    out.push(Call::WriteAt(name.clone(), at, n as usize));
                    if paced {
                        out.push(Call::WriteBack(name.clone(), at, n));
                    }
                    at += n;
                }
            }
            FileOp::SetLen { name, len } => {
                use_file(&mut open, name, &mut out);
                out.push(Call::SetLen(name.clone(), *len));
            }
            FileOp::SyncFile { name } => {
                use_file(&mut open, name, &mut out);
                out.push(Call::SyncData(name.clone()));
            }
            FileOp::SyncDir => out.push(Call::SyncDir),
            FileOp::Rename { from, to } => {
                out.push(Call::Rename(from.clone(), to.clone()));
                if open.remove(from) {
                    open.insert(to.clone());
                } else {
                    open.remove(to);
                }
            }
            FileOp::Remove { name } => {
                open.remove(name);
                out.push(Call::Remove(name.clone()));
            }
        }
    }
    out
}

/// A real node's op streams (bootstrap, appends, segment cuts, snapshots, compaction,
/// purge), run by the executors the binary uses over a recording file system: the system
/// calls are exactly the ops core asked for, in order, and the directory ends up holding
/// what the page-cache model says it holds.
#[test]
fn the_calls_made_are_the_ops_asked_for() {
    let dir = std::env::temp_dir().join(format!("raftkv-disk-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = NodeConfig::new(1, 3);
    cfg.compaction.snap_count = 10;
    cfg.compaction.catch_up_entries = 3;
    cfg.compaction.max_snapshots = 1;
    cfg.wal.segment_size_bytes = 4096;
    cfg.snapshot_chunk_bytes = 700;
    let flags = StartFlags {
        peers: [(1, "http://127.0.0.1:2380".to_string())].into(),
        token: "t".into(),
        join: false,
    };
    let mut node = boot(cfg, &flags, &[], &mut |_, _, _| {
        Err(raftkv_core::fileop::ReadFailure::NOT_FOUND)
    })
    .unwrap();
    let mut wal = Disk::with_fs(dir.clone(), Recording::default());
    let mut snap = Disk::with_fs(dir.clone(), Recording::default()).paced();
    let (mut wal_ops, mut snap_ops) = (Vec::new(), Vec::new());
    let mut model = MemDir::new();
    let mut handle = 0;
    for round in 0..300u64 {
        node.tick();
        if round % 2 == 0 {
            handle += 1;
            node.client(ClientRequest {
                handle,
                request_id: None,
                timeout_ticks: 100,
                op: ClientOp::Put {
                    key: format!("k{}", round % 13).into_bytes(),
                    value: vec![b'v'; 50 + (round as usize * 31) % 300],
                },
            });
        }
        for a in node.drain() {
            match a {
                Action::Disk(job) => {
                    for op in &job.ops {
                        wal.apply(op).unwrap();
                        model.apply(op).unwrap();
                    }
                    wal_ops.extend(job.ops);
                    node.disk_done(job.id);
                }
                Action::Snapshot(job) => {
                    let (bytes, ops) = job.write();
                    for op in ops {
                        snap.apply(&op).unwrap();
                        model.apply(&op).unwrap();
                        snap_ops.push(op);
                    }
                    snap.files.clear();
                    node.snapshot_saved(job.id, bytes);
                }
                Action::Prepare(job) => {
                    for op in &job.ops {
                        snap.apply(op).unwrap();
                        model.apply(op).unwrap();
                    }
                    snap_ops.extend(job.ops);
                    snap.files.clear();
                    node.disk_done(job.id);
                }
                _ => {}
            }
        }
    }
    let kinds = |ops: &[FileOp], f: fn(&FileOp) -> bool| ops.iter().filter(|o| f(o)).count();
    assert!(
        kinds(&wal_ops, |o| matches!(o, FileOp::Rename { .. })) > 3,
        "segment cuts"
    );
    assert!(
        kinds(&wal_ops, |o| matches!(o, FileOp::Remove { .. })) > 3,
        "purges"
    );
    assert!(
        kinds(&snap_ops, |o| matches!(o, FileOp::WriteAt { .. })) > 10,
        "snapshots"
    );
    assert!(
        kinds(&snap_ops, |o| matches!(o, FileOp::WriteZeros { .. })) > 3,
        "spare segments"
    );
    assert!(
        kinds(
            &wal_ops,
            |o| matches!(o, FileOp::Rename { from, .. } if raftkv_core::wal::is_spare_name(from))
        ) > 3,
        "cuts that took a spare"
    );
    assert_eq!(wal.fs.calls, expected(&wal_ops, false));
    // The snapshot lane drops its handles after each job (purges remove its files).
    let mut want = Vec::new();
    for job in snap_ops.split_inclusive(|o| matches!(o, FileOp::SyncDir)) {
        want.extend(expected(job, true));
    }
    assert_eq!(snap.fs.calls, want);
    let mut on_disk = list(&dir).unwrap();
    on_disk.retain(|n| n != "LOCK");
    assert_eq!(on_disk, model.list());
    for n in &on_disk {
        assert_eq!(
            std::fs::read(dir.join(n)).unwrap(),
            model.read(n).unwrap(),
            "{n}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A temporary data directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("raftkv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real file system, except that one kind of call fails: a write writes only the first
/// half of its buffer first (a short, torn write), an fsync just fails.
struct Failing {
    real: RealFs,
    write: Option<io::ErrorKind>,
    sync: Option<io::Error>,
}

impl Fs for Failing {
    type File = File;
    fn create(&mut self, p: &Path) -> io::Result<File> {
        self.real.create(p)
    }
    fn open(&mut self, p: &Path) -> io::Result<File> {
        self.real.open(p)
    }
    fn allocate(&mut self, f: &File, len: u64) -> io::Result<()> {
        self.real.allocate(f, len)
    }
    fn write_at(&mut self, f: &File, buf: &[u8], at: u64) -> io::Result<()> {
        match self.write {
            Some(kind) => {
                self.real.write_at(f, &buf[..buf.len() / 2], at)?;
                Err(io::Error::from(kind))
            }
            None => self.real.write_at(f, buf, at),
        }
    }
    fn write_back(&mut self, f: &File, at: u64, len: u64) -> io::Result<()> {
        self.real.write_back(f, at, len)
    }
    fn set_len(&mut self, f: &File, len: u64) -> io::Result<()> {
        self.real.set_len(f, len)
    }
    fn sync_data(&mut self, f: &File) -> io::Result<()> {
        match self.sync.take() {
            Some(e) => Err(e),
            None => self.real.sync_data(f),
        }
    }
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.real.sync_dir(dir)
    }
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.real.rename(from, to)
    }
    fn remove(&mut self, p: &Path) -> io::Result<()> {
        self.real.remove(p)
    }
}

fn write(name: &str, offset: u64, bytes: &[u8]) -> FileOp {
    FileOp::WriteAt {
        name: name.into(),
        offset,
        bytes: bytes.to_vec(),
    }
}

fn create(name: &str) -> FileOp {
    FileOp::Create {
        name: name.into(),
        size_bytes: 0,
    }
}

/// Runs `jobs` on the WAL lane to the end and returns every result it reported.
fn run_wal<F: Fs>(disk: Disk<F>, jobs: Vec<Vec<FileOp>>) -> Vec<DiskResult> {
    let (tx, rx) = mpsc::channel();
    for (i, ops) in jobs.into_iter().enumerate() {
        tx.send(DiskJob {
            id: i as u64 + 1,
            ops,
        })
        .unwrap();
    }
    drop(tx);
    let results = std::cell::RefCell::new(Vec::new());
    disk.run(rx, |r| results.borrow_mut().push(r));
    results.into_inner()
}

/// A failed fsync is reported with the operation, the file and the error's kind, and the
/// lane stops: the job after it is never run (retrying could report lost data durable).
#[test]
fn a_failed_fsync_stops_the_lane_and_names_op_file_and_kind() {
    let dir = TempDir::new("disk-fsync");
    let fs = Failing {
        real: RealFs,
        write: None,
        sync: Some(io::Error::from_raw_os_error(libc::ENOSPC)),
    };
    let results = run_wal(
        Disk::with_fs(dir.0.clone(), fs),
        vec![
            vec![
                create("a"),
                write("a", 0, b"entry"),
                FileOp::SyncFile { name: "a".into() },
            ],
            vec![create("b")],
        ],
    );
    assert_eq!(results.len(), 1, "the second job never ran");
    match &results[0] {
        DiskResult::Failed {
            id,
            failure,
            detail,
        } => {
            assert_eq!(*id, 1);
            assert_eq!(failure.op, "fsync");
            assert_eq!(failure.file, Some(dir.0.join("a").display().to_string()));
            assert_eq!(failure.kind, io::ErrorKind::StorageFull);
            assert!(detail.contains("No space left on device"), "{detail}");
        }
        _ => panic!("not a failure"),
    }
    assert!(!dir.0.join("b").exists());
}

/// A write that gets only part of its bytes out (ENOSPC midway) fails the job; nothing is
/// reported done, and what reached the file is the torn prefix, left for recovery to judge.
#[test]
fn a_short_write_fails_the_job_and_leaves_a_torn_prefix() {
    let dir = TempDir::new("disk-short");
    let fs = Failing {
        real: RealFs,
        write: Some(io::ErrorKind::StorageFull),
        sync: None,
    };
    let results = run_wal(
        Disk::with_fs(dir.0.clone(), fs),
        vec![vec![create("seg"), write("seg", 0, b"0123456789")]],
    );
    match &results[..] {
        [DiskResult::Failed { id: 1, failure, .. }] => {
            assert_eq!(failure.op, "write");
            assert_eq!(failure.kind, io::ErrorKind::StorageFull);
            assert_eq!(failure.file, Some(dir.0.join("seg").display().to_string()));
        }
        _ => panic!("not one failure"),
    }
    assert_eq!(std::fs::read(dir.0.join("seg")).unwrap(), b"01234");
}

/// File names come from core, but the executor still refuses anything but a plain name in
/// the data directory: no op may reach outside it.
#[test]
fn only_plain_names_inside_the_directory() {
    let dir = TempDir::new("disk-names");
    let mut disk = Disk::new(dir.0.join("data"));
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    for name in ["../escape", "a/b", "", ".", "..", "/abs"] {
        let e = disk.apply(&create(name)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        assert!(e.to_string().contains("bad file name"), "{e}");
        let e = disk.apply(&write(name, 0, b"x")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}");
    }
    assert!(!dir.0.join("escape").exists());
    assert_eq!(list(&dir.0.join("data")).unwrap(), Vec::<String>::new());
}

#[test]
fn renames_carry_open_files_and_removes_tolerate_missing_ones() {
    let dir = TempDir::new("disk-rename");
    let mut disk = Disk::new(dir.0.clone());
    for op in [
        create("x.tmp"),
        write("x.tmp", 0, b"abc"),
        FileOp::Rename {
            from: "x.tmp".into(),
            to: "x".into(),
        },
        // The handle moved with the name: this write lands in `x`.
        write("x", 3, b"def"),
        FileOp::SetLen {
            name: "x".into(),
            len: 5,
        },
        FileOp::SyncFile { name: "x".into() },
        FileOp::SyncDir,
        FileOp::Remove {
            name: "never-there".into(),
        },
    ] {
        disk.apply(&op).unwrap();
    }
    assert_eq!(std::fs::read(dir.0.join("x")).unwrap(), b"abcde");
    assert_eq!(list(&dir.0).unwrap(), vec!["x".to_string()]);
    // A create truncates what was there.
    disk.apply(&create("x")).unwrap();
    assert_eq!(std::fs::read(dir.0.join("x")).unwrap(), b"");
}

#[test]
fn reads_report_their_range_or_a_named_failure() {
    let dir = TempDir::new("disk-reads");
    std::fs::write(dir.0.join("snap"), b"0123456789").unwrap();
    let (tx, rx) = mpsc::channel();
    let job = |id, name: &str, offset, len| ReadJob {
        id,
        name: name.into(),
        offset,
        len,
    };
    tx.send(job(1, "snap", 2, 3)).unwrap();
    tx.send(job(2, "snap", 8, 5)).unwrap();
    tx.send(job(3, "gone", 0, 1)).unwrap();
    drop(tx);
    let results = std::cell::RefCell::new(Vec::new());
    Disk::new(dir.0.clone()).run_reads(rx, |r| results.borrow_mut().push(r));
    let results: Vec<_> = results
        .into_inner()
        .into_iter()
        .map(|r| match r {
            DiskResult::Read { id, result } => (id, result),
            _ => panic!("not a read"),
        })
        .collect();
    assert_eq!(results[0], (1, Ok(b"234".to_vec())));
    let failed = |id: u64, name: &str, kind| {
        (
            id,
            Err(DiskFailure {
                op: "read",
                file: Some(dir.0.join(name).display().to_string()),
                kind,
            }),
        )
    };
    // Past the end is a failure, never a short chunk.
    assert_eq!(results[1], failed(2, "snap", io::ErrorKind::UnexpectedEof));
    assert_eq!(results[2], failed(3, "gone", io::ErrorKind::NotFound));
}

#[test]
fn one_process_per_data_directory_and_only_files_listed() {
    let dir = TempDir::new("disk-lock");
    let lock = lock_dir(&dir.0).unwrap();
    let e = lock_dir(&dir.0).err().expect("locked already");
    assert!(matches!(e, DataDirError::InUse { .. }), "{e}");
    assert!(
        e.to_string()
            .ends_with("is in use by another raftkv process"),
        "{e}"
    );
    drop(lock);
    let _again = lock_dir(&dir.0).unwrap();
    std::fs::create_dir(dir.0.join("a-dir")).unwrap();
    std::fs::write(dir.0.join("2-b.wal"), b"").unwrap();
    std::fs::write(dir.0.join("1-a.wal"), b"").unwrap();
    assert_eq!(list(&dir.0).unwrap(), vec!["1-a.wal", "2-b.wal", "LOCK"]);
    let e = list(&dir.0.join("missing")).unwrap_err();
    assert!(
        e.to_string().starts_with("cannot list data directory "),
        "{e}"
    );
}
