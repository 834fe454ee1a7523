//! The simulated disks: each node's disk jobs run op by op with latency, and the fault atlas
//! strikes them: fsync errors (dirty pages dropped), ENOSPC, misdirected writes, sticky read
//! corruption and latent sector errors on a minority of nodes.

use super::*;

/// How a disk job ended.
pub(super) enum JobEnd {
    Done(u64),
    /// A snapshot job's file (of this many bytes) is durable.
    SnapshotSaved(u64, u64),
    /// A read of a snapshot file streaming to a follower.
    Read(u64, Result<Vec<u8>, DiskFailure>),
    /// The disk reported an error: the node must stop (never retry an fsync).
    Failed(u64, DiskFailure),
}

/// Runs one disk job op by op with latency; a kill stops it wherever it is. Injects the rare
/// disk faults of the seed: fsync errors, ENOSPC, misdirected writes.
pub(super) async fn disk_job(
    world: Arc<World>,
    id: u64,
    job: raftkv_core::node::DiskJob,
    done: mpsc::UnboundedSender<JobEnd>,
) {
    run_ops(world, id, job.id, job.ops, JobEnd::Done(job.id), done).await
}

/// The snapshot lane: serialise (`snapshot_cpu_ms` of simulated CPU time in some worlds, none
/// in the others), then write like any disk job, concurrently with the node's WAL jobs.
pub(super) async fn snapshot_job(
    world: Arc<World>,
    id: u64,
    job: raftkv_core::node::SnapshotJob,
    done: mpsc::UnboundedSender<JobEnd>,
) {
    if world.cfg.snapshot_cpu_ms > 0 {
        let epoch = world.disks.epoch(id);
        sleep(Duration::from_millis(world.cfg.snapshot_cpu_ms)).await;
        if world.disks.epoch(id) != epoch {
            return; // killed while serialising: the job never ends, as in a real crash
        }
    }
    let (file_bytes, ops) = job.write();
    let end = JobEnd::SnapshotSaved(job.id, file_bytes);
    run_ops(world, id, job.id, ops, end, done).await
}

/// Reads part of a snapshot file (streaming to a follower) after a disk op's latency. A read
/// sees the page cache; one cut short by a crash never completes.
pub(super) async fn read_job(
    world: Arc<World>,
    id: u64,
    job: raftkv_core::node::ReadJob,
    done: mpsc::UnboundedSender<JobEnd>,
) {
    let epoch = world.disks.epoch(id);
    let d = &world.cfg.disk;
    let tail = world.weather_exp(d.tail_us);
    sleep(Duration::from_micros(d.op_us + tail)).await;
    if world.disks.epoch(id) != epoch {
        return;
    }
    let result = world.disks.with(id, |d| job.from_bytes(d.read(&job.name)));
    world.count(Counter::SnapshotReads);
    let _ = done.send(JobEnd::Read(job.id, result));
}

