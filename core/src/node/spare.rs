//! The WAL's next segment, prepared off its lane: a *spare* is a file of the segment size whose
//! zeros are written and synced by a [`super::Action::Prepare`] job, which a shell runs beside
//! the WAL's jobs (io-real: on a low-priority thread of its own). The WAL's next cut renames it into place
//! instead of creating and preallocating a file (see `crate::wal::writer`). This is etcd's file
//! pipeline, for the same reason: an fdatasync into preallocated, unwritten extents must also
//! commit the file system's journal, one into written zeros flushes only data (measured in
//! BENCHMARKS.md, "The WAL's sync").
//!
//! A spare holds nothing: a crash at any point leaves a `*.tmp` file that recovery removes, and
//! a WAL that never got one cuts as before.
//!
//! Invariants (asserted, in release builds too):
//! - at most one spare job is in flight, and none before the startup job has completed (it
//!   removes every temp file, and so every spare of an earlier incarnation);
//! - a spare reaches the WAL only once its job has completed: its zeros are durable and written.

use super::DiskJob;

pub(super) struct Spares {
    enabled: bool,
    /// The startup job has completed: temp files of earlier incarnations are gone.
    armed: bool,
    /// Names spares; never reused within an incarnation.
    next_name: u64,
    /// (job id, file name) of the spare being written.
    in_flight: Option<(u64, String)>,
}

impl Spares {
    pub(super) fn new(enabled: bool) -> Spares {
        Spares {
            enabled,
            armed: false,
            next_name: 0,
            in_flight: None,
        }
    }

    /// The startup job completed (or there was none): spares may be written from now on.
    pub(super) fn arm(&mut self) {
        self.armed = true;
    }

    /// Whether a spare job should start: enabled, armed, none in flight, and the WAL has none.
    pub(super) fn wanted(&self, wal_has_spare: bool) -> bool {
        self.enabled && self.armed && self.in_flight.is_none() && !wal_has_spare
    }

    /// The job that writes the next spare (`crate::wal::spare_ops`).
    pub(super) fn start(&mut self, id: u64, size_bytes: u64) -> DiskJob {
        assert!(
            self.wanted(false),
            "one spare job at a time, only once armed"
        );
        let name = crate::wal::spare_name(self.next_name);
        self.next_name += 1;
        let ops = crate::wal::spare_ops(&name, size_bytes);
        self.in_flight = Some((id, name));
        DiskJob { id, ops }
    }

    /// True if job `id` is the spare job in flight.
    pub(super) fn owns(&self, id: u64) -> bool {
        self.in_flight.as_ref().is_some_and(|(j, _)| *j == id)
    }

    /// Job `id` completed: the spare's name, ready for the WAL.
    pub(super) fn finish(&mut self, id: u64) -> String {
        let (job, name) = self.in_flight.take().expect("a spare job in flight");
        assert_eq!(job, id, "the spare job completed is the one in flight");
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fileop::FileOp;

    #[test]
    fn one_job_at_a_time_and_only_once_armed() {
        let mut s = Spares::new(true);
        assert!(!s.wanted(false), "not before the startup job completed");
        s.arm();
        assert!(s.wanted(false));
        assert!(!s.wanted(true), "the WAL already has one");
        let job = s.start(7, 4096);
        assert!(!s.wanted(false), "one in flight");
        assert!(s.owns(7) && !s.owns(8));
        assert!(matches!(
            job.ops[1],
            FileOp::WriteZeros {
                len_bytes: 4096,
                ..
            }
        ));
        let name = s.finish(7);
        assert!(name.ends_with(".tmp"), "recovery removes what no cut took");
        assert!(crate::wal::is_spare_name(&name));
        assert!(s.wanted(false));
        assert_ne!(s.start(9, 4096).ops[0].file_name(), Some(name.as_str()));
    }

    #[test]
    fn disabled_spares_are_never_wanted() {
        let mut s = Spares::new(false);
        s.arm();
        assert!(!s.wanted(false));
    }
}
