//! Linearizability of a key-value history, Porcupine-style.
//!
//! P-compositional: each key is checked on its own. Per key, a depth-first search linearizes one
//! "minimal" operation at a time (one that no pending operation must precede) against a register
//! model, memoising (set of linearized operations, model state) pairs that already failed, as in
//! Lowe's just-in-time linearization. An operation whose outcome is unknown has no completion
//! time and no output: it may take effect at any point after its invocation, or never (which is
//! the same as taking effect after everything else).

use crate::history::{Op, OpKind, Output};
use std::collections::{BTreeMap, HashSet};

/// Search states explored per key before giving up (a give-up is reported, never a pass).
pub const MAX_STATES_PER_KEY: usize = 5_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// No linearization of this key's history exists.
    Violation {
        key: String,
        ops: usize,
    },
    /// The search budget ran out.
    Inconclusive {
        key: String,
        ops: usize,
    },
}

#[derive(Clone, Copy)]
struct KOp {
    call: u64,
    ret: u64,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    /// Put of value id; expected `existed` (None: unknown outcome).
    Put(u32, Option<bool>),
    Delete(Option<bool>),
    /// Read expecting this value (None inside: key absent).
    Get(Option<u32>),
}

/// Register step: Some(new state) if `op` is legal in `state`.
fn step(state: Option<u32>, kind: Kind) -> Option<Option<u32>> {
    match kind {
        Kind::Put(v, existed) => (existed.is_none_or(|e| e == state.is_some())).then_some(Some(v)),
        Kind::Delete(existed) => (existed.is_none_or(|e| e == state.is_some())).then_some(None),
        Kind::Get(want) => (want == state).then_some(state),
    }
}

/// Checks every key; local reads are not part of the linearizable history and are skipped.
pub fn check(history: &[Op]) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        if op.kind != OpKind::GetLocal {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
    }
    for (key, ops) in by_key {
        let mut values: BTreeMap<String, u32> = BTreeMap::new();
        let mut id = |v: &str| {
            let n = values.len() as u32;
            *values.entry(v.to_string()).or_insert(n)
        };
        let mut kops = Vec::with_capacity(ops.len());
        for op in &ops {
            let ret = op.complete_ns.unwrap_or(u64::MAX);
            let kind = match (&op.kind, &op.output) {
                (OpKind::Put, out) => {
                    Kind::Put(id(op.input.as_deref().unwrap_or("")), existed(out))
                }
                (OpKind::Delete, out) => Kind::Delete(existed(out)),
                (OpKind::Get, Some(Output::Value(v))) => Kind::Get(v.as_deref().map(&mut id)),
                // A read without an answer observed nothing.
                (OpKind::Get, _) => continue,
                (OpKind::GetLocal, _) => unreachable!(),
            };
            kops.push(KOp {
                call: op.invoke_ns,
                ret,
                kind,
            });
        }
        match check_key(&kops) {
            Some(true) => {}
            Some(false) => {
                return Verdict::Violation {
                    key: key.to_string(),
                    ops: kops.len(),
                }
            }
            None => {
                return Verdict::Inconclusive {
                    key: key.to_string(),
                    ops: kops.len(),
                }
            }
        }
    }
    Verdict::Ok
}

fn existed(out: &Option<Output>) -> Option<bool> {
    match out {
        Some(Output::Existed(e)) => Some(*e),
        _ => None,
    }
}

/// Some(true) if linearizable, Some(false) if not, None if the budget ran out.
fn check_key(ops: &[KOp]) -> Option<bool> {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].call, ops[i].ret));
    let ops: Vec<KOp> = order.iter().map(|&i| ops[i]).collect();
    let words = ops.len().div_ceil(64);
    let mut done = vec![0u64; words];
    let mut failed: HashSet<(Vec<u64>, Option<u32>)> = HashSet::new();
    let mut budget = MAX_STATES_PER_KEY;
    search(&ops, &mut done, 0, None, &mut failed, &mut budget)
}

