//! The operator: membership changes driven through the client path (add as a learner, promote,
//! remove), replacements of unrecoverable nodes under new ids, and the operator's mistakes.

use super::*;

/// Membership work (replacing unrecoverable nodes, growing, shrinking) runs in a task of its own
/// so the fault loop never stalls while a change waits for a quorum.
/// How a membership change ended for the operator.
pub(super) enum ChangeOutcome {
    Done,
    /// Refused before it was proposed (it would have cost the cluster its quorum).
    Refused,
    /// No definite answer in time: it may still commit.
    Unknown,
}

pub(super) enum MemberCmd {
    Grow,
    Shrink(u64),
}

pub(super) struct Operator {
    world: Arc<World>,
    /// Membership changes draw from `Membership`, mistakes from `OperatorMistakes`.
    streams: Streams,
    /// Nodes started and proposed for addition whose addition is not yet confirmed.
    pending_adds: BTreeSet<u64>,
    /// Unrecoverable nodes whose replacement was already added.
    replacing: BTreeSet<u64>,
    /// Removals proposed whose outcome is not yet confirmed.
    pending_removes: BTreeSet<u64>,
}

impl Operator {
    pub(super) fn new(world: Arc<World>) -> Operator {
        Operator {
            streams: Streams::new(world.cfg.seed, "operator"),
            world,
            pending_adds: BTreeSet::new(),
            replacing: BTreeSet::new(),
            pending_removes: BTreeSet::new(),
        }
    }

    /// Drives one membership change through the client path (any member; followers forward).
    /// "Already a member" / "not a member" count as done: an earlier attempt whose outcome was
    /// unknown went through.
    pub(super) async fn member_change(&mut self, op: ClientOp) -> ChangeOutcome {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut target = self
            .world
            .random_member(self.streams.of(FaultClass::Membership));
        let mut maybe_applied = false;
        while Instant::now() < deadline {
            match call(&self.world, target, None, op.clone()).await {
                Some(Ok(ClientReply::Members(_))) => {
                    self.world.count(Counter::ConfChanges);
                    return ChangeOutcome::Done;
                }
                Some(Err(ClientError::Rejected(
                    RejectReason::AlreadyMember { .. }
                    | RejectReason::NotMember { .. }
                    | RejectReason::NotLearner { .. },
                ))) => return ChangeOutcome::Done,
                // Refused before proposing, and no earlier attempt can still commit.
                Some(Err(ClientError::Rejected(RejectReason::WouldLoseQuorum { .. })))
                    if !maybe_applied =>
                {
                    self.world.count(Counter::ConfChangesRefusedForQuorum);
                    return ChangeOutcome::Refused;
                }
                Some(Err(ClientError::NotLeader { leader: Some(l) })) => target = l,
                other => {
                    maybe_applied |= match &other {
                        Some(Err(e)) => e.outcome_unknown(),
                        _ => true,
                    };
                    sleep(Duration::from_millis(50)).await;
                    target = self
                        .world
                        .random_member(self.streams.of(FaultClass::Membership));
                }
            }
        }
        ChangeOutcome::Unknown
    }

    /// Starts a new empty node and asks the cluster to add it. The node is started *before*
    /// the outcome is known: if the change commits while its answer is lost, a cluster that
    /// now counts the new node in its quorum would otherwise wait forever for a node nobody
    /// started. Until the add is confirmed the id stays pending and is retried.
    pub(super) async fn add_member(&mut self) -> bool {
        let id = *self.world.next_id.lock().unwrap();
        *self.world.next_id.lock().unwrap() += 1;
        let addr = format!("sim://{id}");
        let mut members = self.world.members.lock().unwrap().clone();
        members.insert(id, addr);
        self.world.flags.lock().unwrap().insert(
            id,
            StartFlags {
                peers: members,
                token: TOKEN.into(),
                join: true,
            },
        );
        self.world.disks.replace(id, MemDir::new());
        self.world
            .record(id, "membership", serde_json::json!({"change": "joining"}));
        let world = self.world.clone();
        let mistake = world.cfg.swarm.operator_mistakes
            && self
                .streams
                .of(FaultClass::OperatorMistakes)
                .chance(world.cfg.rare.mistake);
        if !mistake {
            world.spawn_node(id);
            self.pending_adds.insert(id);
            return self.confirm_add(id).await;
        }
        // The operator's mistake: the member is added, but its process is started late, or
        // never (then noticed and removed). Learner first, it costs the cluster no quorum.
        let never = self.streams.of(FaultClass::OperatorMistakes).below(2) == 0;
        world.count(if never {
            Counter::MistakesNeverStarted
        } else {
            Counter::MistakesStartedLate
        });
        world.record(
            id,
            "mistake",
            serde_json::json!({"mistake": if never { "never started" } else { "started late" }}),
        );
        self.pending_adds.insert(id);
        let op = ClientOp::AddLearner {
            id,
            addr: format!("sim://{id}"),
            auto_promote: true,
        };
        match self.member_change(op).await {
            ChangeOutcome::Refused => {
                self.pending_adds.remove(&id);
                world.retired.lock().unwrap().insert(id);
                return false;
            }
            ChangeOutcome::Done if never => {
                self.pending_adds.remove(&id);
                if self.remove_member(id).await {
                    world.count(Counter::NeverStartedMembersRemoved);
                }
                return false;
            }
            ChangeOutcome::Done => {
                let late_ms = 500 + self.streams.of(FaultClass::OperatorMistakes).below(2500);
                sleep(Duration::from_millis(late_ms)).await;
            }
            // It may have been added: start it, as a careful operator would.
            ChangeOutcome::Unknown => {}
        }
        world.spawn_node(id);
        self.confirm_add(id).await
    }

