//! The supervisor: builds the world, schedules each fault class from its own stream for the
//! fault phase, heals, then checks liveness, identity and convergence, and tears the world down.

use super::*;

/// Liveness bound: after the network heals and every node is back, every member must serve a
/// write and a linearizable read, and all must converge, within this many simulated seconds.
pub const LIVENESS_BOUND_S: u64 = 15;

pub(super) struct Supervisor {
    world: Arc<World>,
    handle: Handle,
    /// Each fault class schedules and aims its faults from its own stream.
    streams: Streams,
}

impl Supervisor {
    pub(super) fn is_up(&self, id: u64) -> bool {
        self.world.inboxes.lock().unwrap().contains_key(&id)
    }

    pub(super) fn crash(&mut self, victim: u64, kind: CrashKind, wipe: bool) {
        let world = self.world.clone();
        let world = &world;
        let was_busy = world.disks.take_busy(victim);
        if world.disks.take_synced(victim) {
            world.count(Counter::CrashesBetweenSyncAndSend);
        }
        let Some(nid) = world.node_handle_id(victim) else {
            return;
        };
        self.handle.kill(nid);
        world.paused.lock().unwrap().remove(&victim);
        world.inboxes.lock().unwrap().remove(&victim);
        world.views.lock().unwrap().remove(&victim);
        let rng = self.streams.of(FaultClass::Crashes);
        let lost = world
            .disks
            .with(victim, |d| d.crash(kind, &mut |n| rng.below(n)));
        world.disks.bump_epoch(victim);
        world.obs.lock().unwrap().faults_injected += 1;
        world.count(if kind == CrashKind::PowerLoss {
            Counter::CrashesPowerLoss
        } else {
            Counter::CrashesProcess
        });
        if was_busy {
            world.count(Counter::CrashesDuringIo);
        }
        let kind_name = match kind {
            CrashKind::PowerLoss => "power_loss",
            CrashKind::Process => "process",
        };
        world.record(victim, "fault", serde_json::json!({"fault": "crash", "kind": kind_name, "sectors_lost": lost, "io_in_flight": was_busy, "disk_lost": wipe}));
        if wipe {
            world.disks.replace(victim, MemDir::new());
            world.disks.mark_damaged(victim);
            world.count(Counter::DiskLosses);
            world.unrecoverable.lock().unwrap().insert(victim);
        } else {
            if world.cfg.swarm.operator_mistakes
                && self
                    .streams
                    .of(FaultClass::OperatorMistakes)
                    .chance(world.cfg.rare.mistake)
            {
                self.plan_mistake(victim);
            }
            let down_s = 0.05
                + world.cfg.process.down_max_s
                    * (self.streams.of(FaultClass::Crashes).below(1000) as f64 / 1000.0);
            world
                .down
                .lock()
                .unwrap()
                .insert(victim, Instant::now() + sim_secs(down_s));
        }
    }

    /// The operator's next mistake with `victim`, which is down: wipe its disk and restart it
    /// under its old id, or start it on the wrong directory or with the wrong flags.
    pub(super) fn plan_mistake(&mut self, victim: u64) {
        let world = &self.world;
        let members = world.member_ids();
        let rng = self.streams.of(FaultClass::OperatorMistakes);
        let mistake = match rng.below(4) {
            0 => {
                let minority = !world.disks.is_damaged(victim)
                    && world.disks.damaged_count() < (members.len() - 1) / 2;
                if !minority || !world.incarnation_known_everywhere(victim) {
                    return;
                }
                world.disks.replace(victim, MemDir::new());
                world.obs.lock().unwrap().disk_replaced(victim);
                world.disks.mark_damaged(victim);
                world.wiped.lock().unwrap().insert(victim);
                // Restarted where the leader's heartbeats cannot reach it (a one-way link
                // failure), it campaigns under its new incarnation, and its peers must refuse
                // its votes; otherwise the first heartbeat stops it before it sends anything.
                // Drawn whatever the switch, so turning partitions off changes no other draw.
                let deaf = rng.chance(0.5);
                if deaf && world.cfg.is_on(FaultClass::Partitions) {
                    world.deaf_restarts.lock().unwrap().insert(victim);
                }
                world.count(Counter::MistakesWipedRestart);
                world.record(
                    victim,
                    "fault",
                    serde_json::json!({"fault": "disk_wiped", "then": "restarted under its old id"}),
                );
                return;
            }
            1 => Mistake::StaleDirectory,
            2 => {
                let others: Vec<u64> = members.into_iter().filter(|&m| m != victim).collect();
                Mistake::OtherNodesDirectory(others[rng.below(others.len() as u64) as usize])
            }
            _ => Mistake::ChangedCluster,
        };
        world.count(Counter::MistakesAtStart);
        world.mistakes.lock().unwrap().insert(victim, mistake);
    }

