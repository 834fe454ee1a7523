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
