//! What a run counted (latency histograms, keys not found, errors by kind) and the verdict on
//! it: whether its numbers can be trusted, which sets the exit status.

use crate::histogram::Histogram;
use std::collections::BTreeMap;

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) put: Histogram,
    pub(crate) get: Histogram,
    pub(crate) not_found: u64,
    /// kind -> (count, first detail seen).
    pub(crate) errors: BTreeMap<String, (u64, String)>,
}

impl Stats {
    pub(crate) fn error(&mut self, kind: String, detail: impl FnOnce() -> String) {
        self.errors.entry(kind).or_insert_with(|| (0, detail())).0 += 1;
    }

    pub(crate) fn merge(&mut self, o: Stats) {
        self.put.merge(&o.put);
        self.get.merge(&o.get);
        self.not_found += o.not_found;
        for (k, (n, d)) in o.errors {
            self.errors.entry(k).or_insert((0, d)).0 += n;
        }
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().map(|(n, _)| n).sum()
    }
}

/// Why a run's numbers should not be trusted (the exit status says so).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Verdict {
    #[error("{errors} of {requests} requests failed ({:.2} %), over --max-error-ratio {max} ({})",
            100.0 * *errors as f64 / *requests as f64, kinds)]
    TooManyErrors {
        errors: u64,
        requests: u64,
        max: f64,
        kinds: String,
    },
    #[error("{count} connection errors ({kinds}), over --max-connection-errors {max}")]
    ConnectionErrors { count: u64, max: u64, kinds: String },
}

/// A connection that failed, as opposed to a request the server answered with an error.
pub(crate) fn is_connection_error(kind: &str) -> bool {
    kind.starts_with("connect:") || kind.starts_with("io:") || kind == "closed"
}

impl Stats {
    /// Checks the run against the thresholds; the connection check first, as the likelier cause.
    pub(crate) fn verdict(
        &self,
        max_error_ratio: f64,
        max_connection_errors: u64,
    ) -> Result<(), Verdict> {
        let list = |pick: &dyn Fn(&str) -> bool| {
            self.errors
                .iter()
                .filter(|(k, _)| pick(k))
                .map(|(k, (n, _))| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let connection: u64 = self
            .errors
            .iter()
            .filter(|(k, _)| is_connection_error(k))
            .map(|(_, (n, _))| n)
            .sum();
        if connection > max_connection_errors {
            return Err(Verdict::ConnectionErrors {
                count: connection,
                max: max_connection_errors,
                kinds: list(&is_connection_error),
            });
        }
        let errors = self.error_count();
        let requests = self.put.count + self.get.count + errors;
        if errors > 0 && errors as f64 > max_error_ratio * requests as f64 {
            return Err(Verdict::TooManyErrors {
                errors,
                requests,
                max: max_error_ratio,
                kinds: list(&|_| true),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ok: u64, errors: &[(&str, u64)]) -> Stats {
        let mut s = Stats::default();
        for _ in 0..ok {
            s.put.record(1000);
        }
        for (kind, n) in errors {
            for _ in 0..*n {
                s.error(kind.to_string(), || "detail".into());
            }
        }
        s
    }

    #[test]
    fn a_run_fails_on_connection_errors_or_too_many_errors() {
        assert_eq!(stats(1000, &[]).verdict(0.01, 0), Ok(()));
        // 10 of 1010 is under 1 %; 11 of 1011 is over.
        assert_eq!(stats(1000, &[("http_503", 10)]).verdict(0.01, 0), Ok(()));
        let v = stats(1000, &[("http_503", 11)])
            .verdict(0.01, 0)
            .unwrap_err();
        assert!(matches!(
            v,
            Verdict::TooManyErrors {
                errors: 11,
                requests: 1011,
                ..
            }
        ));
        assert!(v.to_string().contains("http_503 11"), "{v}");
        // Any connection error, by default (the run: 1228 of them, exit status 0).
        let v = stats(100_000, &[("connect:ConnectionRefused", 1228)])
            .verdict(0.01, 0)
            .unwrap_err();
        assert_eq!(
            v.to_string(),
            "1228 connection errors (connect:ConnectionRefused 1228), over --max-connection-errors 0"
        );
        for kind in ["io:ConnectionReset", "closed"] {
            assert!(stats(100, &[(kind, 1)]).verdict(1.0, 0).is_err(), "{kind}");
            assert_eq!(stats(100, &[(kind, 1)]).verdict(1.0, 1), Ok(()), "{kind}");
        }
        // A timeout is an error, not a connection error.
        assert_eq!(stats(100, &[("timeout", 1)]).verdict(0.01, 0), Ok(()));
        assert!(stats(100, &[("timeout", 2)]).verdict(0.01, 0).is_err());
    }
}
