//! `recovery::recover` on directories built by the real writers and executed on a `MemDir`.

use raftkv_core::command::Command;
use raftkv_core::fileop::FileOp;
use raftkv_core::kv::KvState;
use raftkv_core::memdir::{CrashKind, MemDir};
use raftkv_core::recovery::{recover, Recovered, RecoveryError, LOAD_PIECE_BYTES};
use raftkv_core::snapfile::{self, SnapshotFile, SnapshotMeta};
use raftkv_core::wal::{
    read_segments, ConfStateRec, EntryKind, EntryRec, HardStateRec, Record, SnapshotMarker,
    WalConfig, WalError, WalIdentity, WalWriter,
};

const ID: WalIdentity = WalIdentity {
    cluster_id: 0xfeed,
    node_id: 2,
};

/// Small segments keep the preallocated zeros (which the reader scans) cheap in debug builds.
const SMALL: WalConfig = WalConfig {
    segment_size_bytes: 16 << 10,
};

fn apply(dir: &mut MemDir, ops: &[FileOp]) {
    for op in ops {
        dir.apply(op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
}

fn run_recover(dir: &MemDir, id: WalIdentity) -> Result<Option<Recovered>, RecoveryError> {
    recover(&dir.list(), id, &mut |n, at, max| dir.read_at(n, at, max))
}

fn entry(index: u64, term: u64) -> EntryRec {
    EntryRec {
        index,
        term,
        kind: EntryKind::Normal,
        data: format!("e{index}").into_bytes(),
        context: Vec::new(),
    }
}

fn indexes(entries: &[EntryRec]) -> Vec<u64> {
    entries.iter().map(|e| e.index).collect()
}

fn conf() -> ConfStateRec {
    ConfStateRec {
        voters: vec![1, 2, 3],
        ..ConfStateRec::default()
    }
}

/// A node's storage, driven the way the node drives it.
struct Disk {
    dir: MemDir,
    wal: WalWriter,
}

impl Disk {
    fn new(cfg: WalConfig) -> Disk {
        let mut dir = MemDir::new();
        let mut ops = Vec::new();
        let wal = WalWriter::create(ID, cfg, 1, &mut ops);
        apply(&mut dir, &ops);
        Disk { dir, wal }
    }

    /// Entries `from..=to` (term 1) and a HardState committing `commit`, synced.
    fn entries(&mut self, from: u64, to: u64, commit: u64) {
        let mut ops = Vec::new();
        for i in from..=to {
            self.wal.append(&Record::Entry(entry(i, 1)), &mut ops);
        }
        self.wal.append(
            &Record::HardState(HardStateRec {
                term: 1,
                vote: 1,
                commit,
            }),
            &mut ops,
        );
        self.wal.sync(&mut ops);
        apply(&mut self.dir, &ops);
    }

    /// Snapshot file first, then (if `mark`) its WAL marker, as the node orders them.
    fn snapshot(&mut self, index: u64, term: u64, log_reset: bool, mark: bool) -> String {
        // A real state (recovery decodes it as it reads the file), marked by its index.
        let mut kv = KvState::default();
        kv.advance(index);
        self.snapshot_of(index, term, log_reset, mark, kv.encode_snapshot())
    }

    fn snapshot_of(
        &mut self,
        index: u64,
        term: u64,
        log_reset: bool,
        mark: bool,
        data: Vec<u8>,
    ) -> String {
        let mut ops = Vec::new();
        let file = SnapshotFile {
            meta: SnapshotMeta {
                index,
                term,
                conf_state: conf(),
            },
            data,
        };
        let name = snapfile::write_ops(&file, &mut ops);
        if mark {
            self.wal.append(
                &Record::Snapshot(SnapshotMarker {
                    index,
                    term,
                    conf_state: conf(),
                    log_reset,
                }),
                &mut ops,
            );
            self.wal.sync(&mut ops);
        }
        apply(&mut self.dir, &ops);
        name
    }
}

#[test]
fn fresh_directory_recovers_to_none() {
    let dir = MemDir::new();
    assert!(run_recover(&dir, ID).unwrap().is_none());

    // Files that are neither segments nor snapshots do not make a node.
    let mut dir = MemDir::new();
    apply(
        &mut dir,
        &[FileOp::Create {
            name: "LOCK".into(),
            size_bytes: 0,
        }],
    );
    assert!(run_recover(&dir, ID).unwrap().is_none());
}

#[test]
fn snapshot_files_without_a_wal_are_an_error() {
    let mut disk = Disk::new(SMALL);
    disk.entries(1, 3, 3);
    disk.snapshot(3, 1, false, true);
    let mut dir = disk.dir.clone();
    for name in dir.list() {
        if name.ends_with(".wal") {
            apply(&mut dir, &[FileOp::Remove { name }]);
        }
    }
    assert!(matches!(
        run_recover(&dir, ID),
        Err(RecoveryError::SnapshotsWithoutWal)
    ));
}

#[test]
fn torn_tail_is_reported_and_repaired() {
    let cfg = WalConfig {
        segment_size_bytes: 8192,
    };
    let mut disk = Disk::new(cfg);
    disk.entries(1, 5, 3);
    // Entries 6 and 7 are written but the power fails before the sync: the last 8 bytes of
    // the write (entry 7's crc and magic) never reach the disk.
    let mut ops = Vec::new();
    disk.wal.append(&Record::Entry(entry(6, 1)), &mut ops);
    disk.wal.append(&Record::Entry(entry(7, 1)), &mut ops);
    disk.wal.flush(&mut ops);
    let [FileOp::WriteAt {
        name,
        offset,
        bytes,
    }] = &ops[..]
    else {
        panic!("one coalesced write expected: {ops:?}");
    };
    let entry7_len =
        raftkv_core::wal::frame::frame_len(Record::Entry(entry(7, 1)).encode_payload().len());
    let torn_at = offset + (bytes.len() - entry7_len) as u64;
    apply(
        &mut disk.dir,
        &[FileOp::WriteAt {
            name: name.clone(),
            offset: *offset,
            bytes: bytes[..bytes.len() - 8].to_vec(),
        }],
    );

    let rec = run_recover(&disk.dir, ID).unwrap().expect("not fresh");
    let torn = rec.report.torn_tail.clone().expect("torn tail reported");
    assert_eq!(torn.segment, *name);
    assert_eq!(torn.offset, torn_at);
    assert_eq!(indexes(&rec.entries), (1..=6).collect::<Vec<_>>());
    assert_eq!(rec.hard_state.commit, 3);

    // The repair a restart performs: recovery's ops, then the writer's resume ops, which cut the
    // file at the torn frame and restore the zeroed preallocation.
    let mut repair = rec.ops.clone();
    let mut wal = WalWriter::resume(ID, cfg, &rec.wal, &mut repair);
    assert!(repair.contains(&FileOp::SetLen {
        name: name.clone(),
        len: torn_at
    }));
    assert!(repair.contains(&FileOp::SetLen {
        name: name.clone(),
        len: 8192
    }));
    assert!(repair.contains(&FileOp::SyncFile { name: name.clone() }));
    apply(&mut disk.dir, &repair);
    assert!(disk.dir.read(name).unwrap()[torn_at as usize..]
        .iter()
        .all(|&b| b == 0));
    let rec = run_recover(&disk.dir, ID).unwrap().unwrap();
    assert!(rec.report.torn_tail.is_none());
    assert_eq!(indexes(&rec.entries), (1..=6).collect::<Vec<_>>());

    // The writer continues exactly where the good data ends.
    let mut ops = Vec::new();
    wal.append(&Record::Entry(entry(7, 1)), &mut ops);
    wal.sync(&mut ops);
    apply(&mut disk.dir, &ops);
    let rec = run_recover(&disk.dir, ID).unwrap().unwrap();
    assert!(rec.report.torn_tail.is_none());
    assert_eq!(indexes(&rec.entries), (1..=7).collect::<Vec<_>>());
}

#[test]
fn corrupt_newest_snapshot_is_set_aside_and_an_older_one_used() {
    let mut disk = Disk::new(SMALL);
    disk.entries(1, 6, 6);
    let older = disk.snapshot(4, 1, false, true);
    disk.entries(7, 10, 10);
    let newest = disk.snapshot(8, 1, false, true);

    let rec = run_recover(&disk.dir, ID).unwrap().unwrap();
    assert_eq!(rec.report.snapshot, Some((1, 8)));
    assert_eq!(indexes(&rec.entries), vec![9, 10]);

    // Bit rot in the newest snapshot file.
    let mut bytes = disk.dir.read(&newest).unwrap().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    disk.dir.overwrite(&newest, bytes).unwrap();

    let rec = run_recover(&disk.dir, ID).unwrap().unwrap();
    let broken = format!("{newest}.broken");
    assert!(rec.ops.contains(&FileOp::Rename {
        from: newest.clone(),
        to: broken.clone()
    }));
    assert_eq!(rec.ops.last(), Some(&FileOp::SyncDir));
    assert_eq!(rec.report.set_aside.len(), 1);
    assert_eq!(rec.report.set_aside[0].0, newest);
    assert_eq!(rec.report.snapshot, Some((1, 4)));
    assert_eq!(rec.state.as_ref().map(KvState::applied_index), Some(4));
    assert_eq!(rec.conf_state, conf());
    assert_eq!(indexes(&rec.entries), (5..=10).collect::<Vec<_>>());
    assert_eq!(rec.hard_state.commit, 10);
    assert!(rec
        .snapshots_on_disk
        .iter()
        .any(|(n, _, i)| *n == older && *i == 4));

    // After the repair the broken file is kept for inspection and ignored.
    apply(&mut disk.dir, &rec.ops);
    let names = disk.dir.list();
    assert!(names.contains(&broken) && !names.contains(&newest));
    let rec = run_recover(&disk.dir, ID).unwrap().unwrap();
    assert!(rec.report.set_aside.is_empty());
    assert_eq!(rec.report.snapshot, Some((1, 4)));
}

#[test]
fn a_file_the_shell_cannot_read_is_an_error_naming_it_and_the_systems_reason() {
    let mut disk = Disk::new(SMALL);
    disk.entries(1, 6, 6);
    let snapshot = disk.snapshot(4, 1, false, true);
    let eio = std::io::Error::from_raw_os_error(5);
    let err = recover(&disk.dir.list(), ID, &mut |n, at, max| {
        if n == snapshot {
            Err((&eio).into())
        } else {
            disk.dir.read_at(n, at, max)
        }
    })
    .expect_err("an unreadable snapshot file is not skipped");
    match &err {
        RecoveryError::Read { name, reason } => {
            assert_eq!(*name, snapshot);
            assert_eq!((reason.kind, reason.os_code), (eio.kind(), Some(5)));
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("cannot read {snapshot}: {eio}"),
        "the system's own words for the failure"
    );
}

#[test]
fn snapshot_without_a_marker_is_removed() {
    let mut disk = Disk::new(SMALL);
    disk.entries(1, 6, 6);
    disk.snapshot(4, 1, false, true);
    disk.entries(7, 12, 12);
    // The crash came after the snapshot file was durable but before its WAL marker.
    let orphan = disk.snapshot(10, 1, false, false);

    let rec = run_recover(&disk.dir, ID).unwrap().unwrap();
    assert_eq!(rec.report.removed_orphan_snapshots, vec![orphan.clone()]);
    assert!(rec.ops.contains(&FileOp::Remove {
        name: orphan.clone()
    }));
    assert_eq!(rec.report.snapshot, Some((1, 4)));
    assert_eq!(indexes(&rec.entries), (5..=12).collect::<Vec<_>>());
    apply(&mut disk.dir, &rec.ops);
    assert!(!disk.dir.list().contains(&orphan));
}

#[test]
fn temp_files_are_removed() {
    let mut disk = Disk::new(SMALL);
    disk.entries(1, 2, 2);
    apply(
        &mut disk.dir,
        &[
            FileOp::Create {
                name: "0000000000000001-0000000000000003.wal.tmp".into(),
                size_bytes: 64,
            },
            FileOp::Create {
                name: format!("{}.tmp", snapfile::file_name(1, 2)),
                size_bytes: 10,
            },
        ],
    );
    let rec = run_recover(&disk.dir, ID).unwrap().unwrap();
    assert_eq!(rec.report.removed_temp_files.len(), 2);
    assert_eq!(rec.ops.last(), Some(&FileOp::SyncDir));
    apply(&mut disk.dir, &rec.ops);
    assert!(disk.dir.list().iter().all(|n| !n.ends_with(".tmp")));
    assert_eq!(indexes(&rec.entries), vec![1, 2]);
}

#[test]
fn wal_of_another_member_is_refused() {
    let mut disk = Disk::new(SMALL);
    disk.entries(1, 3, 3);
    for other in [
        WalIdentity {
            cluster_id: ID.cluster_id,
            node_id: ID.node_id + 1,
        },
        WalIdentity {
            cluster_id: ID.cluster_id + 1,
            node_id: ID.node_id,
        },
    ] {
        match run_recover(&disk.dir, other) {
            Err(RecoveryError::Wal(WalError::WrongMember {
                cluster,
                node,
                found_cluster,
                found_node,
            })) => {
                assert_eq!((cluster, node), (other.cluster_id, other.node_id));
                assert_eq!((found_cluster, found_node), (ID.cluster_id, ID.node_id));
            }
            other => panic!("expected WrongMember, got {other:?}"),
        }
    }
}

/// Regression: a follower receives a snapshot (log_reset marker), appends past a segment cut and
/// restarts. The cut copies the marker into the new segment; replaying that copy must not reset
/// the log a second time (it used to discard the entries before the cut, leaving a gap, so no
/// snapshot could be recovered from).
#[test]
fn received_snapshot_then_cut_recovers() {
    let cfg = WalConfig {
        segment_size_bytes: 1024,
    };
    let mut disk = Disk::new(cfg);
    disk.entries(1, 3, 3);
    let mut ops = Vec::new();
    disk.wal.append(
        &Record::HardState(HardStateRec {
            term: 2,
            vote: 1,
            commit: 100,
        }),
        &mut ops,
    );
    apply(&mut disk.dir, &ops);
    disk.snapshot(100, 2, true, true);
    let seq_before = disk.wal.current_seq();
    let mut next = 101;
    while disk.wal.current_seq() == seq_before || next < 130 {
        disk.entries(next, next, next);
        next += 1;
    }
    let rec = run_recover(&disk.dir, ID).unwrap().unwrap();
    assert_eq!(rec.report.snapshot, Some((2, 100)));
    assert_eq!(indexes(&rec.entries), (101..next).collect::<Vec<_>>());

    // The writer resumes at the true last index, so the next cut names the right first index.
    let mut ops = Vec::new();
    let wal = WalWriter::resume(ID, cfg, &rec.wal, &mut ops);
    assert_eq!(wal.last_index(), next - 1);

    let all = read_segments(
        &disk
            .dir
            .list()
            .into_iter()
            .filter(|n| n.ends_with(".wal"))
            .map(|n| {
                let b = disk.dir.read(&n).unwrap().to_vec();
                (n, b)
            })
            .collect::<Vec<_>>(),
    )
    .unwrap();
    // Only the original marker resets the log; its copies at cuts do not.
    let resets: Vec<bool> = all.markers().map(|(_, m)| m.log_reset).collect();
    assert!(resets.len() >= 2, "{resets:?}");
    assert_eq!(resets.iter().filter(|&&r| r).count(), 1, "{resets:?}");
}

/// Regression: entries overwritten from below a later snapshot's index are not resurrected.
#[test]
fn conflict_below_snapshot_index_does_not_resurrect_entries() {
    let mut disk = Disk::new(SMALL);
    disk.entries(1, 10, 4);
    let mut ops = Vec::new();
    for i in 5..=7 {
        disk.wal.append(
            &Record::Entry(EntryRec {
                term: 2,
                ..entry(i, 2)
            }),
            &mut ops,
        );
    }
    disk.wal.append(
        &Record::HardState(HardStateRec {
            term: 2,
            vote: 1,
            commit: 7,
        }),
        &mut ops,
    );
    disk.wal.sync(&mut ops);
    apply(&mut disk.dir, &ops);
    disk.snapshot(7, 2, false, true);
    let rec = run_recover(&disk.dir, ID).unwrap().unwrap();
    assert_eq!(rec.report.snapshot, Some((2, 7)));
    assert!(
        rec.entries.is_empty(),
        "entries 8..=10 of term 1 were overwritten: {:?}",
        indexes(&rec.entries)
    );
}

/// A snapshot received from the leader, marked, and then the job failed before the HardState
/// that commits it was written (ENOSPC on the segment cut that followed, found by the
/// simulator): the marker discards the older log, so the snapshot is the only way back, and a
/// marked snapshot is committed by construction.
#[test]
fn a_marked_snapshot_without_its_hard_state_is_recovered_and_commits() {
    let mut disk = Disk::new(WalConfig::default());
    disk.entries(1, 10, 10);
    disk.snapshot(40, 2, true, true);
    let rec = run_recover(&disk.dir, ID).unwrap().expect("not fresh");
    assert_eq!(rec.report.snapshot, Some((2, 40)));
    assert!(rec.hard_state.commit >= 40, "{:?}", rec.hard_state);
    assert!(rec.entries.is_empty());
}

/// A process that stopped between a write and its fsync leaves the write in the page cache:
/// the restart reads it back (and its node would acknowledge it), so the first job must make
/// it durable before a power loss can take it. The simulator found a follower that did not.
#[test]
fn what_a_stopped_process_left_unsynced_is_made_durable_by_recovery_ops() {
    // Small segments: the unsynced records span a cut, so an older segment holds some too.
    let cfg = WalConfig {
        segment_size_bytes: 1024,
    };
    let mut d = Disk::new(cfg);
    d.entries(1, 10, 10);
    let mut ops = Vec::new();
    for i in 11..=200 {
        d.wal.append(&Record::Entry(entry(i, 1)), &mut ops);
    }
    d.wal.flush(&mut ops);
    // Every write of the job ran; none of its syncs did.
    let writes: Vec<FileOp> = ops.into_iter().filter(|op| !op.is_sync()).collect();
    apply(&mut d.dir, &writes);
    d.dir.crash(CrashKind::Process, &mut |_| 0);
    let rec = run_recover(&d.dir, ID).unwrap().unwrap();
    assert_eq!(indexes(&rec.entries), (1..=200).collect::<Vec<_>>());
    assert!(rec.wal.segments.len() > 2, "the records span segments");
    apply(&mut d.dir, &rec.ops);
    // A power loss that drops every unsynced sector.
    d.dir.crash(CrashKind::PowerLoss, &mut |_| 1);
    let again = run_recover(&d.dir, ID).unwrap().unwrap();
    assert_eq!(
        indexes(&again.entries),
        (1..=200).collect::<Vec<_>>(),
        "what the first recovery read was lost"
    );
}

#[test]
fn a_snapshot_is_read_in_pieces_and_its_state_decoded_as_they_pass() {
    let mut disk = Disk::new(SMALL);
    disk.entries(1, 6, 6);
    let mut kv = KvState::default();
    for i in 1..=3000u64 {
        let put = Command::Put {
            key: format!("key-{i:05}").into_bytes(),
            value: vec![i as u8; 1024].into(),
        };
        kv.apply_command(i, None, &put);
    }
    let name = disk.snapshot_of(4, 1, false, true, kv.encode_snapshot());
    let file_len = disk.dir.read(&name).unwrap().len();
    assert!(
        file_len > 2 * LOAD_PIECE_BYTES,
        "the file spans several pieces"
    );

    let mut largest_read = 0;
    let mut read_bytes = 0;
    let rec = recover(&disk.dir.list(), ID, &mut |n, at, max| {
        if n == name {
            largest_read = largest_read.max(max);
            let piece = disk.dir.read_at(n, at, max)?;
            read_bytes += piece.len();
            return Ok(piece);
        }
        disk.dir.read_at(n, at, max)
    })
    .unwrap()
    .unwrap();
    assert_eq!(
        largest_read, LOAD_PIECE_BYTES,
        "never asked for more than a piece"
    );
    assert_eq!(read_bytes, file_len, "the file was read once");
    assert_eq!(rec.snapshot_file_bytes, file_len as u64);
    assert_eq!(rec.state.map(|s| s.hash()), Some(kv.hash()));
    assert_eq!(rec.report.snapshot, Some((1, 4)));
}

#[test]
fn an_intact_snapshot_whose_state_does_not_decode_is_refused_not_set_aside() {
    let mut disk = Disk::new(SMALL);
    disk.entries(1, 6, 6);
    disk.snapshot(2, 1, false, true);
    // Checksummed and framed correctly, but not a state this raftkv can read (a newer format).
    let newest = disk.snapshot_of(4, 1, false, true, vec![99, 1, 2, 3]);
    match run_recover(&disk.dir, ID) {
        Err(RecoveryError::UndecodableSnapshot { name, .. }) => assert_eq!(name, newest),
        other => panic!("expected an undecodable snapshot, got {other:?}"),
    }
}

#[test]
fn the_wal_is_read_in_pieces_each_segment_once_and_each_entry_held_once() {
    // Segments larger than a piece, as the default 64 MiB ones are, with entries of 64 KiB.
    let cfg = WalConfig {
        segment_size_bytes: 3 << 20,
    };
    let mut disk = Disk::new(cfg);
    let mut written = Vec::new();
    for i in 1..=100u64 {
        let mut ops = Vec::new();
        let e = EntryRec {
            data: vec![i as u8; 64 << 10],
            ..entry(i, 1)
        };
        disk.wal.append(&Record::Entry(e.clone()), &mut ops);
        written.push(e);
        if i % 10 == 0 {
            let hs = HardStateRec {
                term: 1,
                vote: 1,
                commit: i,
            };
            disk.wal.append(&Record::HardState(hs), &mut ops);
        }
        disk.wal.sync(&mut ops);
        apply(&mut disk.dir, &ops);
    }
    let segments: Vec<String> = disk
        .dir
        .list()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    assert!(segments.len() >= 3, "the log spans segments");

    let mut largest_read = 0;
    let mut read_bytes = std::collections::BTreeMap::<String, usize>::new();
    let rec = recover(&disk.dir.list(), ID, &mut |n, at, max| {
        largest_read = largest_read.max(max);
        let piece = disk.dir.read_at(n, at, max)?;
        *read_bytes.entry(n.to_string()).or_default() += piece.len();
        Ok(piece)
    })
    .unwrap()
    .unwrap();
    assert!(
        largest_read <= LOAD_PIECE_BYTES,
        "asked for {largest_read} bytes at once"
    );
    for name in &segments {
        assert_eq!(
            read_bytes.get(name).copied(),
            Some(disk.dir.read(name).unwrap().len()),
            "{name} is read once, to its end"
        );
    }
    assert_eq!(rec.entries, written);
    // The entries' bytes moved out of the WAL's records; what is left resumes the writer.
    let held: usize = rec
        .wal
        .records
        .iter()
        .map(|l| match &l.record {
            Record::Entry(e) => e.data.len() + 1,
            _ => 0,
        })
        .sum();
    // A run of entries ends at a HardState (10 of them) or a segment's end.
    let runs = 10 + segments.len();
    assert!(
        held <= runs,
        "{held}: the records keep no entry bytes, one entry per run"
    );
    let mut ops = Vec::new();
    let wal = WalWriter::resume(ID, cfg, &rec.wal, &mut ops);
    assert_eq!(wal.last_index(), 100);
    assert_eq!(rec.hard_state.commit, 100);
}
