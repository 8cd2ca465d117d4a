//! `why`: which dimension values the slow tail of a window comes from.
//!
//! Two streaming passes over the same records (in any order):
//! 1. [`Threshold`]: the baseline window's quantile `tau`.
//! 2. [`Attribution`]: the slow set O (window records slower than `tau`)
//!    against the baseline set B (every baseline record), per dimension
//!    value and per pair of values, all weighted by 1/p.
//!
//! Per value v: its share of O and of B; the relative risk of being slow
//! inside the window with v versus without it, with a Katz confidence
//! interval on log RR from raw counts; and its
//! **excess share**: the slow requests v has beyond what v's baseline slow
//! rate predicts for v's traffic in the window, as a fraction of the whole
//! window's excess. Values need [`MIN_SUPPORT`] slow records and a lower
//! bound above 1 (at a Bonferroni-corrected level over every value tested)
//! to be reported; dimensions are ranked by the Jensen-Shannon divergence
//! between their O and B distributions. Phases partition each record's
//! total, so the excess mean latency of O over B splits exactly by phase.

use super::{Dim, FastMap, Merge, WHist};
use crate::record::{PHASES, Record};

/// Slow records a value needs before it can be named.
pub const MIN_SUPPORT: f64 = 5.0;
/// Smallest relative risk worth naming: a value must at least double the
/// chance of being slow (a big value that is slow in proportion to its
/// traffic has a large excess share but explains nothing).
pub const MIN_RR: f64 = 2.0;

/// The analysed windows (monotonic ns, half-open).
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// Window under study.
    pub from_ns: u64,
    /// End of it.
    pub to_ns: u64,
    /// Baseline start.
    pub base_from_ns: u64,
    /// Baseline end (normally `from_ns`).
    pub base_to_ns: u64,
    /// Quantile defining "slow", e.g. 0.999.
    pub quantile: f64,
}

impl Windows {
    fn in_window(&self, r: &Record) -> bool {
        (self.from_ns..self.to_ns).contains(&r.start_ns)
    }
    fn in_base(&self, r: &Record) -> bool {
        (self.base_from_ns..self.base_to_ns).contains(&r.start_ns)
    }
}

/// Pass 1: the baseline's quantile.
#[derive(Debug)]
pub struct Threshold {
    w: Windows,
    base: WHist,
    window: WHist,
}

impl Threshold {
    /// For windows `w`.
    pub fn new(w: Windows) -> Threshold {
        Threshold {
            w,
            base: WHist::new(),
            window: WHist::new(),
        }
    }
    /// Adds one record.
    #[inline]
    pub fn add(&mut self, r: &Record) {
        if self.w.in_base(r) {
            self.base.add(r.total_ns, r.weight());
        } else if self.w.in_window(r) {
            self.window.add(r.total_ns, r.weight());
        }
    }
    /// (baseline quantile, window quantile) in ns; None without baseline
    /// records.
    pub fn finish(&self) -> Option<(u64, u64)> {
        let b = self.base.quantile(self.w.quantile)?.ns;
        let w = self.window.quantile(self.w.quantile).map_or(0, |q| q.ns);
        Some((b, w))
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    /// Window: all and slow (weighted, raw).
    w_all: f64,
    w_all_raw: f64,
    w_slow: f64,
    w_slow_raw: f64,
    /// Baseline: all and slow (weighted, raw).
    b_all: f64,
    b_all_raw: f64,
    b_slow: f64,
}

impl Counts {
    #[inline]
    fn add(&mut self, window: bool, slow: bool, w: f64) {
        if window {
            self.w_all += w;
            self.w_all_raw += 1.0;
            if slow {
                self.w_slow += w;
                self.w_slow_raw += 1.0;
            }
        } else {
            self.b_all += w;
            self.b_all_raw += 1.0;
            if slow {
                self.b_slow += w;
            }
        }
    }
}

impl Counts {
    fn merge(&mut self, o: Counts) {
        self.w_all += o.w_all;
        self.w_all_raw += o.w_all_raw;
        self.w_slow += o.w_slow;
        self.w_slow_raw += o.w_slow_raw;
        self.b_all += o.b_all;
        self.b_all_raw += o.b_all_raw;
        self.b_slow += o.b_slow;
    }
}

/// A value's attribution figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Dimension(s): one, or two for a pair.
    pub dims: Vec<Dim>,
    /// Value(s), as ids.
    pub values: Vec<u64>,
    /// Share of the slow set O.
    pub share_slow: f64,
    /// Share of the baseline B.
    pub share_base: f64,
    /// Relative risk of being slow in the window, with v versus without.
    pub rr: f64,
    /// Lower and upper confidence bound of the RR.
    pub rr_low: f64,
    /// Upper bound.
    pub rr_high: f64,
    /// Fraction of the window's excess slow requests it explains.
    pub excess_share: f64,
    /// Slow records behind it (raw).
    pub support: u64,
    /// Rank key: `excess_share * (1 - share_base)`. Of two values that
    /// explain about the same excess (an endpoint and its cluster), the
    /// narrower slice of traffic is the better explanation and comes first.
    pub score: f64,
}

