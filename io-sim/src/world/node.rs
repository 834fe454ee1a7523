//! The shell around each `core` node: boot from the simulated disk, run the event loop, turn
//! actions into disk jobs, packets and replies, and report what the node says to the observer.

use super::*;

/// A raft node's life: recover from its disk, then run the event loop until killed or stopped.
pub(super) async fn node_main(world: Arc<World>, id: u64) {
    let incarnation = {
        let mut inc = world.incarnations.lock().unwrap();
        let e = inc.entry(id).or_insert(0);
        *e += 1;
        *e
    };
    let rot = if incarnation > 1 {
        rot_disk(&world, id)
    } else {
        Rot::default()
    };
    let cfg = world.node_config(id, incarnation);
    let flags = world.flags.lock().unwrap()[&id].clone();
    if let Some(mistake) = world.mistakes.lock().unwrap().remove(&id) {
        world.try_mistake(id, &cfg, &flags, mistake);
    }
    let booted = world.disks.with(id, |d| {
        let mut first_read = true;
        boot(cfg, &flags, &d.list(), &mut |n, at, max| {
            if rot.unreadable && std::mem::take(&mut first_read) {
                // A latent sector error reads as EIO.
                return Err(std::io::Error::from_raw_os_error(5).into());
            }
            d.read_at(n, at, max)
        })
    });
    let mut node = match booted {
        Ok(n) => n,
        Err(BootError::Removed { .. })
        | Err(BootError::Node(raftkv_core::node::NodeError::Removed)) => {
            world.record(
                id,
                "stopped",
                serde_json::json!({"reason": "data directory of a removed node"}),
            );
            return;
        }
        Err(e) => {
            // Expected only where the disk was made to rot: then the node is replaced.
            if let Some((segment, at)) = rot.sealed_segment.as_ref().filter(|_| rot.only_damage) {
                let for_that = matches!(
                    &e,
                    BootError::Recovery(RecoveryError::Wal(WalError::Corrupt { segment: s, .. }))
                        if s == segment
                );
                if !for_that {
                    world.violation(
                        Checker::Recovery,
                        format!(
                            "node {id} incarnation {incarnation} refused its data directory \
                             ({e}), not for the damage at byte {at} of sealed WAL segment \
                             {segment}, the only damage it holds"
                        ),
                    );
                }
            }
            if world.disks.is_bad(id) {
                world.count(Counter::CorruptionDetected);
                world.record(
                    id,
                    "unrecoverable",
                    serde_json::json!({"error": e.to_string()}),
                );
                world.unrecoverable.lock().unwrap().insert(id);
            } else {
                world.violation(
                    Checker::Recovery,
                    format!("node {id} incarnation {incarnation}: {e}"),
                );
            }
            return;
        }
    };
    if let Some((segment, at)) = &rot.sealed_segment {
        world.violation(
            Checker::Recovery,
            format!(
                "node {id} incarnation {incarnation} started from a sealed WAL segment damaged \
                 at byte {at} ({segment}) without noticing: recovery reads and checks every \
                 byte of a sealed segment"
            ),
        );
    }
    world.record(id, "start", serde_json::json!({"incarnation": incarnation}));
    let (tx, mut rx) = mpsc::unbounded_channel();
    world.inboxes.lock().unwrap().insert(id, tx);
    if incarnation > 1 && world.cfg.swarm.stale_messages {
        // Packets from the previous incarnation, still wandering the network.
        let old = world.net.take_sent(id);
        for (to, bytes) in old.into_iter().take(4) {
            world.count(Counter::StaleMessagesReplayed);
            world.net_send(id, to, "stale", bytes);
        }
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut pending: BTreeMap<u64, oneshot::Sender<Reply>> = BTreeMap::new();
    let mut next_handle = 1u64;
    let drift = world.cfg.drift_of(id);
    let tick = Duration::from_micros((world.cfg.tick_ms as f64 * 1000.0 * drift) as u64);
    let mut next_tick = Instant::now() + tick;
    let mut last_applied = u64::MAX;
    let mut last_hash = 0;
    loop {
        for action in node.drain() {
            match action {
                Action::Disk(job) => {
                    // A cut takes the spare (renamed from its temp name) or creates its file.
                    for op in &job.ops {
                        match op {
                            FileOp::Rename { from, .. }
                                if raftkv_core::wal::is_spare_name(from) =>
                            {
                                world.count(Counter::WalSparesUsed)
                            }
                            FileOp::Create { name, size_bytes }
                                if *size_bytes > 0 && name.ends_with(".wal.tmp") =>
                            {
                                world.count(Counter::WalSegmentsCreated)
                            }
                            _ => {}
                        }
                    }
                    madsim::task::spawn(disk_job(world.clone(), id, job, done_tx.clone()));
                }
                Action::Prepare(job) => {
                    world.count(Counter::WalSparesPrepared);
                    // Beside the WAL's jobs, as the real shell's background lane runs it.
                    madsim::task::spawn(disk_job(world.clone(), id, job, done_tx.clone()));
                }
                Action::Snapshot(job) => {
                    world.count(Counter::SnapshotJobs);
                    madsim::task::spawn(snapshot_job(world.clone(), id, job, done_tx.clone()));
                }
                Action::Read(job) => {
                    madsim::task::spawn(read_job(world.clone(), id, job, done_tx.clone()));
                }
                Action::Send(o) => {
                    {
                        let mut obs = world.obs.lock().unwrap();
                        obs.record_bytes(&o.to.to_le_bytes());
                        obs.record_bytes(&o.bytes);
                    }
                    if o.kind == FrameKind::SnapshotChunk {
                        world.count(Counter::SnapshotChunksSent);
                    }
                    let (to, kind) = (o.to, o.kind);
                    let label = match kind {
                        FrameKind::Raft => "raft",
                        FrameKind::SnapshotChunk => "snapshot_chunk",
                        FrameKind::Forward { .. } => "forward",
                        FrameKind::Other => "other",
                    };
                    node.sent(if world.net_send(id, to, label, o.bytes) {
                        SendOutcome::Delivered { to, kind }
                    } else {
                        SendOutcome::Failed { to, kind }
                    });
                }
                Action::Reply { handle, result } => {
                    if let Some(tx) = pending.remove(&handle) {
                        let _ = tx.send(result);
                    }
                }
                Action::Event(e) => observe_event(&world, id, e),
            }
        }
        let s = node.status();
        // Index 0 is a joiner before its first snapshot: not replicated state yet. The state
        // hash (a serialisation of the whole state machine) is taken only when applied moves.
        if s.applied_index != last_applied {
            last_applied = s.applied_index;
            last_hash = node.kv().hash();
            if s.applied_index > 0 {
                world
                    .obs
                    .lock()
                    .unwrap()
                    .state(id, s.applied_index, last_hash);
            }
            world
                .recorded
                .lock()
                .unwrap()
                .insert(id, s.incarnations.clone());
        }
        world
            .views
            .lock()
            .unwrap()
            .insert(id, (s.applied_index, last_hash, s.commit_index, s.role));
        if let Some(reason) = node.stopped() {
            world.node_stopped(id, reason);
            return;
        }
        tokio::select! {
            biased;
            Some(end) = done_rx.recv() => job_ended(&mut node, end),
            Some(m) = rx.recv() => {
                inbound(&world, &mut node, &mut pending, &mut next_handle, m);
            }
            _ = sleep_until(next_tick) => {
                node.tick();
                next_tick += tick;
            }
        }
        // Like the real shell, take every input already waiting before the next drain, so one
        // Ready may follow several inputs (a burst after a pause, frames that arrived together):
        // raft-rs behaves differently then (see `node::raft_rs_guard`).
        for _ in 1..MAX_INPUTS_PER_BATCH {
            if let Ok(end) = done_rx.try_recv() {
                job_ended(&mut node, end);
            } else if let Ok(m) = rx.try_recv() {
                inbound(&world, &mut node, &mut pending, &mut next_handle, m);
            } else {
                break;
            }
        }
    }
}

/// Inputs handled before one drain, at most (the real shell's bound is larger; a simulated
/// burst is rarely longer).
const MAX_INPUTS_PER_BATCH: usize = 64;

fn job_ended(node: &mut raftkv_core::node::Node, end: JobEnd) {
    match end {
        JobEnd::Done(job) => node.disk_done(job),
        JobEnd::SnapshotSaved(job, file_bytes) => node.snapshot_saved(job, file_bytes),
        JobEnd::Read(job, result) => node.read_done(job, result),
        JobEnd::Failed(job, failure) => node.disk_failed(job, failure),
    }
}

fn inbound(
    world: &World,
    node: &mut raftkv_core::node::Node,
    pending: &mut BTreeMap<u64, oneshot::Sender<Reply>>,
    next_handle: &mut u64,
    m: Inbound,
) {
    match m {
        Inbound::Peer(bytes) => {
            if node.receive(&bytes).is_err() {
                world.count(Counter::PeerFramesRejected);
            }
        }
        Inbound::Client {
            request_id,
            op,
            timeout_ticks,
            reply,
        } => {
            let handle = *next_handle;
            *next_handle += 1;
            pending.insert(handle, reply);
            node.client(ClientRequest {
                handle,
                request_id,
                timeout_ticks,
                op,
            });
        }
    }
}

pub(super) fn observe_event(world: &World, id: u64, e: Event) {
    let mut obs = world.obs.lock().unwrap();
    match &e {
        Event::Applied {
            index,
            term,
            entry_hash,
            request_id,
        } => {
            let entry_hash = entry_hash.expect("the simulator's nodes trace applied entries");
            obs.applied(id, *index, *term, entry_hash, *request_id);
            return; // too many for the trace; the state hashes cover them
        }
        Event::Durable { hard_state } => {
            obs.durable(id, *hard_state);
            return;
        }
        Event::Recovered {
            hard_state, report, ..
        } => {
            obs.recovered(id, *hard_state);
            if report.torn_tail.is_some() {
                obs.count(Counter::TornTailsRepaired);
            }
            if !report.removed_orphan_snapshots.is_empty() {
                obs.count(Counter::OrphanSnapshotsRemoved);
            }
            if !report.set_aside.is_empty() {
                obs.count(Counter::SnapshotsSetAside);
            }
            if report.snapshot.is_some() {
                obs.count(Counter::RestartsFromSnapshot);
            }
        }
        Event::PeerRefused { .. } => obs.count(Counter::PeerIncarnationsRefused),
        Event::IncarnationProposed { .. } => obs.count(Counter::IncarnationsRecorded),
        Event::ClusterAdopted { .. } => obs.count(Counter::ClusterIdsAdopted),
        Event::RoleChanged {
            term,
            role: StateRole::Leader,
            ..
        } => {
            obs.leader(id, *term);
            obs.count(Counter::Elections);
        }
        Event::SnapshotSaved { .. } => obs.count(Counter::SnapshotsTaken),
        Event::AppendReindexed { .. } => obs.count(Counter::AppendsReindexed),
        Event::SnapshotSuperseded { .. } => obs.count(Counter::SnapshotsSuperseded),
        Event::SnapshotInstalled { .. } => obs.count(Counter::SnapshotsInstalled),
        Event::SnapshotSendStarted { .. } => obs.count(Counter::SnapshotSendsStarted),
        Event::SnapshotSent { .. } => obs.count(Counter::SnapshotsSent),
        Event::SnapshotSendResumed { .. } => obs.count(Counter::SnapshotSendsResumed),
        Event::SnapshotChunksResent { .. } => obs.count(Counter::SnapshotChunksResent),
        Event::SnapshotSendFailed { .. } => obs.count(Counter::SnapshotSendsFailed),
        Event::SnapshotSetAside { .. } => obs.count(Counter::DamagedSnapshotsRefusedByFollowers),
        Event::SnapshotReceived { .. } => obs.count(Counter::SnapshotsReceived),
        Event::SnapshotRefused { .. } => obs.count(Counter::SnapshotsRefused),
        Event::SnapshotReceiveAbandoned { .. } => obs.count(Counter::SnapshotReceivesAbandoned),
        Event::CompactedLog { .. } => obs.count(Counter::Compactions),
        Event::Purged { .. } => obs.count(Counter::Purges),
        Event::MemberAdded { .. } | Event::MemberRemoved { .. } | Event::LearnerAdded { .. } => {
            obs.count(Counter::ConfChangesApplied)
        }
        Event::LearnerPromoted { .. } => {
            obs.count(Counter::ConfChangesApplied);
            obs.count(Counter::LearnersPromoted);
        }
        _ => {}
    }
    let now = world.now_ns();
    obs.record(
        now,
        id,
        "event",
        serde_json::to_value(&e).expect("events serialise"),
    );
}

impl World {
    /// A node stopped: decide what that means for the world (and the checkers).
    pub(super) fn node_stopped(&self, id: u64, reason: &StopReason) {
        self.record(
            id,
            "stopped",
            serde_json::json!({"reason": reason.to_string()}),
        );
        self.inboxes.lock().unwrap().remove(&id);
        self.views.lock().unwrap().remove(&id);
        // Still wiped until its peers refuse it (a disk error may stop it first).
        let wiped = self.wiped.lock().unwrap().contains(&id);
        if matches!(
            reason,
            StopReason::NotRecognized { .. } | StopReason::LogBehindLeader { .. }
        ) {
            self.wiped.lock().unwrap().remove(&id);
        }
        match reason {
            StopReason::Removed | StopReason::RemovalConfirmed => {}
            // The real shell exits on a disk error; so does this node, until restarted.
            StopReason::Disk { .. } => {
                self.exited.lock().unwrap().insert(id);
            }
            // A wiped disk under its old id must be refused by its incarnation (every member
            // had recorded the old one before the wipe); then it is replaced.
            StopReason::NotRecognized { .. } if wiped => {
                self.count(Counter::WipedRestartsRefused);
                self.unrecoverable.lock().unwrap().insert(id);
            }
            // Only raft's own commit invariant (guarded in core) noticed: the incarnation check
            // did not fire, and until that heartbeat the node could vote.
            StopReason::LogBehindLeader { .. } if wiped => {
                self.unrecoverable.lock().unwrap().insert(id);
                self.violation(
                    Checker::Identity,
                    format!("node {id} restarted on a wiped disk was not refused by its incarnation: {reason}"),
                )
            }
            // An honest node refused, or one that lost synced writes without being told to: the
            // storage or the protocol lost data.
            StopReason::NotRecognized { .. } => {
                self.violation(Checker::Identity, format!("node {id}: {reason}"))
            }
            StopReason::LogBehindLeader { .. }
            | StopReason::CommittedEntryConflict { .. }
            | StopReason::DivergentLog { .. } => {
                self.violation(Checker::DurableState, format!("node {id}: {reason}"))
            }
            StopReason::BadSnapshotFromLeader { .. } | StopReason::PeerUrlNotConfirmed { .. } => {
                self.violation(Checker::Fatal, format!("node {id}: {reason}"))
            }
        }
    }

    /// Starts `id` the wrong way first; the mistake must be refused at boot (then the operator
    /// reads the error and starts it the right way).
    pub(super) fn try_mistake(
        &self,
        id: u64,
        cfg: &NodeConfig,
        flags: &StartFlags,
        mistake: Mistake,
    ) {
        let dir = match mistake {
            Mistake::StaleDirectory => {
                // A single-node run of the same id, left behind: boot it and run its first job.
                let solo = StartFlags {
                    peers: [(id, flags.peers[&id].clone())].into(),
                    token: flags.token.clone(),
                    join: false,
                };
                let mut d = MemDir::new();
                let mut n = boot(cfg.clone(), &solo, &[], &mut |_, _, _| {
                    Err(raftkv_core::fileop::ReadFailure::NOT_FOUND)
                })
                .expect("boot on an empty directory");
                for a in n.drain() {
                    if let Action::Disk(job) = a {
                        for op in &job.ops {
                            d.apply(op).expect("memdir op");
                        }
                        n.disk_done(job.id);
                    }
                }
                d
            }
            Mistake::OtherNodesDirectory(other) => match self.disks.copy_of(other) {
                Some(d) => d,
                None => return,
            },
            Mistake::ChangedCluster => self.disks.copy_of(id).expect("every node has a disk"),
        };
        let mut wrong_flags = flags.clone();
        if mistake == Mistake::ChangedCluster {
            wrong_flags.peers.insert(999, "sim://999".into());
        }
        let r = boot(cfg.clone(), &wrong_flags, &dir.list(), &mut |n, at, max| {
            dir.read_at(n, at, max)
        });
        let expected = match (&r, mistake) {
            (Err(BootError::StrangerPeers { .. }), Mistake::StaleDirectory) => true,
            (Err(BootError::WrongNode { .. }), Mistake::OtherNodesDirectory(_)) => true,
            (Err(BootError::StrangerPeers { .. }), Mistake::ChangedCluster) => true,
            // A rotten directory is refused for its damage first.
            (Err(BootError::Recovery(_)), _) => self.disks.is_bad(id),
            // A removed member's own directory is refused for that first.
            (Err(BootError::Removed { .. }), Mistake::ChangedCluster) => true,
            // A directory with no snapshot yet (its first job never completed, or a joiner's
            // before its first one) has no history to contradict the flags: nothing to refuse,
            // nothing lost.
            (Ok(n), Mistake::ChangedCluster | Mistake::OtherNodesDirectory(_)) => {
                n.status().snapshot_index == 0 || !dir.list().iter().any(|f| f.ends_with(".snap"))
            }
            _ => false,
        };
        let what = format!("{mistake:?}");
        let outcome = match &r {
            Ok(_) => "accepted".to_string(),
            Err(e) => e.to_string(),
        };
        self.record(
            id,
            "mistake",
            serde_json::json!({"mistake": what, "outcome": outcome}),
        );
        if expected {
            self.count(Counter::OperatorMistakesRefused);
        } else {
            self.violation(
                Checker::Identity,
                format!(
                    "node {id}: operator mistake {what} was not refused as expected: {outcome}"
                ),
            );
        }
    }

    /// True if every member's last view holds `id`'s incarnation: a wipe of `id` is then a
    /// mistake its peers can tell (before that, a wiped node is indistinguishable from one that
    /// never ran, the documented first-contact window).
    pub(super) fn incarnation_known_everywhere(&self, id: u64) -> bool {
        let recorded = self.recorded.lock().unwrap();
        self.member_ids()
            .iter()
            .all(|m| recorded.get(m).is_some_and(|r| r.contains_key(&id)))
    }

    /// The node that last reported itself leader, if any.
    pub(super) fn leader(&self) -> Option<u64> {
        self.views
            .lock()
            .unwrap()
            .iter()
            .find(|(_, v)| v.3 == StateRole::Leader)
            .map(|(id, _)| *id)
    }

    pub(super) fn member_ids(&self) -> Vec<u64> {
        self.members.lock().unwrap().keys().copied().collect()
    }

    pub(super) fn random_member(&self, rng: &mut Rng) -> u64 {
        let ids = self.member_ids();
        ids[rng.below(ids.len() as u64) as usize]
    }
}

impl World {
    pub(super) fn spawn_node(self: &Arc<Self>, id: u64) {
        let w = self.clone();
        let n = Handle::current()
            .create_node()
            .name(format!("raft-{id}"))
            .init(move || node_main(w.clone(), id))
            .build();
        self.nodes.lock().unwrap().insert(id, n);
    }

    pub(super) fn node_handle_id(&self, id: u64) -> Option<madsim::task::NodeId> {
        self.nodes.lock().unwrap().get(&id).map(|n| n.id())
    }

    /// Stops a node for good (removed or replaced).
    pub(super) fn kill_node(&self, id: u64) {
        if let Some(nid) = self.node_handle_id(id) {
            Handle::current().kill(nid);
        }
        self.down.lock().unwrap().remove(&id);
        self.paused.lock().unwrap().remove(&id);
        self.inboxes.lock().unwrap().remove(&id);
        self.views.lock().unwrap().remove(&id);
    }
}
