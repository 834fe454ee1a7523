//! Membership changes that would cost the cluster its quorum are refused (etcd's strict reconfig
//! check). The scenario the simulator found (seed 41050 before this check, a seed naming that
//! world only for that version of the code): in five voters two disks are lost, the operator
//! removes a healthy member, and the four voters left hold two live nodes: the replacement it
//! then adds stays at term 0 and the survivors stay PreCandidate forever.

mod harness;

use harness::{addr, Cluster};
use raftkv_core::memdir::CrashKind;
use raftkv_core::node::{ClientError, ClientOp, ClientReply, RejectReason};

fn change(c: &mut Cluster, op: ClientOp) -> Result<ClientReply, ClientError> {
    let leader = c.wait_leader();
    let h = c.submit(leader, op, None);
    c.wait_reply(h)
}

#[test]
fn removing_a_healthy_member_beside_two_lost_ones_is_refused() {
    let mut c = Cluster::new(5, 41050);
    c.put("a", "1");
    c.run(50);
    let leader = c.wait_leader();
    let lost: Vec<u64> = (1..=5).filter(|&i| i != leader).take(2).collect();
    let healthy = (1..=5)
        .find(|&i| i != leader && !lost.contains(&i))
        .unwrap();
    for &l in &lost {
        c.crash(l, CrashKind::PowerLoss);
    }
    c.run(100); // long enough for the leader to notice who is gone
    let r = change(&mut c, ClientOp::RemoveNode { id: healthy });
    assert!(
        matches!(
            r,
            Err(ClientError::Rejected(RejectReason::WouldLoseQuorum {
                active: 2,
                needed: 3
            }))
        ),
        "{r:?}"
    );
    // The README's order works: remove the lost ones, then add a replacement.
    for &l in &lost {
        assert!(matches!(
            change(&mut c, ClientOp::RemoveNode { id: l }),
            Ok(ClientReply::Members(_))
        ));
    }
    assert!(matches!(
        change(
            &mut c,
            ClientOp::AddNode {
                id: 6,
                addr: addr(6)
            }
        ),
        Ok(ClientReply::Members(_))
    ));
    c.start_joiner(6, 41050, |_| {});
    c.put("b", "2");
    c.wait_converged(500);
    assert_eq!(c.node(6).kv().get(b"a"), Some(&b"1"[..]));
}

#[test]
fn adding_a_voter_beside_a_dead_one_is_refused_until_it_is_removed() {
    let mut c = Cluster::new(3, 20018);
    c.put("a", "1");
    let leader = c.wait_leader();
    let dead = (1..=3).find(|&i| i != leader).unwrap();
    c.crash(dead, CrashKind::PowerLoss);
    c.run(100);
    let add = ClientOp::AddNode {
        id: 4,
        addr: addr(4),
    };
    let r = change(&mut c, add.clone());
    assert!(
        matches!(
            r,
            Err(ClientError::Rejected(RejectReason::WouldLoseQuorum {
                active: 2,
                needed: 3
            }))
        ),
        "four voters with two live ones could not commit: {r:?}"
    );
    assert!(matches!(
        change(&mut c, ClientOp::RemoveNode { id: dead }),
        Ok(ClientReply::Members(_))
    ));
    assert!(matches!(change(&mut c, add), Ok(ClientReply::Members(_))));
    c.start_joiner(4, 20018, |_| {});
    c.put("b", "2");
    c.wait_converged(500);
}

/// A learner receives everything, never counts toward a quorum, and is promoted by the leader
/// once it has caught up; an explicit promotion of a learner that is behind is refused.
#[test]
fn a_learner_catches_up_then_is_promoted_and_never_counts_before() {
    let mut c = Cluster::new(3, 77);
    for i in 0..50 {
        c.put(&format!("k{i}"), "v");
    }
    // Manual promotion: a learner that has not started is far behind.
    let r = change(
        &mut c,
        ClientOp::AddLearner {
            id: 4,
            addr: addr(4),
            auto_promote: false,
        },
    );
    assert!(matches!(r, Ok(ClientReply::Members(_))), "{r:?}");
    let r = change(&mut c, ClientOp::PromoteNode { id: 4 });
    assert!(
        matches!(
            r,
            Err(ClientError::Rejected(RejectReason::LearnerBehind {
                id: 4,
                ..
            }))
        ),
        "{r:?}"
    );
    // With the learner registered but down, losing one voter still leaves a quorum of 2/3:
    // the learner is not a voter.
    let leader = c.wait_leader();
    let v = (1..=3).find(|&i| i != leader).unwrap();
    c.crash(v, CrashKind::Process);
    c.put("while-one-voter-is-down", "1");
    c.restart(v);
    c.start_joiner(4, 77, |_| {});
    c.wait_converged(500);
    assert!(c.node(4).status().learners.contains(&4));
    assert!(matches!(
        change(&mut c, ClientOp::PromoteNode { id: 4 }),
        Ok(ClientReply::Members(_))
    ));
    c.wait_converged(300);
    assert!(c.node(1).status().learners.is_empty());

    // Automatic promotion.
    let r = change(
        &mut c,
        ClientOp::AddLearner {
            id: 5,
            addr: addr(5),
            auto_promote: true,
        },
    );
    assert!(matches!(r, Ok(ClientReply::Members(_))), "{r:?}");
    c.run(100);
    let leader = c.wait_leader();
    assert!(
        c.node(leader).status().learners.contains(&5),
        "not promoted before it has started"
    );
    c.start_joiner(5, 77, |_| {});
    c.run_until(500, "learner 5 promoted", |c| {
        c.leader()
            .is_some_and(|l| !c.node(l).status().learners.contains(&5))
    });
    c.put("after", "1");
    c.wait_converged(300);
    assert_eq!(c.node(5).kv().get(b"k0"), Some(&b"v"[..]));
}

/// A removal that reached the removed node's log but was never committed does not keep that
/// node from starting: only a committed removal is final. Found by the simulator (seed 5001812):
/// the leader appended `RemoveNode` for a member and lost its leadership, the member restarted
/// and refused to boot as "removed", and with another voter lost the cluster had no quorum.
#[test]
fn an_uncommitted_removal_in_its_own_log_does_not_stop_a_node_from_starting() {
    let mut c = Cluster::new(4, 51);
    c.put("a", "1");
    c.run(50);
    let leader = c.wait_leader();
    let victim = (1..=4).find(|&i| i != leader).unwrap();
    let others: Vec<u64> = (1..=4).filter(|&i| i != leader && i != victim).collect();
    // The removal reaches the victim only, and its acknowledgement never comes back.
    for &o in &others {
        c.cut_links.insert((leader, o));
    }
    c.cut_links.insert((victim, leader));
    let h = c.submit(leader, ClientOp::RemoveNode { id: victim }, None);
    let before = c.node(victim).status().last_index;
    c.run_until(50, "the removal in the victim's log", |c| {
        c.node(victim).status().persisted_index > before
    });
    assert!(
        !c.replies.contains_key(&h),
        "not committed: {:?}",
        c.replies.get(&h)
    );
    c.crash(victim, CrashKind::Process);
    c.cut_links.clear();
    c.restart(victim);
    assert!(c.is_up(victim));
    // The removal then commits (the old leader still holds it) or is truncated by a new
    // leader; either way the cluster goes on, and the victim stops only if it committed.
    c.put("b", "2");
    c.run(200);
    let leader = c.wait_leader();
    let removed = !c.node(leader).members().contains_key(&victim);
    assert_eq!(c.is_up(victim), !removed, "up only while a member");
}
