//! Writes the seed corpus for the fuzz targets in `fuzz/`:
//!
//! ```text
//! cargo run -p raftkv-e2e --example gen_fuzz_corpus [-- OUT_DIR]
//! ```
//!
//! OUT_DIR defaults to `fuzz/corpus` of this repository; one sub-directory per target. Seeds are
//! small valid inputs made by the real encoders (plus a torn and a zero-padded variant), so the
//! fuzzers start past the checksums. Output is deterministic.

use raftkv_core::snapfile::{self, SnapshotFile, SnapshotMeta};
use raftkv_core::wal::frame::{encode_frame, segment_seed};
use raftkv_core::wal::record::FORMAT_VERSION;
use raftkv_core::wal::{
    ConfStateRec, EntryKind, EntryRec, HardStateRec, Record, SegmentHeader, SnapshotMarker,
};
use std::path::{Path, PathBuf};

fn conf() -> ConfStateRec {
    ConfStateRec {
        voters: vec![1, 2, 3],
        learners: vec![4],
        voters_outgoing: vec![1, 2, 300],
        learners_next: vec![],
        auto_leave: true,
    }
}

fn records() -> Vec<Record> {
    let kinds = [
        EntryKind::Normal,
        EntryKind::ConfChange,
        EntryKind::ConfChangeV2,
    ];
    let mut out = Vec::new();
    for i in 1..=6u64 {
        out.push(Record::Entry(EntryRec {
            index: i,
            term: 1 + i / 4,
            kind: kinds[(i % 3) as usize],
            data: format!("put k{i} = v{i}").into_bytes(),
            context: if i % 2 == 0 { vec![i as u8; 3] } else { vec![] },
        }));
    }
    out.push(Record::HardState(HardStateRec {
        term: 2,
        vote: 3,
        commit: 5,
    }));
    out.push(Record::Snapshot(SnapshotMarker {
        index: 4,
        term: 2,
        conf_state: conf(),
        log_reset: false,
    }));
    out.push(Record::Snapshot(SnapshotMarker {
        index: 200,
        term: 3,
        conf_state: conf(),
        log_reset: true,
    }));
    out.push(Record::Entry(EntryRec {
        index: 201,
        term: u64::MAX,
        kind: EntryKind::Normal,
        data: vec![0; 40],
        context: vec![],
    }));
    out
}

fn header() -> SegmentHeader {
    SegmentHeader {
        format_version: FORMAT_VERSION,
        cluster_id: 0x2a,
        node_id: 1,
        seq: 0,
        first_index: 0,
        prev_crc: 0,
    }
}

