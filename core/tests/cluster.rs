//! The replicated node under the pure in-process harness: elections, replication, leader loss,
//! snapshots and compaction, snapshot transfer, membership, restarts from file bytes, bounds,
//! and determinism of the whole trace.

mod harness;

use harness::Cluster;
use raftkv_core::command::RequestId;
use raftkv_core::compaction::{write_limit_bytes, LOG_SHARE_OF_STATE};
use raftkv_core::health::NotReady;
use raftkv_core::kv::WriteResult;
use raftkv_core::memdir::CrashKind;
use raftkv_core::node::{ClientError, ClientOp, ClientReply};
use std::collections::BTreeSet;

fn put_op(k: &str, v: &str) -> ClientOp {
    ClientOp::Put {
        key: k.into(),
        value: v.into(),
    }
}

#[test]
fn three_and_five_nodes_elect_one_leader_and_replicate() {
    for n in [3, 5] {
        let mut c = Cluster::new(n, 7);
        let leader = c.wait_leader();
        for i in 0..20 {
            c.put(&format!("k{i}"), &format!("v{i}"));
        }
        c.wait_converged(200);
        for id in c.up_ids() {
            assert_eq!(
                c.node(id).kv().get(b"k19"),
                Some(&b"v19"[..]),
                "node {id} of {n}"
            );
        }
        let leaders = c
            .up_ids()
            .into_iter()
            .filter(|&id| c.node(id).status().role == raft::StateRole::Leader)
            .count();
        assert_eq!(leaders, 1);
        assert_eq!(c.get("k3"), Some(b"v3".to_vec()));
        let _ = leader;
    }
}

#[test]
fn followers_forward_to_the_leader_and_serve_local_reads() {
    let mut c = Cluster::new(3, 11);
    let leader = c.wait_leader();
    c.put("a", "1");
    c.wait_converged(200);
    let follower = c.up_ids().into_iter().find(|&id| id != leader).unwrap();
    let h = c.submit(follower, put_op("b", "2"), None);
    assert_eq!(
        c.wait_reply(h),
        Ok(ClientReply::Written(WriteResult::Put { existed: false }))
    );
    let h = c.submit(follower, ClientOp::Get { key: b"b".to_vec() }, None);
    assert_eq!(
        c.wait_reply(h),
        Ok(ClientReply::Value(Some(b"2".to_vec()))),
        "linearizable read via a follower"
    );
    let h = c.submit(follower, ClientOp::GetLocal { key: b"a".to_vec() }, None);
    assert_eq!(c.wait_reply(h), Ok(ClientReply::Value(Some(b"1".to_vec()))));
    // With the leader cut off, the forward cannot be sent: the follower says so at once, as a
    // definite failure (not a timeout with an unknown outcome), and the write never applies.
    c.isolated.insert(leader);
    let h = c.submit(follower, put_op("c", "3"), None);
    let before = c.now_steps();
    let err = c.wait_reply(h).unwrap_err();
    assert_eq!(err, ClientError::LeaderUnreachable { leader });
    assert!(!err.outcome_unknown());
    assert!(
        c.now_steps() - before <= 2,
        "answered without waiting out the deadline"
    );
    c.isolated.clear();
    c.wait_converged(200);
    let h = c.submit(follower, ClientOp::Get { key: b"c".to_vec() }, None);
    assert_eq!(c.wait_reply(h), Ok(ClientReply::Value(None)));
}

/// Brings a 3-node cluster to the point where `survivor` is alone and knows no leader (the other
/// two stopped); returns the survivor.
fn leaderless_survivor(c: &mut Cluster) -> u64 {
    let leader = c.wait_leader();
    c.put("a", "1");
    c.wait_converged(200);
    let survivor = c.up_ids().into_iter().find(|&id| id != leader).unwrap();
    for id in c.up_ids() {
        if id != survivor {
            c.stop_node(id);
        }
    }
    c.run_until(200, "the survivor forgets its leader", |c| {
        c.node(survivor).status().leader_id == 0
    });
    survivor
}

#[test]
fn a_request_that_finds_no_leader_is_held_about_an_election_then_answered_definitely() {
    let mut c = Cluster::new(3, 21);
    let survivor = leaderless_survivor(&mut c);
    let hold = raftkv_core::node::no_leader_hold_ticks(&c.nodes[&survivor].cfg);
    let before = c.now_steps();
    let h = c.submit(survivor, put_op("held", "x"), None);
    let err = c.wait_reply(h).unwrap_err();
    let waited = c.now_steps() - before;
    assert!(
        matches!(err, ClientError::NoLeader { waited_ticks } if waited_ticks == hold),
        "{err:?}"
    );
    assert!(!err.outcome_unknown(), "never proposed: a definite answer");
    // Held for the election (a leader could have appeared), but well short of its deadline
    // (the harness gives requests 50 ticks).
    assert_eq!(
        waited, hold,
        "answered after the hold, not before nor at the deadline"
    );
    assert!(hold < 50);
    // And it stays unapplied once a leader is back.
    for id in [1, 2, 3] {
        if !c.is_up(id) {
            c.restart(id);
        }
    }
    c.wait_converged(500);
    assert_eq!(
        c.get("held"),
        None,
        "a definite failure was applied after all"
    );
    assert_eq!(c.get("a"), Some(b"1".to_vec()));
}

