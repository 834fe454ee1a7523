//! raftkv-core: the pure, sans-IO heart of raftkv.
//!
//! Nothing in this crate performs I/O, reads a clock or draws OS randomness. Storage writers
//! return [`fileop::FileOp`]s; the node returns actions; shells (`io-real`, `io-sim`) execute them
//! and feed completions, ticks and messages back in. See ARCHITECTURE.md at the repository root.

pub mod as_bytes;
pub mod boot;
pub mod client;
pub mod command;
pub mod compaction;
pub mod convert;
pub mod fileop;
pub mod health;
pub mod identity;
pub mod kv;
pub mod memdir;
pub mod msgcodec;
pub mod node;
pub mod planted;
pub mod recovery;
pub mod rng;
pub mod snapfile;
pub mod storage;
pub mod transfer;
pub mod wal;