/// Segment 0 named `0000000000000000-0000000000000000.wal`: header then `records`.
fn segment(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut crc = encode_frame(&Record::SegmentHeader(header()), segment_seed(0), &mut out);
    for r in records {
        crc = encode_frame(r, crc, &mut out);
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus"));
    let dirs = [
        "wal_segment",
        "wal_frame_fixup",
        "snapshot_file",
        "peer_frame",
        "identity_file",
        "snapshot_payload",
    ]
    .map(|t| root.join(t));
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
    let [seg_dir, frame_dir, snap_dir, peer_dir, id_dir, payload_dir] = &dirs;
    let recs = records();

    // wal_segment: whole segments.
    write(seg_dir, "header-only", &segment(&[]));
    let full = segment(&recs);
    write(seg_dir, "records", &full);
    let mut padded = full.clone();
    padded.resize(1024, 0); // preallocated space
    write(seg_dir, "records-preallocated", &padded);
    let mut torn = full.clone();
    let keep = torn.len() - 8;
    torn[keep..].fill(0); // the last frame's trailer never reached the disk
    torn.resize(1024, 0);
    write(seg_dir, "records-torn", &torn);
    for (i, r) in recs.iter().enumerate() {
        write(
            seg_dir,
            &format!("one-{i}"),
            &segment(std::slice::from_ref(r)),
        );
    }

    // wal_frame_fixup: type byte, previous crc, payload.
    let mut all = recs.clone();
    all.push(Record::SegmentHeader(header()));
    for (i, r) in all.iter().enumerate() {
        let mut seed = vec![r.record_type() as u8];
        seed.extend_from_slice(&(0x1234_5678u32 ^ i as u32).to_le_bytes());
        seed.extend_from_slice(&r.encode_payload());
        write(frame_dir, &format!("record-{i}"), &seed);
    }

    // snapshot_file: whole files.
    for (i, (index, term, data)) in [
        (0u64, 0u64, Vec::new()),
        (42, 3, b"{\"k\":\"v\"}".to_vec()),
        (u64::MAX, 1 << 40, vec![0xa5; 300]),
    ]
    .into_iter()
    .enumerate()
    {
        let file = SnapshotFile {
            meta: SnapshotMeta {
                index,
                term,
                conf_state: if i == 0 {
                    ConfStateRec::default()
                } else {
                    conf()
                },
            },
            data,
        };
        write(snap_dir, &format!("snapshot-{i}"), &snapfile::encode(&file));
    }
    // peer_frame: one frame of each kind.
    let sender = raftkv_core::msgcodec::Sender {
        cluster_id: 0x51,
        id: 1,
        incarnation: 0xABCD,
        addr: "http://127.0.0.1:12379",
    };
    let to = raftkv_core::msgcodec::Recipient {
        id: 2,
        incarnation: 0x1234,
    };
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
    m.from = 1;
    m.to = 2;
    m.term = 3;
    m.index = 7;
    m.commit = 6;
    m.entries = vec![raft::eraftpb::Entry {
        index: 8,
        term: 3,
        data: b"x".to_vec().into(),
        ..Default::default()
    }]
    .into();
    write(
        peer_dir,
        "append",
        &raftkv_core::msgcodec::encode(&sender, to.incarnation, &m),
    );
    m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    m.entries = Vec::new().into();
    write(
        peer_dir,
        "heartbeat",
        &raftkv_core::msgcodec::encode(&sender, 0, &m),
    );
    write(
        peer_dir,
        "removed",
        &raftkv_core::msgcodec::encode_removed(&sender, to),
    );
    write(
        peer_dir,
        "refused",
        &raftkv_core::msgcodec::encode_refused(
            &sender,
            to,
            raftkv_core::msgcodec::Refusal::StaleIncarnation { recorded: 9 },
        ),
    );

    // A chunk of a snapshot file and its acknowledgement.
    let mut kv = raftkv_core::kv::KvState::with_members([(1, sender.addr.to_string())].into());
    for i in 1..=20u64 {
        let rid = raftkv_core::command::RequestId {
            client: i % 3,
            seq: i,
        };
        let cmd = raftkv_core::command::Command::Put {
            key: format!("key{i}").into_bytes(),
            value: vec![i as u8; i as usize].into(),
        };
        kv.apply_command(i, Some(rid), &cmd);
    }
    let payload = kv.encode_snapshot();
    let meta = SnapshotMeta {
        index: 20,
        term: 3,
        conf_state: conf(),
    };
    let file = snapfile::encode(&SnapshotFile {
        meta: meta.clone(),
        data: payload.clone(),
    });
    let key = raftkv_core::transfer::SnapKey {
        term: 3,
        index: 20,
        file_bytes: file.len() as u64,
    };
    let mut snap = raft::eraftpb::Snapshot {
        data: snapfile::descriptor(key.file_bytes).into(),
        ..Default::default()
    };
    snap.mut_metadata().index = 20;
    snap.mut_metadata().term = 3;
    snap.mut_metadata()
        .set_conf_state(raftkv_core::convert::rec_to_cs(&meta.conf_state));
    let mut sm = raft::eraftpb::Message::default();
    sm.set_msg_type(raft::eraftpb::MessageType::MsgSnapshot);
    sm.from = 1;
    sm.to = 2;
    sm.term = 3;
    sm.set_snapshot(snap);
    write(
        peer_dir,
        "snapshot-chunk",
        &raftkv_core::msgcodec::encode_chunk(&sender, 0, &sm, key, 0, file[..64].to_vec()),
    );
    let ack = raftkv_core::transfer::Ack {
        key,
        received: 64,
        status: raftkv_core::transfer::AckStatus::Progress,
    };
    write(
        peer_dir,
        "snapshot-ack",
        &raftkv_core::msgcodec::encode_ack(&sender, to, ack),
    );

    // snapshot_payload: a split byte, then a state-machine payload.
    for (i, split) in [0u8, 100, 255].into_iter().enumerate() {
        let mut seed = vec![split];
        seed.extend_from_slice(&payload);
        write(payload_dir, &format!("payload-{i}"), &seed);
    }
    let mut seed = vec![7u8];
    seed.extend_from_slice(&raftkv_core::kv::KvState::default().encode_snapshot());
    write(payload_dir, "payload-empty", &seed);

    // identity_file: a new cluster member's and a joiner's.
    for (i, cluster_id) in [0x51u64, 0].into_iter().enumerate() {
        let id = raftkv_core::identity::Identity {
            format_version: raftkv_core::identity::DATA_DIR_FORMAT,
            cluster_id,
            node_id: 3,
            incarnation: 0xFEED + i as u64,
            token_hash: raftkv_core::identity::token_hash("raftkv"),
        };
        write(id_dir, &format!("identity-{i}"), &id.encode());
    }
    println!("seed corpus written under {}", root.display());
}