    pub(super) fn restart_due(&mut self, all: bool) {
        let world = &self.world;
        let now = Instant::now();
        let mut due = due_ids(&world.down, all, now);
        due.extend(std::mem::take(&mut *world.exited.lock().unwrap()));
        for id in due {
            world.down.lock().unwrap().remove(&id);
            if world.retired.lock().unwrap().contains(&id)
                || world.unrecoverable.lock().unwrap().contains(&id)
            {
                continue;
            }
            let Some(nid) = world.node_handle_id(id) else {
                continue;
            };
            world.record(id, "fault", serde_json::json!({"fault": "restart"}));
            world.count(Counter::Restarts);
            if world.deaf_restarts.lock().unwrap().remove(&id) {
                self.deafen_to_leader(id);
            }
            self.handle.restart(nid);
        }
        for id in due_ids(&world.paused, all, now) {
            world.paused.lock().unwrap().remove(&id);
            if let Some(nid) = world.node_handle_id(id) {
                self.handle.resume(nid);
            }
        }
    }

    /// Blocks the links from the leader (every other member when none is known) to `id`,
    /// replacing the current partition; the next partition event, or the heal, lifts it.
    fn deafen_to_leader(&self, id: u64) {
        let world = &self.world;
        if world.net.is_calm() {
            return;
        }
        let from: Vec<u64> = match world.leader().filter(|&l| l != id) {
            Some(l) => vec![l],
            None => world
                .member_ids()
                .into_iter()
                .filter(|&m| m != id)
                .collect(),
        };
        let blocked: BTreeSet<(u64, u64)> = from.into_iter().map(|f| (f, id)).collect();
        world.record(
            0,
            "fault",
            serde_json::json!({"fault": "partition", "shape": "deaf_to_leader", "blocked": blocked}),
        );
        world.obs.lock().unwrap().faults_injected += 1;
        world.count(Counter::PartitionsOneWay);
        world.net.partition(blocked);
    }

    /// A member that is up and not paused, drawn from `class`'s stream (crashes and pauses
    /// pick their own victims).
    pub(super) fn pick_victim(&mut self, class: FaultClass) -> Option<u64> {
        let paused = self.world.paused.lock().unwrap().clone();
        let up: Vec<u64> = self
            .world
            .member_ids()
            .into_iter()
            .filter(|id| self.is_up(*id) && !paused.contains_key(id))
            .collect();
        let busy: Vec<u64> = self
            .world
            .disks
            .busy_ids()
            .into_iter()
            .filter(|id| up.contains(id))
            .collect();
        let rng = self.streams.of(class);
        let pool = if !busy.is_empty() && rng.chance(self.world.cfg.process.prefer_busy) {
            busy
        } else {
            up
        };
        (!pool.is_empty()).then(|| pool[rng.below(pool.len() as u64) as usize])
    }

    pub(super) fn partition(&mut self) {
        let world = &self.world;
        let ids = world.member_ids();
        let mut blocked = BTreeSet::new();
        let rng = self.streams.of(FaultClass::Partitions);
        let kind = rng.below(5);
        match kind {
            0 => {} // heal
            1 => {
                // Symmetric split into two sides.
                let side: BTreeMap<u64, bool> =
                    ids.iter().map(|&i| (i, rng.below(2) == 0)).collect();
                for &a in &ids {
                    for &b in &ids {
                        if side[&a] != side[&b] {
                            blocked.insert((a, b));
                        }
                    }
                }
            }
            2 => {
                // One-way link failures.
                for _ in 0..rng.range(1, ids.len() as u64 + 1) {
                    let a = ids[rng.below(ids.len() as u64) as usize];
                    let b = ids[rng.below(ids.len() as u64) as usize];
                    if a != b {
                        blocked.insert((a, b));
                    }
                }
            }
            _ => {
                // Isolate the leader (or a random node when none is known).
                let leader = world.leader();
                let victim = leader.unwrap_or_else(|| ids[rng.below(ids.len() as u64) as usize]);
                for &o in &ids {
                    if o != victim {
                        blocked.insert((victim, o));
                        blocked.insert((o, victim));
                    }
                }
            }
        }
        let shape = match kind {
            0 => "healed",
            1 => "split",
            2 => "one_way",
            _ => "isolate_leader",
        };
        world.record(
            0,
            "fault",
            serde_json::json!({"fault": "partition", "shape": shape, "blocked": blocked}),
        );
        if !blocked.is_empty() {
            world.obs.lock().unwrap().faults_injected += 1;
            world.count(match kind {
                1 => Counter::PartitionsSplit,
                2 => Counter::PartitionsOneWay,
                _ => Counter::PartitionsIsolateLeader,
            });
        }
        world.net.partition(blocked);
    }
}

