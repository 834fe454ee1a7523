//! Snapshot transfer: a leader streams a snapshot *file* to a follower in bounded chunks, so the
//! state a cluster can hold is limited by disk, not by a peer frame or by memory.
//!
//! raft-rs never sees snapshot bytes. The `Snapshot` it hands around carries only metadata and a
//! descriptor (the file's length, `snapfile::descriptor`); when it asks to send one, the node
//! starts a [`SendTransfer`] instead of sending the message, and the follower steps the message
//! into raft only once the whole file has arrived, been verified, and been staged for sync.
//!
//! Sender (the leader): reads the file chunk by chunk (`ReadJob`s, one in flight per transfer)
//! and keeps at most `window_chunks` chunks unacknowledged, so its memory per transfer is
//! bounded by the window whatever the state's size. The file is pinned against purge while it
//! streams. A chunk lost, reordered or corrupted (the frame checksum drops it) shows up as a gap
//! the receiver reports at once (`Resend`), or as silence that the sender's resend timer ends; no
//! progress for `give_up_ticks` reports failure to raft, which retries with a new transfer.
//!
//! Receiver (the follower): accepts only the next contiguous chunk, writes it to
//! `{name}.recv.tmp` through the node's ordinary disk jobs, and acknowledges it only once that
//! job has completed (so chunks never pile up in memory behind a slow disk). Each chunk is
//! checked as it passes (the file's framing and checksum, the state machine's records), and the
//! state is decoded incrementally: nothing is gathered and decoded whole. A retry of the same
//! snapshot, from this leader or a new one, resumes where the receiver stopped. A transfer cut off
//! is dropped after `give_up_ticks` and its temp file removed; a crash leaves a `*.tmp` file that
//! recovery removes.

use crate::fileop::FileOp;
use crate::kv::{KvState, SnapshotDecoder};
use crate::snapfile::{self, SnapFileError, SnapshotMeta, StreamDecoder, StreamError};
use raft::eraftpb::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// Identifies the snapshot a transfer carries: the same (term, index) is the same state on every
/// node, and its file the same bytes, which is what lets a new leader resume an old transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SnapKey {
    pub term: u64,
    pub index: u64,
    pub file_bytes: u64,
}

/// What a receiver says about a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckStatus {
    /// `[0, received)` is written.
    Progress,
    /// A chunk arrived out of order: send from `received`.
    Resend,
    /// Everything arrived and was verified (or the receiver did not need it).
    Done,
    Refused(ChunkRefusal),
}

/// Why a receiver refused a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum ChunkRefusal {
    /// The file's own checksum failed: the sender's copy is damaged.
    #[error("the snapshot file's checksum does not match")]
    BadChecksum,
    /// The file or the state in it does not decode, or does not match its metadata.
    #[error("the snapshot file does not decode")]
    BadFile,
    /// The sender is not the leader of the receiver's term.
    #[error("sent by a leader of an older term")]
    StaleTerm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub key: SnapKey,
    pub received: u64,
    pub status: AckStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferConfig {
    /// Largest chunk: must fit a peer frame with room for the envelope.
    pub chunk_bytes: usize,
    /// Chunks sent and not yet acknowledged, at most.
    pub window_chunks: usize,
    /// Silence after which unacknowledged chunks are sent again.
    pub resend_ticks: u64,
    /// No progress for this long ends a transfer (raft is told; it retries).
    pub give_up_ticks: u64,
}

/// Read `len` bytes of `name` at `offset` and report with `Node::read_done(id, ..)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadJob {
    pub id: u64,
    pub name: String,
    pub offset: u64,
    pub len: usize,
}

impl ReadJob {
    /// What this read yields from a file holding `file` (`None`: no such file): its range, or
    /// a failure when the file is missing or shorter. Shells that hold a directory in memory
    /// (the simulator, the test harnesses) answer with this; io-real reads with `pread`.
    pub fn from_bytes(&self, file: Option<&[u8]>) -> Result<Vec<u8>, crate::node::DiskFailure> {
        let start = usize::try_from(self.offset).ok();
        let range = start.and_then(|a| Some(a..a.checked_add(self.len)?));
        range
            .and_then(|r| file?.get(r))
            .map(|b| b.to_vec())
            .ok_or(crate::node::DiskFailure {
                op: "read",
                file: Some(self.name.clone()),
                kind: std::io::ErrorKind::UnexpectedEof,
            })
    }
}

