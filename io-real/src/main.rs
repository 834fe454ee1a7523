//! `raftkv`: run a node (default), start a local cluster of nodes as child processes, or
//! generate HTTP load (`raftkv bench`). Only the command line and the exit status live here; the
//! work is the library's (`raftkv_io_real`) and the load generator's (`raftkv_loadgen`).

use raftkv_io_real::cli::{self, Command};
use raftkv_io_real::{cluster, node};

// mimalloc for small blocks, glibc's malloc for large ones (`alloc.rs` says why).
#[global_allocator]
static GLOBAL: raftkv_io_real::alloc::SplitAlloc = raftkv_io_real::alloc::SplitAlloc;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match cli::parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(cli::ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("raftkv: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // anyhow only here, for `{:#}`: each error and its causes on one line.
    let result: anyhow::Result<()> = match cli.command {
        Some(Command::Cluster(args)) => cluster::run(args).map_err(Into::into),
        Some(Command::Run(args)) => node::run(args).map_err(Into::into),
        Some(Command::Bench(args)) => raftkv_loadgen::run(args).map_err(Into::into),
        None => node::run(cli.run).map_err(Into::into),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Once, plainly: the same line through `tracing` as well printed every startup error
        // twice on the terminal.
        Err(e) => {
            eprintln!("raftkv: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
