//! What must hold in every crash state: recovery succeeds (these states hold no damage, so a
//! refusal is a bug too) and never panics; every entry whose sync completed before the crash is
//! recovered; the HardState never goes backwards; a recovered snapshot is one that was fully
//! written, and no file under a snapshot's final name is ever partial; recovery's repairs are
//! idempotent (recover, crash during the repair, recover again: the same state) and durable once
//! their job completes. A process stop (the page cache kept, nothing more synced) followed by a
//! restart and then a power loss loses nothing the restart read.

use super::model::CrashDir;
use super::workload::{config, Facts, TOKEN};
use raftkv_core::boot::{boot, StartFlags};
use raftkv_core::fileop::FileOp;
use raftkv_core::node::{Action, Event, Node, NodeConfig};
use raftkv_core::recovery::RecoveryReport;
use raftkv_core::snapfile;
use raftkv_core::wal::HardStateRec;
use std::collections::BTreeMap;

/// What one recovery found, for comparing recoveries of one state.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Found {
    hard_state: HardStateRec,
    last_index: u64,
    snapshot: Option<(u64, u64)>,
    state_hash: u64,
}

impl Found {
    /// `self`, recovered after `earlier`, misses something `earlier` had: its snapshot, an
    /// entry, its term or commit, or (at the same commit) its state.
    fn lost_from(&self, earlier: &Found) -> bool {
        let (a, f) = (self, earlier);
        a.snapshot != f.snapshot
            || a.last_index < f.last_index
            || a.hard_state.term < f.hard_state.term
            || a.hard_state.commit < f.hard_state.commit
            || (a.hard_state.commit == f.hard_state.commit && a.state_hash != f.state_hash)
    }
}

/// `state` with `ops` executed, as a job would leave it.
fn after_ops(state: &CrashDir, ops: &[FileOp]) -> Result<CrashDir, String> {
    let mut d = state.clone();
    for op in ops {
        d.apply(op).map_err(|e| format!("op {op:?}: {e}"))?;
    }
    Ok(d)
}

pub struct Booted {
    node: Node,
    /// Recovered from an existing directory (not a fresh start or bootstrap).
    restarted: bool,
    report: RecoveryReport,
    found: Found,
    repair_ops: Vec<FileOp>,
}

fn flags_for(id: u64) -> StartFlags {
    let peers: BTreeMap<u64, String> = (1..=id)
        .map(|i| (i, format!("http://127.0.0.1:{}", 23000 + i)))
        .collect();
    StartFlags {
        peers,
        token: TOKEN.into(),
        join: id > 1,
    }
}

fn boot_state(cfg: &NodeConfig, dir: &CrashDir) -> Result<Booted, String> {
    let flags = flags_for(cfg.id);
    let booted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        boot(cfg.clone(), &flags, &dir.list(), &mut |n, at, max| {
            dir.read_at(n, at, max)
        })
    }))
    .map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("recovery panicked: {msg}")
    })?;
    let mut node = booted.map_err(|e| format!("recovery refused: {e}"))?;
    let mut report = RecoveryReport::default();
    let mut hard_state = HardStateRec::default();
    let mut repair_ops = Vec::new();
    let mut restarted = false;
    for a in node.drain() {
        match a {
            Action::Event(Event::Recovered {
                report: r,
                hard_state: h,
                ..
            }) => {
                report = r;
                hard_state = h;
                restarted = true;
            }
            Action::Disk(job) if repair_ops.is_empty() => repair_ops = job.ops,
            _ => {}
        }
    }
    let s = node.status();
    let found = Found {
        hard_state,
        last_index: s.last_index,
        snapshot: report.snapshot,
        state_hash: node.kv().hash(),
    };
    Ok(Booted {
        node,
        restarted,
        report,
        found,
        repair_ops,
    })
}