/// Why a send ended without the receiver having the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum SendFailure {
    #[error("no progress for {ticks} ticks")]
    Stalled { ticks: u64 },
    #[error("refused by the receiver: {0}")]
    Refused(ChunkRefusal),
    #[error("reading the snapshot file failed")]
    ReadFailed,
}

/// What the sender side asks the node to do.
#[derive(Debug)]
pub enum SendStep {
    Read(ReadJob),
    Chunk {
        to: u64,
        message: Box<Message>,
        key: SnapKey,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// The receiver has it: report `Finish` to raft.
    Finished {
        to: u64,
        key: SnapKey,
    },
    /// Report `Failure` to raft.
    Failed {
        to: u64,
        key: SnapKey,
        why: SendFailure,
    },
    /// The receiver already had `offset` bytes of this snapshot (an earlier transfer's).
    Resumed {
        to: u64,
        key: SnapKey,
        offset: u64,
    },
    /// Chunks from `offset` on are sent again (a gap, or silence).
    Resent {
        to: u64,
        key: SnapKey,
        offset: u64,
    },
}

struct SendTransfer {
    key: SnapKey,
    message: Message,
    name: String,
    /// The receiver has `[0, acked)`.
    acked: u64,
    /// The next offset to read and send.
    next: u64,
    /// The read in flight: (read id, offset, length).
    reading: Option<(u64, u64, usize)>,
    last_progress_tick: u64,
    last_send_tick: u64,
    /// The last go-back: (offset, tick), so a burst of gap reports rewinds once.
    rewound: Option<(u64, u64)>,
}

/// Every transfer this node (as leader) is sending, one per peer.
pub struct Senders {
    cfg: TransferConfig,
    transfers: BTreeMap<u64, SendTransfer>,
    next_read_id: u64,
}

impl Senders {
    pub fn new(cfg: TransferConfig) -> Self {
        assert!(
            cfg.chunk_bytes > 0 && cfg.window_chunks > 0,
            "a window of nothing"
        );
        Senders {
            cfg,
            transfers: BTreeMap::new(),
            next_read_id: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.transfers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty()
    }

    /// The oldest snapshot index being sent: the log after it must stay, or the follower that
    /// installs it needs another snapshot at once (under load, forever).
    pub fn oldest_index(&self) -> Option<u64> {
        self.transfers.values().map(|t| t.key.index).min()
    }

    /// True while a transfer streams `name` (purge must keep it).
    pub fn pinned(&self, name: &str) -> bool {
        self.transfers.values().any(|t| t.name == name)
    }

    /// Starts sending `message` (a `MsgSnapshot`) with the file `name`. A transfer of the same
    /// snapshot to the same peer keeps its progress (raft asked again after a failure report).
    pub fn start(
        &mut self,
        message: Message,
        name: String,
        key: SnapKey,
        now: u64,
        out: &mut Vec<SendStep>,
    ) {
        let to = message.to;
        match self.transfers.get_mut(&to) {
            Some(t) if t.key == key => {
                t.message = message;
                t.last_progress_tick = now;
                t.next = t.acked;
            }
            _ => {
                self.transfers.insert(
                    to,
                    SendTransfer {
                        key,
                        message,
                        name,
                        acked: 0,
                        next: 0,
                        reading: None,
                        last_progress_tick: now,
                        last_send_tick: now,
                        rewound: None,
                    },
                );
            }
        }
        self.pump(to, out);
    }

    /// Issues the next read if the window allows.
    fn pump(&mut self, to: u64, out: &mut Vec<SendStep>) {
        let window = (self.cfg.chunk_bytes * self.cfg.window_chunks) as u64;
        let Some(t) = self.transfers.get_mut(&to) else {
            return;
        };
        if t.reading.is_some() || t.next >= t.key.file_bytes || t.next >= t.acked + window {
            return;
        }
        let len = (t.key.file_bytes - t.next).min(self.cfg.chunk_bytes as u64) as usize;
        let id = self.next_read_id;
        self.next_read_id += 1;
        t.reading = Some((id, t.next, len));
        out.push(SendStep::Read(ReadJob {
            id,
            name: t.name.clone(),
            offset: t.next,
            len,
        }));
    }

    /// A read completed (`None`: it failed, or came back short).
    pub fn read_done(
        &mut self,
        id: u64,
        bytes: Option<Vec<u8>>,
        now: u64,
        out: &mut Vec<SendStep>,
    ) {
        let Some((&to, t)) = self
            .transfers
            .iter_mut()
            .find(|(_, t)| t.reading.is_some_and(|(r, ..)| r == id))
        else {
            return; // its transfer ended meanwhile
        };
        let (_, offset, len) = t.reading.take().expect("matched");
        match bytes {
            Some(bytes) if bytes.len() == len => {
                if offset == t.next {
                    t.next = offset + len as u64;
                    t.last_send_tick = now;
                    out.push(SendStep::Chunk {
                        to,
                        message: Box::new(t.message.clone()),
                        key: t.key,
                        offset,
                        bytes,
                    });
                }
                // Otherwise the transfer went back (or ahead) while this read ran: drop it.
                self.pump(to, out);
            }
            _ => {
                let key = t.key;
                self.transfers.remove(&to);
                out.push(SendStep::Failed {
                    to,
                    key,
                    why: SendFailure::ReadFailed,
                });
            }
        }
    }

    /// The receiver's acknowledgement.
    pub fn on_ack(&mut self, from: u64, ack: Ack, now: u64, out: &mut Vec<SendStep>) {
        let Some(t) = self.transfers.get_mut(&from) else {
            return;
        };
        if t.key != ack.key || ack.received > t.key.file_bytes {
            return; // about another snapshot (an earlier transfer's late ack)
        }
        match ack.status {
            AckStatus::Progress => {
                if ack.received > t.acked {
                    t.acked = ack.received;
                    t.last_progress_tick = now;
                }
                if ack.received > t.next {
                    // The receiver kept what an earlier transfer of this snapshot sent it.
                    t.next = ack.received;
                    out.push(SendStep::Resumed {
                        to: from,
                        key: t.key,
                        offset: ack.received,
                    });
                }
            }
            AckStatus::Resend => {
                let recent = t.rewound.is_some_and(|(at, tick)| {
                    at == ack.received && now < tick + self.cfg.resend_ticks
                });
                if !recent {
                    if ack.received > t.acked {
                        t.last_progress_tick = now;
                    }
                    t.acked = ack.received;
                    t.next = ack.received;
                    t.rewound = Some((ack.received, now));
                    out.push(SendStep::Resent {
                        to: from,
                        key: t.key,
                        offset: ack.received,
                    });
                }
            }
            AckStatus::Done => {
                let key = t.key;
                self.transfers.remove(&from);
                out.push(SendStep::Finished { to: from, key });
                return;
            }
            AckStatus::Refused(why) => {
                let key = t.key;
                self.transfers.remove(&from);
                out.push(SendStep::Failed {
                    to: from,
                    key,
                    why: SendFailure::Refused(why),
                });
                return;
            }
        }
        self.pump(from, out);
    }

    /// A chunk to `to` could not be handed to the transport: send again from what it has, at
    /// the next resend (not at once: the peer is unreachable for now, and each try reads a
    /// chunk).
    pub fn send_failed(&mut self, to: u64) {
        if let Some(t) = self.transfers.get_mut(&to) {
            t.next = t.acked;
        }
    }

    /// Resends after silence; gives up after no progress.
    pub fn tick(&mut self, now: u64, out: &mut Vec<SendStep>) {
        let stalled: Vec<u64> = self
            .transfers
            .iter()
            .filter(|(_, t)| now >= t.last_progress_tick + self.cfg.give_up_ticks)
            .map(|(to, _)| *to)
            .collect();
        for to in stalled {
            let t = self.transfers.remove(&to).expect("listed");
            out.push(SendStep::Failed {
                to,
                key: t.key,
                why: SendFailure::Stalled {
                    ticks: self.cfg.give_up_ticks,
                },
            });
        }
        // Silent: chunks sent and not acknowledged, or none in flight nor being read though the
        // file is not all acknowledged (every send of a full window failed: nothing else would
        // send again, and the transfer would wait out `give_up_ticks`).
        let silent: Vec<u64> = self
            .transfers
            .iter()
            .filter(|(_, t)| {
                let waiting =
                    t.next > t.acked || (t.reading.is_none() && t.acked < t.key.file_bytes);
                waiting && now >= t.last_send_tick + self.cfg.resend_ticks
            })
            .map(|(to, _)| *to)
            .collect();
        for to in silent {
            let t = self.transfers.get_mut(&to).expect("listed");
            t.next = t.acked;
            t.last_send_tick = now;
            out.push(SendStep::Resent {
                to,
                key: t.key,
                offset: t.acked,
            });
            self.pump(to, out);
        }
    }

    /// Ends every transfer whose peer `keep` rejects (no longer a member), or all of them (this
    /// node is no longer the leader), without a report: raft has forgotten those peers' progress.
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.transfers.retain(|to, _| keep(*to));
    }

