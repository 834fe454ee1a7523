//! Boot: from a data directory's bytes and the operator's flags to a started [`Node`], or to a
//! refusal that names both sides and the fix. Every shell (the binary, the simulator, the test
//! harness) starts nodes here and nowhere else.
//!
//! Once a data directory exists, its stored state rules: the flags that shaped a new cluster
//! (`--cluster`, `--join`) are not used to rebuild it, only checked against it. Refused:
//! - a directory of another node (`--id` differs from the identity file);
//! - a directory created with another `--cluster-token`;
//! - a `--cluster` naming members this directory's cluster never had (a directory left from a
//!   single-node run restarted as one node of three would otherwise elect itself alone);
//! - the directory of a removed member.
//!
//! A `--cluster` giving this node a peer URL other than the one its directory knows is not
//! refused here, because the directory may simply be behind (the URL was changed with
//! `PUT /v1/members/{id}` while the node was down): the node starts on the new URL, and stops
//! with `StopReason::PeerUrlNotConfirmed` unless a member reaches it there in time (peers dial the
//! URL their membership holds, so nothing arrives while they still hold the old one).
//!
//! Accepted: fewer URLs than members, URLs of members since removed, other members' URLs that
//! changed through the log since (the log is right, the flags are history).
//!
//! A directory holding a WAL but no identity file is data-directory format 1: it is upgraded in
//! place (identity file written first, with a fresh incarnation that the leader then records).

use crate::command::{Command, MemberChange, MemberProposal, Proposal};
use crate::fileop::{read_whole, FileOp, ReadAt};
use crate::identity::{
    derive_cluster_id, token_hash, Identity, IdentityError, DATA_DIR_FORMAT, IDENTITY_FILE,
    UNKNOWN_CLUSTER,
};
use crate::kv::KvState;
use crate::node::{Bootstrap, Event, Node, NodeConfig, NodeError, Restored};
use crate::recovery::{recover, RecoveryError};
use crate::rng::Rng;
use crate::snapfile;
use crate::wal::{EntryKind, EntryRec, SegmentName, WalError, WalIdentity};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// What the operator said on the command line (or the simulator's operator, mistakes included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartFlags {
    /// `--cluster`: member id -> peer URL.
    pub peers: BTreeMap<u64, String>,
    /// `--cluster-token`.
    pub token: String,
    /// `--join`: this node was added to a running cluster (etcd's `--initial-cluster-state
    /// existing`); without it an empty directory bootstraps a new cluster with `peers`.
    pub join: bool,
}

/// How the directory was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BootKind {
    /// Empty: initialised now.
    Fresh,
    /// Restarted from its own state.
    Restart,
    /// Data-directory format 1, upgraded to the current format.
    Upgraded { from_format: u32 },
    /// A new cluster's member whose first job never completed (a crash after its first WAL
    /// segment was named, before the bootstrap snapshot's marker and HardState were durable):
    /// it never spoke, so what it wrote is removed and it starts as a fresh directory would.
    Unfinished,
}