pub(super) async fn run_ops(
    world: Arc<World>,
    id: u64,
    job_id: u64,
    ops: impl IntoIterator<Item = FileOp>,
    end: JobEnd,
    done: mpsc::UnboundedSender<JobEnd>,
) {
    world.disks.io_begin(id);
    let epoch = world.disks.epoch(id);
    let slowness = world.cfg.slowness_of(id);
    let (sw, rare) = (&world.cfg.swarm, &world.cfg.rare);
    for op in ops {
        let op = &op;
        // Slow disks are a fault: they recover when the world heals.
        let slow = if world.net.is_calm() { 1 } else { slowness };
        let d = &world.cfg.disk;
        let base = if op.is_sync() { d.sync_us } else { d.op_us };
        let tail = world.weather_exp(d.tail_us);
        sleep(Duration::from_micros((base + tail) * slow)).await;
        let calm = world.net.is_calm();
        if !calm
            && sw.fsync_errors
            && op.is_sync()
            && world.chance_of(FaultClass::FsyncErrors, rare.fsync_error)
        {
            // After a failed fsync the kernel may have dropped the dirty pages: what was not
            // synced before is gone, and the node must not carry on.
            let mut rng = Rng::new(world.below_of(FaultClass::FsyncErrors, u64::MAX));
            world
                .disks
                .with(id, |d| d.crash(CrashKind::PowerLoss, &mut |n| rng.below(n)));
            world.disks.bump_epoch(id);
            world.count(Counter::FsyncFailures);
            let failure = ("fsync_error", "fsync", std::io::ErrorKind::Other);
            return fail_job(&world, id, job_id, op, failure, &done);
        }
        let is_write = matches!(
            op,
            FileOp::WriteAt { .. } | FileOp::WriteZeros { .. } | FileOp::Create { .. }
        );
        if !calm && sw.enospc && is_write && world.chance_of(FaultClass::Enospc, rare.enospc) {
            if debug_node(id) {
                eprintln!(
                    "[{} ns] node {id} job {} ENOSPC on {:?}",
                    world.now_ns(),
                    job_id,
                    op
                );
            }
            world.count(Counter::Enospc);
            let failure = ("enospc", "write", std::io::ErrorKind::StorageFull);
            return fail_job(&world, id, job_id, op, failure, &done);
        }
        let mut op = op.clone();
        // Misdirected writes hit snapshot files, whose checksum must catch them. In the WAL's
        // tail a write that lands elsewhere leaves zeros where it belonged, which reads as a
        // torn write: a documented limit of a single-copy log.
        let to_snapshot = op
            .file_name()
            .is_some_and(|n| n.ends_with(".snap.tmp") || n.ends_with(".snap.recv.tmp"));
        if !calm
            && sw.misdirected_writes
            && to_snapshot
            && world.may_damage(id)
            && world.chance_of(FaultClass::MisdirectedWrites, rare.misdirected * 20.0)
        {
            if let FileOp::WriteAt { offset, .. } = &mut op {
                let shift = 512 * (1 + world.below_of(FaultClass::MisdirectedWrites, 8));
                *offset += shift;
                world.count(Counter::MisdirectedWrites);
                world.record(id, "fault", serde_json::json!({"fault": "misdirected_write", "file": op.file_name(), "shift_bytes": shift}));
                world.disks.mark_damaged(id);
            }
        }
        if debug_node(id) {
            eprintln!("[{} ns] node {id} job {} {:?}", world.now_ns(), job_id, op);
        }
        let r = world.disks.with(id, |d| d.apply(&op));
        if let Err(e) = r {
            if world.disks.epoch(id) != epoch {
                // The disk crashed under this job (the other lane's fsync failed, say): the job
                // dies with its process, it did not misuse the disk.
                world.disks.io_end(id);
                return;
            }
            world.violation(Checker::Disk, format!("node {id}: {op:?} failed: {e}"));
            return;
        }
    }
    // The window between a completed sync and the sends that wait for it: the node still counts
    // as busy, so the supervisor's crashes land here too.
    world.disks.set_synced(id, true);
    let gap_us = 1 + world.weather_exp(500);
    sleep(Duration::from_micros(gap_us)).await;
    world.disks.set_synced(id, false);
    world.disks.io_end(id);
    let _ = done.send(end);
}