/// Per-dimension divergence.
#[derive(Debug, Clone, PartialEq)]
pub struct DimScore {
    /// The dimension.
    pub dim: Dim,
    /// Jensen-Shannon divergence (bits) between its O and B distributions.
    pub js: f64,
}

/// What `why` concludes.
#[derive(Debug, Clone)]
pub struct Report {
    /// Baseline quantile (the slow threshold), ns.
    pub baseline_q_ns: u64,
    /// Window quantile, ns.
    pub window_q_ns: u64,
    /// Requests (weighted) in the window, and slow ones.
    pub window_requests: f64,
    /// Slow requests in the window.
    pub slow_requests: f64,
    /// Slow requests the baseline rate predicts.
    pub expected_slow: f64,
    /// Values that stand out, best first.
    pub findings: Vec<Finding>,
    /// Pairs that explain more than either part.
    pub pairs: Vec<Finding>,
    /// Dimensions by divergence, largest first.
    pub dims: Vec<DimScore>,
    /// Mean ns per phase of the slow set and of the baseline.
    pub phase_slow_ns: [f64; PHASES],
    /// Mean ns per phase of the baseline.
    pub phase_base_ns: [f64; PHASES],
}

impl Report {
    /// True when something stands out.
    pub fn has_finding(&self) -> bool {
        !self.findings.is_empty()
    }
}

/// Tie-break order: lower is more concrete (what an operator acts on).
fn concreteness(dims: &[Dim]) -> usize {
    const ORDER: [Dim; 12] = [
        Dim::Policy,
        Dim::Endpoint,
        Dim::Peer,
        Dim::Arm,
        Dim::Route,
        Dim::Type,
        Dim::Cluster,
        Dim::Worker,
        Dim::Status,
        Dim::Reason,
        Dim::Generation,
        Dim::Phase,
    ];
    dims.first()
        .and_then(|d| ORDER.iter().position(|o| o == d))
        .unwrap_or(ORDER.len())
}

/// Pairs of dimensions examined.
const PAIRS: [(Dim, Dim); 6] = [
    (Dim::Endpoint, Dim::Phase),
    (Dim::Route, Dim::Type),
    (Dim::Endpoint, Dim::Type),
    (Dim::Cluster, Dim::Phase),
    (Dim::Route, Dim::Endpoint),
    (Dim::Worker, Dim::Phase),
];

/// Pass 2: counts per value and pair.
#[derive(Debug)]
pub struct Attribution {
    w: Windows,
    tau: u64,
    total: Counts,
    by: FastMap<(Dim, u64), Counts>,
    pairs: FastMap<(usize, u64, u64), Counts>,
    slow_phase: [f64; PHASES],
    base_phase: [f64; PHASES],
}

impl Attribution {
    /// With the slow threshold `tau` from pass 1.
    pub fn new(w: Windows, tau: u64) -> Attribution {
        Attribution {
            w,
            tau,
            total: Counts::default(),
            by: FastMap::default(),
            pairs: FastMap::default(),
            slow_phase: [0.0; PHASES],
            base_phase: [0.0; PHASES],
        }
    }

