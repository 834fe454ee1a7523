//! File operations: the only way `core` touches a disk.
//!
//! Writers in `core` never perform I/O. They return `FileOp`s that a shell executes *in order*
//! against one flat data directory and then reports as completed. Ordering is the durability
//! contract: an op after a `SyncFile`/`SyncDir` may rely on everything before that sync being
//! durable, so a shell must not reorder across syncs. Names are plain file names (no separators).
//!
//! Reads at startup go the other way, through [`ReadAt`]: boot and recovery ask the shell for a
//! file's bytes, a piece at a time where a file can be as large as the state.

/// One file-system operation inside the node's data directory.
#[derive(Clone, PartialEq, Eq)]
pub enum FileOp {
    /// Create `name` (truncating any existing file) filled with `size_bytes` zero bytes.
    /// The name is durable only after a later `SyncDir`.
    Create { name: String, size_bytes: u64 },
    /// Write `bytes` at `offset`, extending the file if needed.
    WriteAt {
        name: String,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// Write `len_bytes` zero bytes at `offset`, extending the file if needed. Unlike the space
    /// `Create` preallocates, these are real writes: once synced, the file's blocks are allocated
    /// and initialised, so later writes into them and their fdatasync change no metadata (an
    /// fdatasync into preallocated, unwritten extents also commits the file system's journal).
    WriteZeros {
        name: String,
        offset: u64,
        len_bytes: u64,
    },
    /// Set the file's length; new space reads as zeros.
    SetLen { name: String, len: u64 },
    /// fdatasync: the file's contents and size are durable when this completes.
    SyncFile { name: String },
    /// fsync of the data directory: creations, renames and removals before it are durable.
    SyncDir,
    /// Atomically rename `from` to `to` (replacing `to`). Durable after a later `SyncDir`.
    Rename { from: String, to: String },
    /// Remove `name`; a missing file is not an error (removal is idempotent across crashes).
    Remove { name: String },
}

impl FileOp {
    /// Name of the file the op touches (the source for a rename), if any.
    pub fn file_name(&self) -> Option<&str> {
        match self {
            FileOp::Create { name, .. }
            | FileOp::WriteAt { name, .. }
            | FileOp::WriteZeros { name, .. }
            | FileOp::SetLen { name, .. }
            | FileOp::SyncFile { name }
            | FileOp::Remove { name } => Some(name),
            FileOp::Rename { from, .. } => Some(from),
            FileOp::SyncDir => None,
        }
    }

    /// True for the ops that make earlier ops durable.
    pub fn is_sync(&self) -> bool {
        matches!(self, FileOp::SyncFile { .. } | FileOp::SyncDir)
    }
}

// A hand-written Debug keeps traces readable: a WAL write can carry megabytes.
impl std::fmt::Debug for FileOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileOp::Create { name, size_bytes } => write!(f, "Create({name}, {size_bytes})"),
            FileOp::WriteAt {
                name,
                offset,
                bytes,
            } => {
                write!(f, "WriteAt({name}, @{offset}, {} bytes)", bytes.len())
            }
            FileOp::WriteZeros {
                name,
                offset,
                len_bytes,
            } => write!(f, "WriteZeros({name}, @{offset}, {len_bytes} bytes)"),
            FileOp::SetLen { name, len } => write!(f, "SetLen({name}, {len})"),
            FileOp::SyncFile { name } => write!(f, "SyncFile({name})"),
            FileOp::SyncDir => write!(f, "SyncDir"),
            FileOp::Rename { from, to } => write!(f, "Rename({from} -> {to})"),
            FileOp::Remove { name } => write!(f, "Remove({name})"),
        }
    }
}

/// Ops that make `bytes` durable under `name`, replacing any older file: write `{name}.tmp`,
/// sync it, rename it over `name`, sync the directory. A crash leaves the old file or the new
/// one, never a mix (a leftover temp file is removed by recovery).
pub fn atomic_write_ops(name: &str, bytes: Vec<u8>, ops: &mut Vec<FileOp>) {
    let tmp = format!("{name}.tmp");
    ops.push(FileOp::Create {
        name: tmp.clone(),
        size_bytes: 0,
    });
    ops.push(FileOp::WriteAt {
        name: tmp.clone(),
        offset: 0,
        bytes,
    });
    ops.push(FileOp::SyncFile { name: tmp.clone() });
    ops.push(FileOp::Rename {
        from: tmp,
        to: name.to_string(),
    });
    ops.push(FileOp::SyncDir);
}

/// True if `name` is a plain file name that is safe to join onto a data directory.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0')
}

/// How boot and recovery read a data directory: `read(name, offset, max_bytes)` returns up to
/// `max_bytes` of the file from `offset`, fewer only where the file ends (nothing at or past
/// its end). Small files are read whole (`max_bytes` of `usize::MAX`); a snapshot file in
/// pieces, so a restart holds the state it decodes and never the file as well.
pub type ReadAt<'a> = dyn FnMut(&str, u64, usize) -> Result<Vec<u8>, ReadFailure> + 'a;

/// Why a [`ReadAt`] could not read a file: the operating system's error, carried into core as
/// its kind and code (an `io::Error` is neither `Clone` nor comparable), and shown as the
/// system shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ReadFailure {
    pub kind: std::io::ErrorKind,
    /// The `errno`, where the failure came from the system.
    pub os_code: Option<i32>,
}

impl ReadFailure {
    /// A file that is not there (an in-memory directory's only failure).
    pub const NOT_FOUND: ReadFailure = ReadFailure {
        kind: std::io::ErrorKind::NotFound,
        os_code: None,
    };

    fn describe(&self) -> String {
        match self.os_code {
            Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
            None => self.kind.to_string(),
        }
    }
}

impl From<&std::io::Error> for ReadFailure {
    fn from(e: &std::io::Error) -> Self {
        ReadFailure {
            kind: e.kind(),
            os_code: e.raw_os_error(),
        }
    }
}

impl From<std::io::Error> for ReadFailure {
    fn from(e: std::io::Error) -> Self {
        ReadFailure::from(&e)
    }
}

/// A whole file through a [`ReadAt`].
pub fn read_whole(read: &mut ReadAt<'_>, name: &str) -> Result<Vec<u8>, ReadFailure> {
    read(name, 0, usize::MAX)
}

/// What a [`ReadAt`] returns for a file held in memory.
pub fn slice_at(file: &[u8], offset: u64, max_bytes: usize) -> Vec<u8> {
    let start = usize::try_from(offset).map_or(file.len(), |o| o.min(file.len()));
    let end = start.saturating_add(max_bytes).min(file.len());
    file[start..end].to_vec()
}
