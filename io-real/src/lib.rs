//! raftkv's real shell as a library: `raftkv-core` wired to tokio, the file system, TCP peers and
//! an HTTP API. The `raftkv` binary (`main.rs`) only parses the command line and calls
//! [`node::run`], [`cluster::run`] or the load generator (`raftkv_loadgen`).
//!
//! Modules: [`cli`] (flags, environment, config file), [`node`] (one node: boot, wiring,
//! shutdown), [`server`] (the event loop that owns the `Node`), [`disk`] (the disk lanes),
//! [`peer`] (TCP frames between nodes), [`http`] (the client API), [`metrics`] (Prometheus),
//! [`cluster`] (`raftkv cluster`: nodes as child processes).

pub mod alloc;
pub mod cli;
pub mod cluster;
pub mod disk;
pub mod http;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod server;
