//! `spikes`: time buckets whose latency quantile exceeds `factor` times a
//! baseline, merged into windows.
//!
//! Records are bucketed by start time. A bucket's baseline is the same
//! quantile over the trailing `baseline` buckets that were not spikes
//! themselves (so a long spike does not become its own baseline); until
//! enough trailing records exist, the quantile over the whole input stands
//! in. A bucket needs at least [`MIN_BUCKET_RECORDS`] kept records above the
//! baseline to count, so one slow request in a quiet second is not a spike,
//! and they must be significantly more than the baseline predicts (by
//! the baseline window's own rate of requests above it, at its upper 95%
//! bound, scaled to the bucket's requests): an exact one-sided Poisson tail under
//! [`BUCKET_ALPHA`] on effective counts, so noise at a busy second is not
//! one either.

use std::collections::BTreeMap;

use super::{Merge, WHist};
use crate::record::Record;

/// Kept records above the baseline a bucket needs to be a spike.
pub const MIN_BUCKET_RECORDS: u64 = 5;

/// Detection parameters.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Quantile watched, e.g. 0.999.
    pub quantile: f64,
    /// Bucket width, ns.
    pub bucket_ns: u64,
    /// Spike when the bucket's quantile exceeds `factor` x baseline.
    pub factor: f64,
    /// Trailing baseline length, in buckets.
    pub baseline_buckets: usize,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            quantile: 0.999,
            bucket_ns: 1_000_000_000,
            factor: 2.0,
            baseline_buckets: 60,
        }
    }
}

/// One detected window.
#[derive(Debug, Clone, PartialEq)]
pub struct Spike {
    /// First bucket's start (monotonic ns).
    pub start_ns: u64,
    /// Last bucket's end (monotonic ns).
    pub end_ns: u64,
    /// Highest bucket quantile inside, ns.
    pub peak_ns: u64,
    /// Baseline quantile (of the first bucket), ns.
    pub baseline_ns: u64,
    /// Requests (weighted) that started inside.
    pub requests: f64,
    /// Of those, requests slower than the baseline quantile.
    pub affected: f64,
}

/// One bucket's series point (for plots).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Bucket start (monotonic ns).
    pub start_ns: u64,
    /// Requests (weighted).
    pub requests: f64,
    /// Requests with an error status or reason.
    pub errors: f64,
    /// p50, p99, p99.9 and the watched quantile.
    pub p50_ns: u64,
    /// p99.
    pub p99_ns: u64,
    /// p99.9.
    pub p999_ns: u64,
    /// The watched quantile.
    pub q_ns: u64,
    /// Baseline it was compared with.
    pub baseline_ns: u64,
    /// Part of a spike.
    pub spike: bool,
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    hist: WHist,
    errors: f64,
}

/// Streaming detector: [`Detector::add`] every record, then [`Detector::finish`].
#[derive(Debug)]
pub struct Detector {
    p: Params,
    buckets: BTreeMap<u64, Bucket>,
    all: WHist,
}

impl Detector {
    /// A detector with `p`.
    pub fn new(p: Params) -> Detector {
        Detector {
            p: Params {
                bucket_ns: p.bucket_ns.max(1),
                ..p
            },
            buckets: BTreeMap::new(),
            all: WHist::new(),
        }
    }

    /// Adds one record.
    #[inline]
    pub fn add(&mut self, r: &Record) {
        let b = self
            .buckets
            .entry(r.start_ns / self.p.bucket_ns)
            .or_default();
        let w = r.weight();
        b.hist.add(r.total_ns, w);
        if r.status >= 500 || r.flags.has(crate::record::Flags::ERROR) {
            b.errors += w;
        }
        self.all.add(r.total_ns, w);
    }

