//! Encoding byte fields as bytes (see `as_bytes`) must not change a single byte of the formats.

use raftkv_core::command::{Command, Proposal, RequestId};
use raftkv_core::wal::{EntryKind, EntryRec, Record};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize)]
struct OldEntry {
    index: u64,
    term: u64,
    kind: EntryKind,
    data: Vec<u8>,
    context: Vec<u8>,
}
#[derive(Serialize)]
enum OldCmd {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}
#[derive(Serialize)]
struct OldProp {
    request_id: Option<RequestId>,
    command: OldCmd,
}

#[test]
fn same_bytes() {
    for n in [0usize, 1, 5, 127, 128, 300, 4096, 70000] {
        let data: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
        let e = EntryRec {
            index: 300,
            term: 2,
            kind: EntryKind::Normal,
            data: data.clone(),
            context: data[..n / 2].to_vec(),
        };
        let o = OldEntry {
            index: 300,
            term: 2,
            kind: EntryKind::Normal,
            data: data.clone(),
            context: data[..n / 2].to_vec(),
        };
        let new = Record::Entry(e.clone()).encode_payload();
        assert_eq!(new, postcard::to_allocvec(&o).unwrap());
        assert_eq!(
            Record::decode_payload(raftkv_core::wal::record::RecordType::Entry, &new),
            Some(Record::Entry(e))
        );
        let p = Proposal {
            request_id: Some(RequestId {
                client: 9,
                seq: 400,
            }),
            command: Command::Put {
                key: data[..n / 3].to_vec(),
                value: data.clone().into(),
            },
        };
        let op = OldProp {
            request_id: Some(RequestId {
                client: 9,
                seq: 400,
            }),
            command: OldCmd::Put {
                key: data[..n / 3].to_vec(),
                value: data.clone(),
            },
        };
        let mut want = vec![1u8];
        want.extend(postcard::to_allocvec(&op).unwrap());
        assert_eq!(p.encode(), want);
        assert_eq!(Proposal::decode(&want), Some(p));
        let d = Proposal {
            request_id: None,
            command: Command::Delete { key: data.clone() },
        };
        let od = OldProp {
            request_id: None,
            command: OldCmd::Delete { key: data.clone() },
        };
        let mut want = vec![1u8];
        want.extend(postcard::to_allocvec(&od).unwrap());
        assert_eq!(d.encode(), want);
    }
    // KvState: compare against a mirror with plain maps.
    #[derive(Serialize)]
    struct Sess {
        last_seq: u64,
        result: raftkv_core::kv::WriteResult,
        last_index: u64,
    }
    #[derive(Serialize)]
    struct OldKv {
        data: BTreeMap<Vec<u8>, Vec<u8>>,
        members: BTreeMap<u64, String>,
        removed: std::collections::BTreeSet<u64>,
        sessions: BTreeMap<u64, Sess>,
        applied_index: u64,
        /// Snapshot format 2 appended the recorded incarnations.
        incarnations: BTreeMap<u64, u64>,
        learners: BTreeMap<u64, bool>,
    }
    let mut kv = raftkv_core::kv::KvState::with_members([(1, "a".to_string())].into());
    let mut old = OldKv {
        data: BTreeMap::new(),
        members: [(1, "a".to_string())].into(),
        removed: Default::default(),
        sessions: BTreeMap::new(),
        applied_index: 0,
        incarnations: BTreeMap::new(),
        learners: BTreeMap::new(),
    };
    for i in 1..200u64 {
        let k = format!("k{i}").into_bytes();
        let v = vec![i as u8; (i * 13) as usize];
        kv.apply_command(
            i,
            None,
            &Command::Put {
                key: k.clone(),
                value: v.clone().into(),
            },
        );
        old.data.insert(k, v);
        old.applied_index = i;
    }
    // Format 2 files (written before snapshots were streamed, format 3) still decode.
    let mut want = vec![2u8];
    want.extend(postcard::to_allocvec(&old).unwrap());
    assert_eq!(
        raftkv_core::kv::KvState::decode_snapshot(&want).unwrap(),
        kv
    );
}