#[test]
fn a_request_held_for_a_leader_goes_through_when_one_is_elected_within_the_hold() {
    let mut c = Cluster::new(3, 21);
    let survivor = leaderless_survivor(&mut c);
    let h = c.submit(survivor, put_op("b", "2"), None);
    // A peer comes back at once: an election completes within the hold.
    let other = [1, 2, 3].into_iter().find(|&id| !c.is_up(id)).unwrap();
    c.restart(other);
    assert_eq!(
        c.wait_reply(h),
        Ok(ClientReply::Written(WriteResult::Put { existed: false }))
    );
}

#[test]
fn a_stopping_node_answers_proposed_requests_unknown_and_the_rest_definitely() {
    let mut c = Cluster::new(3, 22);
    let leader = c.wait_leader();
    // Cut off, the leader's proposal cannot commit: it stays pending. It is shut down before
    // check-quorum could make it step down (which answers the proposal `LeaderChanged`).
    c.isolated.insert(leader);
    let proposed = c.submit(leader, put_op("p", "1"), None);
    c.run(2);
    assert!(
        c.node(leader).status().role == raft::StateRole::Leader,
        "the isolated leader still leads two ticks on"
    );
    assert!(!c.replies.contains_key(&proposed));
    c.shut_down(leader);
    let follower = c.up_ids().into_iter().find(|&id| id != leader).unwrap();
    let other = c
        .up_ids()
        .into_iter()
        .find(|&id| id != leader && id != follower)
        .unwrap();
    c.stop_node(other);
    c.run_until(200, "the follower forgets its leader", |c| {
        c.node(follower).status().leader_id == 0
    });
    // Held for a leader on the follower, never proposed.
    let held = c.submit(follower, put_op("q", "1"), None);
    assert!(!c.replies.contains_key(&held));
    c.shut_down(follower);
    let proposed = c.replies.remove(&proposed).expect("answered at shutdown");
    let held = c.replies.remove(&held).expect("answered at shutdown");
    assert_eq!(proposed, Err(ClientError::StoppedWhilePending));
    assert!(proposed.unwrap_err().outcome_unknown());
    assert_eq!(held, Err(ClientError::Stopped));
    assert!(!held.unwrap_err().outcome_unknown());
    // After shutting down, a new request is refused at once, definitely.
    let late = c.submit(follower, put_op("r", "1"), None);
    assert_eq!(c.replies.remove(&late), Some(Err(ClientError::Stopped)));
}

#[test]
fn survives_leader_loss_and_loses_no_acknowledged_write() {
    let mut c = Cluster::new(3, 3);
    for i in 0..30 {
        c.put(&format!("a{i}"), "x");
    }
    let old = c.wait_leader();
    c.crash(old, CrashKind::PowerLoss);
    for i in 0..30 {
        c.put(&format!("b{i}"), "y");
    }
    let new = c.wait_leader();
    assert_ne!(new, old);
    c.restart(old);
    c.wait_converged(500);
    for id in c.up_ids() {
        for i in 0..30 {
            assert!(
                c.node(id).kv().get(format!("a{i}").as_bytes()).is_some(),
                "node {id} lost a{i}"
            );
            assert!(
                c.node(id).kv().get(format!("b{i}").as_bytes()).is_some(),
                "node {id} lost b{i}"
            );
        }
    }
}

