//! The clients: each issues puts, deletes and reads against random members, retries through
//! leader hints and outages, and records every operation in the history the checkers read.

use super::*;

/// What the clients did, owned here: the history (every operation whose outcome is known, and
/// every write whose outcome is not) and the writes acknowledged as applied.
#[derive(Default)]
pub struct Workload {
    history: Mutex<Vec<Op>>,
    acked: Mutex<Vec<RequestId>>,
    stop: AtomicBool,
}

impl Workload {
    /// Records a finished operation; `write` is its request id if it was a write.
    fn complete(&self, op: Op, write: Option<RequestId>) {
        if let (Some(rid), Some(_)) = (write, op.complete_ns) {
            self.acked.lock().unwrap().push(rid);
        }
        self.history.lock().unwrap().push(op);
    }

    /// Clients finish the operation in hand and stop.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn history(&self) -> Vec<Op> {
        self.history.lock().unwrap().clone()
    }

    /// Request ids of the writes that got a definite success.
    pub fn acked(&self) -> Vec<RequestId> {
        self.acked.lock().unwrap().clone()
    }
}

/// Sends one request to node `target` and waits for its reply (None: the node is down, died
/// holding the request, or did not answer in time).
pub(super) async fn call(
    world: &World,
    target: u64,
    request_id: Option<RequestId>,
    op: ClientOp,
) -> Option<Reply> {
    call_traced(world, target, request_id, op).await.ok()
}

/// Why a call got no reply.
pub(super) enum NoReply {
    /// The node was down: the request never reached it.
    NotSent,
    /// It reached the node, which died holding it or did not answer in time: it may have been
    /// proposed.
    Unanswered,
}

pub(super) async fn call_traced(
    world: &World,
    target: u64,
    request_id: Option<RequestId>,
    op: ClientOp,
) -> Result<Reply, NoReply> {
    let ticks = (world.cfg.client_timeout_ms / world.cfg.tick_ms).max(1);
    let inbox = world
        .inboxes
        .lock()
        .unwrap()
        .get(&target)
        .cloned()
        .ok_or(NoReply::NotSent)?;
    let (tx, rx) = oneshot::channel();
    let request = Inbound::Client {
        request_id,
        op,
        timeout_ticks: ticks,
        reply: tx,
    };
    if inbox.send(request).is_err() {
        return Err(NoReply::NotSent);
    }
    match madsim::time::timeout(Duration::from_millis(world.cfg.client_timeout_ms + 500), rx).await
    {
        Ok(Ok(r)) => Ok(r),
        _ => Err(NoReply::Unanswered),
    }
}

/// One client: operations on a small key set against random members, with retries under the
/// same request id until a definite answer or the retry budget runs out.
pub(super) async fn client_main(world: Arc<World>, cid: u64) {
    let mut rng = Rng::new(world.cfg.seed ^ (cid << 32) ^ 0xC11E);
    let mut seq = 0u64;
    while !world.workload.stopped() {
        seq += 1;
        let key = format!("k{}", rng.below(world.cfg.keys));
        let (kind, op, input) = match rng.below(100) {
            0..=39 => {
                let v = format!("c{cid}-{seq}");
                (
                    OpKind::Put,
                    ClientOp::Put {
                        key: key.clone().into_bytes(),
                        value: v.clone().into_bytes(),
                    },
                    Some(v),
                )
            }
            40..=49 => (
                OpKind::Delete,
                ClientOp::Delete {
                    key: key.clone().into_bytes(),
                },
                None,
            ),
            50..=84 => (
                OpKind::Get,
                ClientOp::Get {
                    key: key.clone().into_bytes(),
                },
                None,
            ),
            _ => (
                OpKind::GetLocal,
                ClientOp::GetLocal {
                    key: key.clone().into_bytes(),
                },
                None,
            ),
        };
        let is_write = matches!(kind, OpKind::Put | OpKind::Delete);
        let rid = is_write.then_some(RequestId { client: cid, seq });
        let invoke_ns = world.now_ns();
        let mut maybe_applied = false;
        let mut result: Option<Reply> = None;
        let mut target = world.random_member(&mut rng);
        for attempt in 0..40 {
            if attempt > 0 {
                sleep(Duration::from_millis(10 + rng.below(40))).await;
            }
            match call_traced(&world, target, rid, op.clone()).await {
                Ok(Ok(reply)) => {
                    result = Some(Ok(reply));
                    break;
                }
                Ok(Err(e)) => {
                    // The node's claim, taken at its word: a definite answer means this attempt
                    // was never applied. A write no attempt left in doubt is left out of the
                    // history (it never happened), so if it was applied after all, a read that
                    // sees its unique value fails the linearizability check.
                    maybe_applied |= e.outcome_unknown();
                    match e {
                        ClientError::NoLeader { .. } => world.count(Counter::NoLeaderAnswers),
                        ClientError::TooManyRequests { .. } => {
                            world.count(Counter::TooManyRequestsAnswers)
                        }
                        _ => {}
                    }
                    // Some clients take a definite 503 as final, as a real one may: that is
                    // what puts the claim to the test (a retry under the same request id would
                    // hide an application by the attempt that claimed none).
                    let give_up = is_write && !maybe_applied && rng.below(4) == 0;
                    target = match e {
                        ClientError::NotLeader { leader: Some(l) } => l,
                        _ => world.random_member(&mut rng),
                    };
                    if matches!(e, ClientError::Rejected(_)) || (give_up && !e.outcome_unknown()) {
                        result = Some(Err(e));
                        break;
                    }
                }
                Err(NoReply::NotSent) => target = world.random_member(&mut rng),
                Err(NoReply::Unanswered) => {
                    // Died holding it, or silent: it may have been proposed. (Whether the node
                    // is up after the call says nothing: one that crashed holding it is not.)
                    maybe_applied = true;
                    target = world.random_member(&mut rng);
                }
            }
            if kind == OpKind::GetLocal {
                break;
            }
        }
        let complete_ns = world.now_ns();
        let output = match &result {
            Some(Ok(ClientReply::Written(w))) => Some(Output::Existed(match w {
                raftkv_core::kv::WriteResult::Put { existed }
                | raftkv_core::kv::WriteResult::Delete { existed } => *existed,
            })),
            Some(Ok(ClientReply::Value(v))) => Some(Output::Value(
                v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
            )),
            _ => None,
        };
        if is_write && matches!(&result, Some(Err(e)) if !e.outcome_unknown()) && !maybe_applied {
            world.count(Counter::WritesDefinitelyNotApplied);
        }
        // Unknown write outcomes are recorded without a completion; reads and writes that
        // definitely never happened are not recorded.
        if output.is_some() || (is_write && maybe_applied) {
            let op = Op {
                client: cid,
                key,
                kind,
                input,
                output: output.clone(),
                invoke_ns,
                complete_ns: output.as_ref().map(|_| complete_ns),
            };
            world.record(0, "op", serde_json::to_value(&op).expect("op json"));
            world
                .workload
                .complete(op, is_write.then(|| rid.expect("a write has an id")));
        }
        sleep(Duration::from_millis(rng.below(20))).await;
    }
}
