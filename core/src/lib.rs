//! raftkv-core: the pure, sans-IO heart of raftkv.
//!
//! Nothing in this crate performs I/O, reads a clock or draws OS randomness. Storage writers
//! return [`fileop::FileOp`]s; the node returns actions; shells (`io-real`, `io-sim`) execute them
//! and feed completions, ticks and messages back in. See ARCHITECTURE.md at the repository root.

pub mod compaction;
pub mod fileop;
pub mod memdir;
pub mod recovery;
pub mod snapfile;
pub mod wal;