    /// Ends every transfer of `name` (the file turned out damaged), reporting each as failed.
    pub fn abandon_file(&mut self, name: &str, why: SendFailure, out: &mut Vec<SendStep>) {
        let gone: Vec<u64> = self
            .transfers
            .iter()
            .filter(|(_, t)| t.name == name)
            .map(|(to, _)| *to)
            .collect();
        for to in gone {
            let t = self.transfers.remove(&to).expect("listed");
            out.push(SendStep::Failed {
                to,
                key: t.key,
                why,
            });
        }
    }

    /// Bytes held for transfers: at most one chunk read per transfer (the rest is on disk or on
    /// the wire). An invariant the tests check.
    pub fn reads_in_flight(&self) -> usize {
        self.transfers
            .values()
            .filter(|t| t.reading.is_some())
            .count()
    }
}

/// A snapshot fully received and verified, waiting for raft to install it.
#[derive(Debug)]
pub struct Received {
    pub key: SnapKey,
    pub meta: SnapshotMeta,
    /// The synced temp file, renamed to its final name by the install.
    pub tmp: String,
    pub kv: KvState,
}

/// What became of a chunk.
#[derive(Debug)]
pub enum ChunkOutcome {
    /// Written (staged): send `ack` once the disk job holding the write completes.
    Written { ack: Ack },
    /// A chunk that starts no transfer (not at offset 0): send `ack` now.
    AckNow { ack: Ack },
    /// A duplicate or out-of-order chunk of the transfer under way: send `ack` (what has been
    /// received) once the disk job holding what is staged so far completes. Acknowledging staged
    /// bytes at once would let the leader's window run ahead of a slow disk, and the chunks it
    /// sends meanwhile pile up in memory behind the job.
    AckWhenDurable { ack: Ack },
    /// The receiver is past this snapshot already (raft would ignore it): send `ack` now, and
    /// the leader goes back to replicating entries.
    NotNeeded { ack: Ack },
    /// The last chunk: the file is verified and its sync staged. Step the message; send `ack`
    /// once the disk job completes; install from `Received` if raft takes the snapshot.
    Complete { ack: Ack, received: Box<Received> },
    /// The file is bad (removal of the temp file staged): send `ack` now.
    Refused { ack: Ack, why: ChunkRefusal },
}

struct RecvTransfer {
    from: u64,
    key: SnapKey,
    tmp: String,
    received: u64,
    file: StreamDecoder,
    kv: SnapshotDecoder,
    last_tick: u64,
}

/// The transfer this node (as follower) is receiving: at most one.
#[derive(Default)]
pub struct Receiver {
    current: Option<RecvTransfer>,
    /// A transfer given up for another snapshot: (sender, key, bytes received).
    replaced: Option<(u64, SnapKey, u64)>,
}

/// The name a received snapshot is written under until it is installed. Distinct from the
/// snapshot lane's own temp name, so the two lanes never write one file; `.tmp` so that recovery
/// removes it.
pub fn recv_temp_name(key: &SnapKey) -> String {
    format!(
        "{}.recv{}",
        snapfile::file_name(key.term, key.index),
        snapfile::TEMP_SUFFIX
    )
}

impl Receiver {
    /// A chunk of `key` at `offset`. `committed` is raft's commit index; `ops` the node's staged
    /// disk ops.
    #[allow(clippy::too_many_arguments)]
    pub fn on_chunk(
        &mut self,
        from: u64,
        key: SnapKey,
        offset: u64,
        bytes: &[u8],
        now: u64,
        committed: u64,
        ops: &mut Vec<FileOp>,
    ) -> ChunkOutcome {
        let ack = |received, status| Ack {
            key,
            received,
            status,
        };
        if let Some(t) = self.current.as_ref().filter(|t| t.key != key) {
            // Another snapshot: the old one is never finished now.
            self.replaced = Some((t.from, t.key, t.received));
            self.drop_current(ops);
        }
        if self.current.is_none() {
            if key.index <= committed {
                return ChunkOutcome::NotNeeded {
                    ack: ack(key.file_bytes, AckStatus::Done),
                };
            }
            if offset != 0 {
                return ChunkOutcome::AckNow {
                    ack: ack(0, AckStatus::Resend),
                };
            }
            let tmp = recv_temp_name(&key);
            ops.push(FileOp::Create {
                name: tmp.clone(),
                size_bytes: 0,
            });
            self.current = Some(RecvTransfer {
                from,
                key,
                tmp,
                received: 0,
                file: StreamDecoder::default(),
                kv: SnapshotDecoder::default(),
                last_tick: now,
            });
        }
        let t = self.current.as_mut().expect("set above");
        t.from = from;
        t.last_tick = now;
        if offset != t.received {
            let status = if offset < t.received {
                AckStatus::Progress
            } else {
                AckStatus::Resend
            };
            return ChunkOutcome::AckWhenDurable {
                ack: ack(t.received, status),
            };
        }
        if bytes.is_empty() || offset + bytes.len() as u64 > key.file_bytes {
            return self.refuse(key, ChunkRefusal::BadFile, ops);
        }
        let kv = &mut t.kv;
        if let Err(e) = t.file.feed(bytes, &mut |p: &[u8]| kv.feed(p)) {
            let why = match e {
                StreamError::File(SnapFileError::BadChecksum) => ChunkRefusal::BadChecksum,
                _ => ChunkRefusal::BadFile,
            };
            return self.refuse(key, why, ops);
        }
        ops.push(FileOp::WriteAt {
            name: t.tmp.clone(),
            offset,
            bytes: bytes.to_vec(),
        });
        t.received += bytes.len() as u64;
        if t.received < key.file_bytes {
            return ChunkOutcome::Written {
                ack: ack(t.received, AckStatus::Progress),
            };
        }
        let t = self.current.take().expect("current");
        let verified = t.file.finish().ok().and_then(|meta| {
            let kv = t.kv.finish().ok()?;
            (meta.index == key.index && meta.term == key.term && kv.applied_index() == key.index)
                .then_some((meta, kv))
        });
        let Some((meta, kv)) = verified else {
            self.current = None;
            ops.push(FileOp::Remove { name: t.tmp });
            return ChunkOutcome::Refused {
                ack: ack(0, AckStatus::Refused(ChunkRefusal::BadFile)),
                why: ChunkRefusal::BadFile,
            };
        };
        ops.push(FileOp::SyncFile {
            name: t.tmp.clone(),
        });
        ChunkOutcome::Complete {
            ack: ack(key.file_bytes, AckStatus::Done),
            received: Box::new(Received {
                key,
                meta,
                tmp: t.tmp,
                kv,
            }),
        }
    }

