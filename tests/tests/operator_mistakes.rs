//! Operator mistakes with real processes: each ends in a clear refusal naming both sides and the
//! fix, or in a correct cluster with every acknowledged write readable.

use raftkv_e2e::*;
use std::time::Duration;

fn get(api: &str, key: &str) -> (u16, Vec<u8>) {
    http("GET", &format!("{api}/{key}"), None)
}

fn cluster_flag(c: &Cluster) -> String {
    c.nodes
        .iter()
        .map(|n| n.peer_url())
        .collect::<Vec<_>>()
        .join(",")
}

fn set_cluster_flag(n: &mut NodeProc, flag: &str) {
    let i = n.args.iter().position(|a| a == "--cluster").unwrap();
    n.args[i + 1] = flag.to_string();
}

/// Every running node's `/v1/members` lists an incarnation for every member.
fn incarnations_recorded(c: &mut Cluster) -> bool {
    (0..c.nodes.len()).all(|i| {
        if !c.nodes[i].is_running() {
            return true;
        }
        let (code, body) = http("GET", &format!("{}/v1/members", c.nodes[i].api()), None);
        code == 200
            && serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| {
                v.as_array()
                    .is_some_and(|a| a.iter().all(|m| m["incarnation"].is_string()))
            })
    })
}

/// The README's own order: a single-node run, then `raftkv cluster --nodes 3` over the same
/// directory. Node 1 must refuse (it would otherwise elect itself alone and split the brain).
#[test]
fn a_single_node_directory_reused_as_one_node_of_three_is_refused() {
    let mut c = Cluster::configure("stale", 3, &[]);
    let three = cluster_flag(&c);
    let solo = c.nodes[0].peer_url();
    set_cluster_flag(&mut c.nodes[0], &solo);
    c.spawn(0);
    c.wait_leader();
    assert!(put_acked(&c.nodes[0].api(), "solo", "1", 1, 1, 30));
    assert!(c.stop(0).success());

    set_cluster_flag(&mut c.nodes[0], &three);
    c.spawn(0);
    let status = c.wait_exited(0, Duration::from_secs(30));
    assert!(!status.success(), "node 1 must refuse to start");
    let log = c.nodes[0].log_text();
    assert!(
        log.contains("never had") && log.contains("move it away") && log.contains("raftkv-1"),
        "the error names the directory, both sides and the fix:\n{log}"
    );

    // The operator follows the advice; the three-node cluster then starts clean.
    let old = c.dir.0.join("raftkv-1.old");
    std::fs::rename(&c.nodes[0].data_dir, &old).unwrap();
    for i in 0..3 {
        c.spawn(i);
    }
    c.wait_leader();
    assert!(put_acked(&c.nodes[1].api(), "k", "v", 2, 1, 30));
    for n in &c.nodes {
        assert_eq!(get(&n.api(), "k"), (200, b"v".to_vec()), "node {}", n.id);
    }
    assert_eq!(
        get(&c.nodes[0].api(), "solo").0,
        404,
        "another cluster's data"
    );
}

/// A wiped directory restarted under its old id and old flags: refused by its peers with an
/// error that says what to do; nothing acknowledged is lost; the documented way back (remove
/// the dead member, then add a new one with a new id) works.
#[test]
fn a_wiped_node_restarted_under_its_old_id_is_refused_and_replaced() {
    let mut c = Cluster::start("wiped", 3, &[]);
    c.wait_leader();
    for i in 0..20 {
        assert!(put_acked(
            &c.nodes[0].api(),
            &format!("k{i}"),
            "v",
            1,
            i + 1,
            30
        ));
    }
    poll(30, "every incarnation recorded everywhere", || {
        incarnations_recorded(&mut c).then_some(())
    });
    c.kill9(2);
    std::fs::remove_dir_all(&c.nodes[2].data_dir).unwrap();
    c.spawn(2);
    let status = c.wait_exited(2, Duration::from_secs(60));
    assert!(!status.success(), "the wiped node must stop");
    let log = c.nodes[2].log_text();
    assert!(
        log.contains("refuses this node") && log.contains("wiped") && log.contains("new id"),
        "the error says what happened and what to do:\n{log}"
    );
    // Every acknowledged write is there. The two live members may still be electing (node 3
    // may have led): a read not served yet is answered 503 or 504 and asked again; only 404
    // would be a lost write.
    for i in 0..20 {
        let key = format!("k{i}");
        poll(30, "a live member serves every acknowledged key", || {
            let (code, _) = get(&c.nodes[1].api(), &key);
            assert!(matches!(code, 200 | 503 | 504), "{key}: {code}");
            (code == 200).then_some(())
        });
    }

    // README, "Replacing a failed node": remove it first (the live voters keep their quorum),
    // then add the replacement under a new id and start it with --join on an empty directory.
    let api = c.nodes[0].api();
    let (code, body) = http("DELETE", &format!("{api}/v1/members/3"), None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let j = c.add_joiner(&[]);
    let body = serde_json::json!({"id": c.nodes[j].id, "peer_url": c.nodes[j].peer_url()});
    let (code, resp) = http(
        "POST",
        &format!("{api}/v1/members"),
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&resp));
    c.spawn(j);
    let new_api = c.nodes[j].api();
    poll(60, "the replacement has every key", || {
        (0..20)
            .all(|i| {
                http(
                    "GET",
                    &format!("{new_api}/v1/kv/k{i}?consistency=local"),
                    None,
                )
                .0 == 200
            })
            .then_some(())
    });
    assert!(put_acked(&new_api, "after", "1", 2, 1, 30));
}

