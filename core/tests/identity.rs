//! Identity and operator mistakes, driven through boot exactly as the shells drive it: each
//! mistake is refused with its typed reason, or survived with every acknowledged write intact.

mod harness;

use harness::{addr, Cluster};
use raftkv_core::boot::{BootError, StartFlags};
use raftkv_core::fileop::FileOp;
use raftkv_core::identity::IDENTITY_FILE;
use raftkv_core::memdir::{CrashKind, MemDir};
use raftkv_core::node::{ClientOp, ClientReply, StopReason};
use std::collections::BTreeMap;

fn flags_of(c: &Cluster, id: u64) -> StartFlags {
    c.nodes[&id].flags.clone()
}

fn stop_reason(c: &Cluster, id: u64) -> Option<StopReason> {
    c.nodes[&id]
        .node
        .as_ref()
        .and_then(|n| n.stopped().cloned())
}

/// Runs until every live node has applied the incarnation records of all of `ids`.
fn wait_recorded(c: &mut Cluster, ids: &[u64]) {
    let ids = ids.to_vec();
    c.run_until(500, "incarnations recorded everywhere", move |c| {
        c.up_ids().iter().all(|&n| {
            ids.iter()
                .all(|&id| c.node(n).kv().incarnation(id).is_some())
        })
    });
}

#[test]
fn every_member_records_the_same_incarnations() {
    let mut c = Cluster::new(3, 3);
    c.put("a", "1");
    wait_recorded(&mut c, &[1, 2, 3]);
    for id in 1..=3 {
        let mine = c.node(id).identity().incarnation;
        for other in 1..=3 {
            assert_eq!(c.node(other).kv().incarnation(id), Some(mine));
        }
    }
    let ids: Vec<u64> = (1..=3).map(|i| c.node(i).identity().cluster_id).collect();
    assert!(ids.iter().all(|&i| i == ids[0] && i != 0));
}

/// The data loss: writes commit on {1, 3} while 2 is cut off; then 3's disk is wiped and
/// it is restarted under its old id with its old flags, and 1 goes down. Without incarnations
/// node 3 (empty log, fresh bootstrap) would vote for node 2, which lacks the write.
#[test]
fn a_wiped_node_restarted_under_its_old_id_never_votes_and_nothing_is_lost() {
    let mut c = Cluster::new(3, 21);
    c.put("before", "1");
    wait_recorded(&mut c, &[1, 2, 3]);
    c.isolated.insert(2);
    c.run(30);
    c.put("acked", "1");
    c.fatal_stops = false;
    c.crash(1, CrashKind::Process);
    c.crash(3, CrashKind::PowerLoss);
    c.nodes.get_mut(&3).unwrap().dir = MemDir::new();
    c.isolated.clear();
    c.restart(3);
    c.run(300);
    if let Some(l) = c.leader() {
        let h = c.submit(
            l,
            ClientOp::GetLocal {
                key: b"acked".to_vec(),
            },
            None,
        );
        let got = c.wait_reply(h);
        panic!("2 and a wiped 3 elected node {l}; it reads the acknowledged write as {got:?}");
    }
    assert!(
        matches!(
            stop_reason(&c, 3),
            Some(StopReason::NotRecognized { id: 3, .. })
        ),
        "node 3 is refused: {:?}",
        stop_reason(&c, 3)
    );
    let msg = stop_reason(&c, 3).unwrap().to_string();
    assert!(
        msg.contains("wiped") && msg.contains("new id"),
        "says what to do: {msg}"
    );
    c.restart(1);
    assert_eq!(c.get("acked").as_deref(), Some(&b"1"[..]));
    assert_eq!(c.get("before").as_deref(), Some(&b"1"[..]));
}

