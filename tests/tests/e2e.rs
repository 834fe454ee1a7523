//! The seed scenario end to end: real `raftkv` processes on 127.0.0.1, killed, restarted,
//! compacted, joined, removed, and fed damaged files and garbage.

use raftkv_e2e::*;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn get(api: &str, key: &str) -> (u16, Vec<u8>) {
    http("GET", &format!("{api}/{key}"), None)
}

fn local_get(api: &str, key: &str) -> (u16, Vec<u8>) {
    http("GET", &format!("{api}/v1/kv/{key}?consistency=local"), None)
}

#[test]
fn put_on_one_node_read_on_every_node() {
    let mut c = Cluster::start("rw", 3, &[]);
    c.wait_leader();
    // raftexample's curl session, against a follower or the leader alike.
    assert!(put_acked(&c.nodes[0].api(), "my-key", "bar", 1, 1, 30));
    for n in &c.nodes {
        assert_eq!(
            get(&n.api(), "my-key"),
            (200, b"bar".to_vec()),
            "linearizable get on node {}",
            n.id
        );
    }
    for n in &c.nodes {
        poll(10, "local read sees the write", || {
            (local_get(&n.api(), "my-key") == (200, b"bar".to_vec())).then_some(())
        });
    }
    assert_eq!(get(&c.nodes[1].api(), "missing").0, 404);
    assert_eq!(
        http(
            "DELETE",
            &format!("{}/v1/kv/my-key", c.nodes[2].api()),
            None
        )
        .0,
        204
    );
    assert_eq!(get(&c.nodes[0].api(), "my-key").0, 404);
}