#[test]
fn snapshots_compact_the_log_and_purge_files() {
    let mut c = Cluster::with_config(3, 5, |cfg| {
        cfg.compaction.snap_count = 50;
        cfg.compaction.catch_up_entries = 20;
        cfg.compaction.max_snapshots = 2;
        cfg.wal.segment_size_bytes = 4096;
    });
    for i in 0..600 {
        c.put(&format!("k{i}"), "v");
        for id in c.up_ids() {
            let s = c.node(id).status();
            // The log keeps catch_up_entries before the last snapshot, and a snapshot is always
            // under way once snap_count entries were applied past the last one: memory is
            // bounded by snap_count + catch_up_entries + what one snapshot job takes to save.
            assert!(
                s.log_entries_in_memory as u64 <= s.last_index - s.snapshot_index + 20 + 1,
                "node {id}: {} entries in memory, snapshot at {} (last {})",
                s.log_entries_in_memory,
                s.snapshot_index,
                s.last_index
            );
            assert!(
                s.snapshot_job_in_flight || s.applied_index - s.snapshot_index <= 50,
                "node {id}: applied {} with the last snapshot at {} and none under way",
                s.applied_index,
                s.snapshot_index
            );
        }
    }
    c.wait_converged(300);
    assert!(c.stats.snapshots_saved >= 3 * 10, "{:?}", c.stats);
    assert!(c.stats.purges > 0, "{:?}", c.stats);
    for id in c.up_ids() {
        assert!(c.node(id).status().snapshot_index > 500);
        assert!(
            c.file_count(id, ".snap") <= 2,
            "node {id}: {:?}",
            c.nodes[&id].dir.list()
        );
        assert!(
            c.file_count(id, ".wal") <= 12,
            "node {id}: {:?}",
            c.nodes[&id].dir.list()
        );
    }
    // Restart everyone from disk: each loads a snapshot and keeps every key.
    for id in c.up_ids() {
        c.crash(id, CrashKind::PowerLoss);
    }
    let before = c.stats.loaded_snapshots;
    for id in [1, 2, 3] {
        c.restart(id);
    }
    assert_eq!(c.stats.loaded_snapshots, before + 3);
    c.wait_converged(500);
    for id in c.up_ids() {
        assert_eq!(c.node(id).kv().len(), 600, "node {id}");
    }
}

const BYTE_RULE_FLOOR: u64 = 4096;

/// Three nodes whose entry counts are out of reach: only the byte rule (a floor of
/// [`BYTE_RULE_FLOOR`]) can snapshot and compact.
fn byte_rule_cluster(seed: u64) -> Cluster {
    Cluster::with_config(3, seed, |cfg| {
        cfg.compaction.snap_count = 1_000_000;
        cfg.compaction.catch_up_entries = 1_000_000;
        cfg.compaction.log_bytes_floor = BYTE_RULE_FLOOR;
    })
}

#[test]
fn large_values_snapshot_by_bytes_and_the_log_stays_within_a_share_of_the_state() {
    let floor = BYTE_RULE_FLOOR;
    let mut c = byte_rule_cluster(6);
    let value = "v".repeat(1000);
    // 200 keys, each written three times: the state stops growing after the first round.
    for i in 0..600 {
        c.put(&format!("k{}", i % 200), &value);
        for id in c.up_ids() {
            let s = c.node(id).status();
            let bound = floor.max(s.state_bytes / LOG_SHARE_OF_STATE);
            // Below the snapshot at most `bound` bytes, above it `bound` before a job starts,
            // plus the entries that arrive while the job runs (a few at most, here).
            assert!(
                s.log_bytes_in_memory <= 2 * bound + 8 * 1100,
                "node {id}: {} bytes of log in memory with {} of state",
                s.log_bytes_in_memory,
                s.state_bytes
            );
        }
    }
    c.wait_converged(300);
    assert!(c.stats.snapshots_saved >= 3 * 5, "{:?}", c.stats);
    for id in c.up_ids() {
        let s = c.node(id).status();
        let keys: u64 = (0..200).map(|i| format!("k{i}").len() as u64).sum();
        assert_eq!(s.state_bytes, keys + 200 * 1000, "node {id}");
        assert!(s.snapshot_index > 300, "node {id}: {s:?}");
        assert!(s.log_entries_in_memory < 200, "node {id}: {s:?}");
    }
}

#[test]
fn writes_that_outrun_the_snapshot_job_are_refused_until_it_is_saved() {
    let mut c = byte_rule_cluster(12);
    let leader = c.wait_leader();
    let compaction = c.nodes[&leader].cfg.compaction;
    // The leader's snapshot job never completes: writes go on until the log is over its limit.
    c.held_snapshot_lanes.insert(leader);
    let value = "v".repeat(1000);
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    for i in 0..40u64 {
        let key = format!("k{i}");
        let put = ClientOp::Put {
            key: key.clone().into_bytes(),
            value: value.clone().into_bytes(),
        };
        let h = c.submit(
            leader,
            put,
            Some(RequestId {
                client: 7,
                seq: i + 1,
            }),
        );
        match c.wait_reply(h) {
            Ok(ClientReply::Written(_)) => acked.push(key.clone()),
            Err(
                e @ ClientError::TooManyRequests {
                    log_bytes,
                    limit_bytes,
                },
            ) => {
                assert!(!e.outcome_unknown() && log_bytes > limit_bytes, "{e}");
                refused.push(key.clone());
            }
            other => panic!("{key}: {other:?}"),
        }
        let s = c.node(leader).status();
        let limit = write_limit_bytes(&compaction, s.state_bytes);
        assert!(
            s.log_bytes_in_memory <= limit + 1100,
            "after {key}: {} bytes of log, limit {limit}",
            s.log_bytes_in_memory
        );
    }
    assert!(
        acked.len() >= 4 && refused.len() >= 20,
        "acked {acked:?}, refused {refused:?}"
    );
    // Reads are served meanwhile; a refused write was definitely not applied.
    assert!(c.get(&acked[0]).is_some());
    c.run(50);
    for key in &refused {
        for id in c.up_ids() {
            assert_eq!(
                c.node(id).kv().get(key.as_bytes()),
                None,
                "node {id}: {key}"
            );
        }
    }
    // Once the job is saved, writes are admitted again.
    c.held_snapshot_lanes.clear();
    c.put("after", "1");
    assert_eq!(c.get("after").as_deref(), Some(&b"1"[..]));
}

