//! The write-ahead log: segmented, framed, chained-checksummed, written through `FileOp`s.
//!
//! A WAL is a sequence of segment files `{seq:016x}-{first_index:016x}.wal` in the data
//! directory. Each segment is preallocated and holds frames (see `frame` for the byte layout):
//! first a `SegmentHeader` record (format version, cluster id, node id, seq, first index and the
//! crc of the previous segment's last frame), then `Entry`, `HardState` and `Snapshot` marker
//! records in write order, then zeros. The full byte-level description is in `core/FORMAT.md`.

pub mod frame;
pub mod reader;
pub mod record;
pub mod segment;
pub mod writer;

pub use reader::{
    read_segments, read_segments_at, ReadSegmentsError, ReplayGap, SegmentDefect, TornTail,
    WalContents, WalError, WalTail, DEFAULT_PIECE_BYTES,
};
pub use record::{
    ConfStateRec, EntryKind, EntryRec, HardStateRec, Record, SegmentHeader, SnapshotMarker,
};
pub use segment::{is_spare_name, spare_name, spare_ops, SegmentName};
pub use writer::{SegmentInfo, WalConfig, WalIdentity, WalWriter};