/// The supervisor: builds the world, injects faults for `fault_s`, heals, checks liveness,
/// lets clients finish, waits for convergence, and leaves the verdicts in the observer.
pub async fn supervise(world: Arc<World>) {
    let handle = Handle::current();
    let (net_tx, net_rx) = mpsc::unbounded_channel();
    world.net.connect(net_tx);
    let net_node = handle.create_node().name("net").build();
    net_node.spawn(net_loop(world.clone(), net_rx));
    for id in 1..=world.cfg.nodes {
        world.spawn_node(id);
    }
    let ops_node = handle.create_node().name("operator").build();
    let (member_tx, member_rx) = mpsc::unbounded_channel();
    let operator = Operator::new(world.clone());
    ops_node.spawn(operator.run(member_rx));
    let clients_node = handle.create_node().name("clients").build();
    let mut client_tasks = Vec::new();
    for cid in 1..=world.cfg.clients {
        client_tasks.push(clients_node.spawn(client_main(world.clone(), cid)));
    }
    let mut sup = Supervisor {
        world: world.clone(),
        handle: handle.clone(),
        streams: Streams::new(world.cfg.seed, "supervisor"),
    };

    // Fault phase.
    let cfg = world.cfg.clone();
    let fault_end = Instant::now() + Duration::from_secs(cfg.fault_s);
    let start = Instant::now();
    use FaultClass::{Crashes, DiskLoss, Membership, Partitions, Pauses};
    let mut next_crash = later(start, cfg.process.crash_every_s, sup.streams.of(Crashes));
    let mut next_partition = later(start, cfg.net.partition_every_s, sup.streams.of(Partitions));
    let mut next_pause = if cfg.swarm.pauses {
        later(start, cfg.pause_every_s, sup.streams.of(Pauses))
    } else {
        None
    };
    let mut next_member = if cfg.swarm.membership {
        later(start, cfg.membership_every_s, sup.streams.of(Membership))
    } else {
        None
    };
    while Instant::now() < fault_end {
        sleep(Duration::from_millis(5)).await;
        let now = Instant::now();
        sup.restart_due(false);
        if next_crash.is_some_and(|t| now >= t) {
            next_crash = later(now, cfg.process.crash_every_s, sup.streams.of(Crashes));
            if let Some(victim) = sup.pick_victim(Crashes) {
                let kind = if sup.streams.of(Crashes).chance(cfg.process.power_loss) {
                    CrashKind::PowerLoss
                } else {
                    CrashKind::Process
                };
                let wipe = cfg.swarm.disk_loss
                    && world.may_damage(victim)
                    && sup.streams.of(DiskLoss).chance(cfg.rare.disk_loss);
                sup.crash(victim, kind, wipe);
            }
        }
        if next_partition.is_some_and(|t| now >= t) {
            next_partition = later(now, cfg.net.partition_every_s, sup.streams.of(Partitions));
            sup.partition();
        }
        if next_pause.is_some_and(|t| now >= t) {
            next_pause = later(now, cfg.pause_every_s, sup.streams.of(Pauses));
            if let Some(victim) = sup.pick_victim(Pauses) {
                if let Some(nid) = world.node_handle_id(victim) {
                    handle.pause(nid);
                    let until = now
                        + sim_secs(
                            0.05 + 2.0 * (sup.streams.of(Pauses).below(1000) as f64 / 1000.0),
                        );
                    world.paused.lock().unwrap().insert(victim, until);
                    world.count(Counter::Pauses);
                    let for_ms = (until - now).as_millis() as u64;
                    world.record(
                        victim,
                        "fault",
                        serde_json::json!({"fault": "pause", "for_ms": for_ms}),
                    );
                }
            }
        }
        if next_member.is_some_and(|t| now >= t) {
            next_member = later(now, cfg.membership_every_s, sup.streams.of(Membership));
            let ids = world.member_ids();
            if ids.len() <= 3 || (ids.len() < 5 && sup.streams.of(Membership).below(2) == 0) {
                let _ = member_tx.send(MemberCmd::Grow);
            } else {
                let leader = world.leader();
                let others: Vec<u64> = ids.into_iter().filter(|id| Some(*id) != leader).collect();
                let _ = member_tx.send(MemberCmd::Shrink(
                    others[sup.streams.of(Membership).below(others.len() as u64) as usize],
                ));
            }
        }
    }

    // Calm phase: heal everything, bring everyone back, keep the clients going.
    world.net.heal();
    drop(member_tx);
    sup.restart_due(true);
    let healed_at = Instant::now();
    world.record(0, "fault", serde_json::json!({"fault": "healed"}));
    // Replacements of unrecoverable nodes finish first (bounded), then the liveness clock runs.
    let settle_deadline = healed_at + Duration::from_secs(LIVENESS_BOUND_S);
    sleep(Duration::from_millis(50)).await;
    while !world.operator_idle.load(Ordering::Relaxed) && Instant::now() < settle_deadline {
        sleep(Duration::from_millis(20)).await;
        sup.restart_due(true);
    }
    if !world.operator_idle.load(Ordering::Relaxed) {
        let stuck = world.unrecoverable.lock().unwrap().clone();
        world.violation(Checker::Liveness, format!("membership work (replacing {stuck:?}) did not finish within {LIVENESS_BOUND_S} s of healing"));
    }
    let liveness_deadline = Instant::now() + Duration::from_secs(LIVENESS_BOUND_S);

    // Checker 5 (liveness): every member serves a write and a linearizable read in bound.
    for id in world.member_ids() {
        let mut served = false;
        while !served
            && Instant::now() < liveness_deadline
            && world.members.lock().unwrap().contains_key(&id)
        {
            let probe = format!("probe-{id}");
            let put = ClientOp::Put {
                key: probe.clone().into_bytes(),
                value: b"1".to_vec(),
            };
            if let Some(Ok(_)) = call(&world, id, None, put).await {
                let get = ClientOp::Get {
                    key: probe.into_bytes(),
                };
                served = matches!(
                    call(&world, id, None, get).await,
                    Some(Ok(ClientReply::Value(Some(_))))
                );
            }
            if !served {
                sleep(Duration::from_millis(50)).await;
                sup.restart_due(true);
            }
        }
        if !served && world.members.lock().unwrap().contains_key(&id) {
            world.violation(
                Checker::Liveness,
                format!("member {id} did not serve a write and a read within {LIVENESS_BOUND_S} s"),
            );
        }
    }
    let rest = Duration::from_secs(cfg.calm_s).saturating_sub(healed_at.elapsed());
    sleep(rest).await;
    world.workload.stop();
    for t in client_tasks {
        let _ = t.await;
    }

    // Identity: every node restarted on a wiped disk under its old id was refused (its peers
    // hold its old incarnation), so it never voted and was replaced.
    for id in world.wiped.lock().unwrap().clone() {
        if world.members.lock().unwrap().contains_key(&id) {
            world.violation(
                Checker::Identity,
                format!("node {id} was restarted on a wiped disk under its old id and its peers never refused it"),
            );
        }
    }

    // Convergence: every member applies the same index and holds the same state.
    let deadline = Instant::now() + Duration::from_secs(LIVENESS_BOUND_S);
    loop {
        let members = world.member_ids();
        let views = world.views.lock().unwrap().clone();
        let mine: Vec<&(u64, u64, u64, StateRole)> =
            members.iter().filter_map(|id| views.get(id)).collect();
        let converged = mine.len() == members.len() && {
            let first = mine[0];
            mine.iter()
                .all(|v| v.0 == first.0 && v.1 == first.1 && v.2 <= first.0)
        };
        if converged {
            break;
        }
        if Instant::now() > deadline {
            world.violation(Checker::Liveness, format!("members {members:?} did not converge within {LIVENESS_BOUND_S} s after healing: {views:?}"));
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }

    // Tear the world down inside the runtime. A task still parked on a channel or a timer when
    // the runtime is dropped is never dropped itself (its waker dies with the runtime), and each
    // holds the world: a sweep then kept every seed's world alive (2.4 MB a seed). Killing a
    // node wakes its tasks; the executor drops them the next time it runs.
    let all: Vec<madsim::task::NodeId> = world
        .nodes
        .lock()
        .unwrap()
        .values()
        .map(|n| n.id())
        .chain([net_node.id(), ops_node.id(), clients_node.id()])
        .collect();
    for nid in all {
        handle.kill(nid);
    }
    sleep(Duration::from_millis(1)).await;
}