/// A snapshot message whose configuration has no voters, beside a whole and valid file: what
/// no correct leader sends.
fn voterless_snapshot_messages(bytes: Vec<u8>) -> Vec<u8> {
    use raftkv_core::msgcodec::{self, Body, Sender};
    let Ok(env) = msgcodec::decode(&bytes) else {
        return bytes;
    };
    let Body::SnapshotChunk {
        mut message,
        key,
        offset,
        bytes: chunk,
    } = env.body
    else {
        return bytes;
    };
    let cs = message.mut_snapshot().mut_metadata().mut_conf_state();
    cs.learners.append(&mut cs.voters);
    let from = Sender {
        cluster_id: env.cluster_id,
        id: env.from,
        incarnation: env.from_incarnation,
        addr: &env.from_addr,
    };
    msgcodec::encode_chunk(&from, env.to_incarnation, &message, key, offset, chunk)
}

#[test]
fn a_snapshot_message_that_does_not_describe_its_verified_file_is_refused_not_stepped() {
    let (mut c, lagger) = a_follower_cut_off_past_compaction();
    let installed_before = c.stats.snapshots_installed;
    c.tamper = Some(voterless_snapshot_messages);
    c.isolated.clear();
    // raft-rs would restore the message's configuration at once and panic on one without
    // voters; the follower refuses the message and keeps waiting for a good one.
    c.run(300);
    assert_eq!(c.stats.snapshots_installed, installed_before);
    assert!(c.node(lagger).stopped().is_none());
    c.tamper = None;
    c.wait_converged(1000);
    assert!(c.stats.snapshots_installed > installed_before);
    let l = c.leader().unwrap();
    assert_eq!(c.node(lagger).kv().hash(), c.node(l).kv().hash());
}

/// Three nodes with frequent snapshots, and a follower cut off while 200 writes land and are
/// compacted away: it can only catch up through a snapshot. Returns the cluster and that
/// follower, still cut off.
fn a_follower_cut_off_past_compaction() -> (Cluster, u64) {
    let mut c = Cluster::with_config(3, 9, |cfg| {
        cfg.compaction.snap_count = 30;
        cfg.compaction.catch_up_entries = 10;
    });
    let leader = c.wait_leader();
    let lagger = c.up_ids().into_iter().find(|&id| id != leader).unwrap();
    c.isolated.insert(lagger);
    for i in 0..200 {
        c.put(&format!("k{i}"), "v");
    }
    (c, lagger)
}

#[test]
fn a_follower_behind_the_compaction_point_gets_a_snapshot() {
    let (mut c, lagger) = a_follower_cut_off_past_compaction();
    let installed_before = c.stats.snapshots_installed;
    c.isolated.clear();
    c.wait_converged(500);
    assert!(
        c.stats.snapshots_installed > installed_before,
        "{:?}",
        c.stats
    );
    let l = c.leader().unwrap();
    assert_eq!(c.node(lagger).kv().hash(), c.node(l).kv().hash());
    assert_eq!(
        c.node(lagger).status().applied_index,
        c.node(l).status().applied_index
    );
}

/// A snapshot many chunks long reaches a lagging follower through a network that loses and
/// reorders chunks and acknowledgements: gaps are resent, and the state arrives whole.
#[test]
fn a_snapshot_streams_in_chunks_through_a_lossy_network() {
    let mut c = Cluster::with_config(3, 21, |cfg| {
        cfg.compaction.snap_count = 30;
        cfg.compaction.catch_up_entries = 10;
        cfg.snapshot_chunk_bytes = 97;
        cfg.snapshot_window_chunks = 3;
    });
    let leader = c.wait_leader();
    let lagger = c.up_ids().into_iter().find(|&id| id != leader).unwrap();
    c.isolated.insert(lagger);
    for i in 0..200 {
        c.put(&format!("key-{i:04}"), &"v".repeat(i % 40));
    }
    let installed_before = c.stats.snapshots_installed;
    c.isolated.clear();
    c.loss = 0.2;
    for _ in 0..300 {
        c.step();
        if c.stats.snapshots_installed > installed_before {
            break;
        }
    }
    c.loss = 0.0;
    c.wait_converged(500);
    assert!(
        c.stats.snapshots_installed > installed_before && c.stats.snapshot_chunks_resent > 0,
        "{:?}",
        c.stats
    );
    let l = c.leader().unwrap();
    assert_eq!(c.node(lagger).kv().hash(), c.node(l).kv().hash());
    assert_eq!(c.node(lagger).kv().len(), 200);
}