/// A stale copy of a node's own directory (same incarnation, older log) must not take part:
/// raft-rs would panic on the leader's first heartbeat ("to_commit N is out of range"); the
/// node stops with a reason instead.
#[test]
fn an_old_copy_of_a_data_directory_stops_instead_of_panicking() {
    let mut c = Cluster::new(3, 5);
    c.put("a", "1");
    wait_recorded(&mut c, &[1, 2, 3]);
    let leader = c.wait_leader();
    let victim = (1..=3).find(|&i| i != leader).unwrap();
    c.run(20);
    let old = c.nodes[&victim].dir.clone();
    for i in 0..30 {
        c.put(&format!("k{i}"), "v");
    }
    c.fatal_stops = false;
    c.crash(victim, CrashKind::Process);
    c.nodes.get_mut(&victim).unwrap().dir = old;
    c.restart(victim);
    c.run_until(300, "the old copy stops", |c| {
        matches!(
            stop_reason(c, victim),
            Some(StopReason::LogBehindLeader { .. })
        )
    });
    c.put("still", "works");
}

/// Two mistakes at once lose a committed write, and no node can tell at the time: one node is
/// down, a second is restarted from an old copy of its directory while the third, the only one
/// left holding the write, is down too; the two elect a leader without it. Returns the cluster
/// once they have written more, and the holder, still down. With `same_term`, the old copy is
/// from before the term the holder led, so the two elect their leader in that same term: the
/// copy forgot its vote for the holder (what real processes showed).
fn a_write_lost_by_two_mistakes(seed: u64, same_term: bool) -> (Cluster, u64) {
    let mut c = Cluster::new(3, seed);
    for i in 0..5 {
        c.put(&format!("k{i}"), "v");
    }
    wait_recorded(&mut c, &[1, 2, 3]);
    c.wait_converged(300);
    let first = c.wait_leader();
    let mut others = (1..=3).filter(|&i| i != first);
    let (a, b) = (others.next().unwrap(), others.next().unwrap());
    let (down, stale, holder, old_copy) = if same_term {
        let old_copy = c.nodes[&b].dir.clone();
        c.stop_node(first);
        let holder = c.wait_leader();
        let stale = if holder == a { b } else { a };
        let old_copy = if stale == b {
            old_copy
        } else {
            c.nodes[&a].dir.clone()
        };
        (first, stale, holder, old_copy)
    } else {
        let old_copy = c.nodes[&b].dir.clone();
        c.stop_node(a);
        (a, b, first, old_copy)
    };
    c.put("x", "committed on two");
    c.run(20);
    c.stop_node(holder);
    c.stop_node(stale);
    c.nodes.get_mut(&stale).unwrap().dir = old_copy;
    c.restart(stale);
    c.restart(down);
    assert_eq!(
        c.get("x"),
        None,
        "the two left elected a leader without the write"
    );
    c.put("y", "committed without x");
    for i in 0..10 {
        c.put(&format!("after{i}"), "v");
    }
    (c, holder)
}

/// When the holder of the lost write comes back, raft-rs would take the new leader's word
/// (below its commit index, an append is answered as matched; an entry of the same index and
/// term is taken for the same entry) and mix the two histories, serving the lost write beside
/// ones the cluster applied instead. It stops with a reason, keeping its data for the operator.
#[test]
fn a_node_whose_history_the_leader_lacks_stops_instead_of_mixing_histories() {
    let mut divergent = 0;
    for (seed, same_term) in (9..17).flat_map(|seed| [(seed, false), (seed, true)]) {
        let (mut c, holder) = a_write_lost_by_two_mistakes(seed, same_term);
        c.fatal_stops = false;
        c.restart(holder);
        c.run_until(500, "the holder stops", |c| !c.is_up(holder));
        let reason = stop_reason(&c, holder);
        match &reason {
            // Its committed entry and the leader's differ in term.
            Some(StopReason::CommittedEntryConflict { .. }) => {}
            // Same index and term, different entries: only the fingerprint tells.
            Some(StopReason::DivergentLog { .. }) => divergent += 1,
            other => panic!("seed {seed}, same term {same_term}: {other:?}"),
        }
        let msg = reason.unwrap().to_string();
        assert!(msg.contains("rather than mix"), "says why: {msg}");
        let kept = c.nodes[&holder].node.as_ref().unwrap().kv().get(b"x");
        assert_eq!(kept, Some(&b"committed on two"[..]), "the holder keeps it");
        assert_eq!(c.get("y").as_deref(), Some(&b"committed without x"[..]));
    }
    assert!(
        divergent > 0,
        "no world elected its second leader in the holder's term"
    );
}