    pub(super) async fn confirm_add(&mut self, id: u64) -> bool {
        let addr = format!("sim://{id}");
        // Learner first: a new member counts toward no quorum until the leader promotes it,
        // once it has caught up.
        let op = ClientOp::AddLearner {
            id,
            addr: addr.clone(),
            auto_promote: true,
        };
        match self.member_change(op).await {
            ChangeOutcome::Done => {}
            ChangeOutcome::Unknown => return false,
            ChangeOutcome::Refused => {
                // Definitely never proposed: the node started for it goes away for good.
                self.pending_adds.remove(&id);
                self.world.retired.lock().unwrap().insert(id);
                self.world.kill_node(id);
                return false;
            }
        }
        // A member only once it votes: until then the operator's other changes (a shrink, say)
        // must not count it. The leader promotes it when it has caught up; asking is idempotent.
        if !matches!(
            self.member_change(ClientOp::PromoteNode { id }).await,
            ChangeOutcome::Done
        ) {
            return false;
        }
        self.pending_adds.remove(&id);
        self.world.members.lock().unwrap().insert(id, addr);
        true
    }

    pub(super) async fn remove_member(&mut self, id: u64) -> bool {
        // Counted out while the outcome is open: damage budgets (a minority of the members)
        // must hold whether or not the removal went through.
        let addr = self.world.members.lock().unwrap().remove(&id);
        match self.member_change(ClientOp::RemoveNode { id }).await {
            ChangeOutcome::Done => {}
            ChangeOutcome::Refused => {
                self.pending_removes.remove(&id);
                if let Some(a) = addr {
                    self.world.members.lock().unwrap().insert(id, a);
                }
                return false;
            }
            ChangeOutcome::Unknown => {
                // The outcome may be unknown: retried until definite.
                self.pending_removes.insert(id);
                return false;
            }
        }
        self.pending_removes.remove(&id);
        self.world.retired.lock().unwrap().insert(id);
        self.world.members.lock().unwrap().remove(&id);
        // Not killed: a removed node lingers as a voter for members that have not applied its
        // removal yet, then stops by itself (and is never restarted: it is retired).
        self.world
            .record(id, "membership", serde_json::json!({"change": "removed"}));
        true
    }

    /// A node that cannot come back with its data is replaced, the README's way: the old id is
    /// removed first (the live voters keep a quorum), then a new id is added (empty, it joins by
    /// snapshot). A wiped node never rejoins as itself.
    pub(super) async fn replace_one(&mut self) {
        let Some(id) = self
            .world
            .unrecoverable
            .lock()
            .unwrap()
            .iter()
            .next()
            .copied()
        else {
            return;
        };
        self.world.kill_node(id);
        let member = self.world.members.lock().unwrap().contains_key(&id);
        if (member || self.pending_removes.contains(&id)) && !self.remove_member(id).await {
            return;
        }
        if !self.replacing.contains(&id) {
            self.replacing.insert(id);
            if !self.add_member().await && self.pending_adds.is_empty() {
                // Refused (a quorum short while others are down): try again later.
                self.replacing.remove(&id);
                return;
            }
        }
        let pending: Vec<u64> = self.pending_adds.iter().copied().collect();
        for p in pending {
            self.confirm_add(p).await;
        }
        if !self.pending_adds.is_empty() {
            return;
        }
        self.replacing.remove(&id);
        self.world.unrecoverable.lock().unwrap().remove(&id);
        self.world.disks.forget_damaged(id);
        self.world.count(Counter::Replacements);
    }

    pub(super) async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<MemberCmd>) {
        let mut open = true;
        loop {
            let idle = self.pending_adds.is_empty()
                && self.pending_removes.is_empty()
                && self.world.unrecoverable.lock().unwrap().is_empty();
            self.world.operator_idle.store(idle, Ordering::Relaxed);
            // Lost members go first: until a dead voter is removed, an add may be refused for
            // want of a quorum (and a pending one retried forever).
            if !self.world.unrecoverable.lock().unwrap().is_empty() {
                self.replace_one().await;
                continue;
            }
            if let Some(&p) = self.pending_adds.iter().next() {
                self.confirm_add(p).await;
                continue;
            }
            if let Some(&p) = self.pending_removes.iter().next() {
                self.remove_member(p).await;
                continue;
            }
            if !open {
                // No more changes are requested after healing; replacements still happen.
                sleep(Duration::from_millis(20)).await;
                continue;
            }
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(MemberCmd::Grow) => {
                        self.add_member().await;
                    }
                    Some(MemberCmd::Shrink(id)) => {
                        // Shrink only while the damage already injected (possibly not yet
                        // detected) stays a minority of what is left: a smaller cluster
                        // tolerates fewer failures.
                        let left = self.world.members.lock().unwrap().len().saturating_sub(1);
                        let damaged = self.world.disks.damaged_count();
                        if left >= 3 && damaged <= (left - 1) / 2 {
                            self.remove_member(id).await;
                        }
                    }
                    None => open = false,
                },
                _ = sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}