/// Writes that keep coming while a snapshot streams do not make the follower need another one
/// the moment it installs it: the leader keeps the entries after a snapshot still streaming.
/// A follower cut off while 150 writes land, then let back under load: it catches up with one
/// snapshot. `guard`: the node's repair of raft-rs's misplaced batched appends.
fn catch_up_under_load(guard: bool) -> harness::Stats {
    let mut c = Cluster::with_config(3, 116, |cfg| {
        cfg.compaction.snap_count = 20;
        cfg.compaction.catch_up_entries = 5;
        cfg.snapshot_chunk_bytes = 64;
        cfg.snapshot_window_chunks = 1;
        cfg.raft_rs_batch_append_guard = guard;
    });
    let leader = c.wait_leader();
    let lagger = c.up_ids().into_iter().find(|&id| id != leader).unwrap();
    c.isolated.insert(lagger);
    for i in 0..150 {
        c.put(&format!("key-{i:04}"), "vvvvvvvvvvvvvvvv");
    }
    let before = c.stats.snapshots_received;
    c.isolated.clear();
    let mut i = 0;
    loop {
        let l = c.wait_leader();
        let behind = c.node(lagger).status().applied_index + 5 < c.node(l).status().applied_index;
        if c.stats.snapshots_installed > 0 && !behind {
            break;
        }
        i += 1;
        assert!(i < 2000, "the follower never caught up: {:?}", c.stats);
        let l = c.wait_leader();
        c.submit(l, put_op(&format!("load-{i}"), "x"), None);
        c.step();
    }
    assert_eq!(
        c.stats.snapshots_received - before,
        1,
        "one snapshot is enough: {:?}",
        c.stats
    );
    c.stats.clone()
}

#[test]
fn a_follower_catches_up_under_load_with_one_snapshot() {
    catch_up_under_load(true);
}

/// The same world without the guard: raft-rs 0.7 batches entries into a commit-only append at
/// the wrong index, and the follower panics inside raft-rs. With the guard the same world
/// repairs that message (and catches up, above). If this world stops producing the message (a
/// change in when jobs complete), the test says so instead of passing quietly: find a world
/// that does. Few do: seed 33 did until a new WAL's first segment was cut early to a spare;
/// of seeds 100..1100 then, 116, 124, 343, 786 and 980 did.
#[test]
fn without_the_batch_append_guard_raft_rs_sends_entries_after_the_wrong_index() {
    let with_guard = catch_up_under_load(true);
    assert!(
        with_guard.appends_reindexed > 0,
        "this world no longer makes raft-rs misplace a batched append: {with_guard:?}"
    );
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| catch_up_under_load(false));
    std::panic::set_hook(hook);
    let err = r.expect_err("without the guard the follower must panic inside raft-rs");
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains("conflict with committed entry"),
        "a different panic: {msg}"
    );
}

#[test]
fn members_are_added_and_removed() {
    let mut c = Cluster::with_config(3, 13, |cfg| {
        cfg.compaction.snap_count = 30;
        cfg.compaction.catch_up_entries = 10;
    });
    for i in 0..100 {
        c.put(&format!("k{i}"), "v");
    }
    let leader = c.wait_leader();
    let h = c.submit(
        leader,
        ClientOp::AddNode {
            id: 4,
            addr: harness::addr(4),
        },
        None,
    );
    match c.wait_reply(h) {
        Ok(ClientReply::Members(m)) => assert!(m.contains_key(&4)),
        other => panic!("{other:?}"),
    }
    let installed = c.stats.snapshots_installed;
    c.start_joiner(4, 13, |cfg| {
        cfg.compaction.snap_count = 30;
        cfg.compaction.catch_up_entries = 10;
    });
    c.wait_converged(500);
    assert!(
        c.stats.snapshots_installed > installed,
        "the new node starts from a snapshot"
    );
    assert_eq!(c.node(4).kv().len(), 100);
    assert_eq!(c.node(4).members().len(), 4);
    c.put("after-add", "1");

    // A second change while one is pending is rejected, not silently dropped.
    let leader = c.wait_leader();
    let victim = [1, 2, 3, 4].into_iter().find(|&id| id != leader).unwrap();
    let h1 = c.submit(leader, ClientOp::RemoveNode { id: victim }, None);
    let other = [1, 2, 3, 4]
        .into_iter()
        .find(|&id| id != leader && id != victim)
        .unwrap();
    let h2 = c.submit(leader, ClientOp::RemoveNode { id: other }, None);
    assert!(matches!(c.wait_reply(h1), Ok(ClientReply::Members(m)) if !m.contains_key(&victim)));
    assert!(matches!(c.wait_reply(h2), Err(ClientError::Rejected(_))));
    // Once it applies its removal it stops when every remaining voter has confirmed it, or
    // after lingering `linger_ticks` (100 here) to answer votes, whichever comes first.
    c.run_until(150, "a removed node stops", |c| !c.is_up(victim));
    c.put("after-remove", "1");
    c.wait_converged(300);
    for id in c.up_ids() {
        assert_eq!(c.node(id).members().len(), 3);
        assert!(c.node(id).kv().get(b"after-remove").is_some());
    }
    // Its id can never come back.
    let leader = c.wait_leader();
    let h = c.submit(
        leader,
        ClientOp::AddNode {
            id: victim,
            addr: harness::addr(victim),
        },
        None,
    );
    assert!(matches!(c.wait_reply(h), Err(ClientError::Rejected(_))));
}

