//! Weighted latency histogram for streaming quantiles.
//!
//! Every record stands for `weight = 1/p` requests, so counts and quantiles
//! add weights, never raw records; down-sampling then does not bias them.
//! Buckets are log-linear (64 per power of two, under 1.6% relative width),
//! so memory is bounded whatever the number of records. The largest
//! [`TAIL_KEEP`] values are also kept exactly: a tail quantile whose mass
//! lies entirely among them, all kept with p = 1 (the sampler's keep-slow
//! rules), is reported exactly and flagged so.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Sub-buckets per power of two.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Largest values kept exactly per histogram.
pub const TAIL_KEEP: usize = 256;

/// A quantile estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantile {
    /// Value in ns.
    pub ns: u64,
    /// True when every record above it was kept (p = 1) and is known
    /// exactly; false when it comes from a bucket (within 1.6%) or rests on
    /// sampled records.
    pub exact: bool,
}

/// Weighted histogram of durations (ns).
#[derive(Debug, Clone, Default)]
pub struct WHist {
    buckets: Vec<f64>,
    /// Total weight.
    pub weight: f64,
    /// Records added (raw count).
    pub raw: u64,
    /// Largest value seen.
    pub max: u64,
    /// Sum of weight x value, for means.
    pub sum: f64,
    tail: BinaryHeap<Reverse<(u64, u32)>>,
}

/// Values below `2 * SUB` have a bucket each; above, each power of two is
/// split into `SUB` buckets.
fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (v >> shift) - SUB;
    ((u64::from(shift) + 1) * SUB + sub) as usize
}

/// Largest value of bucket `i` (the value reported for a quantile in it).
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = (i / SUB - 1) as u32;
    let sub = i % SUB;
    let lower = (SUB + sub) << shift;
    lower.saturating_add((1u64 << shift) - 1)
}

/// A weight as kept with an exact tail value: weight 1 (p = 1) as 1, others
/// rounded up so they are never mistaken for exact. Only computed for the
/// few values that enter the tail.
#[inline]
fn tail_weight(weight: f64) -> u32 {
    if weight <= 1.0 {
        1
    } else {
        weight.ceil().min(f64::from(u32::MAX)) as u32
    }
}

impl WHist {
    /// Empty histogram.
    pub fn new() -> WHist {
        WHist::default()
    }

    /// Adds one record of duration `v` ns standing for `weight` requests.
    #[inline]
    pub fn add(&mut self, v: u64, weight: f64) {
        let i = index(v);
        if i >= self.buckets.len() {
            self.buckets.resize(i + 1, 0.0);
        }
        self.buckets[i] += weight;
        self.weight += weight;
        self.raw += 1;
        self.sum += weight * v as f64;
        self.max = self.max.max(v);
        if self.tail.len() < TAIL_KEEP {
            self.tail.push(Reverse((v, tail_weight(weight))));
        } else if let Some(Reverse((min, _))) = self.tail.peek()
            && v > *min
        {
            self.tail.pop();
            self.tail.push(Reverse((v, tail_weight(weight))));
        }
    }