fn search(
    ops: &[KOp],
    done: &mut [u64],
    n_done: usize,
    state: Option<u32>,
    failed: &mut HashSet<(Vec<u64>, Option<u32>)>,
    budget: &mut usize,
) -> Option<bool> {
    if n_done == ops.len() {
        return Some(true);
    }
    if *budget == 0 {
        return None;
    }
    *budget -= 1;
    if failed.contains(&(done.to_vec(), state)) {
        return Some(false);
    }
    let is_done = |d: &[u64], i: usize| d[i / 64] >> (i % 64) & 1 == 1;
    // An op may go next only if no pending op returned before it was invoked.
    let min_ret = (0..ops.len())
        .filter(|&i| !is_done(done, i))
        .map(|i| ops[i].ret)
        .min()
        .expect("some op pending");
    for i in 0..ops.len() {
        if ops[i].call > min_ret {
            break; // sorted by call time
        }
        if is_done(done, i) {
            continue;
        }
        if let Some(next) = step(state, ops[i].kind) {
            done[i / 64] |= 1 << (i % 64);
            let r = search(ops, done, n_done + 1, next, failed, budget);
            done[i / 64] &= !(1 << (i % 64));
            match r {
                Some(true) => return Some(true),
                None => return None,
                Some(false) => {}
            }
        }
    }
    failed.insert((done.to_vec(), state));
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        kind: OpKind,
        key: &str,
        input: Option<&str>,
        output: Option<Output>,
        t: (u64, Option<u64>),
    ) -> Op {
        Op {
            client: 0,
            key: key.into(),
            kind,
            input: input.map(Into::into),
            output,
            invoke_ns: t.0,
            complete_ns: t.1,
        }
    }
    fn put(v: &str, existed: bool, t: (u64, u64)) -> Op {
        op(
            OpKind::Put,
            "k",
            Some(v),
            Some(Output::Existed(existed)),
            (t.0, Some(t.1)),
        )
    }
    fn get(v: Option<&str>, t: (u64, u64)) -> Op {
        op(
            OpKind::Get,
            "k",
            None,
            Some(Output::Value(v.map(Into::into))),
            (t.0, Some(t.1)),
        )
    }

    #[test]
    fn sequential_history_passes() {
        let h = vec![
            put("a", false, (0, 1)),
            get(Some("a"), (2, 3)),
            put("b", true, (4, 5)),
            get(Some("b"), (6, 7)),
        ];
        assert_eq!(check(&h), Verdict::Ok);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_caught() {
        // put(b) completed before the read began; reading a is a violation.
        let h = vec![
            put("a", false, (0, 1)),
            put("b", true, (2, 3)),
            get(Some("a"), (4, 5)),
        ];
        assert!(matches!(check(&h), Verdict::Violation { .. }));
    }

    #[test]
    fn concurrent_ops_may_go_either_way() {
        let h = vec![
            put("a", false, (0, 1)),
            put("b", true, (2, 10)),
            get(Some("a"), (3, 4)),
            get(Some("b"), (5, 6)),
        ];
        assert_eq!(check(&h), Verdict::Ok);
    }

    #[test]
    fn unknown_outcome_may_or_may_not_happen() {
        let unknown = op(OpKind::Put, "k", Some("x"), None, (2, None));
        let happened = vec![
            put("a", false, (0, 1)),
            unknown.clone(),
            get(Some("x"), (5, 6)),
        ];
        assert_eq!(check(&happened), Verdict::Ok);
        let not_happened = vec![
            put("a", false, (0, 1)),
            unknown.clone(),
            get(Some("a"), (5, 6)),
        ];
        assert_eq!(check(&not_happened), Verdict::Ok);
        // But it cannot take effect before it was invoked.
        let too_early = vec![
            put("a", false, (0, 1)),
            get(Some("x"), (1, 2)),
            op(OpKind::Put, "k", Some("x"), None, (3, None)),
        ];
        assert!(matches!(check(&too_early), Verdict::Violation { .. }));
    }

    #[test]
    fn lost_acknowledged_write_is_caught_and_existed_flags_count() {
        let lost = vec![put("a", false, (0, 1)), get(None, (2, 3))];
        assert!(matches!(check(&lost), Verdict::Violation { .. }));
        let wrong_flag = vec![put("a", false, (0, 1)), put("b", false, (2, 3))];
        assert!(matches!(check(&wrong_flag), Verdict::Violation { .. }));
    }

    #[test]
    fn keys_are_independent_and_local_reads_are_skipped() {
        let mut h = vec![put("a", false, (0, 1))];
        h.push(op(
            OpKind::Put,
            "other",
            Some("z"),
            Some(Output::Existed(false)),
            (0, Some(1)),
        ));
        h.push(op(
            OpKind::GetLocal,
            "k",
            None,
            Some(Output::Value(None)),
            (5, Some(6)),
        ));
        assert_eq!(check(&h), Verdict::Ok);
    }
}