#[test]
fn restarts_from_file_bytes_lose_no_acknowledged_write() {
    for seed in 0..8 {
        let mut c = Cluster::with_config(3, seed, |cfg| {
            cfg.compaction.snap_count = 40;
            cfg.compaction.catch_up_entries = 10;
            cfg.wal.segment_size_bytes = 2048;
        });
        let mut acked = Vec::new();
        for round in 0..6 {
            for i in 0..25 {
                let k = format!("r{round}-{i}");
                c.put(&k, "v");
                acked.push(k);
            }
            // Crash a random node (or all of them) with power loss, then bring it back.
            let victims: Vec<u64> = if round % 3 == 2 {
                vec![1, 2, 3]
            } else {
                vec![1 + c.rng.below(3)]
            };
            for &v in &victims {
                c.crash(v, CrashKind::PowerLoss);
            }
            c.run(3);
            for &v in &victims {
                c.restart(v);
            }
        }
        c.wait_converged(1000);
        for id in c.up_ids() {
            for k in &acked {
                assert!(
                    c.node(id).kv().get(k.as_bytes()).is_some(),
                    "seed {seed}: node {id} lost acknowledged {k}"
                );
            }
        }
    }
}

#[test]
fn retried_writes_apply_once() {
    let mut c = Cluster::new(3, 21);
    let leader = c.wait_leader();
    let rid = Some(RequestId { client: 77, seq: 1 });
    let h = c.submit(leader, put_op("k", "1"), rid);
    assert_eq!(
        c.wait_reply(h),
        Ok(ClientReply::Written(WriteResult::Put { existed: false }))
    );
    c.put("k", "2");
    let h = c.submit(leader, put_op("k", "1"), rid);
    // The retry answers with the original result and does not overwrite "2".
    assert_eq!(
        c.wait_reply(h),
        Ok(ClientReply::Written(WriteResult::Put { existed: false }))
    );
    assert_eq!(c.get("k"), Some(b"2".to_vec()));
}

#[test]
fn queues_are_bounded_and_requests_time_out() {
    let mut c = Cluster::with_config(3, 4, |cfg| cfg.max_pending_proposals = 2);
    let leader = c.wait_leader();
    // Cut the leader off: proposals cannot commit.
    c.isolated.insert(leader);
    let h1 = c.submit(leader, put_op("a", "1"), None);
    let h2 = c.submit(leader, put_op("b", "1"), None);
    let h3 = c.submit(leader, put_op("c", "1"), None);
    assert_eq!(c.wait_reply(h3), Err(ClientError::Busy));
    let r1 = c.wait_reply(h1).unwrap_err();
    let r2 = c.wait_reply(h2).unwrap_err();
    assert!(
        r1.outcome_unknown() && r2.outcome_unknown(),
        "{r1:?} {r2:?}"
    );
}

#[test]
fn garbage_from_peers_is_rejected_and_the_node_carries_on() {
    let mut c = Cluster::new(3, 8);
    let leader = c.wait_leader();
    let node = c.nodes.get_mut(&leader).unwrap().node.as_mut().unwrap();
    assert!(node.receive(b"").is_err());
    assert!(node.receive(b"RKVM\0\0\0\0garbage").is_err());
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    m.from = 2;
    m.to = leader;
    let cluster_id = node.identity().cluster_id;
    let foreign = raftkv_core::msgcodec::Sender {
        cluster_id: cluster_id + 1,
        id: 2,
        incarnation: 1,
        addr: "x",
    };
    assert!(
        node.receive(&raftkv_core::msgcodec::encode(&foreign, 0, &m))
            .is_err(),
        "wrong cluster"
    );
    m.to = leader + 1;
    let ours = raftkv_core::msgcodec::Sender {
        cluster_id,
        id: 2,
        incarnation: 1,
        addr: "x",
    };
    assert!(
        node.receive(&raftkv_core::msgcodec::encode(&ours, 0, &m))
            .is_err(),
        "wrong recipient"
    );
    c.put("still", "works");
}