    /// Adds every record of `o`.
    pub fn merge(&mut self, o: &WHist) {
        if o.buckets.len() > self.buckets.len() {
            self.buckets.resize(o.buckets.len(), 0.0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.weight += o.weight;
        self.raw += o.raw;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
        for &Reverse(x) in o.tail.iter() {
            if self.tail.len() < TAIL_KEEP {
                self.tail.push(Reverse(x));
            } else if let Some(Reverse(min)) = self.tail.peek()
                && x.0 > min.0
            {
                self.tail.pop();
                self.tail.push(Reverse(x));
            }
        }
    }

    /// The weighted `q` quantile (0..=1): the smallest value with at least
    /// `q` of the weight at or below it. None when empty.
    pub fn quantile(&self, q: f64) -> Option<Quantile> {
        if self.raw == 0 || self.weight <= 0.0 {
            return None;
        }
        let above = (1.0 - q.clamp(0.0, 1.0)) * self.weight;
        if let Some(x) = self.exact_tail(above) {
            return Some(Quantile { ns: x, exact: true });
        }
        let target = q.clamp(0.0, 1.0) * self.weight;
        let mut acc = 0.0;
        for (i, w) in self.buckets.iter().enumerate() {
            acc += w;
            if acc >= target && *w > 0.0 {
                return Some(Quantile {
                    ns: upper(i).min(self.max),
                    exact: false,
                });
            }
        }
        Some(Quantile {
            ns: self.max,
            exact: false,
        })
    }

    /// The exact answer from the kept largest values, when the mass above
    /// the quantile lies among them and all of them were kept with p = 1.
    fn exact_tail(&self, above: f64) -> Option<u64> {
        let mut top: Vec<(u64, u32)> = self.tail.iter().map(|r| r.0).collect();
        top.sort_unstable_by(|a, b| b.cmp(a));
        let mut acc = 0.0;
        for &(v, w) in &top {
            if w != 1 {
                return None;
            }
            // v is the quantile if the weight strictly above it is within
            // `above` and adding v itself reaches past it.
            if acc + f64::from(w) > above {
                return Some(v);
            }
            acc += f64::from(w);
        }
        // Everything was kept exactly (small histograms).
        if (top.len() as u64) == self.raw {
            return top.last().map(|t| t.0);
        }
        None
    }

    /// Mean (weighted), ns.
    pub fn mean(&self) -> f64 {
        if self.weight > 0.0 {
            self.sum / self.weight
        } else {
            0.0
        }
    }

    /// Kept records above `v` ns: the weight above it (bucket resolution)
    /// scaled back to records by the mean weight.
    pub fn raw_above(&self, v: u64) -> u64 {
        if self.raw == 0 || self.weight <= 0.0 {
            return 0;
        }
        let mean_w = self.weight / self.raw as f64;
        (self.weight_above(v) / mean_w).round() as u64
    }

    /// The records above `v` ns exactly, from the kept tail: (records,
    /// sum of weights, sum of squared weights). None when more records are
    /// above `v` than the tail keeps ([`TAIL_KEEP`]). Weights are as the
    /// tail keeps them (1 for p = 1, others rounded up).
    pub fn tail_above(&self, v: u64) -> Option<(u64, f64, f64)> {
        let full = self.tail.len() >= TAIL_KEEP;
        if full && self.tail.peek().is_some_and(|Reverse((min, _))| *min > v) {
            return None;
        }
        let mut n = 0;
        let (mut sw, mut sw2) = (0.0, 0.0);
        for Reverse((x, w)) in self.tail.iter() {
            if *x > v {
                let w = f64::from(*w);
                n += 1;
                sw += w;
                sw2 += w * w;
            }
        }
        Some((n, sw, sw2))
    }

    /// Weight of records above `v` ns (bucket resolution).
    pub fn weight_above(&self, v: u64) -> f64 {
        let i = index(v);
        self.buckets.iter().skip(i + 1).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(7).chain([u64::MAX / 4, 1 << 40]) {
            let i = index(v);
            assert!(upper(i) >= v, "v {v} i {i} upper {}", upper(i));
            // Relative width under 1/SUB.
            assert!((upper(i) - v) as f64 <= v as f64 / SUB as f64, "v {v}");
            if v < 2_000_000 {
                assert!(i >= last);
                last = i;
            }
        }
    }

    #[test]
    fn weighted_quantiles_match_a_sorted_expansion() {
        // 1000 fast records at p = 0.1 (weight 10) and 100 slow at p = 1.
        let mut h = WHist::new();
        for i in 0..1000u64 {
            h.add(1_000_000 + i * 100, 10.0);
        }
        for i in 0..100u64 {
            h.add(50_000_000 + i * 1_000, 1.0);
        }
        assert_eq!(h.raw, 1100);
        assert!((h.weight - 10_100.0).abs() < 1e-9);
        // p99.9: 10.1 requests above it, all slow and kept at p = 1: exact.
        let q = h.quantile(0.999).unwrap();
        assert!(q.exact);
        assert_eq!(q.ns, 50_000_000 + 89 * 1_000);
        // p50 sits in the fast body: bucket resolution, not exact.
        let m = h.quantile(0.5).unwrap();
        assert!(!m.exact);
        let truth = 1_000_000 + 505 * 100;
        assert!(
            (m.ns as f64 - truth as f64).abs() / truth as f64 <= 0.02,
            "{m:?}"
        );
    }

    #[test]
    fn sampled_tail_is_not_called_exact() {
        let mut h = WHist::new();
        for i in 0..10_000u64 {
            h.add(i * 1_000, 4.0);
        }
        let q = h.quantile(0.99).unwrap();
        assert!(!q.exact);
        let truth = 9_900_000f64;
        assert!((q.ns as f64 - truth).abs() / truth < 0.02, "{q:?}");
    }

    #[test]
    fn merge_equals_adding_everything() {
        let (mut a, mut b, mut all) = (WHist::new(), WHist::new(), WHist::new());
        for i in 0..5000u64 {
            let v = (i * 7919) % 100_000;
            if i % 3 == 0 { &mut a } else { &mut b }.add(v, 1.0 + (i % 2) as f64);
            all.add(v, 1.0 + (i % 2) as f64);
        }
        a.merge(&b);
        for q in [0.5, 0.9, 0.99, 0.999] {
            assert_eq!(a.quantile(q), all.quantile(q), "q {q}");
        }
        assert_eq!(a.max, all.max);
    }
}