/// Checks one crash state of node `id` against what it had made durable. `Err` names the
/// first broken rule.
pub fn check_state(id: u64, state: &CrashDir, facts: &Facts) -> Result<(), String> {
    // The file protocols promise whole files under final names, whatever the crash.
    for name in state.list() {
        if snapfile::parse_name(&name).is_some() {
            let bytes = state.read(&name).expect("listed");
            if let Err(e) = snapfile::decode_named(&name, bytes) {
                return Err(format!("{name} is under its final name but not whole: {e}"));
            }
        }
    }
    let cfg = config(id);
    let first = boot_state(&cfg, state)?;
    check_found(&first, facts)?;
    // A member of a new cluster always has a configuration to campaign in (a joiner has none
    // until its first snapshot arrives).
    if !flags_for(id).join && first.node.stopped().is_none() && first.node.voters().is_empty() {
        return Err(
            "booted with no voters in its configuration: a new cluster's member that can never campaign"
                .to_string(),
        );
    }
    if !first.report.set_aside.is_empty() {
        return Err(format!("recovery set aside {:?}", first.report.set_aside));
    }
    if !first.restarted {
        // A fresh start: its first job is the bootstrap, not a repair; the states it leaves
        // part way are enumerated at its own boundaries.
        return Ok(());
    }
    // Repairs: crash part way through them, recover again: the same state.
    let ops = &first.repair_ops;
    for cut in [0, ops.len() / 2, ops.len().saturating_sub(1)] {
        let d = after_ops(state, &ops[..cut]).map_err(|e| format!("repair {e}"))?;
        let again = boot_state(&cfg, &d.after_power_loss())
            .map_err(|e| format!("after a crash {cut} ops into the repairs: {e}"))?;
        // The first job after a restart also carries what the node writes next (a lone voter's
        // new term and entry), so a crash part way may find more; never less, nor another state.
        let (a, f) = (&again.found, &first.found);
        if a.lost_from(f) {
            return Err(format!(
                "repairs are not idempotent: a crash {cut} ops into them ({:?}) recovers {a:?} ({:?}), not {f:?} ({:?})",
                &ops[..cut], again.report, first.report
            ));
        }
    }
    // Once the repair job has completed, its repairs are durable: a power loss right then
    // finds nothing left to repair.
    let d = after_ops(state, ops).map_err(|e| format!("repair {e}"))?;
    let after = boot_state(&cfg, &d.after_power_loss())
        .map_err(|e| format!("after the completed repair job and a power loss: {e}"))?;
    if after.report.torn_tail.is_some() || !after.report.removed_temp_files.is_empty() {
        return Err(format!(
            "the completed repair job was not durable: a power loss brings back {:?}",
            after.report
        ));
    }
    drop(first.node);
    Ok(())
}

/// Checks the moment `live` (the page cache at a sync boundary, unsynced writes included) as a
/// process stop leaves it: a restart reads back writes that were never synced, and may
/// acknowledge them once its first job completes, so that job must make them durable. Recover
/// from the page cache, run the first job, lose power (nothing unsynced survives), recover
/// again: nothing the first recovery found may be missing.
pub fn check_stopped_process(id: u64, live: &CrashDir) -> Result<(), String> {
    let cfg = config(id);
    let first = boot_state(&cfg, live).map_err(|e| format!("after a process stop: {e}"))?;
    if !first.restarted {
        return Ok(());
    }
    let d = after_ops(live, &first.repair_ops).map_err(|e| format!("first job {e}"))?;
    let again = boot_state(&cfg, &d.after_power_loss())
        .map_err(|e| format!("after a process stop, the first job and a power loss: {e}"))?;
    let (a, f) = (&again.found, &first.found);
    let vote_changed = a.hard_state.term == f.hard_state.term
        && f.hard_state.vote != 0
        && a.hard_state.vote != f.hard_state.vote;
    if a.lost_from(f) || vote_changed {
        return Err(format!(
            "a restart after a process stop read {f:?}, and after its first job and a power loss only {a:?} is left: it could acknowledge what it then lost"
        ));
    }
    // The restart speaks with the incarnation it read; its peers record it.
    let (was, now) = (first.node.identity(), again.node.identity());
    if was.incarnation != now.incarnation {
        return Err(format!(
            "a restart after a process stop spoke as incarnation {:#x}, and after its first job and a power loss the directory is incarnation {:#x}",
            was.incarnation, now.incarnation
        ));
    }
    Ok(())
}

fn check_found(b: &Booted, facts: &Facts) -> Result<(), String> {
    let (h, d) = (&b.found.hard_state, &facts.hard_state);
    if h.term < d.term
        || (h.term == d.term && d.vote != 0 && h.vote != d.vote)
        || h.commit < d.commit
    {
        return Err(format!(
            "HardState went back: recovered {h:?}, durable {d:?}"
        ));
    }
    if b.found.last_index < facts.persisted_index {
        return Err(format!(
            "entries lost: recovered up to {}, synced up to {}",
            b.found.last_index, facts.persisted_index
        ));
    }
    if let Some(s) = b.found.snapshot {
        if !facts.snapshots.contains(&s) {
            return Err(format!(
                "recovered snapshot {s:?}, which was never completely written"
            ));
        }
    }
    Ok(())
}