    /// The per-bucket series and the merged spike windows.
    pub fn finish(&self) -> (Vec<Point>, Vec<Spike>) {
        let q = self.p.quantile;
        let fallback = self.all.quantile(q).map_or(0, |x| x.ns);
        // Enough trailing records for the quantile to mean something.
        let need = ((1.0 / (1.0 - q).max(1e-6)) * 2.0).ceil() as u64;
        let mut trailing: std::collections::VecDeque<&WHist> = Default::default();
        let mut points = Vec::with_capacity(self.buckets.len());
        let mut last_idx: Option<u64> = None;
        for (&idx, b) in &self.buckets {
            // Empty buckets between two non-empty ones age the window too.
            if let Some(prev) = last_idx {
                for _ in prev + 1..idx {
                    if trailing.len() >= self.p.baseline_buckets {
                        trailing.pop_front();
                    }
                }
            }
            last_idx = Some(idx);
            let mut base = WHist::new();
            for h in &trailing {
                base.merge(h);
            }
            let from = if base.raw >= need { &base } else { &self.all };
            let baseline = if base.raw >= need {
                base.quantile(q).map_or(fallback, |x| x.ns)
            } else {
                fallback
            };
            // Requests above the baseline that a bucket of this many
            // requests would hold at the baseline window's own rate, taken
            // at the upper end of what the baseline's records allow (a
            // baseline of a few seconds holds only a few records above its
            // own p99.9, so its rate is uncertain; a long one barely moves).
            let expected = if from.weight > 0.0 {
                let seen = from.raw_above(baseline);
                let per_record = from.weight_above(baseline) / seen.max(1) as f64;
                poisson_upper(seen) * per_record * b.hist.weight / from.weight
            } else {
                0.0
            };
            let qv = b.hist.quantile(q).map_or(0, |x| x.ns);
            let above = b.hist.raw_above(baseline);
            let spike = baseline > 0
                && qv as f64 > self.p.factor * baseline as f64
                && above >= MIN_BUCKET_RECORDS
                && significant(b, baseline, expected);
            let qn = |x: f64| b.hist.quantile(x).map_or(0, |v| v.ns);
            points.push(Point {
                start_ns: idx * self.p.bucket_ns,
                requests: b.hist.weight,
                errors: b.errors,
                p50_ns: qn(0.5),
                p99_ns: qn(0.99),
                p999_ns: qn(0.999),
                q_ns: qv,
                baseline_ns: baseline,
                spike,
            });
            if !spike {
                trailing.push_back(&b.hist);
                if trailing.len() > self.p.baseline_buckets {
                    trailing.pop_front();
                }
            }
        }
        let spikes = self.windows(&points);
        (points, spikes)
    }

    fn windows(&self, points: &[Point]) -> Vec<Spike> {
        let mut out: Vec<Spike> = Vec::new();
        let mut prev_end = None;
        for (pt, (_, b)) in points.iter().zip(&self.buckets) {
            if !pt.spike {
                prev_end = None;
                continue;
            }
            let end = pt.start_ns + self.p.bucket_ns;
            let affected = b.hist.weight_above(pt.baseline_ns);
            match (prev_end, out.last_mut()) {
                (Some(e), Some(s)) if e == pt.start_ns => {
                    s.end_ns = end;
                    s.peak_ns = s.peak_ns.max(pt.q_ns);
                    s.requests += pt.requests;
                    s.affected += affected;
                }
                _ => out.push(Spike {
                    start_ns: pt.start_ns,
                    end_ns: end,
                    peak_ns: pt.q_ns,
                    baseline_ns: pt.baseline_ns,
                    requests: pt.requests,
                    affected,
                }),
            }
            prev_end = Some(end);
        }
        out
    }
}

/// One-sided 95% upper bound of a Poisson mean after seeing `k` events
/// (Wilson-Hilferty): about 3.0 for 0, 7.8 for 3, 75 for 60.
fn poisson_upper(k: u64) -> f64 {
    let n = k as f64 + 1.0;
    let z = 1.645;
    n * (1.0 - 1.0 / (9.0 * n) + z / (3.0 * n.sqrt())).powi(3)
}

/// Chance that one calm bucket counts as a spike: a ring of a few
/// hundred buckets then shows a false spike in well under 3% of calm runs.
pub const BUCKET_ALPHA: f64 = 1e-4;