#[test]
fn killing_the_leader_loses_no_acknowledged_write() {
    let mut c = Cluster::start("kill", 3, &[]);
    c.wait_leader();
    let apis: Vec<String> = c.nodes.iter().map(|n| n.api()).collect();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(1));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (apis, acked, stop, seq) = (apis.clone(), acked.clone(), stop.clone(), seq.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let s = seq.fetch_add(1, Ordering::Relaxed);
                    let key = format!("w{w}-{s}");
                    // Any node will do: followers forward. A dead node just fails fast.
                    let api = &apis[i % apis.len()];
                    i += 1;
                    if put_acked(api, &key, "v", 100 + w, s, 2) {
                        acked.lock().unwrap().push(key);
                    }
                }
            })
        })
        .collect();
    poll(30, "writes flowing", || {
        (acked.lock().unwrap().len() > 50).then_some(())
    });
    let leader = c.wait_leader();
    c.kill9(leader);
    let before = acked.lock().unwrap().len();
    poll(30, "writes continue without the old leader", || {
        (acked.lock().unwrap().len() > before + 50).then_some(())
    });
    c.spawn(leader);
    poll(30, "restarted node serves", || {
        status(&c.nodes[leader].api())
    });
    let more = acked.lock().unwrap().len();
    poll(30, "writes continue after the restart", || {
        (acked.lock().unwrap().len() > more + 20).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    // Everyone catches up to the same applied index, then holds every acknowledged write.
    poll(60, "all nodes applied the same index", || {
        let idx: Vec<u64> = c
            .nodes
            .iter()
            .filter_map(|n| status(&n.api()))
            .map(|s| s["applied_index"].as_u64().unwrap())
            .collect();
        (idx.len() == 3 && idx.iter().all(|&i| i == idx[0])).then_some(())
    });
    for n in &c.nodes {
        for k in &acked {
            assert_eq!(
                local_get(&n.api(), k).0,
                200,
                "node {} lost acknowledged {k}",
                n.id
            );
        }
    }
}

fn write_many(api: &str, prefix: &str, count: u64, client: u64) {
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let api = api.to_string();
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                for i in (t..count).step_by(8) {
                    assert!(
                        put_acked(
                            &api,
                            &format!("{prefix}{i}"),
                            &format!("value-{i}"),
                            client * 100 + t,
                            i + 1,
                            30
                        ),
                        "{prefix}{i}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn snapshots_bound_the_disk_and_a_restart_loads_one() {
    let mut c = Cluster::start(
        "snap",
        3,
        &[
            "--snap-count",
            "100",
            "--catch-up-entries",
            "20",
            "--max-snapshots",
            "3",
            "--segment-size-bytes",
            "65536",
        ],
    );
    c.wait_leader();
    write_many(&c.nodes[0].api(), "k", 2000, 1);
    for n in &c.nodes {
        poll(30, "a snapshot beyond index 1500", || {
            status(&n.api())
                .and_then(|s| (s["snapshot_index"].as_u64().unwrap() > 1500).then_some(()))
        });
        let snaps = files_with_suffix(&n.data_dir, ".snap");
        let wals = files_with_suffix(&n.data_dir, ".wal");
        assert!(
            !snaps.is_empty() && snaps.len() <= 4,
            "node {}: {snaps:?}",
            n.id
        );
        assert!(
            wals.len() <= 8,
            "node {}: WAL not purged: {} segments",
            n.id,
            wals.len()
        );
        let s = status(&n.api()).unwrap();
        assert!(
            s["log_entries_in_memory"].as_u64().unwrap() <= 100 + 20 + 50,
            "node {}: {s}",
            n.id
        );
    }
    let victim = (c.wait_leader() + 1) % 3;
    assert!(c.stop(victim).success(), "graceful shutdown exits 0");
    c.spawn(victim);
    let api = c.nodes[victim].api();
    poll(30, "restarted node is up", || status(&api));
    assert!(
        c.nodes[victim]
            .log_text()
            .contains("loading snapshot at term"),
        "{}",
        c.nodes[victim].log_text()
    );
    for i in (0..2000).step_by(7) {
        assert_eq!(
            get(&api, &format!("k{i}")),
            (200, format!("value-{i}").into_bytes())
        );
    }
    poll(30, "restarted node holds all keys locally", || {
        (0..2000)
            .all(|i| local_get(&api, &format!("k{i}")).0 == 200)
            .then_some(())
    });
}

/// Adds node 4 (raftexample's `POST /4` on node 2), starts it with `--join`, and waits until it
/// has installed a snapshot from the leader; returns its index in `c.nodes`.
fn join_fourth(c: &mut Cluster, flags: &[&str]) -> usize {
    let j = c.add_joiner(flags);
    let url = c.nodes[j].peer_url();
    let (code, body) = http(
        "POST",
        &format!("{}/4", c.nodes[1].api()),
        Some(url.as_bytes()),
    );
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    c.spawn(j);
    let api4 = c.nodes[j].api();
    poll(60, "node 4 installs a snapshot", || {
        metric(&api4, "raftkv_snapshots_installed_total").filter(|&v| v >= 1)
    });
    j
}

#[test]
fn a_new_member_gets_a_snapshot_and_a_removed_one_stops() {
    let mut c = Cluster::start(
        "member",
        3,
        &["--snap-count", "50", "--catch-up-entries", "10"],
    );
    c.wait_leader();
    write_many(&c.nodes[0].api(), "m", 400, 2);
    let j = join_fourth(&mut c, &["--snap-count", "50", "--catch-up-entries", "10"]);
    let api4 = c.nodes[j].api();
    poll(60, "node 4 has every key", || {
        (0..400)
            .all(|i| local_get(&api4, &format!("m{i}")).0 == 200)
            .then_some(())
    });
    assert!(
        !c.nodes[j].log_text().contains("index=1 "),
        "node 4 must not replay the log from the start"
    );

    let (code, body) = http("DELETE", &format!("{}/3", c.nodes[0].api()), None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let child = c.nodes[2].child.as_mut().unwrap();
    let st = wait_exit(child, Duration::from_secs(30));
    c.nodes[2].child = None;
    assert!(st.success(), "a removed node exits cleanly");
    assert!(put_acked(&c.nodes[0].api(), "after-remove", "1", 9, 1, 30));
    assert_eq!(get(&api4, "after-remove"), (200, b"1".to_vec()));
}

/// A state many peer frames large reaches a new member: the snapshot file streams in chunks
/// (the frame limit once capped the state a cluster could hold).
#[test]
fn a_state_many_frames_large_reaches_a_new_member() {
    let flags = [
        "--snap-count",
        "20",
        "--catch-up-entries",
        "5",
        "--max-frame-bytes",
        "262144",
    ];
    let mut c = Cluster::start("bigsnap", 3, &flags);
    c.wait_leader();
    let value = |i: u64| format!("{i:08}").repeat(8 << 10); // 64 KiB each
    let count = 96u64; // 6 MiB: 24 frames' worth
    for i in 0..count {
        assert!(
            put_acked(
                &c.nodes[0].api(),
                &format!("big{i}"),
                &value(i),
                7,
                i + 1,
                30
            ),
            "big{i}"
        );
    }
    let j = join_fourth(&mut c, &flags);
    let api4 = c.nodes[j].api();
    poll(60, "node 4 holds every value", || {
        (0..count)
            .all(|i| local_get(&api4, &format!("big{i}")) == (200, value(i).into_bytes()))
            .then_some(())
    });
    let leader_logs: String = c.nodes[..3].iter().map(|n| n.log_text()).collect();
    assert!(
        leader_logs.contains("streaming snapshot file to follower"),
        "{leader_logs}"
    );
    assert!(c.nodes[j]
        .log_text()
        .contains("received and verified snapshot file"));
}

/// Writes `n` keys to a one-node cluster and stops it gracefully.
fn single_node_with_data(tag: &str, n: u64, extra: &[&str]) -> Cluster {
    let mut c = Cluster::start(tag, 1, extra);
    c.wait_leader();
    write_many(&c.nodes[0].api(), "d", n, 3);
    assert!(c.stop(0).success());
    c
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    files_with_suffix(dir, ".wal").pop().expect("a WAL segment")
}

#[test]
fn a_torn_wal_tail_is_repaired_on_start() {
    let mut c = single_node_with_data("torn", 50, &[]);
    let seg = last_segment(&c.nodes[0].data_dir);
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let bytes = std::fs::read(&seg).unwrap();
    let contents = raftkv_core::wal::read_segments(&[(name, bytes)]).unwrap();
    // Half of a frame that was being written when the power went: the rest of it reads as zeros.
    let mut frame = Vec::new();
    let rec = raftkv_core::wal::Record::HardState(raftkv_core::wal::HardStateRec {
        term: 99,
        vote: 1,
        commit: 99,
    });
    raftkv_core::wal::frame::encode_frame(&rec, contents.tail.crc, &mut frame);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&frame[..frame.len() / 2], contents.tail.end_offset)
        .unwrap();
    f.sync_all().unwrap();
    c.spawn(0);
    let api = c.nodes[0].api();
    poll(30, "node starts after repair", || status(&api));
    assert!(
        c.nodes[0].log_text().contains("repairing torn WAL tail"),
        "{}",
        c.nodes[0].log_text()
    );
    for i in 0..50 {
        assert_eq!(get(&api, &format!("d{i}")).0, 200);
    }
}

#[test]
fn wal_corruption_in_the_middle_refuses_to_start_and_names_file_and_offset() {
    let mut c = single_node_with_data("corrupt", 50, &[]);
    let seg = last_segment(&c.nodes[0].data_dir);
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let mut bytes = std::fs::read(&seg).unwrap();
    let contents = raftkv_core::wal::read_segments(&[(name.clone(), bytes.clone())]).unwrap();
    // Flip a bit inside an early entry record: bit rot in synced data, followed by valid frames.
    let victim = contents
        .records
        .iter()
        .find(|r| matches!(r.record, raftkv_core::wal::Record::Entry(_)))
        .unwrap();
    let at = victim.offset as usize + 12;
    bytes[at] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    c.spawn(0);
    let child = c.nodes[0].child.as_mut().unwrap();
    let st = wait_exit(child, Duration::from_secs(20));
    c.nodes[0].child = None;
    assert!(!st.success(), "must refuse to start");
    let log = c.nodes[0].log_text();
    assert!(
        log.contains(&name) && log.contains(&format!("offset {}", victim.offset)),
        "{log}"
    );
}

#[test]
fn a_corrupt_newest_snapshot_falls_back_to_an_older_one() {
    let mut c = single_node_with_data(
        "badsnap",
        400,
        &["--snap-count", "100", "--catch-up-entries", "10"],
    );
    let snaps = files_with_suffix(&c.nodes[0].data_dir, ".snap");
    assert!(snaps.len() >= 2, "{snaps:?}");
    let newest = snaps.last().unwrap().clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&newest, &bytes).unwrap();
    c.spawn(0);
    let api = c.nodes[0].api();
    poll(30, "node starts from the older snapshot", || status(&api));
    let log = c.nodes[0].log_text();
    assert!(log.contains("set aside as .broken"), "{log}");
    // The rename is in the startup job, which the node may still be running when it first
    // answers: wait for it, then for the original name to be gone.
    let broken = std::path::PathBuf::from(format!("{}.broken", newest.display()));
    poll(10, "the bad file is kept, renamed", || {
        broken.exists().then_some(())
    });
    assert!(!newest.exists(), "the bad file is renamed, not copied");
    for i in 0..400 {
        assert_eq!(get(&api, &format!("d{i}")).0, 200, "d{i}");
    }
}

#[test]
fn bad_http_input_and_peer_garbage_leave_the_cluster_serving() {
    let mut c = Cluster::start("bad", 3, &["--max-body-bytes", "1024"]);
    c.wait_leader();
    let api = c.nodes[0].api();
    assert_eq!(
        http("PUT", &format!("{api}/big"), Some(&[b'x'; 4096])).0,
        413
    );
    assert_eq!(http("PATCH", &format!("{api}/k"), None).0, 405);
    assert_eq!(http("PUT", &format!("{api}/"), Some(b"v")).0, 400);
    assert_eq!(
        http(
            "POST",
            &format!("{api}/notanid"),
            Some(b"http://127.0.0.1:1")
        )
        .0,
        400
    );
    assert_eq!(http("POST", &format!("{api}/7"), Some(b"not a url")).0, 400);
    assert_eq!(http("DELETE", &format!("{api}/0"), None).0, 400);
    assert_eq!(
        http("GET", &format!("{api}/k?consistency=maybe"), None).0,
        400
    );
    assert_eq!(
        http("POST", &format!("{api}/v1/members"), Some(b"{not json")).0,
        400
    );
    assert_eq!(
        http_with(
            "PUT",
            &format!("{api}/k"),
            Some(b"v"),
            &[("x-raftkv-client-id", "abc"), ("x-raftkv-request-seq", "1")]
        )
        .0,
        400
    );
    // Garbage, a huge length prefix, and a truncated frame on every peer port.
    for n in &c.nodes {
        for payload in [
            b"\x05\x00\x00\x00hello".to_vec(),
            vec![0xff; 64],
            b"\x10\x00\x00\x00RKVM".to_vec(),
        ] {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", n.peer_port)) {
                let _ = s.write_all(&payload);
            }
        }
    }
    assert!(put_acked(&api, "still-serving", "yes", 5, 1, 30));
    for n in &mut c.nodes {
        assert!(n.is_running(), "node {} died", n.id);
        assert_eq!(get(&n.api(), "still-serving"), (200, b"yes".to_vec()));
    }
}

#[test]
fn two_processes_cannot_share_a_data_dir() {
    let mut c = Cluster::start("lock", 1, &[]);
    c.wait_leader();
    let n = &c.nodes[0];
    let out = std::process::Command::new(raftkv_bin())
        .args([
            "--port",
            &free_port().to_string(),
            "--cluster",
            &format!("http://127.0.0.1:{}", free_port()),
        ])
        .arg("--data-dir")
        .arg(&n.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another raftkv process"));
    assert!(c.nodes[0].is_running());
}
