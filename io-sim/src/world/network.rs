//! The simulated network: each message's fate at send time (loss, duplication, corruption,
//! delay, a blocked link), stale messages, and the delivery task that hands packets to whatever
//! incarnation of their target is up.

use super::*;

pub(super) struct Packet {
    at_ns: u64,
    seq: u64,
    from: u64,
    to: u64,
    bytes: Vec<u8>,
}

/// The network's state, owned here behind one lock: the rest of the world asks it questions
/// and tells it about partitions, never touches its fields.
#[derive(Default)]
pub(super) struct Network {
    inner: Mutex<NetInner>,
}

#[derive(Default)]
struct NetInner {
    /// Directed links that drop everything.
    blocked: BTreeSet<(u64, u64)>,
    /// Faults are off (the world healed): nothing is lost, duplicated or corrupted.
    calm: bool,
    seq: u64,
    /// The delivery task's queue.
    tx: Option<mpsc::UnboundedSender<Packet>>,
    /// The last packets each node sent (to, bytes), at most `SENT_LOG_LEN`: replayed as stale
    /// messages after it restarts.
    sent_log: BTreeMap<u64, std::collections::VecDeque<(u64, Vec<u8>)>>,
}

const SENT_LOG_LEN: usize = 16;

impl Network {
    /// Hands packets to the delivery task from now on.
    pub(super) fn connect(&self, tx: mpsc::UnboundedSender<Packet>) {
        self.inner.lock().unwrap().tx = Some(tx);
    }

    pub(super) fn is_calm(&self) -> bool {
        self.inner.lock().unwrap().calm
    }

    /// Blocks exactly these directed links (an empty set heals).
    pub(super) fn partition(&self, blocked: BTreeSet<(u64, u64)>) {
        self.inner.lock().unwrap().blocked = blocked;
    }

    /// Faults stop: every link opens and nothing is lost from now on.
    pub(super) fn heal(&self) {
        let mut n = self.inner.lock().unwrap();
        n.blocked.clear();
        n.calm = true;
    }

    /// The packets `node` sent last (oldest first), forgotten here.
    pub(super) fn take_sent(&self, node: u64) -> Vec<(u64, Vec<u8>)> {
        let mut n = self.inner.lock().unwrap();
        n.sent_log
            .remove(&node)
            .map(|q| q.into_iter().collect())
            .unwrap_or_default()
    }

    fn is_blocked(&self, from: u64, to: u64) -> bool {
        self.inner.lock().unwrap().blocked.contains(&(from, to))
    }
}

impl World {
    /// Decides a message's fate at send time. Returns false if the sender would see the send
    /// fail (partitioned link: a TCP connect would fail); a lost packet "succeeds".
    pub(super) fn net_send(&self, from: u64, to: u64, kind: &'static str, bytes: Vec<u8>) -> bool {
        let now = self.now_ns();
        let (calm, blocked) = (self.net.is_calm(), self.net.is_blocked(from, to));
        if blocked {
            self.count(Counter::NetBlocked);
            self.note(from, "send", || serde_json::json!({"to": to, "kind": kind, "bytes": bytes.len(), "fate": "refused: link blocked"}));
            return false;
        }
        if self.cfg.swarm.stale_messages {
            let mut n = self.net.inner.lock().unwrap();
            let q = n.sent_log.entry(from).or_default();
            q.push_back((to, bytes.clone()));
            if q.len() > SENT_LOG_LEN {
                q.pop_front();
            }
        }
        let f = &self.cfg.net;
        if !calm && self.chance_of(FaultClass::NetLoss, f.loss) {
            self.count(Counter::NetLost);
            self.note(from, "send", || serde_json::json!({"to": to, "kind": kind, "bytes": bytes.len(), "fate": "lost"}));
            return true;
        }
        let copies = if !calm && self.chance_of(FaultClass::NetDuplicate, f.duplicate) {
            self.count(Counter::NetDuplicated);
            2
        } else {
            1
        };
        for c in 0..copies {
            let mut bytes = bytes.clone();
            let mut corrupted = false;
            if !calm
                && c == 0
                && !bytes.is_empty()
                && self.chance_of(FaultClass::NetCorrupt, f.corrupt)
            {
                let at = self.below_of(FaultClass::NetCorrupt, bytes.len() as u64) as usize;
                bytes[at] ^= 1 << self.below_of(FaultClass::NetCorrupt, 8);
                self.count(Counter::NetCorrupted);
                corrupted = true;
            }
            let mut delay = f.delay_base_us + self.weather_exp(f.delay_tail_us);
            if !calm && self.chance_of(FaultClass::NetLongDelay, f.long_tail) {
                delay += exp_sample(
                    self.streams.lock().unwrap().of(FaultClass::NetLongDelay),
                    f.delay_tail_us * 100,
                );
                self.count(Counter::NetLongDelay);
            }
            let seq = {
                let mut n = self.net.inner.lock().unwrap();
                n.seq += 1;
                n.seq
            };
            self.note(from, "send", || {
                serde_json::json!({"to": to, "kind": kind, "bytes": bytes.len(), "seq": seq,
                    "fate": if c == 1 { "duplicate" } else { "sent" },
                    "corrupted": corrupted, "delay_us": delay})
            });
            let pkt = Packet {
                at_ns: now + delay * 1000,
                seq,
                from,
                to,
                bytes,
            };
            if let Some(tx) = self.net.inner.lock().unwrap().tx.as_ref() {
                let _ = tx.send(pkt);
            }
        }
        true
    }
}

/// The network: delivers packets at their time to whatever incarnation of the target is up,
/// unless the link is blocked at delivery time.
pub(super) async fn net_loop(world: Arc<World>, mut rx: mpsc::UnboundedReceiver<Packet>) {
    let mut heap: BinaryHeap<Reverse<(u64, u64, u64, u64)>> = BinaryHeap::new();
    let mut payloads: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    loop {
        let next = heap.peek().map(|Reverse((at, ..))| *at);
        let wake = match next {
            Some(at) => world.start() + Duration::from_nanos(at),
            None => Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            biased;
            p = rx.recv() => match p {
                Some(p) => {
                    heap.push(Reverse((p.at_ns, p.seq, p.from, p.to)));
                    payloads.insert(p.seq, p.bytes);
                }
                None => return,
            },
            _ = sleep_until(wake) => {
                let now = world.now_ns();
                while let Some(Reverse((at, seq, from, to))) = heap.peek().copied() {
                    if at > now {
                        break;
                    }
                    heap.pop();
                    let bytes = payloads.remove(&seq).expect("payload");
                    if world.net.is_blocked(from, to) {
                        world.count(Counter::NetBlocked);
                        world.note(to, "deliver", || serde_json::json!({"from": from, "seq": seq, "fate": "dropped: link blocked"}));
                        continue;
                    }
                    let inbox = world.inboxes.lock().unwrap().get(&to).cloned();
                    world.note(to, "deliver", || serde_json::json!({"from": from, "seq": seq,
                        "fate": if inbox.is_some() { "delivered" } else { "dropped: node down" }}));
                    if let Some(tx) = inbox {
                        let _ = tx.send(Inbound::Peer(bytes));
                    }
                }
            }
        }
    }
}
