//! Checkers over a finished run's client history.

pub mod linearizability;

use crate::history::{Op, OpKind, Output};
use crate::observer::Checker;
use raftkv_core::command::RequestId;
use std::collections::{BTreeMap, BTreeSet};

/// The checkers that need only the client history (linearizability, then local reads), as
/// `(checker, detail)` for each that fired. `run_seed` and `raftkv-sim check FILE` both call
/// this, so an outside history is judged exactly as the simulator's own.
pub fn history(history: &[Op]) -> Vec<(Checker, String)> {
    let mut fired = Vec::new();
    match linearizability::check(history) {
        linearizability::Verdict::Ok => {}
        linearizability::Verdict::Violation { key, ops } => fired.push((
            Checker::Linearizability,
            format!("key {key}: no linearization of its {ops} operations"),
        )),
        linearizability::Verdict::Inconclusive { key, ops } => fired.push((
            Checker::Linearizability,
            format!("key {key}: search budget exhausted on {ops} operations"),
        )),
    }
    if let Err(e) = local_reads(history) {
        fired.push((Checker::LocalReads, e));
    }
    fired
}

/// Checker 2 (durability): every acknowledged write was applied by the cluster, i.e. survived
/// every crash. `acked` are the request ids of writes that got a definite success.
pub fn durability(acked: &[RequestId], applied: &BTreeSet<RequestId>) -> Result<(), String> {
    let lost: Vec<&RequestId> = acked.iter().filter(|r| !applied.contains(r)).collect();
    match lost.first() {
        None => Ok(()),
        Some(r) => Err(format!(
            "{} acknowledged write(s) never applied, e.g. client {} seq {}",
            lost.len(),
            r.client,
            r.seq
        )),
    }
}

/// Local (possibly stale) reads, checked against the weaker model they promise: the value was
/// written to that key at some point (or the key was absent).
pub fn local_reads(history: &[Op]) -> Result<(), String> {
    let mut written: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for op in history {
        if op.kind == OpKind::Put {
            if let Some(v) = &op.input {
                written.entry(&op.key).or_default().insert(v);
            }
        }
    }
    for op in history {
        if op.kind != OpKind::GetLocal {
            continue;
        }
        if let Some(Output::Value(Some(v))) = &op.output {
            if !written
                .get(op.key.as_str())
                .is_some_and(|s| s.contains(v.as_str()))
            {
                return Err(format!(
                    "local read of {} returned {v:?}, which was never written",
                    op.key
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let a = RequestId { client: 1, seq: 1 };
        let b = RequestId { client: 1, seq: 2 };
        let applied: BTreeSet<RequestId> = [a].into();
        assert!(durability(&[a], &applied).is_ok());
        assert!(durability(&[a, b], &applied).is_err());
    }

    #[test]
    fn a_local_read_of_a_value_never_written_is_caught() {
        let put = Op {
            client: 1,
            key: "k".into(),
            kind: OpKind::Put,
            input: Some("v".into()),
            output: None,
            invoke_ns: 0,
            complete_ns: None,
        };
        let mut read = Op {
            client: 2,
            key: "k".into(),
            kind: OpKind::GetLocal,
            input: None,
            output: Some(Output::Value(Some("v".into()))),
            invoke_ns: 1,
            complete_ns: Some(2),
        };
        assert!(local_reads(&[put.clone(), read.clone()]).is_ok());
        read.output = Some(Output::Value(Some("w".into())));
        assert!(local_reads(&[put, read]).is_err());
    }
}