/// An injected disk error ends job `job_id` at `op`: traced as fault `fault`, reported to the
/// node as `what` failing with `kind`.
fn fail_job(
    world: &World,
    id: u64,
    job_id: u64,
    op: &FileOp,
    (fault, what, kind): (&str, &'static str, std::io::ErrorKind),
    done: &mpsc::UnboundedSender<JobEnd>,
) {
    world.record(
        id,
        "fault",
        serde_json::json!({"fault": fault, "file": op.file_name()}),
    );
    world.disks.io_end(id);
    let failure = DiskFailure {
        op: what,
        file: op.file_name().map(str::to_string),
        kind,
    };
    let _ = done.send(JobEnd::Failed(job_id, failure));
}

/// `RAFTKV_SIM_DEBUG_NODE=N` prints node N's disk ops.
pub(super) fn debug_node(id: u64) -> bool {
    std::env::var("RAFTKV_SIM_DEBUG_NODE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        == Some(id)
}

/// What `rot_disk` did to a disk before a restart.
#[derive(Default)]
pub(super) struct Rot {
    /// The first read fails (a latent sector error).
    pub(super) unreadable: bool,
    /// A sealed WAL segment with a flipped bit, and where: every byte of a sealed segment is
    /// read and checked at recovery, so a boot that does not fail has missed damage.
    pub(super) sealed_segment: Option<(String, usize)>,
    /// The flip is the only damage the disk holds (none before it, no latent error with it):
    /// then recovery must refuse for that segment's damage and nothing else.
    pub(super) only_damage: bool,
}

/// Sticky read corruption and latent sector errors, applied to a bad disk before a restart.
pub(super) fn rot_disk(world: &World, id: u64) -> Rot {
    let (sw, rare) = (&world.cfg.swarm, &world.cfg.rare);
    if !world.may_damage(id) {
        return Rot::default();
    }
    let mut rot_done = Rot::default();
    let damaged_before = world.disks.is_damaged(id);
    // Rot lands in sealed WAL segments and snapshot files. Bit rot in the active segment's tail
    // can be indistinguishable from a torn write without a second copy of the log (etcd shares
    // this limit), so it is not injected there; see README, "Fault model".
    let files: Vec<String> = world.disks.with(id, |d| {
        let mut wal: Vec<String> = d
            .list()
            .into_iter()
            .filter(|n| raftkv_core::wal::SegmentName::parse(n).is_some())
            .collect();
        wal.sort();
        wal.pop();
        wal.into_iter()
            .chain(d.list().into_iter().filter(|n| n.ends_with(".snap")))
            .collect()
    });
    if files.is_empty() {
        return rot_done;
    }
    let rot = FaultClass::ReadCorruption;
    if sw.read_corruption && world.chance_of(rot, rare.read_corruption) {
        let name = &files[world.below_of(rot, files.len() as u64) as usize];
        let mut bytes = world
            .disks
            .with(id, |d| d.read(name).expect("listed").to_vec());
        // Only bytes that were written (up to the last non-zero byte) rot.
        if let Some(end) = bytes.iter().rposition(|&b| b != 0) {
            let at = world.below_of(rot, end as u64 + 1) as usize;
            bytes[at] ^= 1 << world.below_of(rot, 8);
            world
                .disks
                .with(id, |d| d.overwrite(name, bytes).expect("listed"));
            world.disks.mark_damaged(id);
            world.count(Counter::ReadCorruptionInjected);
            if raftkv_core::wal::SegmentName::parse(name).is_some() {
                world.count(Counter::SealedSegmentRotInjected);
                rot_done.sealed_segment = Some((name.clone(), at));
            }
            world.record(
                id,
                "fault",
                serde_json::json!({"fault": "read_corruption", "file": name, "offset": at}),
            );
        }
    }
    if sw.latent_sector_errors && world.chance_of(FaultClass::LatentSectorErrors, rare.latent_error)
    {
        rot_done.unreadable = true;
        world.disks.mark_damaged(id);
        world.count(Counter::LatentSectorErrors);
        world.record(
            id,
            "fault",
            serde_json::json!({"fault": "latent_sector_error"}),
        );
    }
    rot_done.only_damage = !damaged_before && !rot_done.unreadable;
    rot_done
}

/// Every node's simulated disk and what the fault atlas keeps on them, owned here: the rest
/// of the world works on a disk through `with` and asks the book questions.
pub(super) struct Disks {
    dirs: Mutex<BTreeMap<u64, MemDir>>,
    book: Mutex<DiskBook>,
    /// Nodes whose disks may rot (read corruption, latent errors, misdirected writes): a
    /// minority of the initial members.
    bad: BTreeSet<u64>,
}

#[derive(Default)]
struct DiskBook {
    /// Disk jobs in flight per node (the WAL lane and the snapshot lane).
    busy: BTreeMap<u64, u32>,
    /// Nodes whose disk job is durable but not yet reported (persisted messages still held).
    synced: BTreeSet<u64>,
    /// Crashes of each node's disk so far: a job that outlives one stops quietly.
    epochs: BTreeMap<u64, u64>,
    /// Nodes with injected disk damage not yet replaced (kept to a minority).
    damaged: BTreeSet<u64>,
}

impl Disks {
    /// Empty disks for the initial members; a seed-chosen minority of them is bad.
    pub(super) fn new(nodes: u64, seed: u64) -> Disks {
        Disks {
            dirs: Mutex::new((1..=nodes).map(|i| (i, MemDir::new())).collect()),
            book: Mutex::default(),
            bad: (1..=(nodes - 1) / 2)
                .map(|i| 1 + (seed + i) % nodes)
                .collect(),
        }
    }

    /// Works on node `id`'s disk (every node that ever started has one).
    pub(super) fn with<R>(&self, id: u64, f: impl FnOnce(&mut MemDir) -> R) -> R {
        f(self
            .dirs
            .lock()
            .unwrap()
            .get_mut(&id)
            .expect("every node has a disk"))
    }

    /// A copy of node `id`'s disk, if it has one.
    pub(super) fn copy_of(&self, id: u64) -> Option<MemDir> {
        self.dirs.lock().unwrap().get(&id).cloned()
    }

    /// Gives node `id` this disk (a new node's empty one, a wiped one).
    pub(super) fn replace(&self, id: u64, dir: MemDir) {
        self.dirs.lock().unwrap().insert(id, dir);
    }

    pub(super) fn io_begin(&self, id: u64) {
        *self.book.lock().unwrap().busy.entry(id).or_default() += 1;
    }

    pub(super) fn io_end(&self, id: u64) {
        let mut b = self.book.lock().unwrap();
        if let Some(n) = b.busy.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                b.busy.remove(&id);
            }
        }
    }

    /// Whether node `id` had disk I/O in flight; forgets it (the node crashed).
    pub(super) fn take_busy(&self, id: u64) -> bool {
        self.book.lock().unwrap().busy.remove(&id).is_some()
    }

    /// Nodes with disk I/O in flight.
    pub(super) fn busy_ids(&self) -> Vec<u64> {
        self.book.lock().unwrap().busy.keys().copied().collect()
    }

    /// Node `id` is between a completed sync and the sends waiting for it (or no longer).
    pub(super) fn set_synced(&self, id: u64, synced: bool) {
        let mut b = self.book.lock().unwrap();
        if synced {
            b.synced.insert(id);
        } else {
            b.synced.remove(&id);
        }
    }

    /// Whether node `id` was between a sync and its sends; forgets it (the node crashed).
    pub(super) fn take_synced(&self, id: u64) -> bool {
        self.book.lock().unwrap().synced.remove(&id)
    }

    pub(super) fn epoch(&self, id: u64) -> u64 {
        self.book
            .lock()
            .unwrap()
            .epochs
            .get(&id)
            .copied()
            .unwrap_or(0)
    }

    /// Node `id`'s disk crashed: jobs started before stop quietly.
    pub(super) fn bump_epoch(&self, id: u64) {
        *self.book.lock().unwrap().epochs.entry(id).or_default() += 1;
    }

    pub(super) fn is_bad(&self, id: u64) -> bool {
        self.bad.contains(&id)
    }

    /// Node `id` may still be damaged among `members`: a bad disk, and only while the damaged
    /// stay a minority (or it is damaged already).
    pub(super) fn may_damage(&self, id: u64, members: usize) -> bool {
        let b = self.book.lock().unwrap();
        self.bad.contains(&id)
            && (b.damaged.contains(&id) || b.damaged.len() < members.saturating_sub(1) / 2)
    }

    pub(super) fn mark_damaged(&self, id: u64) {
        self.book.lock().unwrap().damaged.insert(id);
    }

    /// Node `id` was replaced: its damage no longer counts.
    pub(super) fn forget_damaged(&self, id: u64) {
        self.book.lock().unwrap().damaged.remove(&id);
    }

    pub(super) fn is_damaged(&self, id: u64) -> bool {
        self.book.lock().unwrap().damaged.contains(&id)
    }

    pub(super) fn damaged_count(&self) -> usize {
        self.book.lock().unwrap().damaged.len()
    }
}

impl World {
    /// Nodes that may still be damaged (rotting disk, lost disk) without losing a quorum for
    /// good: bad-disk nodes only, and only while no more than a minority is unrecoverable.
    pub(super) fn may_damage(&self, id: u64) -> bool {
        let members = self.members.lock().unwrap().len();
        self.disks.may_damage(id, members)
    }
}