/// Whether the bucket's requests above `baseline` are significantly more
/// than `expected` (weighted) requests: the exact one-sided Poisson tail
/// is below [`BUCKET_ALPHA`], on effective counts. A kept record stands
/// for `w` = 1/p requests, so weighted counts come in lumps: with the lump
/// size `E = sum(w^2) / sum(w)` of the records above (1 when all were kept
/// at p = 1), the observed `sum(w) / E` and the expected `expected / E`
/// are Poisson-like. (A normal approximation is far too lenient at the
/// means of one or two that matter here.) More records above than the
/// histogram keeps exactly is significant by itself.
fn significant(b: &Bucket, baseline: u64, expected: f64) -> bool {
    let Some((n, sw, sw2)) = b.hist.tail_above(baseline) else {
        return true;
    };
    if n == 0 || sw <= 0.0 {
        return false;
    }
    let lump = (sw2 / sw).max(1.0);
    let observed = (sw / lump).floor() as u64;
    let lambda = (expected / lump).max(1e-9);
    // P(X < observed) by summing the pmf.
    let mut pmf = (-lambda).exp();
    let mut below = 0.0;
    for k in 0..observed.min(10_000) {
        below += pmf;
        pmf *= lambda / (k + 1) as f64;
    }
    1.0 - below < BUCKET_ALPHA
}

impl Merge for Detector {
    /// Both detectors must have the same [`Params`]; `o`'s are ignored.
    fn merge(&mut self, o: Detector) {
        for (idx, b) in o.buckets {
            match self.buckets.entry(idx) {
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    let a = e.get_mut();
                    a.hist.merge(&b.hist);
                    a.errors += b.errors;
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(b);
                }
            }
        }
        self.all.merge(&o.all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(slow_from: u64, slow_to: u64) -> (Vec<Point>, Vec<Spike>) {
        run_parts(slow_from, slow_to, 1)
    }

    /// Records dealt round-robin to `parts` detectors, merged at the end.
    fn run_parts(slow_from: u64, slow_to: u64, parts: u64) -> (Vec<Point>, Vec<Spike>) {
        let mut ds: Vec<Detector> = (0..parts)
            .map(|_| Detector::new(Params::default()))
            .collect();
        let mut x = 12345u64;
        // 120 s at 2000 req/s; 1-2 ms, and 20-40 ms in the slow window for
        // 2% of requests (p99.9 goes up ~20x).
        for i in 0..240_000u64 {
            x = crate::synth::mix(x);
            let t = i * 500_000;
            let slow = (slow_from..slow_to).contains(&t) && x.is_multiple_of(50);
            let total = if slow {
                20_000_000 + x % 20_000_000
            } else {
                1_000_000 + x % 1_000_000
            };
            ds[(i % parts) as usize].add(&Record {
                start_ns: t,
                total_ns: total,
                sample_p: crate::record::P_ONE,
                ..Record::default()
            });
        }
        let mut d = ds.remove(0);
        for o in ds {
            d.merge(o);
        }
        d.finish()
    }

    #[test]
    fn merged_detectors_find_the_same_spikes() {
        let (p1, s1) = run(60_000_000_000, 65_000_000_000);
        let (p3, s3) = run_parts(60_000_000_000, 65_000_000_000, 3);
        let at =
            |p: &[Point]| -> Vec<_> { p.iter().map(|x| (x.start_ns, x.q_ns, x.spike)).collect() };
        assert_eq!(at(&p1), at(&p3));
        assert_eq!(s1.len(), s3.len());
        for (a, b) in s1.iter().zip(&s3) {
            assert_eq!(
                (a.start_ns, a.end_ns, a.peak_ns),
                (b.start_ns, b.end_ns, b.peak_ns)
            );
            assert!((a.requests - b.requests).abs() < 1e-6);
        }
    }

    #[test]
    fn finds_the_injected_window_and_merges_it() {
        let (pts, spikes) = run(60_000_000_000, 65_000_000_000);
        assert_eq!(pts.len(), 120);
        assert_eq!(spikes.len(), 1, "{spikes:?}");
        let s = &spikes[0];
        assert_eq!((s.start_ns, s.end_ns), (60_000_000_000, 65_000_000_000));
        assert!(
            s.peak_ns >= 20_000_000 && s.baseline_ns < 2_100_000,
            "{s:?}"
        );
        assert!(s.affected > 150.0 && s.requests > 9_000.0, "{s:?}");
    }

    #[test]
    fn steady_traffic_has_no_spike() {
        let (_, spikes) = run(0, 0);
        assert!(spikes.is_empty(), "{spikes:?}");
    }
}
