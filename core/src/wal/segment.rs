//! Segment file names: `{seq:016x}-{first_index:016x}.wal`, as etcd names them.

/// A parsed segment name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentName {
    pub seq: u64,
    pub first_index: u64,
}

pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of a segment being prepared; never read, removed at recovery.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Prefix of a spare segment's temp name (`spare-{n:016x}.wal.tmp`): zeros written ahead of the
/// cut that renames it into place (`node::spare`).
const SPARE_PREFIX: &str = "spare-";

/// The name of spare number `n` of an incarnation; a temp name, removed at recovery if no cut
/// took it.
pub fn spare_name(n: u64) -> String {
    format!("{SPARE_PREFIX}{n:016x}{SEGMENT_SUFFIX}{TEMP_SUFFIX}")
}

/// True for a spare segment's name.
pub fn is_spare_name(name: &str) -> bool {
    name.starts_with(SPARE_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

/// The ops that write spare `name`: `size_bytes` of real zeros, synced. Its name needs no
/// directory sync: the cut that takes it renames it and syncs the directory then.
pub fn spare_ops(name: &str, size_bytes: u64) -> Vec<crate::fileop::FileOp> {
    use crate::fileop::FileOp;
    vec![
        FileOp::Create {
            name: name.to_string(),
            size_bytes: 0,
        },
        FileOp::WriteZeros {
            name: name.to_string(),
            offset: 0,
            len_bytes: size_bytes,
        },
        FileOp::SyncFile {
            name: name.to_string(),
        },
    ]
}

impl SegmentName {
    pub fn file_name(&self) -> String {
        format!(
            "{:016x}-{:016x}{SEGMENT_SUFFIX}",
            self.seq, self.first_index
        )
    }

    /// Parses a segment file name; anything else (including temp files) is `None`.
    pub fn parse(name: &str) -> Option<SegmentName> {
        let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
        let (a, b) = stem.split_once('-')?;
        if a.len() != 16 || b.len() != 16 {
            return None;
        }
        let hex = |s: &str| {
            if s.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            {
                u64::from_str_radix(s, 16).ok()
            } else {
                None
            }
        };
        Some(SegmentName {
            seq: hex(a)?,
            first_index: hex(b)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_others() {
        let n = SegmentName {
            seq: 3,
            first_index: 0x1234,
        };
        assert_eq!(n.file_name(), "0000000000000003-0000000000001234.wal");
        assert_eq!(SegmentName::parse(&n.file_name()), Some(n));
        for bad in [
            "0000000000000003-0000000000001234.wal.tmp",
            "3-1234.wal",
            "000000000000000G-0000000000001234.wal",
            "0000000000000003-0000000000001234.WAL",
            "0000000000000003-000000000000ABCD.wal",
        ] {
            assert_eq!(SegmentName::parse(bad), None, "{bad}");
        }
    }
}
