//! A cheap rolling quantile estimate: a log-linear histogram with
//! exponential decay.
//!
//! Durations go into buckets of four per power of two (about ±10% wide) over
//! 256 ns .. ~2^55 ns. Recording is one increment. Every `refresh` the
//! threshold is recomputed from the counts, and every `decay` all counts
//! halve, so the estimate follows the last few seconds of traffic.

/// Sub-buckets per power of two.
const SUB: u32 = 4;
/// Durations are bucketed in units of 2^SHIFT ns.
const SHIFT: u32 = 8;
/// Number of buckets.
pub(crate) const BUCKETS: usize = 224;

/// The histogram and the threshold derived from it.
#[derive(Debug, Clone)]
pub(crate) struct RollingQuantile {
    counts: Box<[u32; BUCKETS]>,
    /// Sum of `counts`, as of the last refresh or decay.
    total: u64,
    threshold: Option<u64>,
}

pub(crate) fn bucket(ns: u64) -> usize {
    let v = ns >> SHIFT;
    if v < u64::from(SUB) {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let sub = (v >> (msb - 2)) & u64::from(SUB - 1);
    (((msb - 1) * SUB) as usize + sub as usize).min(BUCKETS - 1)
}

/// Smallest duration that falls in bucket `b`.
pub(crate) fn lower_edge(b: usize) -> u64 {
    let b = b as u64;
    let sub = u64::from(SUB);
    if b < sub {
        return b << SHIFT;
    }
    let msb = b / sub + 1;
    let v = (1u64 << msb) | ((b % sub) << (msb - 2));
    v << SHIFT
}

impl RollingQuantile {
    pub(crate) fn new() -> RollingQuantile {
        RollingQuantile {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            threshold: None,
        }
    }

    /// Counts one duration. One increment; the total is summed at refresh.
    /// A bucket cannot overflow: counts halve every second and a worker
    /// does not finish 2^31 requests in one.
    #[inline(always)]
    pub(crate) fn record(&mut self, ns: u64) {
        let b = bucket(ns);
        if let Some(c) = self.counts.get_mut(b) {
            *c = c.wrapping_add(1);
        }
    }

    /// The current threshold: durations at or above it are in the tail.
    #[inline(always)]
    pub(crate) fn threshold(&self) -> Option<u64> {
        self.threshold
    }

    /// Recomputes the threshold for quantile `q`. Needs at least
    /// `20 / (1 - q)` samples (so ~20 above it) to say anything. The
    /// threshold is interpolated inside the bucket holding the quantile.
    pub(crate) fn refresh(&mut self, q: f64) {
        self.total = self.counts.iter().map(|&c| u64::from(c)).sum();
        let need = (20.0 / (1.0 - q).max(1e-9)).min(1e12) as u64;
        if self.total < need {
            self.threshold = None;
            return;
        }
        let rank = (self.total as f64) * q;
        let mut seen = 0u64;
        for (b, &c) in self.counts.iter().enumerate() {
            let before = seen;
            seen += u64::from(c);
            if seen as f64 > rank {
                // Interpolate inside the bucket, assuming its mass is spread
                // evenly between its edges.
                let lo = lower_edge(b);
                let hi = if b + 1 < BUCKETS {
                    lower_edge(b + 1)
                } else {
                    lo.saturating_mul(2)
                };
                let frac = ((rank - before as f64) / f64::from(c.max(1))).clamp(0.0, 1.0);
                self.threshold = Some(lo + ((hi - lo) as f64 * frac) as u64);
                return;
            }
        }
        self.threshold = None;
    }

    /// Halves all counts.
    pub(crate) fn decay(&mut self) {
        let mut total = 0u64;
        for c in self.counts.iter_mut() {
            *c /= 2;
            total += u64::from(*c);
        }
        self.total = total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotone_and_edges_consistent() {
        let mut last = 0;
        for ns in (0..40)
            .map(|i| 1u64 << i)
            .flat_map(|p| [p, p + p / 3, p + p / 2, p * 2 - 1])
        {
            let b = bucket(ns);
            assert!(b >= last, "bucket not monotone at {ns}");
            last = b;
            assert!(lower_edge(b) <= ns, "edge {} above {ns}", lower_edge(b));
            if b + 1 < BUCKETS {
                assert!(
                    lower_edge(b + 1) > ns,
                    "next edge {} not above {ns}",
                    lower_edge(b + 1)
                );
            }
        }
    }

    #[test]
    fn estimates_the_p99() {
        let mut q = RollingQuantile::new();
        for i in 0..10_000u64 {
            // 1% at 50 ms, the rest spread over 1..2 ms.
            let ns = if i % 100 == 0 {
                50_000_000
            } else {
                1_000_000 + (i * 97 % 1000) * 1000
            };
            q.record(ns);
        }
        q.refresh(0.99);
        let t = q.threshold().unwrap();
        assert!(t > 2_000_000 && t <= 50_000_000, "threshold {t}");
        q.refresh(0.5);
        let t = q.threshold().unwrap();
        assert!((1_000_000..=2_000_000).contains(&t), "median threshold {t}");
    }

    #[test]
    fn needs_enough_samples_and_decays() {
        let mut q = RollingQuantile::new();
        for _ in 0..100 {
            q.record(1000);
        }
        q.refresh(0.999);
        assert_eq!(q.threshold(), None);
        q.decay();
        assert_eq!(q.total, 50);
    }
}