    /// Adds one record of worker `shard`.
    #[inline]
    pub fn add(&mut self, r: &Record, shard: u32) {
        let window = self.w.in_window(r);
        if !window && !self.w.in_base(r) {
            return;
        }
        let slow = r.total_ns > self.tau;
        let wt = r.weight();
        self.total.add(window, slow, wt);
        if !window {
            for (acc, p) in self.base_phase.iter_mut().zip(r.phases_ns) {
                *acc += wt * p as f64;
            }
        } else if slow {
            for (acc, p) in self.slow_phase.iter_mut().zip(r.phases_ns) {
                *acc += wt * p as f64;
            }
        }
        // Each dimension's value once (the phase one scans the phases).
        let mut vals = [0u64; Dim::ALL.len()];
        for (v, d) in vals.iter_mut().zip(Dim::ALL) {
            *v = d.value(r, shard);
        }
        for (d, v) in Dim::ALL.into_iter().zip(vals) {
            self.by.entry((d, v)).or_default().add(window, slow, wt);
        }
        for (i, (a, b)) in PAIRS.iter().enumerate() {
            self.pairs
                .entry((i, vals[*a as usize], vals[*b as usize]))
                .or_default()
                .add(window, slow, wt);
        }
    }

    /// The analysis.
    pub fn finish(&self, window_q_ns: u64) -> Report {
        let t = &self.total;
        // The slow rate the baseline implies for the window as a whole.
        let base_rate = if t.b_all > 0.0 {
            t.b_slow / t.b_all
        } else {
            0.0
        };
        let expected_slow = t.w_all * base_rate;
        let excess_total = (t.w_slow - expected_slow).max(0.0);
        let tested = (self.by.len() + self.pairs.len()).max(1) as f64;
        // Bonferroni over every value and pair tested, two-sided 95%.
        let z = z_for(0.05 / tested);
        let finding = |dims: Vec<Dim>, values: Vec<u64>, c: &Counts| -> Option<Finding> {
            if t.w_slow <= 0.0 || t.b_all <= 0.0 || c.w_slow_raw < 1.0 {
                return None;
            }
            let share_slow = c.w_slow / t.w_slow;
            let share_base = c.b_all / t.b_all;
            // Relative risk of being slow inside the window: with v versus
            // without v (at the same time, so a value that merely covers
            // the whole window, like a new config generation, scores 1).
            // Weighted point estimate; Katz interval from raw counts, with
            // 0.5 added to empty cells.
            let (nv, no) = (c.w_all, t.w_all - c.w_all);
            if nv <= 0.0 || no <= 0.0 {
                return None;
            }
            let (sv, so) = (c.w_slow, (t.w_slow - c.w_slow).max(0.0));
            let (a, n1) = (c.w_slow_raw, c.w_all_raw);
            let (cc, n2) = (t.w_slow_raw - c.w_slow_raw, t.w_all_raw - c.w_all_raw);
            if n2 < 1.0 {
                return None;
            }
            let zero = a < 1.0 || cc < 1.0;
            let (a5, c5, n15, n25) = if zero {
                (a + 0.5, cc + 0.5, n1 + 1.0, n2 + 1.0)
            } else {
                (a, cc, n1, n2)
            };
            let rr = if so > 0.0 {
                (sv / nv) / (so / no)
            } else {
                (a5 / n15) / (c5 / n25)
            };
            let se = (1.0 / a5 - 1.0 / n15 + 1.0 / c5 - 1.0 / n25)
                .max(0.0)
                .sqrt();
            let lr = rr.max(f64::MIN_POSITIVE).ln();
            // One of the agent's own decisions (a delay, a rejection, a
            // retry) is not a slice of traffic with a latency of its own:
            // a delayed request is slow by definition, so measured against
            // its own baseline it would never explain anything. What it
            // explains is how many more of them there are: measure it
            // against the baseline's slow rate as a whole.
            let own_decision = dims
                .iter()
                .zip(&values)
                .any(|(d, v)| *d == Dim::Policy && *v != 0);
            let v_rate = if c.b_all > 0.0 && !own_decision {
                c.b_slow / c.b_all
            } else {
                base_rate
            };
            let excess = c.w_slow - c.w_all * v_rate;
            let excess_share = if excess_total > 0.0 {
                (excess / excess_total).clamp(0.0, 1.0)
            } else {
                0.0
            };
            Some(Finding {
                dims,
                values,
                share_slow,
                share_base,
                rr,
                rr_low: (lr - z * se).exp(),
                rr_high: (lr + z * se).exp(),
                excess_share,
                support: c.w_slow_raw as u64,
                score: excess_share * (1.0 - share_base).max(0.0),
            })
        };
        let stands_out = |f: &Finding| {
            f.support as f64 >= MIN_SUPPORT
                && f.rr_low > 1.0
                && f.rr >= MIN_RR
                && f.excess_share >= 0.2
        };
        // The window as a whole must be slower than its baseline predicts:
        // more than twice the expected slow requests, and significantly.
        let global = t.w_slow > 2.0 * expected_slow
            && t.w_slow_raw >= MIN_SUPPORT
            && poisson_significant(
                t.w_slow_raw,
                expected_slow * t.w_slow_raw / t.w_slow.max(1e-9),
            );
        let mut findings: Vec<Finding> = if global {
            self.by
                .iter()
                // Arm 0 is "the route has no split": not a value to blame.
                .filter(|&(&(d, v), _)| !(d == Dim::Arm && v == 0))
                .filter_map(|(&(d, v), c)| finding(vec![d], vec![v], c))
                .filter(stands_out)
                .collect()
        } else {
            Vec::new()
        };
        // Exact ties are the same set of requests under two names (an arm
        // with one endpoint): name the most concrete one first.
        findings.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(b.rr_low.total_cmp(&a.rr_low))
                .then(concreteness(&a.dims).cmp(&concreteness(&b.dims)))
        });
        let parent = |d: Dim, v: u64| {
            self.by
                .get(&(d, v))
                .and_then(|c| finding(vec![d], vec![v], c))
        };
        let mut pairs: Vec<Finding> = if global {
            self.pairs
                .iter()
                .filter_map(|(&(i, va, vb), c)| {
                    let (da, db) = PAIRS[i];
                    let f = finding(vec![da, db], vec![va, vb], c)?;
                    let (pa, pb) = (parent(da, va)?, parent(db, vb)?);
                    let better = f.rr_low > pa.rr_low.max(pb.rr_low)
                        && f.excess_share >= 0.5 * pa.excess_share.max(pb.excess_share);
                    (stands_out(&f) && better).then_some(f)
                })
                .collect()
        } else {
            Vec::new()
        };
        pairs.sort_by(|a, b| b.score.total_cmp(&a.score));
        pairs.truncate(5);
        let mut dims: Vec<DimScore> = Dim::ALL
            .iter()
            .map(|&d| DimScore {
                dim: d,
                js: self.js(d),
            })
            .collect();
        dims.sort_by(|a, b| b.js.total_cmp(&a.js));
        let mean = |acc: &[f64; PHASES], w: f64| acc.map(|x| if w > 0.0 { x / w } else { 0.0 });
        Report {
            baseline_q_ns: self.tau,
            window_q_ns,
            window_requests: t.w_all,
            slow_requests: t.w_slow,
            expected_slow,
            findings,
            pairs,
            dims,
            phase_slow_ns: mean(&self.slow_phase, t.w_slow),
            phase_base_ns: mean(&self.base_phase, t.b_all),
        }
    }

    /// Jensen-Shannon divergence of dimension `d` between O and B, bits.
    fn js(&self, d: Dim) -> f64 {
        let t = &self.total;
        if t.w_slow <= 0.0 || t.b_all <= 0.0 {
            return 0.0;
        }
        let mut js = 0.0;
        for (_, c) in self.by.iter().filter(|((dd, _), _)| *dd == d) {
            let p = c.w_slow / t.w_slow;
            let q = c.b_all / t.b_all;
            let m = (p + q) / 2.0;
            if p > 0.0 {
                js += 0.5 * p * (p / m).log2();
            }
            if q > 0.0 {
                js += 0.5 * q * (q / m).log2();
            }
        }
        js
    }
}