fn workload_trace(seed: u64) -> (u64, u64) {
    workload_trace_with(seed, true)
}

fn workload_trace_with(seed: u64, seeded_timeouts: bool) -> (u64, u64) {
    let mut c = Cluster::with_config(3, seed, |cfg| {
        cfg.seeded_election_timeout = seeded_timeouts;
        cfg.compaction.snap_count = 20;
        cfg.compaction.catch_up_entries = 5;
        cfg.wal.segment_size_bytes = 2048;
    });
    c.loss = 0.05;
    for i in 0..40 {
        c.put(&format!("k{}", i % 7), &format!("v{i}"));
        if i == 20 {
            let victim = 1 + c.rng.below(3);
            c.crash(victim, CrashKind::PowerLoss);
            c.run(5);
            c.restart(victim);
        }
    }
    c.wait_converged(1000);
    (c.trace.finish(), c.stats.elections)
}

#[test]
fn same_seed_same_trace_different_seeds_differ() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..12 {
        let a = workload_trace(seed);
        let b = workload_trace(seed);
        assert_eq!(a, b, "seed {seed} is not deterministic");
        seen.insert(a.0);
    }
    assert_eq!(seen.len(), 12, "different seeds must give different traces");
}

#[test]
fn without_the_seeded_election_timeout_traces_diverge() {
    // The control for the test above: raft-rs's own thread_rng timeouts make runs differ.
    let diverged =
        (0..6).any(|seed| workload_trace_with(seed, false) != workload_trace_with(seed, false));
    assert!(
        diverged,
        "raft-rs's own randomness never showed; the determinism test proves nothing"
    );
}

#[test]
fn readiness_names_the_check_that_fails() {
    use raftkv_core::health::Check;
    let failing = |c: &Cluster, id: u64| c.node(id).readiness().failure().map(|(c, _)| c);
    // Small snapshots in small chunks, one in flight: catching up takes many rounds.
    let mut c = Cluster::with_config(3, 23, |cfg| {
        cfg.compaction.catch_up_entries = 5;
        cfg.compaction.snap_count = 10;
        cfg.snapshot_chunk_bytes = 32;
        cfg.snapshot_window_chunks = 1;
    });
    let leader = c.wait_leader();
    c.put("a", "1");
    c.wait_converged(200);
    for id in c.up_ids() {
        assert_eq!(failing(&c, id), None, "node {id}");
    }
    // A follower cut off while the others commit and compact: it needs the leader's snapshot,
    // and is not caught up until it has it.
    let lagging = c.up_ids().into_iter().find(|&id| id != leader).unwrap();
    c.isolated.insert(lagging);
    for i in 0..40 {
        c.put(&format!("k{i}"), "v");
    }
    c.isolated.clear();
    let mut seen_behind = false;
    c.run_until(300, "the lagging follower ready again", |c| {
        seen_behind |= failing(c, lagging) == Some(Check::CaughtUp);
        failing(c, lagging).is_none()
            && c.node(lagging).status().applied_index == c.node(leader).status().commit_index
    });
    assert!(seen_behind, "never reported behind while catching up");
    // Alone, a node knows no leader.
    let survivor = lagging;
    for id in c.up_ids() {
        if id != survivor {
            c.stop_node(id);
        }
    }
    c.run_until(200, "no leader reported", |c| {
        failing(c, survivor) == Some(Check::Leader)
    });
    c.shut_down(survivor);
    assert_eq!(failing(&c, survivor), Some(Check::Running));
}

/// Three voters grown to four (node 4 joins), converged.
fn four_voters(seed: u64) -> Cluster {
    let mut c = Cluster::with_config(3, seed, |_| {});
    c.put("before", "1");
    let leader = c.wait_leader();
    let h = c.submit(
        leader,
        ClientOp::AddNode {
            id: 4,
            addr: harness::addr(4),
        },
        None,
    );
    assert!(matches!(c.wait_reply(h), Ok(ClientReply::Members(m)) if m.contains_key(&4)));
    c.start_joiner(4, seed, |_| {});
    c.wait_converged(500);
    assert_eq!(c.node(4).members().len(), 4);
    c
}