/// `--cluster` moving a node's own peer URL is refused (peers would dial the old one); the URL
/// changes through the membership, then the restart with the new URL works.
#[test]
fn a_changed_peer_url_is_refused_until_changed_through_the_membership() {
    let mut c = Cluster::start("moved", 3, &[]);
    c.wait_leader();
    assert!(put_acked(&c.nodes[0].api(), "a", "1", 1, 1, 30));
    assert!(c.stop(1).success());
    let original = cluster_flag(&c);
    let new_url = format!("http://127.0.0.1:{}", free_port());
    let moved = original.replace(&c.nodes[1].peer_url(), &new_url);
    set_cluster_flag(&mut c.nodes[1], &moved);
    c.spawn(1);
    // Peers still dial the old URL, so nobody reaches it: it stops, within a bound, saying why.
    let status = c.wait_exited(1, Duration::from_secs(60));
    assert!(!status.success());
    let log = c.nodes[1].log_text();
    assert!(
        log.contains("PUT /v1/members/2")
            && log.contains(&new_url)
            && log.contains(&c.nodes[1].peer_url()),
        "the error names both URLs and the fix:\n{log}"
    );

    // Setting a URL is idempotent: an answer of unknown outcome (an election) is retried.
    let body = serde_json::json!({ "peer_url": new_url }).to_string();
    let url = format!("{}/v1/members/2", c.nodes[0].api());
    poll(30, "the membership takes the new URL", || {
        let (code, _) = http("PUT", &url, Some(body.as_bytes()));
        (code == 200).then_some(())
    });
    c.spawn(1);
    assert!(put_acked(&c.nodes[0].api(), "b", "2", 1, 2, 30));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let url = format!("{}/v1/kv/b?consistency=local", c.nodes[1].api());
    while http("GET", &url, None) != (200, b"2".to_vec()) {
        assert!(
            std::time::Instant::now() < deadline,
            "node 2 does not serve on its new URL:\n{}\n--- node 1:\n{}",
            c.nodes[1].log_text(),
            c.nodes[0].log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two nodes' directories swapped: each refuses, naming the id the directory belongs to.
#[test]
fn swapped_data_directories_are_refused() {
    let mut c = Cluster::start("swap", 3, &[]);
    c.wait_leader();
    assert!(put_acked(&c.nodes[0].api(), "a", "1", 1, 1, 30));
    assert!(c.stop(0).success());
    assert!(c.stop(1).success());
    let (d1, d2) = (c.nodes[0].data_dir.clone(), c.nodes[1].data_dir.clone());
    let tmp = c.dir.0.join("swap-tmp");
    std::fs::rename(&d1, &tmp).unwrap();
    std::fs::rename(&d2, &d1).unwrap();
    std::fs::rename(&tmp, &d2).unwrap();
    c.spawn(0);
    assert!(!c.wait_exited(0, Duration::from_secs(30)).success());
    let log = c.nodes[0].log_text();
    assert!(
        log.contains("belongs to node 2") && log.contains("--id 2"),
        "{log}"
    );
    std::fs::rename(&d1, &tmp).unwrap();
    std::fs::rename(&d2, &d1).unwrap();
    std::fs::rename(&tmp, &d2).unwrap();
    c.spawn(0);
    c.spawn(1);
    for n in &c.nodes {
        poll(30, "every node serves the write", || {
            (get(&n.api(), "a") == (200, b"1".to_vec())).then_some(())
        });
    }
}
