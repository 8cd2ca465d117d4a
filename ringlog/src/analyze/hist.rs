//! `hist --by DIM[,DIM]`: count, rate and weighted quantiles per group.

use super::{Dim, FastMap, Merge, Quantile, WHist};
use crate::record::Record;

/// Quantiles reported per group.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// A group's figures.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group's value of each `--by` dimension.
    pub key: Vec<u64>,
    /// Records kept (raw).
    pub records: u64,
    /// Requests they stand for (sum of weights).
    pub requests: f64,
    /// Requests per second over the analysed span.
    pub rate: f64,
    /// p50, p90, p99, p99.9.
    pub quantiles: [Option<Quantile>; 4],
    /// Largest duration.
    pub max_ns: u64,
    /// Kept records above each quantile; a quantile resting on fewer than
    /// [`MIN_SUPPORT`] of them is flagged.
    pub support: [u64; 4],
}

/// A quantile needs at least this many kept records at or above it to be
/// reported without a warning.
pub const MIN_SUPPORT: u64 = 10;

/// Streaming group-by.
#[derive(Debug, Clone)]
pub struct Hist {
    by: Vec<Dim>,
    groups: FastMap<Vec<u64>, WHist>,
    first_ns: u64,
    last_ns: u64,
    key: Vec<u64>,
}

impl Hist {
    /// Groups by `by` (may be empty: one group of everything).
    pub fn new(by: Vec<Dim>) -> Hist {
        Hist {
            key: Vec::with_capacity(by.len()),
            by,
            groups: FastMap::default(),
            first_ns: u64::MAX,
            last_ns: 0,
        }
    }

    /// Adds one record.
    #[inline]
    pub fn add(&mut self, r: &Record, shard: u32) {
        self.key.clear();
        for d in &self.by {
            self.key.push(d.value(r, shard));
        }
        match self.groups.get_mut(&self.key) {
            Some(h) => h.add(r.total_ns, r.weight()),
            None => {
                let mut h = WHist::new();
                h.add(r.total_ns, r.weight());
                self.groups.insert(self.key.clone(), h);
            }
        }
        self.first_ns = self.first_ns.min(r.start_ns);
        self.last_ns = self.last_ns.max(r.end_ns());
    }

    /// Span of the records seen, ns.
    pub fn span_ns(&self) -> u64 {
        self.last_ns.saturating_sub(self.first_ns)
    }

    /// The groups, most requests first.
    pub fn finish(&self) -> Vec<Group> {
        let secs = (self.span_ns() as f64 / 1e9).max(1e-9);
        let mut out: Vec<Group> = self
            .groups
            .iter()
            .map(|(key, h)| {
                let quantiles = QUANTILES.map(|q| h.quantile(q));
                // Kept records at or above each estimate (bucket
                // resolution), the support the estimate rests on.
                let support = quantiles.map(|q| match q {
                    Some(q) => h.raw_above(q.ns.saturating_sub(1)),
                    None => 0,
                });
                Group {
                    key: key.clone(),
                    records: h.raw,
                    requests: h.weight,
                    rate: h.weight / secs,
                    quantiles,
                    max_ns: h.max,
                    support,
                }
            })
            .collect();
        out.sort_by(|a, b| b.requests.total_cmp(&a.requests).then(a.key.cmp(&b.key)));
        out
    }
}

impl Merge for Hist {
    fn merge(&mut self, o: Hist) {
        super::merge_map(&mut self.groups, o.groups, |a, b| a.merge(&b));
        self.first_ns = self.first_ns.min(o.first_ns);
        self.last_ns = self.last_ns.max(o.last_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_weights_and_rates() {
        let mut h = Hist::new(vec![Dim::Route]);
        for i in 0..1000u64 {
            let r = Record {
                start_ns: i * 1_000_000,
                total_ns: 1_000 + i,
                route: (i % 2) as u16,
                sample_p: if i % 2 == 0 {
                    crate::record::P_ONE
                } else {
                    16383
                },
                ..Record::default()
            };
            h.add(&r, 0);
        }
        let g = h.finish();
        assert_eq!(g.len(), 2);
        // Route 1 was sampled at p = 0.25: 500 records stand for 2000.
        assert_eq!(g[0].key, vec![1]);
        assert!((g[0].requests - 2000.0).abs() < 1e-6);
        assert_eq!(g[0].records, 500);
        assert!((g[1].requests - 500.0).abs() < 1e-6);
        // One second of records.
        assert!((g[0].rate - 2000.0 / h.span_ns() as f64 * 1e9).abs() < 1e-6);
        assert!(g[1].quantiles[3].is_some());
    }

    #[test]
    fn merged_parts_give_the_same_groups() {
        let rec = |i: u64| Record {
            start_ns: i * 1_000,
            total_ns: crate::synth::mix(i) % 5_000_000,
            route: (i % 3) as u16,
            sample_p: if i.is_multiple_of(5) {
                6_553
            } else {
                crate::record::P_ONE
            },
            ..Record::default()
        };
        let mut one = Hist::new(vec![Dim::Route]);
        let mut parts: Vec<Hist> = (0..3).map(|_| Hist::new(vec![Dim::Route])).collect();
        for i in 0..30_000u64 {
            one.add(&rec(i), 0);
            parts[(i % 3) as usize].add(&rec(i), 0);
        }
        let mut merged = parts.remove(0);
        for p in parts {
            merged.merge(p);
        }
        assert_eq!(merged.span_ns(), one.span_ns());
        let (a, b) = (merged.finish(), one.finish());
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (&x.key, x.records, x.max_ns, x.support),
                (&y.key, y.records, y.max_ns, y.support)
            );
            assert_eq!(x.quantiles, y.quantiles);
            assert!((x.requests - y.requests).abs() < 1e-6);
        }
    }
}
