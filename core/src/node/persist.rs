//! Persistence staging, raft-rs's persistence order as a sub-state: what the next disk job will
//! write, and the one job in flight. Entries and HardStates go into the WAL; the messages raft
//! may send only once they are durable (votes, append acknowledgements), and frames that
//! acknowledge what a job writes, are gated on that job and released when it completes.
//!
//! Invariants (asserted, in release builds too):
//! - at most one job is in flight, and jobs complete in the order they were issued;
//! - the HardStates staged never go back: the term never decreases, a vote cast in a term is
//!   never changed in that term, and the commit index never decreases.

use super::{DiskJob, Outgoing};
use crate::fileop::FileOp;
use crate::wal::{HardStateRec, Record, SnapshotMarker, WalWriter};
use raft::eraftpb::{Entry, Message};

#[derive(Debug, Default)]
struct StagedJob {
    ops: Vec<FileOp>,
    post_sync: Vec<FileOp>,
    wal_written: bool,
    ready_number: Option<u64>,
    gated: Vec<Message>,
    /// Frames released once the job completes (acknowledgements of snapshot chunks it writes).
    gated_frames: Vec<Outgoing>,
    /// The last HardState written in this job: durable once it completes.
    hard_state: Option<HardStateRec>,
}

impl StagedJob {
    fn is_empty(&self) -> bool {
        self.ops.is_empty()
            && self.post_sync.is_empty()
            && !self.wal_written
            && self.ready_number.is_none()
            && self.gated.is_empty()
            && self.gated_frames.is_empty()
    }
}

/// A job handed to the shell and not yet reported done.
#[derive(Debug)]
pub(super) struct InFlightJob {
    pub(super) id: u64,
    /// The raft Ready whose persistence this job completes.
    pub(super) ready_number: Option<u64>,
    pub(super) gated: Vec<Message>,
    pub(super) gated_frames: Vec<Outgoing>,
    pub(super) hard_state: Option<HardStateRec>,
}

pub(super) struct Persistence {
    wal: WalWriter,
    next_job_id: u64,
    in_flight: Option<InFlightJob>,
    staged: StagedJob,
    /// The last HardState staged: what the next one may not go back from.
    last_hard_state: Option<HardStateRec>,
}

impl Persistence {
    /// Starts with `ops` (recovery's or bootstrap's) as the first job's.
    pub(super) fn new(wal: WalWriter, ops: Vec<FileOp>) -> Persistence {
        Persistence {
            wal,
            next_job_id: 1,
            in_flight: None,
            staged: StagedJob {
                ops,
                ..StagedJob::default()
            },
            last_hard_state: None,
        }
    }

    /// A job id (the snapshot lane's jobs share the sequence: ids name jobs across lanes).
    pub(super) fn allocate_id(&mut self) -> u64 {
        let id = self.next_job_id;
        self.next_job_id += 1;
        id
    }

    pub(super) fn wal(&self) -> &WalWriter {
        &self.wal
    }

    /// Ops for the next job, written before its WAL sync.
    pub(super) fn ops(&mut self) -> &mut Vec<FileOp> {
        &mut self.staged.ops
    }

    /// Ops for the next job that must follow its WAL sync (a rename or removal that the
    /// records it writes make safe).
    pub(super) fn post_sync(&mut self) -> &mut Vec<FileOp> {
        &mut self.staged.post_sync
    }

    /// The WAL and the ops of the next job together (purge, compaction).
    pub(super) fn wal_and_ops(&mut self) -> (&mut WalWriter, &mut Vec<FileOp>) {
        (&mut self.wal, &mut self.staged.ops)
    }

    /// The WAL and the next job's post-sync ops together.
    pub(super) fn wal_and_post_sync(&mut self) -> (&mut WalWriter, &mut Vec<FileOp>) {
        (&mut self.wal, &mut self.staged.post_sync)
    }

    /// A spare segment (zeros written and synced) for the WAL's next cut.
    pub(super) fn give_spare(&mut self, name: String) {
        self.wal.set_spare(name);
    }

    pub(super) fn append_entries(&mut self, entries: &[Entry]) {
        for e in entries {
            self.wal.append(
                &Record::Entry(crate::convert::entry_to_rec(e)),
                &mut self.staged.ops,
            );
        }
        self.staged.wal_written = true;
    }

    pub(super) fn stage_hard_state(&mut self, hs: HardStateRec) {
        if let Some(last) = self.last_hard_state {
            assert!(
                hs.term >= last.term,
                "HardState term went back: {last:?} then {hs:?}"
            );
            assert!(
                hs.term > last.term || last.vote == 0 || hs.vote == last.vote,
                "vote changed within term {}: {last:?} then {hs:?}",
                hs.term
            );
            assert!(
                hs.commit >= last.commit,
                "HardState commit went back: {last:?} then {hs:?}"
            );
        }
        self.last_hard_state = Some(hs);
        self.wal
            .append(&Record::HardState(hs), &mut self.staged.ops);
        self.staged.wal_written = true;
        self.staged.hard_state = Some(hs);
    }

    /// Stages the WAL record naming a snapshot file; the file's own ops must come first (in this
    /// job, or durable already).
    pub(super) fn stage_marker(&mut self, marker: SnapshotMarker) {
        self.wal
            .append(&Record::Snapshot(marker), &mut self.staged.ops);
        self.staged.wal_written = true;
    }

    /// Makes what the WAL holds durable in the next job, written or not.
    pub(super) fn sync_wal(&mut self) {
        self.wal.sync(&mut self.staged.ops);
    }

    /// The next job completes raft's Ready `number`; `persisted` are the messages it may send
    /// only then.
    pub(super) fn gate_ready(&mut self, number: u64, persisted: Vec<Message>) {
        self.staged.ready_number = Some(number);
        self.staged.gated.extend(persisted);
    }

    /// A frame sent once the next job completes.
    pub(super) fn gate_frame(&mut self, frame: Outgoing) {
        self.staged.gated_frames.push(frame);
    }

    /// Nothing staged and nothing in flight: a Ready is durable as it stands.
    pub(super) fn is_idle(&self) -> bool {
        self.staged.is_empty() && self.in_flight.is_none()
    }

    pub(super) fn in_flight_id(&self) -> Option<u64> {
        self.in_flight.as_ref().map(|j| j.id)
    }

    /// The next job, if one is staged and none is in flight.
    pub(super) fn issue(&mut self) -> Option<DiskJob> {
        if self.in_flight.is_some() || self.staged.is_empty() {
            return None;
        }
        let staged = std::mem::take(&mut self.staged);
        let mut ops = staged.ops;
        if staged.wal_written {
            self.wal.sync(&mut ops);
        } else {
            self.wal.flush(&mut ops);
        }
        ops.extend(staged.post_sync);
        let id = self.allocate_id();
        self.in_flight = Some(InFlightJob {
            id,
            ready_number: staged.ready_number,
            gated: staged.gated,
            gated_frames: staged.gated_frames,
            hard_state: staged.hard_state,
        });
        assert!(self.staged.is_empty(), "a job takes everything staged");
        Some(DiskJob { id, ops })
    }

    /// Job `id` completed; what it gated is the caller's to release.
    pub(super) fn complete(&mut self, id: u64) -> InFlightJob {
        let job = self
            .in_flight
            .take()
            .expect("disk_done without a job in flight");
        assert_eq!(job.id, id, "disk jobs complete in order");
        job
    }
}
