//! What the simulator sees: the event trace (hashed, optionally kept as JSON lines), coverage
//! counters, and the streaming checkers that need every node's view: replicas agree on every
//! applied entry and on the state at equal applied index, and at most one leader per term.

use crate::coverage::Counter;
use raftkv_core::command::RequestId;
use raftkv_core::rng::Fnv64;
use raftkv_core::wal::HardStateRec;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub checker: Checker,
    pub detail: String,
}

/// Every checker that can fail a seed, one list. Names (`name`) are what failures print and
/// result files hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Checker {
    Linearizability,
    Durability,
    LocalReads,
    ReplicasAgree,
    RaftSafety,
    DurableState,
    Identity,
    Liveness,
    Recovery,
    Panic,
    Disk,
    Fatal,
    Determinism,
}

impl Checker {
    pub fn name(self) -> &'static str {
        match self {
            Checker::Linearizability => "linearizability",
            Checker::Durability => "durability",
            Checker::LocalReads => "local-reads",
            Checker::ReplicasAgree => "replicas-agree",
            Checker::RaftSafety => "raft-safety",
            Checker::DurableState => "durable-state",
            Checker::Identity => "identity",
            Checker::Liveness => "liveness",
            Checker::Recovery => "recovery",
            Checker::Panic => "panic",
            Checker::Disk => "disk",
            Checker::Fatal => "fatal",
            Checker::Determinism => "determinism",
        }
    }
}

impl std::fmt::Display for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Tests and tools compare a checker with the name a failure printed.
impl PartialEq<&str> for Checker {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

#[derive(Default)]
pub struct Observer {
    trace: Fnv64,
    pub trace_lines: Option<Vec<String>>,
    pub trace_len: u64,
    /// The latest time an event was recorded at: when the observer's own checkers fire.
    now_ns: u64,
    pub coverage: BTreeMap<Counter, u64>,
    pub violations: Vec<Violation>,
    /// index -> (term, entry hash) as first applied by any node.
    applied: BTreeMap<u64, (u64, u64)>,
    /// Request ids of every applied write.
    pub applied_requests: BTreeSet<RequestId>,
    /// index -> state-machine hash, as first observed.
    states: BTreeMap<u64, (u64, u64)>,
    leaders: BTreeMap<u64, u64>,
    /// Last HardState each node reported durable.
    durable: BTreeMap<u64, HardStateRec>,
    pub faults_injected: u64,
}

impl Observer {
    pub fn new(keep_trace: bool) -> Self {
        Observer {
            trace_lines: keep_trace.then(Vec::new),
            ..Default::default()
        }
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace.finish()
    }

    /// Appends one event to the trace (sim time in ns, node id or 0, a JSON object body).
    pub fn record(&mut self, now_ns: u64, node: u64, what: &str, detail: serde_json::Value) {
        self.now_ns = self.now_ns.max(now_ns);
        let line =
            serde_json::json!({"t_ns": now_ns, "node": node, "event": what, "detail": detail})
                .to_string();
        self.trace.update(line.as_bytes());
        self.trace.update(b"\n");
        self.trace_len += 1;
        if let Some(lines) = &mut self.trace_lines {
            lines.push(line);
        }
    }

    /// Appends a line to the written trace without hashing it (message-level events).
    pub fn note(&mut self, now_ns: u64, node: u64, what: &str, detail: serde_json::Value) {
        if let Some(lines) = &mut self.trace_lines {
            let line =
                serde_json::json!({"t_ns": now_ns, "node": node, "event": what, "detail": detail});
            lines.push(line.to_string());
        }
    }

    /// Folds bytes into the trace hash without a line (message payloads).
    pub fn record_bytes(&mut self, bytes: &[u8]) {
        self.trace.update(bytes);
    }

    pub fn count(&mut self, what: Counter) {
        *self.coverage.entry(what).or_default() += 1;
    }

    /// A checker fired during the run, at the latest time the trace has seen: it is traced
    /// there (the timeline marks it), then kept.
    pub fn violation(&mut self, checker: Checker, detail: String) {
        let now = self.now_ns;
        self.violation_at(now, checker, detail);
    }

    /// A checker fired during the run at `now_ns`.
    pub fn violation_at(&mut self, now_ns: u64, checker: Checker, detail: String) {
        if self.violations.len() < 20 {
            self.record(
                now_ns,
                0,
                "violation",
                serde_json::json!({"checker": checker.name(), "detail": detail}),
            );
            self.violations.push(Violation { checker, detail });
        }
    }