    fn refuse(&mut self, key: SnapKey, why: ChunkRefusal, ops: &mut Vec<FileOp>) -> ChunkOutcome {
        self.drop_current(ops);
        ChunkOutcome::Refused {
            ack: Ack {
                key,
                received: 0,
                status: AckStatus::Refused(why),
            },
            why,
        }
    }

    fn drop_current(&mut self, ops: &mut Vec<FileOp>) {
        if let Some(t) = self.current.take() {
            ops.push(FileOp::Remove { name: t.tmp });
        }
    }

    /// Drops a transfer that has been silent for `give_up_ticks`; returns (sender, key, bytes
    /// received) of the one dropped.
    pub fn tick(
        &mut self,
        now: u64,
        give_up_ticks: u64,
        ops: &mut Vec<FileOp>,
    ) -> Option<(u64, SnapKey, u64)> {
        let t = self.current.as_ref()?;
        if now < t.last_tick + give_up_ticks {
            return None;
        }
        let dropped = (t.from, t.key, t.received);
        self.drop_current(ops);
        Some(dropped)
    }

    /// The transfer the last chunk made this receiver give up, if it did.
    pub fn take_replaced(&mut self) -> Option<(u64, SnapKey, u64)> {
        self.replaced.take()
    }

    /// The snapshot being received, and how much of it has arrived.
    pub fn progress(&self) -> Option<(SnapKey, u64)> {
        self.current.as_ref().map(|t| (t.key, t.received))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: TransferConfig = TransferConfig {
        chunk_bytes: 10,
        window_chunks: 2,
        resend_ticks: 5,
        give_up_ticks: 100,
    };

    fn msg_to(to: u64) -> Message {
        Message {
            to,
            ..Default::default()
        }
    }

    /// Answers every read in `steps` with bytes of the right length; the chunks sent.
    fn serve_reads(s: &mut Senders, steps: Vec<SendStep>, now: u64) -> Vec<(u64, u64)> {
        let mut chunks = Vec::new();
        let mut pending = steps;
        while !pending.is_empty() {
            let mut next = Vec::new();
            for step in pending {
                match step {
                    SendStep::Read(r) => s.read_done(r.id, Some(vec![7; r.len]), now, &mut next),
                    SendStep::Chunk { to, offset, .. } => chunks.push((to, offset)),
                    _ => {}
                }
            }
            pending = next;
        }
        chunks
    }

    /// A sender streaming a 35-byte file to node 4, its first window (chunks at 0 and 10) read
    /// and sent, none acknowledged.
    fn sending_a_window_to_4() -> Senders {
        let mut s = Senders::new(CFG);
        let key = SnapKey {
            term: 2,
            index: 9,
            file_bytes: 35,
        };
        let mut steps = Vec::new();
        s.start(msg_to(4), "f.snap".into(), key, 0, &mut steps);
        assert_eq!(serve_reads(&mut s, steps, 0), vec![(4, 0), (4, 10)]);
        s
    }

    #[test]
    fn a_window_whose_every_send_failed_is_sent_again_at_the_next_resend_not_at_give_up() {
        let mut s = sending_a_window_to_4();
        // The connection is down: both chunks fail to go out.
        s.send_failed(4);
        s.send_failed(4);
        let mut steps = Vec::new();
        s.tick(CFG.resend_ticks - 1, &mut steps);
        assert!(
            steps.is_empty(),
            "nothing before the resend interval: {steps:?}"
        );
        s.tick(CFG.resend_ticks, &mut steps);
        assert!(
            steps.iter().any(|st| matches!(
                st,
                SendStep::Resent {
                    to: 4,
                    offset: 0,
                    ..
                }
            )),
            "{steps:?}"
        );
        assert_eq!(
            serve_reads(&mut s, steps, CFG.resend_ticks),
            vec![(4, 0), (4, 10)],
            "the window goes out again from what the receiver acknowledged"
        );
    }

    #[test]
    fn a_repeated_chunk_is_acknowledged_only_once_what_is_staged_is_durable() {
        let mut kv = crate::kv::KvState::default();
        kv.advance(9);
        let file = snapfile::encode(&snapfile::SnapshotFile {
            meta: snapfile::SnapshotMeta {
                index: 9,
                term: 2,
                conf_state: crate::wal::ConfStateRec {
                    voters: vec![1, 2, 3],
                    ..Default::default()
                },
            },
            data: kv.encode_snapshot(),
        });
        assert!(file.len() > 20, "a file of more than one chunk");
        let key = SnapKey {
            term: 2,
            index: 9,
            file_bytes: file.len() as u64,
        };
        let mut r = Receiver::default();
        let mut ops = Vec::new();
        let first = r.on_chunk(1, key, 0, &file[..10], 0, 0, &mut ops);
        assert!(matches!(first, ChunkOutcome::Written { ack } if ack.received == 10));
        // The leader's silence timer sends it again while the job writing it has not completed:
        // the answer waits for that job too, or the leader would count staged bytes as held.
        let again = r.on_chunk(1, key, 0, &file[..10], 1, 0, &mut ops);
        assert!(
            matches!(again, ChunkOutcome::AckWhenDurable { ack } if ack.received == 10 && ack.status == AckStatus::Progress),
            "{again:?}"
        );
        let gap = r.on_chunk(1, key, 20, &file[20..], 1, 0, &mut ops);
        assert!(
            matches!(gap, ChunkOutcome::AckWhenDurable { ack } if ack.received == 10 && ack.status == AckStatus::Resend),
            "{gap:?}"
        );
    }

    #[test]
    fn a_transfer_waiting_only_for_its_acks_is_not_resent_early() {
        let mut s = sending_a_window_to_4();
        let mut steps = Vec::new();
        s.tick(CFG.resend_ticks - 1, &mut steps);
        assert!(steps.is_empty(), "{steps:?}");
    }
}
