//! A crash inside a node's very first disk job (identity file, first WAL segment, bootstrap
//! snapshot, its marker and HardState) leaves a directory the node starts from as the member it
//! was meant to be: it elects a leader and serves a write, at every point the crash can come.

mod harness;

use harness::{addr, base_config, boot_from, Cluster, TOKEN};
use raftkv_core::boot::StartFlags;
use raftkv_core::memdir::{CrashKind, MemDir};
use raftkv_core::node::Action;
use std::collections::BTreeMap;

/// The first disk job of a new cluster's node `id` of `n`.
fn first_job_ops(n: u64, id: u64) -> Vec<raftkv_core::fileop::FileOp> {
    let flags = StartFlags {
        peers: (1..=n).map(|i| (i, addr(i))).collect::<BTreeMap<_, _>>(),
        token: TOKEN.into(),
        join: false,
    };
    let mut node = boot_from(&base_config(id, 1), &flags, &MemDir::new()).expect("boots");
    node.drain()
        .into_iter()
        .find_map(|a| match a {
            Action::Disk(job) => Some(job.ops),
            _ => None,
        })
        .expect("a first disk job")
}

#[test]
fn a_single_member_started_again_after_a_crash_at_any_point_of_its_first_job_elects_itself() {
    let ops = first_job_ops(1, 1);
    for k in 0..=ops.len() {
        // A process crash after the first k ops: what they wrote stays (a power loss keeps
        // less, and only what a sync made durable; this is the most a crash can leave).
        let mut dir = MemDir::new();
        for op in &ops[..k] {
            dir.apply(op).unwrap();
        }
        let mut c = Cluster::new(1, 3);
        c.crash(1, CrashKind::Process);
        c.nodes.get_mut(&1).unwrap().dir = dir;
        c.restart(1);
        c.run_until(300, "a leader", |c| c.leader().is_some());
        c.put("after", "crash");
        assert_eq!(
            c.get("after").as_deref(),
            Some(&b"crash"[..]),
            "crash after op {k} of {}",
            ops.len()
        );
    }
}

#[test]
fn a_new_cluster_whose_members_all_crash_inside_their_first_jobs_starts_after_all() {
    let firsts: Vec<_> = (1..=3).map(|id| first_job_ops(3, id)).collect();
    let longest = firsts.iter().map(Vec::len).max().unwrap();
    for k in 0..=longest {
        for kind in [CrashKind::Process, CrashKind::PowerLoss] {
            let mut c = Cluster::new(3, 11 + k as u64);
            for (i, ops) in firsts.iter().enumerate() {
                let id = i as u64 + 1;
                c.crash(id, CrashKind::Process);
                let mut dir = MemDir::new();
                for op in &ops[..k.min(ops.len())] {
                    dir.apply(op).unwrap();
                }
                // A power loss keeps only what a sync made durable, plus any of the rest.
                let mut draws = raftkv_core::rng::Rng::new(k as u64 * 3 + id);
                dir.crash(kind, &mut |n| draws.below(n));
                c.nodes.get_mut(&id).unwrap().dir = dir;
            }
            for id in 1..=3 {
                c.restart(id);
            }
            c.run_until(600, "a leader", |c| c.leader().is_some());
            c.put("after", "crash");
            assert_eq!(
                c.get("after").as_deref(),
                Some(&b"crash"[..]),
                "all three crashed ({kind:?}) after op {k} of their first jobs"
            );
        }
    }
}
