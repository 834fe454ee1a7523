//! Shared fixtures for the criterion benchmarks: realistic entries and data directories built by
//! the real writers (`WalWriter`, `snapfile`) and executed on a `MemDir`.
#![allow(dead_code)] // each bench uses a subset

use raftkv_core::command::{Command, Proposal, RequestId};
use raftkv_core::fileop::FileOp;
use raftkv_core::memdir::MemDir;
use raftkv_core::snapfile::{self, SnapshotFile, SnapshotMeta};
use raftkv_core::wal::{
    ConfStateRec, EntryKind, EntryRec, HardStateRec, Record, SnapshotMarker, WalConfig,
    WalIdentity, WalWriter,
};

pub const ID: WalIdentity = WalIdentity {
    cluster_id: 0x5eed_cafe,
    node_id: 1,
};

/// Clients issuing requests in the fixtures (request ids are `(client, seq)`).
pub const CLIENTS: u64 = 64;

/// A 10-byte key: `k` and nine decimal digits.
pub fn key(i: u64) -> Vec<u8> {
    format!("k{:09}", i % 1_000_000_000).into_bytes()
}

/// A deterministic value of `len` bytes (not all one byte, so nothing is suspiciously
/// compressible; our encodings do not compress anyway).
pub fn value(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| b'a' + ((i as usize).wrapping_mul(31).wrapping_add(j) % 26) as u8)
        .collect()
}

/// A put with a request id, the way a client write reaches the log.
pub fn put_proposal(i: u64, value_len: usize) -> Proposal {
    Proposal {
        request_id: Some(RequestId {
            client: 1 + i % CLIENTS,
            seq: 1 + i / CLIENTS,
        }),
        command: Command::Put {
            key: key(i),
            value: value(i, value_len).into(),
        },
    }
}

/// A normal raft entry carrying our `Proposal` encoding of a put (raft's `context` is empty for
/// client writes).
pub fn put_entry(index: u64, term: u64, value_len: usize) -> EntryRec {
    EntryRec {
        index,
        term,
        kind: EntryKind::Normal,
        data: put_proposal(index, value_len).encode(),
        context: Vec::new(),
    }
}

pub fn conf() -> ConfStateRec {
    ConfStateRec {
        voters: vec![1, 2, 3],
        ..ConfStateRec::default()
    }
}

pub fn apply(dir: &mut MemDir, ops: &[FileOp]) {
    for op in ops {
        dir.apply(op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
}

/// Sum of the bytes handed out in `WriteAt`s.
pub fn written_bytes(ops: &[FileOp]) -> u64 {
    ops.iter()
        .map(|op| match op {
            FileOp::WriteAt { bytes, .. } => bytes.len() as u64,
            _ => 0,
        })
        .sum()
}

/// The segment files of `dir` as `read_segments` takes them.
pub fn segment_files(dir: &MemDir) -> Vec<(String, Vec<u8>)> {
    dir.list()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .map(|n| {
            let bytes = dir.read(&n).expect("listed").to_vec();
            (n, bytes)
        })
        .collect()
}

/// A data directory the way a bootstrapped node leaves it after `entries` client writes of
/// `value_len`-byte values: the initial snapshot at (index 1, term 1) and its marker, then
/// entries `2..=entries + 1` at term 2 written in group-commit batches of `batch` entries, each
/// batch followed by a HardState committing it. The bytes are those of a sync per batch; only the
/// final sync is issued here, because `MemDir` models a sync by copying the whole file.
pub fn data_dir(entries: u64, value_len: usize, cfg: WalConfig, batch: u64) -> MemDir {
    let mut dir = MemDir::new();
    let mut ops = Vec::new();
    let mut wal = WalWriter::create(ID, cfg, 2, &mut ops);
    let file = SnapshotFile {
        meta: SnapshotMeta {
            index: 1,
            term: 1,
            conf_state: conf(),
        },
        data: raftkv_core::kv::KvState::default().encode_snapshot(),
    };
    snapfile::write_ops(&file, &mut ops);
    wal.append(
        &Record::Snapshot(SnapshotMarker {
            index: 1,
            term: 1,
            conf_state: conf(),
            log_reset: true,
        }),
        &mut ops,
    );
    wal.append(
        &Record::HardState(HardStateRec {
            term: 1,
            vote: 0,
            commit: 1,
        }),
        &mut ops,
    );
    wal.sync(&mut ops);
    apply(&mut dir, &ops);
    let last = entries + 1;
    let mut next = 2;
    while next <= last {
        ops.clear();
        let end = (next + batch - 1).min(last);
        for i in next..=end {
            wal.append(&Record::Entry(put_entry(i, 2, value_len)), &mut ops);
        }
        wal.append(
            &Record::HardState(HardStateRec {
                term: 2,
                vote: 1,
                commit: end,
            }),
            &mut ops,
        );
        wal.flush(&mut ops);
        apply(&mut dir, &ops);
        next = end + 1;
    }
    ops.clear();
    wal.sync(&mut ops);
    apply(&mut dir, &ops);
    dir
}
