//! Both ends of snapshot transfers as a sub-state: the files this node streams to followers (as
//! leader, `transfer::Senders`), the one it receives (as follower, `transfer::Receiver`), and
//! the received file raft has taken and the next Ready installs. The protocol is
//! `crate::transfer`'s; what lives here is what the node adds: which transfers end when the
//! node's view changes, which received file survives when raft takes a newer one, and what each
//! step is reported as. Turning steps into frames and raft reports is the node's.
//!
//! Invariants (asserted, in release builds too):
//! - at most one received file waits to be installed, and it is the one raft took last (an
//!   older one's file is removed when it is replaced);
//! - a file is sent only while this node holds it on disk (asserted by the node at start).

use super::config::transfer_config;
use super::{Event, NodeConfig};
use crate::fileop::FileOp;
use crate::snapfile;
use crate::transfer::{
    Ack, AckStatus, ChunkOutcome, ChunkRefusal, Received, Receiver, SendFailure, SendStep, Senders,
    SnapKey,
};
use raft::eraftpb::Message;
use std::collections::BTreeSet;

/// What the node does with a chunk it received.
pub(super) struct Chunk {
    /// The acknowledgement to send; `gated`: once the disk job holding the write completes.
    pub ack: Ack,
    pub gated: bool,
    /// What to report, in order: an earlier transfer given up for this one, the chunk's fate.
    pub events: Vec<Event>,
    /// The whole file, verified: the node steps the chunk's message into raft, then hands it
    /// back (`received`), acknowledged only if raft accepted the message.
    pub complete: Option<Box<Received>>,
}

pub(super) struct Transfers {
    /// Snapshot files this node streams to followers (as leader).
    senders: Senders,
    /// The snapshot file this node receives (as follower).
    receiver: Receiver,
    /// A received, verified snapshot that raft has taken and the next Ready installs.
    received: Option<Box<Received>>,
    /// Ticks a silent incoming transfer is given before it is dropped.
    give_up_ticks: u64,
}

impl Transfers {
    pub(super) fn new(cfg: &NodeConfig) -> Transfers {
        let tc = transfer_config(cfg);
        Transfers {
            give_up_ticks: tc.give_up_ticks,
            senders: Senders::new(tc),
            receiver: Receiver::default(),
            received: None,
        }
    }

    /// Files being streamed to followers.
    pub(super) fn sends(&self) -> usize {
        self.senders.len()
    }

    /// The file being received: (index, bytes received, file bytes).
    pub(super) fn receiving(&self) -> Option<(u64, u64, u64)> {
        self.receiver
            .progress()
            .map(|(k, received)| (k.index, received, k.file_bytes))
    }

    /// The oldest snapshot index still streaming (compaction keeps the entries after it).
    pub(super) fn oldest_sent_index(&self) -> Option<u64> {
        self.senders.oldest_index()
    }

    /// A file streaming to a follower stays on disk until its transfer ends.
    pub(super) fn pinned(&self, name: &str) -> bool {
        self.senders.pinned(name)
    }

    // ---- sending (leader) ----

    /// Streams the file raft's `MsgSnapshot` `m` describes to `m.to` instead of sending it:
    /// the event that says so, and the first steps. A file is sent only while this node holds it
    /// on disk (`on_disk`).
    pub(super) fn start(
        &mut self,
        m: Message,
        now: u64,
        on_disk: impl FnOnce(&str) -> bool,
    ) -> (Event, Vec<SendStep>) {
        let meta = m.get_snapshot().get_metadata();
        let file_bytes = snapfile::parse_descriptor(&m.get_snapshot().data)
            .expect("storage hands raft descriptors, never state");
        let key = SnapKey {
            term: meta.term,
            index: meta.index,
            file_bytes,
        };
        let name = snapfile::file_name(key.term, key.index);
        assert!(
            on_disk(&name),
            "raft sends snapshot {name}, which is not on disk"
        );
        let started = Event::SnapshotSendStarted {
            to: m.to,
            index: key.index,
            file_bytes,
        };
        let mut steps = Vec::new();
        self.senders.start(m, name, key, now, &mut steps);
        (started, steps)
    }

    pub(super) fn on_ack(&mut self, from: u64, ack: Ack, now: u64) -> Vec<SendStep> {
        let mut steps = Vec::new();
        self.senders.on_ack(from, ack, now, &mut steps);
        steps
    }

    pub(super) fn read_done(&mut self, id: u64, bytes: Option<Vec<u8>>, now: u64) -> Vec<SendStep> {
        let mut steps = Vec::new();
        self.senders.read_done(id, bytes, now, &mut steps);
        steps
    }

    /// A chunk to `to` never left: the transfer goes back to what the receiver has.
    pub(super) fn send_failed(&mut self, to: u64) {
        self.senders.send_failed(to);
    }

    /// Every transfer of file `name` ends (it is damaged).
    pub(super) fn abandon_file(&mut self, name: &str, why: SendFailure) -> Vec<SendStep> {
        let mut steps = Vec::new();
        self.senders.abandon_file(name, why, &mut steps);
        steps
    }

    /// This node stopped leading: raft forgot its followers' progress, so the transfers it was
    /// waiting on are moot.
    pub(super) fn stop_sending(&mut self) {
        self.senders.retain(|_| false);
        assert!(self.senders.is_empty());
    }

