//! A log-linear latency histogram: exact below 128 µs, then 64 buckets per power of two (under
//! 1.6 % relative error, a few KiB per client), so memory does not grow with the run's length.

pub(crate) const SUB_BITS: u32 = 6;
pub(crate) const SUB: u64 = 1 << SUB_BITS;
/// Latencies are clamped to 2^40 microseconds (12 days); the histogram never exceeds this.
pub(crate) const MAX_RECORDABLE_US: u64 = (1 << 40) - 1;

/// Log-linear histogram of microseconds: exact below 128, then 64 buckets per power of two.
#[derive(Clone, Debug, Default)]
pub(crate) struct Histogram {
    pub(crate) counts: Vec<u64>,
    pub(crate) count: u64,
    pub(crate) sum: u128,
    pub(crate) max: u64,
}

pub(crate) fn bucket_index(v: u64) -> usize {
    if v < 2 * SUB {
        v as usize
    } else {
        let e = 63 - v.leading_zeros() - SUB_BITS;
        (e as u64 * SUB + (v >> e)) as usize
    }
}

pub(crate) fn bucket_low(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < 2 * SUB {
        idx
    } else {
        let e = idx / SUB - 1;
        (idx - e * SUB) << e
    }
}

impl Histogram {
    pub(crate) fn record(&mut self, us: u64) {
        let us = us.min(MAX_RECORDABLE_US);
        let i = bucket_index(us);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.count += 1;
        self.sum += us as u128;
        self.max = self.max.max(us);
    }

    pub(crate) fn merge(&mut self, o: &Histogram) {
        if o.counts.len() > self.counts.len() {
            self.counts.resize(o.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.count += o.count;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
    }

    /// The smallest bucket upper bound covering a fraction `q` of the samples (capped at max).
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return (bucket_low(i + 1) - 1).min(self.max);
            }
        }
        self.max
    }

    pub(crate) fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "mean": (self.mean() * 10.0).round() / 10.0,
            "p50": self.quantile(0.50),
            "p90": self.quantile(0.90),
            "p99": self.quantile(0.99),
            "p99_9": self.quantile(0.999),
            "max": self.max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous() {
        let mut prev = None;
        for v in 0..100_000u64 {
            let i = bucket_index(v);
            assert!(bucket_low(i) <= v && v < bucket_low(i + 1), "{v}");
            if let Some(p) = prev {
                assert!(i == p || i == p + 1, "{v}");
            }
            prev = Some(i);
        }
        for v in [1u64 << 20, (1 << 30) + 12345, MAX_RECORDABLE_US] {
            let i = bucket_index(v);
            assert!(bucket_low(i) <= v && v < bucket_low(i + 1), "{v}");
            // Relative error of a bucket under 1/64.
            assert!(
                (bucket_low(i + 1) - bucket_low(i)) as f64 / bucket_low(i) as f64 <= 1.0 / 64.0
            );
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() / want as f64 <= 0.02;
        assert!(close(h.quantile(0.5), 5000), "{}", h.quantile(0.5));
        assert!(close(h.quantile(0.99), 9900), "{}", h.quantile(0.99));
        assert_eq!(h.quantile(1.0), 10_000);
        assert_eq!(h.max, 10_000);
        let mut g = Histogram::default();
        g.record(50);
        g.merge(&h);
        assert_eq!(g.count, 10_001);
        assert!(g.counts.len() < 1024);
    }
}
