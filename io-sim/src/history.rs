//! The client history: one record per operation, as the linearizability checker and outside
//! checkers (`--history FILE`, JSON lines) see it.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Put,
    Delete,
    Get,
    GetLocal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// A write's result: did the key exist before.
    Existed(bool),
    /// A read's result.
    Value(Option<String>),
}

#[derive(Clone, Debug, Serialize)]
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
