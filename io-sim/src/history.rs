//! The client history: one record per operation, as the linearizability checker and outside
//! checkers see it. `--history FILE` writes it and `raftkv-sim check FILE` reads it: JSON lines,
//! one `Op` per line, in any order (README, "History files", documents the fields), so another
//! tool's history can be checked by ours, and ours by another's.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Put,
    Delete,
    Get,
    GetLocal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// A write's result: did the key exist before.
    Existed(bool),
    /// A read's result.
    Value(Option<String>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Op {
    pub client: u64,
    pub key: String,
    pub kind: OpKind,
    /// The value written by a put.
    pub input: Option<String>,
    /// Absent when the outcome is unknown.
    pub output: Option<Output>,
    pub invoke_ns: u64,
    /// Absent when the outcome is unknown (the operation may or may not have taken effect).
    pub complete_ns: Option<u64>,
}

impl Op {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("op serialises")
    }
}

/// Why a history file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("line {line}: {source}")]
    Line {
        line: usize,
        source: serde_json::Error,
    },
    #[error("line {line}: {what}")]
    Invalid { line: usize, what: &'static str },
}

/// Parses a history file (JSON lines; blank lines are skipped), refusing records no run could
/// have produced.
pub fn parse(text: &str) -> Result<Vec<Op>, HistoryError> {
    let mut ops = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i + 1;
        if l.trim().is_empty() {
            continue;
        }
        let op: Op =
            serde_json::from_str(l).map_err(|source| HistoryError::Line { line, source })?;
        let invalid = |what| Err(HistoryError::Invalid { line, what });
        if op.complete_ns.is_some() != op.output.is_some() {
            return invalid("output and complete_ns must be both present or both absent");
        }
        if op.complete_ns.is_some_and(|c| c < op.invoke_ns) {
            return invalid("complete_ns before invoke_ns");
        }
        if (op.kind == OpKind::Put) != op.input.is_some() {
            return invalid("input is given for a put, and only for a put");
        }
        match (&op.kind, &op.output) {
            (OpKind::Put | OpKind::Delete, Some(Output::Value(_)))
            | (OpKind::Get | OpKind::GetLocal, Some(Output::Existed(_))) => {
                return invalid("a write's output is existed, a read's is value")
            }
            _ => {}
        }
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_history_reads_back_and_bad_lines_are_named() {
        let ops = [
            Op {
                client: 1,
                key: "k".into(),
                kind: OpKind::Put,
                input: Some("v".into()),
                output: Some(Output::Existed(false)),
                invoke_ns: 1,
                complete_ns: Some(2),
            },
            Op {
                client: 2,
                key: "k".into(),
                kind: OpKind::Get,
                input: None,
                output: None,
                invoke_ns: 3,
                complete_ns: None,
            },
        ];
        let text: String = ops.iter().map(|o| o.to_json() + "\n").collect();
        let back = parse(&text).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].to_json(), ops[0].to_json());
        let bad = format!("{}\n{{\"client\":1}}\n", ops[0].to_json());
        assert!(matches!(
            parse(&bad),
            Err(HistoryError::Line { line: 2, .. })
        ));
        let unknown = ops[1].to_json().replace("\"get\"", "\"get\",\"extra\":1");
        assert!(parse(&unknown).is_err());
        let swapped = ops[0]
            .to_json()
            .replace("\"invoke_ns\":1", "\"invoke_ns\":9");
        assert!(matches!(
            parse(&swapped),
            Err(HistoryError::Invalid { line: 1, .. })
        ));
    }
}