    /// Both ends' timers. `followers`: the peers raft tracks while this node leads (`None`
    /// when it does not lead): transfers to any other peer end. Returns the sending side's
    /// steps, and the event of an incoming transfer dropped for silence.
    pub(super) fn tick(
        &mut self,
        followers: Option<BTreeSet<u64>>,
        now: u64,
        ops: &mut Vec<FileOp>,
    ) -> (Vec<SendStep>, Option<Event>) {
        match followers {
            None => self.stop_sending(),
            Some(ids) => self.senders.retain(|id| ids.contains(&id)),
        }
        let mut steps = Vec::new();
        self.senders.tick(now, &mut steps);
        let abandoned =
            self.receiver
                .tick(now, self.give_up_ticks, ops)
                .map(
                    |(from, key, received_bytes)| Event::SnapshotReceiveAbandoned {
                        from,
                        index: key.index,
                        received_bytes,
                    },
                );
        (steps, abandoned)
    }

    // ---- receiving (follower) ----

    /// A chunk of `key` at `offset` from `from`, and what the node does with it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_chunk(
        &mut self,
        from: u64,
        key: SnapKey,
        offset: u64,
        bytes: &[u8],
        now: u64,
        committed: u64,
        ops: &mut Vec<FileOp>,
    ) -> Chunk {
        let outcome = self
            .receiver
            .on_chunk(from, key, offset, bytes, now, committed, ops);
        let mut events: Vec<Event> = self
            .receiver
            .take_replaced()
            .map(
                |(from, key, received_bytes)| Event::SnapshotReceiveAbandoned {
                    from,
                    index: key.index,
                    received_bytes,
                },
            )
            .into_iter()
            .collect();
        let index = key.index;
        let (ack, gated, complete) = match outcome {
            ChunkOutcome::Written { ack } | ChunkOutcome::AckWhenDurable { ack } => {
                (ack, true, None)
            }
            ChunkOutcome::AckNow { ack } | ChunkOutcome::NotNeeded { ack } => (ack, false, None),
            ChunkOutcome::Refused { ack, why } => {
                events.push(Event::SnapshotRefused { from, index, why });
                (ack, false, None)
            }
            ChunkOutcome::Complete { ack, received } => {
                let file_bytes = key.file_bytes;
                events.push(Event::SnapshotReceived {
                    from,
                    index,
                    file_bytes,
                });
                (ack, true, Some(received))
            }
        };
        Chunk {
            ack,
            gated,
            events,
            complete,
        }
    }

    /// A whole, verified file was stepped into raft: `taken` if raft took it (the next Ready
    /// installs it), else raft did not need it after all (it caught up meanwhile) and its file
    /// goes.
    pub(super) fn received(&mut self, received: Box<Received>, taken: bool, ops: &mut Vec<FileOp>) {
        if !taken {
            ops.push(FileOp::Remove { name: received.tmp });
            return;
        }
        let key = received.key;
        // raft restores only the newest: an older one it took and has not installed yet is never
        // installed now, so its file goes.
        if let Some(older) = self.received.replace(received) {
            ops.push(FileOp::Remove { name: older.tmp });
        }
        assert!(self.received.as_ref().is_some_and(|r| r.key == key));
    }

    /// The received file of snapshot (`index`, `term`), which raft restores now; `None` if this
    /// node holds no such file (raft restores only what it was stepped after the file arrived).
    pub(super) fn take_received(&mut self, index: u64, term: u64) -> Option<Box<Received>> {
        self.received
            .take()
            .filter(|r| (r.key.index, r.key.term) == (index, term))
    }
}

/// The acknowledgement that refuses a chunk from an older term.
pub(super) fn stale_term_ack(key: SnapKey) -> Ack {
    Ack {
        key,
        received: 0,
        status: AckStatus::Refused(ChunkRefusal::StaleTerm),
    }
}

/// What a sending step is reported as, if anything.
pub(super) fn step_event(step: &SendStep) -> Option<Event> {
    match *step {
        SendStep::Read(_) | SendStep::Chunk { .. } => None,
        SendStep::Finished { to, key } => Some(Event::SnapshotSent {
            to,
            index: key.index,
        }),
        SendStep::Failed { to, key, why } => Some(Event::SnapshotSendFailed {
            to,
            index: key.index,
            why,
        }),
        SendStep::Resumed { to, key, offset } => Some(Event::SnapshotSendResumed {
            to,
            index: key.index,
            offset,
        }),
        SendStep::Resent { to, key, offset } => Some(Event::SnapshotChunksResent {
            to,
            index: key.index,
            offset,
        }),
    }
}

/// The file a failed step found damaged, and why: a follower refused it as damaged, and frames
/// are checksummed on the wire, so a file that fails to verify at the receiver is damaged here
/// (a misdirected write, bit rot).
pub(super) fn damaged_file(step: &SendStep) -> Option<(String, SendFailure)> {
    match *step {
        SendStep::Failed { key, why, .. }
            if matches!(
                why,
                SendFailure::Refused(ChunkRefusal::BadChecksum | ChunkRefusal::BadFile)
            ) =>
        {
            Some((snapfile::file_name(key.term, key.index), why))
        }
        _ => None,
    }
}