#[test]
fn a_single_node_directory_is_refused_as_one_node_of_three() {
    let mut c = Cluster::new(1, 7);
    c.put("solo", "1");
    c.stop_node(1);
    let three: BTreeMap<u64, String> = (1..=3).map(|i| (i, addr(i))).collect();
    let flags = StartFlags {
        peers: three,
        ..flags_of(&c, 1)
    };
    match c.try_restart_with(1, flags) {
        Err(BootError::StrangerPeers { strangers, members }) => {
            assert_eq!(strangers.iter().map(|s| s.0).collect::<Vec<_>>(), [2, 3]);
            assert_eq!(members.keys().copied().collect::<Vec<_>>(), [1]);
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Its own flags still work, and nothing was lost.
    let own = flags_of(&c, 1);
    c.try_restart_with(1, own).unwrap();
    assert_eq!(c.get("solo").as_deref(), Some(&b"1"[..]));
}

#[test]
fn swapped_directories_another_token_and_strangers_are_refused() {
    let mut c = Cluster::new(3, 9);
    c.put("a", "1");
    c.stop_node(1);
    c.stop_node(2);
    let (d1, d2) = (c.nodes[&1].dir.clone(), c.nodes[&2].dir.clone());
    c.nodes.get_mut(&1).unwrap().dir = d2.clone();
    let e = c
        .try_restart_with(1, flags_of(&c, 1))
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(e, BootError::WrongNode { found: 2, flag: 1 }),
        "{e}"
    );
    assert!(e.to_string().contains("--id 2"), "names the fix: {e}");
    c.nodes.get_mut(&1).unwrap().dir = d1;
    let other_token = StartFlags {
        token: "another".into(),
        ..flags_of(&c, 1)
    };
    let e = c.try_restart_with(1, other_token).map(|_| ()).unwrap_err();
    assert!(matches!(e, BootError::WrongToken), "{e}");
    let mut c2 = Cluster::new(1, 3);
    c2.stop_node(1);
    c2.nodes.get_mut(&1).unwrap().dir = MemDir::new();
    let shared = StartFlags {
        peers: [(1, addr(1)), (2, addr(2)), (3, format!("{}/", addr(1)))].into(),
        ..flags_of(&c2, 1)
    };
    let e = c2.try_restart_with(1, shared).map(|_| ()).unwrap_err();
    assert!(
        matches!(
            e,
            BootError::SharedPeerUrl {
                first: 1,
                second: 3,
                ..
            }
        ),
        "a new cluster whose members share a URL: {e}"
    );
    let mut stranger = flags_of(&c, 1);
    stranger.peers.insert(9, "http://127.0.0.1:1".into());
    let e = c.try_restart_with(1, stranger).map(|_| ()).unwrap_err();
    assert!(matches!(e, BootError::StrangerPeers { .. }), "{e}");
    // A deleted identity file is named as such, not blamed on the token.
    let kept = c.nodes[&1].dir.clone();
    let dir = &mut c.nodes.get_mut(&1).unwrap().dir;
    dir.apply(&FileOp::Remove {
        name: IDENTITY_FILE.into(),
    })
    .unwrap();
    let e = c
        .try_restart_with(1, flags_of(&c, 1))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e, BootError::MissingIdentity), "{e}");
    assert!(e.to_string().contains("deleted"), "{e}");
    c.nodes.get_mut(&1).unwrap().dir = kept;
    c.try_restart_with(1, flags_of(&c, 1)).unwrap();
    c.try_restart_with(2, flags_of(&c, 2)).unwrap();
    assert_eq!(c.get("a").as_deref(), Some(&b"1"[..]));
}