/// A leader that removes itself knows, alone, that the removal is committed. Stopping at once,
/// it left its peers with the removal uncommitted: they kept the old configuration, which
/// counts it, and with one more member lost they could never elect again (the simulator found
/// it, seed 896). It steps down with heartbeats that carry the commit instead.
#[test]
fn a_removed_leader_leaves_its_peers_able_to_elect_after_one_more_failure() {
    let mut c = four_voters(21);

    let leader = c.wait_leader();
    let h = c.submit(leader, ClientOp::RemoveNode { id: leader }, None);
    let removal = c.node(leader).status().last_index;
    let others: Vec<u64> = [1, 2, 3, 4]
        .into_iter()
        .filter(|&id| id != leader)
        .collect();
    // The followers hold the removal and acknowledge it, but the leader's word that it is
    // committed is lost, and it applies the removal.
    c.mute_once_committed = Some((leader, removal));
    c.run_until(200, "the leader applies its removal", |c| {
        !c.is_up(leader) || c.node(leader).status().applied_index >= removal
    });
    assert!(
        others
            .iter()
            .all(|&id| c.node(id).status().applied_index < removal),
        "no follower learned the commit"
    );
    let _ = h;
    c.muted.remove(&leader);
    // One more member is lost.
    let lost = others[0];
    c.crash(lost, CrashKind::Process);
    c.run_until(3000, "a leader among the two left", |c| {
        c.leader().is_some_and(|l| l != leader && l != lost)
    });
    c.put("after", "1");
    let survivor = c.leader().expect("a leader");
    assert_eq!(c.node(survivor).members().len(), 3, "the removal applied");
}

/// A removed member that one member (here the leader) tells of its removal is not free to go:
/// members that have the removal in their log but have not learned it is committed still count
/// it, and if that one member is then lost they need its vote. Stopping at once, it left the two
/// voters of four that were left unable to ever elect (the simulator found it, seed 100326); it
/// lingers and votes while they count on it.
#[test]
fn a_removed_member_told_by_one_member_still_votes_for_those_that_count_it() {
    let mut c = four_voters(23);

    let leader = c.wait_leader();
    let ids = [1, 2, 3, 4];
    let victim = ids.into_iter().find(|&id| id != leader).unwrap();
    let others: BTreeSet<u64> = ids
        .into_iter()
        .filter(|&id| id != leader && id != victim)
        .collect();
    let h = c.submit(leader, ClientOp::RemoveNode { id: victim }, None);
    let removal = c.node(leader).status().last_index;
    // The two others hold the removal, but never hear from the leader that it is committed;
    // the victim does, and hears from the leader that it was removed.
    c.cut_once_committed = Some((leader, removal, others.clone()));
    c.run_until(300, "the victim learns it was removed", |c| {
        !c.is_up(victim)
            || c.node(victim)
                .readiness()
                .checks
                .iter()
                .any(|(_, r)| matches!(r, Err(NotReady::Removed { .. })))
    });
    let _ = h;
    assert!(
        others
            .iter()
            .all(|&id| c.node(id).status().applied_index < removal),
        "no other member learned the commit"
    );
    // The only member that knew the removal was committed besides the victim is lost.
    c.stop_node(leader);
    c.cut_links.clear();
    c.run_until(3000, "a leader among the two left", |c| {
        c.leader().is_some_and(|l| others.contains(&l))
    });
    c.put("after", "1");
    let survivor = c.leader().expect("a leader");
    assert_eq!(c.node(survivor).members().len(), 3, "the removal applied");
    c.run_until(
        3000,
        "the removed member stops once nobody counts on it",
        |c| !c.is_up(victim),
    );
}

/// A copy of a forwarded request that arrives after the first was taken (the network duplicated
/// or delayed the frame) is dropped, never proposed: otherwise a request its client was told was
/// "not applied" (say, "not leader" from a node that later led) could be applied after all. The
/// simulator found that (`node/forwards_seen.rs`).
#[test]
fn a_copy_of_a_forwarded_request_is_never_proposed_again() {
    let mut c = Cluster::new(3, 21);
    let leader = c.wait_leader();
    let follower = c.up_ids().into_iter().find(|&id| id != leader).unwrap();
    let h = c.submit(
        follower,
        put_op("k", "v1"),
        Some(RequestId { client: 9, seq: 1 }),
    );
    assert!(c.wait_reply(h).is_ok());
    let (from, to, frame) = c
        .forwards_delivered
        .iter()
        .find(|(from, to, _)| *from == follower && *to == leader)
        .cloned()
        .expect("the follower forwarded the put to the leader");
    c.put("k", "v2");
    let last = c.node(leader).status().last_index;
    let r = c.node_mut(to).receive(&frame);
    assert!(
        matches!(
            r,
            Err(raftkv_core::node::PeerError::DuplicateForward { .. })
        ),
        "a copy of forward from {from} was taken again: {r:?}"
    );
    c.run(20);
    assert_eq!(
        c.node(leader).status().last_index,
        last,
        "the copy was proposed"
    );
    assert_eq!(c.get("k").as_deref(), Some(&b"v2"[..]));
}