fn list(ids: &[(u64, String)]) -> String {
    ids.iter()
        .map(|(id, url)| format!("{id} ({url})"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn members_list(m: &BTreeMap<u64, String>) -> String {
    list(&m.iter().map(|(a, b)| (*a, b.clone())).collect::<Vec<_>>())
}

#[derive(Debug, Error)]
pub enum BootError {
    #[error("{IDENTITY_FILE} is damaged ({error}); the directory cannot be trusted to be this node's. Restore it from a backup, or replace the member (see README, \"Replacing a failed node\")")]
    Identity { error: IdentityError },
    #[error("this data directory belongs to node {found}, not to node {flag} (--id {flag}). Start it with --id {found}, or give node {flag} its own directory (--data-dir)")]
    WrongNode { found: u64, flag: u64 },
    #[error("this data directory was created with another --cluster-token than the one given; start it with the token it was created with")]
    WrongToken,
    #[error("this data directory holds a log but no {IDENTITY_FILE}, and the log is not one of this --cluster-token's: the identity file was deleted (or the directory was created, before identity files, with another --cluster-token). Restore {IDENTITY_FILE} from a backup, or replace the member (see README, \"Replacing a failed node\")")]
    MissingIdentity,
    #[error("--cluster names members this data directory's cluster never had: {}. Its members are {}. If the directory is left from an earlier run (a single-node one, say), move it away and start again; to grow a running cluster, add members with POST /v1/members and start them with --join", list(.strangers), members_list(.members))]
    StrangerPeers {
        strangers: Vec<(u64, String)>,
        members: BTreeMap<u64, String>,
    },
    #[error("node {id} was removed from the cluster and a removed id is never reused. Add the machine as a new member with a new id (POST /v1/members), and start it with --join on an empty data directory")]
    Removed { id: u64 },
    #[error("--id {id} is not among the --cluster members ({}); a new cluster is bootstrapped by its initial members only (use --join to join a running one)", members_list(.members))]
    NotInCluster {
        id: u64,
        members: BTreeMap<u64, String>,
    },
    #[error("--cluster gives members {first} and {second} the same peer URL ({url}) in a new cluster: each member needs its own")]
    SharedPeerUrl {
        url: String,
        first: u64,
        second: u64,
    },
    #[error("the data directory cannot be recovered: {0}")]
    Recovery(#[from] RecoveryError),
    #[error("cannot start: {0}")]
    Node(#[from] NodeError),
}

/// Reads a directory listing (files through `read`) and starts the node it holds, or a
/// fresh one, after checking the directory against `flags`. `cfg.seed` also draws the
/// incarnation of a fresh directory.
pub fn boot(
    cfg: NodeConfig,
    flags: &StartFlags,
    names: &[String],
    read: &mut ReadAt<'_>,
) -> Result<Node, BootError> {
    let token = token_hash(&flags.token);
    let has_identity = names.iter().any(|n| n == IDENTITY_FILE);
    let has_state = names
        .iter()
        .any(|n| SegmentName::parse(n).is_some() || snapfile::parse_name(n).is_some());
    let mut first_ops = Vec::new();
    let stored = if has_identity {
        let bytes = read_whole(read, IDENTITY_FILE).map_err(|reason| RecoveryError::Read {
            name: IDENTITY_FILE.into(),
            reason,
        })?;
        let id = Identity::decode(&bytes).map_err(|error| BootError::Identity { error })?;
        if id.node_id != cfg.id {
            return Err(BootError::WrongNode {
                found: id.node_id,
                flag: cfg.id,
            });
        }
        if id.token_hash != token {
            return Err(BootError::WrongToken);
        }
        Some(id)
    } else {
        None
    };
    let (identity, kind, restored) = match (stored, has_state) {
        (Some(id), true) => {
            let restored = restore(&cfg, flags, id, names, read)?;
            // Only a directory these very flags bootstrapped: a joiner's (its cluster id is
            // unknown, or adopted from a cluster whose first members did not include it)
            // started without --join by mistake must not bootstrap a cluster of its own.
            let bootstrapped_by_these_flags =
                !flags.join && id.cluster_id == derive_cluster_id(&flags.token, &flags.peers);
            let planted =
                crate::planted::active(crate::planted::PlantedBug::UnfinishedFirstJobAsRestart);
            if bootstrapped_by_these_flags
                && !planted
                && restored.as_ref().is_some_and(first_job_unfinished)
            {
                for name in names {
                    let written_by_first_job = SegmentName::parse(name).is_some()
                        || snapfile::parse_name(name).is_some()
                        || name.ends_with(snapfile::TEMP_SUFFIX);
                    if written_by_first_job {
                        first_ops.push(FileOp::Remove { name: name.clone() });
                    }
                }
                first_ops.push(FileOp::SyncDir);
                let id = fresh_identity(&cfg, flags, token)?;
                id.write_ops(&mut first_ops);
                (id, BootKind::Unfinished, None)
            } else {
                (id, BootKind::Restart, restored)
            }
        }
        (None, true) => {
            // Format 1: the WAL's cluster id was the token's plain FNV hash.
            let legacy = Identity {
                format_version: DATA_DIR_FORMAT,
                cluster_id: crate::rng::fnv64(flags.token.as_bytes()),
                node_id: cfg.id,
                incarnation: draw_incarnation(&cfg),
                token_hash: token,
            };
            // A log of another cluster id: not a format-1 directory of this token, but (far more
            // likely) one whose identity file was deleted.
            let restored = restore(&cfg, flags, legacy, names, read).map_err(|e| match e {
                BootError::WrongToken => BootError::MissingIdentity,
                e => e,
            })?;
            legacy.write_ops(&mut first_ops);
            (legacy, BootKind::Upgraded { from_format: 1 }, restored)
        }
        // An identity without a WAL or snapshot is a directory whose first job never completed
        // (or whose log was deleted): it holds nothing, so it starts afresh, as a new incarnation.
        (_, false) => {
            let id = fresh_identity(&cfg, flags, token)?;
            id.write_ops(&mut first_ops);
            (id, BootKind::Fresh, None)
        }
    };
    let bootstrap = if flags.join {
        Bootstrap::Join {
            members: flags.peers.clone(),
        }
    } else {
        Bootstrap::NewCluster {
            members: flags.peers.clone(),
        }
    };
    let mut moved = None;
    if let Some(r) = &restored {
        check_flags(&cfg, flags, r)?;
        moved = url_change(&cfg, flags, r);
    }
    let own_url = flags.peers.get(&cfg.id).cloned();
    let mut node = Node::start(cfg, identity, restored, bootstrap, first_ops)?;
    node.set_own_url(own_url, moved);
    node.push_event(Event::Booted {
        kind,
        cluster_id: identity.cluster_id,
        incarnation: identity.incarnation,
    });
    Ok(node)
}

/// The identity of a directory that holds nothing yet, after the flags' checks for one.
fn fresh_identity(cfg: &NodeConfig, flags: &StartFlags, token: u64) -> Result<Identity, BootError> {
    if !flags.join && !flags.peers.contains_key(&cfg.id) {
        return Err(BootError::NotInCluster {
            id: cfg.id,
            members: flags.peers.clone(),
        });
    }
    if !flags.join {
        refuse_shared_urls(&flags.peers)?;
    }
    Ok(Identity {
        format_version: DATA_DIR_FORMAT,
        cluster_id: if flags.join {
            UNKNOWN_CLUSTER
        } else {
            derive_cluster_id(&flags.token, &flags.peers)
        },
        node_id: cfg.id,
        incarnation: draw_incarnation(cfg),
        token_hash: token,
    })
}

/// A restart of a new cluster's member that finds nothing its first job completes with: no
/// snapshot marker (the bootstrap snapshot is marked in that job), no HardState, no entry.
/// Every later job leaves a marker and a HardState in the WAL (each new segment's header
/// repeats them), so this directory's first job never completed, and the node, whose frames
/// wait for that job, never spoke. (A joiner's WAL looks like this until its first snapshot
/// arrives: it restarts as it is.)
fn first_job_unfinished(r: &Restored) -> bool {
    let rec = &r.recovered;
    rec.snapshot.is_none()
        && rec.entries.is_empty()
        && rec.wal.markers().next().is_none()
        && rec.wal.hard_state().is_none()
}

/// The initial members of a new cluster each need their own peer URL.
fn refuse_shared_urls(peers: &BTreeMap<u64, String>) -> Result<(), BootError> {
    let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
    for (&id, url) in peers {
        if let Some(&first) = seen.get(url.trim_end_matches('/')) {
            return Err(BootError::SharedPeerUrl {
                url: url.clone(),
                first,
                second: id,
            });
        }
        seen.insert(url.trim_end_matches('/'), id);
    }
    Ok(())
}

fn draw_incarnation(cfg: &NodeConfig) -> u64 {
    let mut rng = Rng::new(cfg.seed ^ 0x1DE7_171E_5EED_0001 ^ cfg.id);
    loop {
        let v = rng.next_u64();
        if v != 0 {
            return v;
        }
    }
}

fn restore(
    cfg: &NodeConfig,
    flags: &StartFlags,
    identity: Identity,
    names: &[String],
    read: &mut ReadAt<'_>,
) -> Result<Option<Restored>, BootError> {
    let wal_id = WalIdentity {
        cluster_id: identity.cluster_id,
        node_id: cfg.id,
    };
    let recovered = match recover(names, wal_id, read) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(RecoveryError::Wal(WalError::WrongMember { found_node, .. }))
            if found_node != cfg.id =>
        {
            return Err(BootError::WrongNode {
                found: found_node,
                flag: cfg.id,
            })
        }
        Err(RecoveryError::Wal(WalError::WrongMember { .. })) => return Err(BootError::WrongToken),
        Err(e) => return Err(e.into()),
    };
    let mut recovered = recovered;
    // A joiner restarted before its first snapshot knows only what its flags said.
    let kv = recovered
        .state
        .take()
        .unwrap_or_else(|| KvState::with_members(flags.peers.clone()));
    Ok(Some(Restored { recovered, kv }))
}

/// The membership as of the last entry in the log: the snapshot's, with the log's membership
/// entries applied (they are re-applied for real once raft commits them again). Returns the
/// current members, every id the cluster ever had, and the ids removed by a *committed* entry
/// (at or below `commit`): a removal a leader appended and lost with its leadership is
/// truncated by the next leader, and a member that refused to start over it could leave the
/// cluster short of a quorum. An uncommitted one that commits later stops the node then.
fn membership_in_log(
    kv: &KvState,
    entries: &[EntryRec],
    commit: u64,
) -> (BTreeMap<u64, String>, BTreeSet<u64>, BTreeSet<u64>) {
    let mut members = kv.members().clone();
    let mut removed = kv.removed().clone();
    let mut ever: BTreeSet<u64> = members.keys().chain(kv.removed()).copied().collect();
    for e in entries {
        match e.kind {
            EntryKind::ConfChange => match MemberProposal::decode(&e.context).map(|p| p.change) {
                Some(MemberChange::Add { id, addr })
                | Some(MemberChange::AddLearner { id, addr, .. }) => {
                    ever.insert(id);
                    members.insert(id, addr);
                }
                Some(MemberChange::Promote { .. }) => {}
                Some(MemberChange::Remove { id }) => {
                    members.remove(&id);
                    if e.index <= commit {
                        removed.insert(id);
                    }
                }
                None => {}
            },
            EntryKind::Normal => {
                if let Some(Command::SetPeerUrl { id, addr }) =
                    Proposal::decode(&e.data).map(|p| p.command)
                {
                    if let Some(a) = members.get_mut(&id) {
                        *a = addr;
                    }
                }
            }
            EntryKind::ConfChangeV2 => {}
        }
    }
    (members, ever, removed)
}

fn check_flags(cfg: &NodeConfig, flags: &StartFlags, r: &Restored) -> Result<(), BootError> {
    if r.recovered.snapshot.is_none() {
        // A joiner that has not received its first snapshot: no history to check against.
        return Ok(());
    }
    let commit = r.recovered.hard_state.commit;
    let (members, ever, removed) = membership_in_log(&r.kv, &r.recovered.entries, commit);
    if removed.contains(&cfg.id) {
        return Err(BootError::Removed { id: cfg.id });
    }
    if members.is_empty() {
        return Ok(());
    }
    let strangers: Vec<(u64, String)> = flags
        .peers
        .iter()
        .filter(|(id, _)| !ever.contains(id))
        .map(|(id, url)| (*id, url.clone()))
        .collect();
    if !strangers.is_empty() {
        return Err(BootError::StrangerPeers { strangers, members });
    }
    Ok(())
}

/// This node's URL in its directory's membership, when the flags give another one.
fn url_change(cfg: &NodeConfig, flags: &StartFlags, r: &Restored) -> Option<(String, String)> {
    let commit = r.recovered.hard_state.commit;
    let (members, _, _) = membership_in_log(&r.kv, &r.recovered.entries, commit);
    let recorded = members.get(&cfg.id)?;
    let flag = flags.peers.get(&cfg.id)?;
    (flag != recorded && members.len() > 1).then(|| (recorded.clone(), flag.clone()))
}