/// A peer URL changes through the log; then the node restarts with the new URL. (Whether peers
/// reach a node at a URL is the real network's business: tests/operator_mistakes.rs.)
#[test]
fn a_peer_url_changes_through_the_membership() {
    let mut c = Cluster::new(3, 11);
    c.put("a", "1");
    let leader = c.wait_leader();
    let target = (1..=3).find(|&i| i != leader).unwrap();
    let new_url = "http://127.0.0.1:44444".to_string();
    let h = c.submit(
        leader,
        ClientOp::UpdateNode {
            id: target,
            addr: new_url.clone(),
        },
        None,
    );
    match c.wait_reply(h) {
        Ok(ClientReply::Members(m)) => assert_eq!(m[&target], new_url),
        other => panic!("{other:?}"),
    }
    c.wait_converged(300);
    c.stop_node(target);
    let mut moved = flags_of(&c, target);
    moved.peers.insert(target, new_url);
    c.try_restart_with(target, moved).unwrap();
    c.put("b", "2");
    c.wait_converged(300);
}

/// raftexample's membership session: node 4 is added and joins; node 1 then restarts with the
/// three original URLs; a removed node's directory is refused at start.
#[test]
fn the_readme_membership_session_keeps_working() {
    let mut c = Cluster::new(3, 13);
    c.put("a", "1");
    let leader = c.wait_leader();
    let h = c.submit(
        leader,
        ClientOp::AddNode {
            id: 4,
            addr: addr(4),
        },
        None,
    );
    assert!(matches!(c.wait_reply(h), Ok(ClientReply::Members(_))));
    c.start_joiner(4, 13, |_| {});
    c.wait_converged(500);
    assert_ne!(
        c.node(4).identity().cluster_id,
        0,
        "the joiner adopted the id"
    );
    assert_eq!(
        c.node(4).identity().cluster_id,
        c.node(1).identity().cluster_id
    );
    c.stop_node(1);
    c.try_restart_with(1, flags_of(&c, 1)).unwrap();
    let leader = c.wait_leader();
    let h = c.submit(leader, ClientOp::RemoveNode { id: 3 }, None);
    assert!(matches!(c.wait_reply(h), Ok(ClientReply::Members(_))));
    c.run(50);
    c.stop_node(3);
    let e = c
        .try_restart_with(3, flags_of(&c, 3))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e, BootError::Removed { id: 3 }), "{e}");
    c.stop_node(4);
    c.try_restart_with(4, flags_of(&c, 4)).unwrap();
    c.put("b", "2");
    assert_eq!(c.get("a").as_deref(), Some(&b"1"[..]));
}

/// A node stopped after its identity file was renamed into place but before the directory sync
/// restarts from the page cache and finds its identity: it must announce it to no one (peers
/// record the incarnations they hear) until its startup job has made the name durable, or a
/// power loss then leaves it a stranger to its cluster. The simulator found a node refused that
/// way, after a forwarded request (not a raft message, which waits for its own job anyway) went
/// out first.
#[test]
fn a_restart_sends_no_frame_before_its_startup_job_is_durable() {
    let mut c = Cluster::new(3, 11);
    let leader = c.wait_leader();
    c.put("before", "1");
    let f = (1..=3).find(|&i| i != leader).unwrap();
    c.crash(f, CrashKind::Process);
    c.stalled_disks.insert(f);
    c.restart(f);
    // The restarted node hears the leader (its heartbeats) while its startup job stalls.
    c.run(30);
    assert_eq!(
        c.node(f).status().leader_id,
        leader,
        "the restarted node knows the leader, so it forwards rather than holds the request"
    );
    let forwards_before = c.forwards_delivered.len();
    let put = ClientOp::Put {
        key: "k".into(),
        value: "v".into(),
    };
    let handle = c.submit(f, put, None);
    c.run(30);
    assert!(
        c.forwards_delivered[forwards_before..]
            .iter()
            .all(|(from, _, _)| *from != f),
        "node {f} forwarded a request before its startup job was durable"
    );
    assert!(
        !c.replies.contains_key(&handle),
        "answered before it could be"
    );
    c.stalled_disks.remove(&f);
    assert!(
        c.wait_reply(handle).is_ok(),
        "the held forward went through"
    );
    assert!(c.forwards_delivered[forwards_before..]
        .iter()
        .any(|(from, _, _)| *from == f));
}