/// Two-sided normal quantile for tail probability `alpha` (Acklam-style
/// rational approximation of the inverse normal CDF, ample for bounds).
fn z_for(alpha: f64) -> f64 {
    let p = (alpha / 2.0).clamp(1e-300, 0.5);
    // Inverse of the upper tail: solve Q(z) = p with Newton on erfc.
    let mut z = (-2.0 * p.ln()).sqrt();
    for _ in 0..50 {
        let q = 0.5 * erfc(z / std::f64::consts::SQRT_2);
        let pdf = (-z * z / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        if pdf <= 0.0 {
            break;
        }
        let step = (q - p) / pdf;
        z += step;
        if step.abs() < 1e-10 {
            break;
        }
    }
    z
}

/// Complementary error function (Numerical Recipes' erfcc, |err| < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Whether `obs` events are significantly (one-sided, ~99.9%) more than a
/// Poisson mean `expected`, by the normal approximation with continuity
/// correction (exact enough at the counts that matter here).
fn poisson_significant(obs: f64, expected: f64) -> bool {
    let e = expected.max(0.5);
    (obs - 0.5 - e) / e.sqrt() > 3.09
}

impl Merge for Threshold {
    /// Both must be for the same windows.
    fn merge(&mut self, o: Threshold) {
        self.base.merge(&o.base);
        self.window.merge(&o.window);
    }
}

impl Merge for Attribution {
    /// Both must be for the same windows and threshold.
    fn merge(&mut self, o: Attribution) {
        self.total.merge(o.total);
        super::merge_map(&mut self.by, o.by, Counts::merge);
        super::merge_map(&mut self.pairs, o.pairs, Counts::merge);
        for (a, b) in self.slow_phase.iter_mut().zip(o.slow_phase) {
            *a += b;
        }
        for (a, b) in self.base_phase.iter_mut().zip(o.base_phase) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_values() {
        assert!((z_for(0.05) - 1.96).abs() < 0.01, "{}", z_for(0.05));
        assert!((z_for(0.001) - 3.29).abs() < 0.01, "{}", z_for(0.001));
    }

    fn windows() -> Windows {
        Windows {
            from_ns: 60_000_000_000,
            to_ns: 65_000_000_000,
            base_from_ns: 0,
            base_to_ns: 60_000_000_000,
            quantile: 0.999,
        }
    }

    /// 65 s at 2000 req/s over 4 endpoints; endpoint 3's first byte is
    /// slow in the window when `inject`.
    fn analyse(inject: bool) -> Report {
        analyse_parts(inject, 1)
    }

    /// Like `analyse`, with the records dealt round-robin to `parts`
    /// accumulators that are merged afterwards (as a threaded scan does).
    fn analyse_parts(inject: bool, parts: usize) -> Report {
        let w = windows();
        let recs: Vec<(Record, u32)> = (0..130_000u64)
            .map(|i| {
                let x = crate::synth::mix(i);
                let t = i * 500_000;
                let endpoint = (x % 4) as u16 + 1;
                let mut phases = [10_000, 50_000, 0, 800_000 + x % 400_000, 20_000, 5_000];
                if inject
                    && w.in_window(&Record {
                        start_ns: t,
                        ..Record::default()
                    })
                    && endpoint == 3
                {
                    phases[3] = 30_000_000 + x % 10_000_000;
                }
                let r = Record {
                    start_ns: t,
                    total_ns: phases.iter().sum(),
                    phases_ns: phases,
                    endpoint,
                    route: 1,
                    sample_p: crate::record::P_ONE,
                    ..Record::default()
                };
                (r, (x >> 8) as u32 % 2)
            })
            .collect();
        let part = |k: usize| recs.iter().skip(k).step_by(parts);
        let mut th = Threshold::new(w);
        part(0).for_each(|(r, _)| th.add(r));
        for k in 1..parts {
            let mut t = Threshold::new(w);
            part(k).for_each(|(r, _)| t.add(r));
            th.merge(t);
        }
        let (tau, wq) = th.finish().unwrap();
        let mut a = Attribution::new(w, tau);
        part(0).for_each(|(r, s)| a.add(r, *s));
        for k in 1..parts {
            let mut b = Attribution::new(w, tau);
            part(k).for_each(|(r, s)| b.add(r, *s));
            a.merge(b);
        }
        a.finish(wq)
    }

    #[test]
    fn merged_parts_give_the_same_report() {
        let one = analyse_parts(true, 1);
        for parts in [2, 3] {
            let r = analyse_parts(true, parts);
            assert_eq!(r.baseline_q_ns, one.baseline_q_ns);
            assert_eq!(r.window_q_ns, one.window_q_ns);
            assert!((r.slow_requests - one.slow_requests).abs() < 1e-6);
            let key = |f: &Finding| (f.dims.clone(), f.values.clone(), f.support);
            assert_eq!(
                r.findings.iter().map(key).collect::<Vec<_>>(),
                one.findings.iter().map(key).collect::<Vec<_>>()
            );
            assert_eq!(r.pairs.len(), one.pairs.len());
            for (a, b) in r.findings.iter().zip(&one.findings) {
                assert!((a.excess_share - b.excess_share).abs() < 1e-9);
                assert!((a.rr - b.rr).abs() < 1e-9 * b.rr.abs().max(1.0));
            }
            for (a, b) in r.phase_slow_ns.iter().zip(&one.phase_slow_ns) {
                assert!((a - b).abs() < 1e-6 * b.abs().max(1.0));
            }
        }
    }

    #[test]
    fn names_the_slow_endpoint_and_the_phase() {
        let r = analyse(true);
        assert!(r.has_finding());
        let top = &r.findings[0];
        assert!(
            matches!(top.dims[0], Dim::Endpoint | Dim::Phase) && top.values[0] == 3,
            "{:?}",
            r.findings
        );
        assert!(
            r.findings
                .iter()
                .any(|f| f.dims == [Dim::Endpoint] && f.values == [3] && f.excess_share > 0.9)
        );
        assert!(r.findings.iter().all(|f| f.dims != [Dim::Worker]));
        // Phase breakdown: the excess is first byte.
        let excess: Vec<f64> = (0..PHASES)
            .map(|i| r.phase_slow_ns[i] - r.phase_base_ns[i])
            .collect();
        let total: f64 = excess.iter().sum();
        assert!(excess[3] / total > 0.9, "{excess:?}");
        assert_eq!(r.dims[0].dim, Dim::Endpoint, "{:?}", r.dims);
    }

    /// Inbound mesh traffic from three callers; caller 2's requests
    /// (whose handshakes are slow) are slow in the window: `why` names the
    /// peer, not the one endpoint every caller shares.
    #[test]
    fn names_the_slow_caller_by_its_peer_identity() {
        let w = windows();
        let recs: Vec<Record> = (0..130_000u64)
            .map(|i| {
                let x = crate::synth::mix(i);
                let t = i * 500_000;
                let peer = (x % 3) as u16 + 1;
                let mut phases = [10_000, 50_000, 0, 800_000 + x % 400_000, 20_000, 5_000];
                let r = Record {
                    start_ns: t,
                    ..Record::default()
                };
                if w.in_window(&r) && peer == 2 {
                    phases[2] = 25_000_000 + x % 5_000_000;
                }
                Record {
                    start_ns: t,
                    total_ns: phases.iter().sum(),
                    phases_ns: phases,
                    endpoint: 1,
                    route: 1,
                    peer,
                    sample_p: crate::record::P_ONE,
                    ..Record::default()
                }
            })
            .collect();
        let mut th = Threshold::new(w);
        recs.iter().for_each(|r| th.add(r));
        let (tau, wq) = th.finish().unwrap();
        let mut a = Attribution::new(w, tau);
        recs.iter().for_each(|r| a.add(r, 0));
        let r = a.finish(wq);
        assert!(
            r.findings
                .iter()
                .any(|f| f.dims == [Dim::Peer] && f.values == [2] && f.excess_share > 0.9),
            "{:?}",
            r.findings
        );
        assert!(r.findings.iter().all(|f| f.dims != [Dim::Endpoint]));
    }

    #[test]
    fn a_a_windows_have_no_finding() {
        let r = analyse(false);
        assert!(!r.has_finding(), "{:?}", r.findings);
    }
}