    /// A checker of the finished run fired (the history checkers): kept, not traced, since it
    /// fired at no moment of the run.
    pub fn finding(&mut self, checker: Checker, detail: String) {
        if self.violations.len() < 20 {
            self.violations.push(Violation { checker, detail });
        }
    }

    /// Checker 3a: the applied entries of every node are one history.
    pub fn applied(
        &mut self,
        node: u64,
        index: u64,
        term: u64,
        entry_hash: u64,
        rid: Option<RequestId>,
    ) {
        match self.applied.get(&index) {
            Some(&(t, h)) if (t, h) != (term, entry_hash) => self.violation(
                Checker::ReplicasAgree,
                format!("node {node} applied (term {term}, hash {entry_hash:x}) at index {index}; another node applied (term {t}, hash {h:x})"),
            ),
            Some(_) => {}
            None => {
                self.applied.insert(index, (term, entry_hash));
            }
        }
        if let Some(r) = rid {
            self.applied_requests.insert(r);
        }
    }

    /// Checker 3b: state machines hash equal at equal applied index.
    pub fn state(&mut self, node: u64, applied_index: u64, kv_hash: u64) {
        match self.states.get(&applied_index) {
            Some(&(n, h)) if h != kv_hash => self.violation(
                Checker::ReplicasAgree,
                format!("at applied index {applied_index} node {node} has state {kv_hash:x}, node {n} had {h:x}"),
            ),
            Some(_) => {}
            None => {
                self.states.insert(applied_index, (node, kv_hash));
            }
        }
    }

    /// Checker 4: at most one leader per term.
    pub fn leader(&mut self, node: u64, term: u64) {
        match self.leaders.get(&term) {
            Some(&other) if other != node => self.violation(
                Checker::RaftSafety,
                format!("nodes {other} and {node} both led term {term}"),
            ),
            Some(_) => {}
            None => {
                self.leaders.insert(term, node);
            }
        }
    }

    /// A node made this HardState durable.
    /// The node's disk was replaced by an empty one (an operator's mistake the simulator makes
    /// on purpose): what the old disk made durable is no longer this node's to recover.
    pub fn disk_replaced(&mut self, node: u64) {
        self.durable.remove(&node);
    }

    pub fn durable(&mut self, node: u64, hs: HardStateRec) {
        self.durable.insert(node, hs);
    }

    /// Checker "durable-state": what a node recovers never lags what it made durable: term
    /// and commit never go back, and a vote cast in the current term is never forgotten.
    pub fn recovered(&mut self, node: u64, hs: HardStateRec) {
        let Some(before) = self.durable.get(&node).copied() else {
            return;
        };
        let regressed = hs.term < before.term
            || (hs.term == before.term && before.vote != 0 && hs.vote != before.vote)
            || hs.commit < before.commit;
        if regressed {
            self.violation(
                Checker::DurableState,
                format!("node {node} recovered {hs:?} after making {before:?} durable"),
            );
        }
    }

    pub fn highest_applied(&self) -> u64 {
        self.applied.keys().next_back().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divergent_replicas_and_two_leaders_are_caught() {
        let mut o = Observer::new(false);
        o.applied(1, 5, 2, 0xaa, None);
        o.applied(2, 5, 2, 0xaa, None);
        assert!(o.violations.is_empty());
        o.applied(3, 5, 3, 0xbb, None);
        assert_eq!(o.violations.last().unwrap().checker, "replicas-agree");

        let mut o = Observer::new(false);
        o.state(1, 9, 1);
        o.state(2, 9, 2);
        assert_eq!(o.violations.last().unwrap().checker, "replicas-agree");

        let mut o = Observer::new(false);
        o.durable(
            1,
            HardStateRec {
                term: 3,
                vote: 2,
                commit: 10,
            },
        );
        o.recovered(
            1,
            HardStateRec {
                term: 3,
                vote: 2,
                commit: 12,
            },
        );
        assert!(o.violations.is_empty());
        o.recovered(
            1,
            HardStateRec {
                term: 3,
                vote: 0,
                commit: 12,
            },
        );
        assert_eq!(o.violations.last().unwrap().checker, "durable-state");

        let mut o = Observer::new(false);
        o.leader(1, 4);
        o.leader(1, 4);
        assert!(o.violations.is_empty());
        o.leader(2, 4);
        assert_eq!(o.violations.last().unwrap().checker, "raft-safety");
    }
}
