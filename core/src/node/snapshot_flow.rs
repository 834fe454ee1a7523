//! The node's half of the snapshot lane and of snapshot transfers: what it does with the
//! decisions of `snapshots` and `transfers`. A snapshot job started (raftexample's
//! maybeTriggerSnapshot, and the log dropped at its start), saved (its WAL marker, compaction,
//! the purge after it) or installed from the leader; and a transfer's steps turned into reads,
//! chunk frames, acknowledgements and raft-rs's `report_snapshot`. Compaction never drops the
//! entries after a snapshot still streaming (`below_streaming`), and a file being streamed is
//! pinned against purge.

use super::frames::RaftCheck;
use super::{snapshots, transfers, Node};
use super::{Action, DiskFailure, Event, FrameKind, Outgoing, PeerError, StopReason};
use crate::compaction;
use crate::convert::{cs_to_rec, hs_to_rec};
use crate::msgcodec;
use crate::snapfile;
use crate::transfer::{SendFailure, SendStep, SnapKey};
use raft::eraftpb::{Message, Snapshot};
use raft::{SnapshotStatus, StateRole};

impl Node {
    // ---- snapshot jobs ----

    pub(super) fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), StopReason> {
        let meta = snap.get_metadata();
        let (index, term) = (meta.index, meta.term);
        // raft only ever restores a snapshot this node stepped in after receiving its file.
        let received = self
            .transfers
            .take_received(index, term)
            .ok_or(StopReason::BadSnapshotFromLeader { index })?;
        if received.meta.conf_state != cs_to_rec(meta.get_conf_state()) {
            return Err(StopReason::BadSnapshotFromLeader { index });
        }
        self.out.event(Event::LoadingSnapshot { term, index });
        let received = *received;
        self.snapshots
            .install(received.meta, received.tmp, &mut self.persist);
        self.raw.mut_store().apply_snapshot(snap);
        self.kv = received.kv;
        self.out.event(Event::SnapshotInstalled { term, index });
        self.plan_purge();
        Ok(())
    }

    pub(super) fn maybe_snapshot(&mut self) {
        let applied = self.kv.applied_index();
        let store = self.raw.store();
        let stale_conf = || {
            store
                .latest_snapshot()
                .is_none_or(|s| s.get_metadata().get_conf_state() != store.conf_state())
        };
        let since_bytes = |index: u64| store.log_bytes(index + 1, applied);
        if self.snapshots.should_start(
            &self.cfg.compaction,
            applied,
            (since_bytes, self.kv.data_bytes()),
            stale_conf,
        ) {
            self.create_snapshot();
        }
    }

    /// raftexample's maybeTriggerSnapshot, run only after everything raft handed out is applied.
    /// Hands the state to a snapshot job; `snapshot_saved` logs and compacts once it is durable.
    fn create_snapshot(&mut self) {
        // Measured without it: 144 MiB of log beside 200 MiB of state (BENCHMARKS.md "Cost
        // curves"). Only with a latest snapshot to serve what is dropped.
        let store = self.raw.store();
        let log_bytes = store.log_bytes(store.first_index(), store.last_index());
        if let Some(ci) = compaction::compact_index_at_job_start(
            &self.cfg.compaction,
            log_bytes,
            self.kv.data_bytes(),
            self.snapshots.index(),
        )
        .filter(|_| store.latest_snapshot().is_some())
        .map(|ci| self.below_streaming(ci))
        .filter(|&ci| ci > store.first_index())
        {
            self.raw.mut_store().compact(ci);
            self.out.event(Event::CompactedLog { index: ci });
        }
        let id = self.persist.allocate_id();
        let kv = self.kv.clone();
        let chunk_bytes = self.cfg.snapshot_chunk_bytes;
        let (started, job) = self.snapshots.create(id, kv, self.raw.store(), chunk_bytes);
        self.out.event(started);
        self.out.push(Action::Snapshot(job));
    }

    /// The snapshot job `id` completed: its file is durable under its final name, and `data`
    /// is the state machine it holds. Logs the WAL marker (after the file, never before: a crash
    /// in between leaves an orphan file that recovery removes) and compacts the log.
    pub fn snapshot_saved(&mut self, id: u64, file_bytes: u64) {
        let meta = self.snapshots.finish(id);
        if self.stopped.is_some() {
            return;
        }
        if let Some(superseded) = self.snapshots.superseded(&meta, &mut self.persist) {
            return self.out.event(superseded);
        }
        let (index, term) = (meta.index, meta.term);
        assert!(
            index <= self.raw.raft.raft_log.committed,
            "snapshot {index} beyond the commit index"
        );
        let mut hs = self.raw.store().hard_state().clone();
        hs.commit = hs.commit.max(index);
        self.snapshots
            .saved(&meta, hs_to_rec(&hs), &mut self.persist);
        let snapshot = snapshots::raft_snapshot(&meta, file_bytes);
        self.raw.mut_store().set_latest_snapshot(snapshot);
        // Keep the entries after any snapshot still streaming to a follower: compacting them
        // would make that follower need a newer snapshot the moment it installed this one, and a
        // cluster under load would never let it catch up (measured: a 1 GiB transfer was sent
        // three times while 16 clients wrote; core/tests/cluster.rs
        // `a_follower_catches_up_under_load_with_one_snapshot` never converges without this).
        let store = self.raw.store();
        let ci =
            compaction::compact_index(&self.cfg.compaction, index, self.kv.data_bytes(), |b| {
                store.first_index_within(b, index)
            });
        let ci = self.below_streaming(ci);
        self.raw.mut_store().compact(ci);
        self.out.event(Event::CompactedLog { index: ci });
        self.out.event(Event::SnapshotSaved { term, index });
        self.plan_purge();
        // A snapshot may be due again (or wanted by a lagging follower) already; `drain` issues
        // the staged WAL job.
        self.maybe_snapshot();
    }

    /// `ci`, or less: the entries after any snapshot still streaming to a follower stay.
    fn below_streaming(&self, ci: u64) -> u64 {
        let streaming = self
            .transfers
            .oldest_sent_index()
            .map_or(u64::MAX, |i| i + 1);
        ci.min(streaming)
    }

    /// Removals run after this job's sync, so the new snapshot and marker are durable first.
    fn plan_purge(&mut self) {
        let transfers = &self.transfers;
        let purged = self
            .snapshots
            .purge(&self.cfg.compaction, &mut self.persist, |n| {
                transfers.pinned(n)
            });
        self.out.events(purged);
    }

    // ---- snapshot transfer (see `transfer`) ----

    /// raft wants a follower to have a snapshot: stream its file instead of sending the message.
    pub(super) fn start_snapshot_send(&mut self, m: Message) {
        let snapshots = &self.snapshots;
        let (started, steps) = self
            .transfers
            .start(m, self.now_tick, |name| snapshots.holds(name));
        self.out.event(started);
        self.run_send_steps(steps);
    }

    pub(super) fn run_send_steps(&mut self, steps: Vec<SendStep>) {
        for step in steps {
            let event = transfers::step_event(&step);
            let damaged = transfers::damaged_file(&step);
            match step {
                SendStep::Read(job) => self.out.push(Action::Read(job)),
                SendStep::Chunk {
                    to,
                    message,
                    key,
                    offset,
                    bytes,
                } => {
                    let inc = self.recipient(to).incarnation;
                    let frame =
                        msgcodec::encode_chunk(&self.sender(), inc, &message, key, offset, bytes);
                    self.push_send(to, FrameKind::SnapshotChunk, frame);
                }
                SendStep::Finished { to, .. } => {
                    self.raw.report_snapshot(to, SnapshotStatus::Finish)
                }
                SendStep::Failed { to, .. } => {
                    self.raw.report_snapshot(to, SnapshotStatus::Failure)
                }
                SendStep::Resumed { .. } | SendStep::Resent { .. } => {}
            }
            self.out.events(event);
            if let Some((name, why)) = damaged {
                self.set_aside_snapshot(name, why);
            }
        }
    }

    /// A follower found this snapshot file damaged (its checksum fails there, so here too):
    /// stop sending it, set it aside as recovery would, and make a fresh snapshot instead.
    fn set_aside_snapshot(&mut self, name: String, why: SendFailure) {
        if self.snapshots.set_aside(&name, &mut self.persist) {
            let latest = self.raw.store().latest_snapshot().map(|s| {
                let m = s.get_metadata();
                snapfile::file_name(m.term, m.index)
            });
            if latest.as_deref() == Some(name.as_str()) {
                self.raw.mut_store().forget_latest_snapshot();
            }
            self.out
                .event(Event::SnapshotSetAside { name: name.clone() });
        }
        // Other followers' transfers of the same file end too (set aside above, so the failures
        // they report do not come back here for more).
        let steps = self.transfers.abandon_file(&name, why);
        self.run_send_steps(steps);
    }

    /// The read `id` of a snapshot file completed (or failed: the transfer reading it ends, and
    /// raft retries; a read error does not stop the node, since nothing durable is at stake).
    pub fn read_done(&mut self, id: u64, result: Result<Vec<u8>, DiskFailure>) {
        if self.stopped.is_some() {
            return;
        }
        let steps = self.transfers.read_done(id, result.ok(), self.now_tick);
        self.run_send_steps(steps);
    }

    pub(super) fn on_snapshot_chunk(
        &mut self,
        from: u64,
        message: Message,
        key: SnapKey,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<(), PeerError> {
        let to = self.recipient(from);
        if message.term < self.raw.raft.term {
            let frame = msgcodec::encode_ack(&self.sender(), to, transfers::stale_term_ack(key));
            self.push_send(from, FrameKind::Other, frame);
            return Err(PeerError::StaleSnapshotChunk {
                term: message.term,
                current: self.raw.raft.term,
            });
        }
        if let RaftCheck::CommittedConflict { stop, error } = self.check_raft(from, &message) {
            self.stop(stop);
            return Err(error);
        }
        let committed = self.raw.raft.raft_log.committed;
        let chunk = self.transfers.on_chunk(
            from,
            key,
            offset,
            &bytes,
            self.now_tick,
            committed,
            self.persist.ops(),
        );
        self.out.events(chunk.events);
        if let Some(received) = chunk.complete {
            // raft-rs takes the message's metadata on trust (it restores its configuration at
            // once, and panics on one without voters): it must describe the file just verified.
            let meta = message.get_snapshot().get_metadata();
            let conf_state = cs_to_rec(meta.get_conf_state());
            let describes_file = meta.index == received.meta.index
                && meta.term == received.meta.term
                && meta.term > 0
                && conf_state == received.meta.conf_state
                && !conf_state.voters.is_empty();
            if !describes_file {
                let index = meta.index;
                self.transfers.received(received, false, self.persist.ops());
                return Err(PeerError::SnapshotMessageMismatch { index });
            }
            self.raw
                .step(message)
                .map_err(|e| PeerError::Raft(e.into()))?;
            let taken = self
                .raw
                .raft
                .raft_log
                .unstable
                .snapshot
                .as_ref()
                .is_some_and(|s| s.get_metadata().index == key.index);
            self.transfers.received(received, taken, self.persist.ops());
        }
        let (ack, gated) = (chunk.ack, chunk.gated);
        let frame = msgcodec::encode_ack(&self.sender(), to, ack);
        if gated {
            self.persist.gate_frame(Outgoing {
                to: from,
                kind: FrameKind::Other,
                bytes: frame,
            });
        } else {
            self.push_send(from, FrameKind::Other, frame);
        }
        Ok(())
    }

    /// Timers of both ends of snapshot transfers; transfers to peers that left end.
    pub(super) fn tick_transfers(&mut self) {
        let followers = (self.raw.raft.state == StateRole::Leader)
            .then(|| self.raw.raft.prs().iter().map(|(id, _)| *id).collect());
        let (steps, abandoned) = self
            .transfers
            .tick(followers, self.now_tick, self.persist.ops());
        self.run_send_steps(steps);
        self.out.events(abandoned);
    }
}
