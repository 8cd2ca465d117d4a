//! Synthetic traffic with a known culprit, for checking `why` (randomised
//! trials), for the report test and for the analysis benchmarks.
//!
//! A small mesh: 6 routes over 2 clusters with 10 endpoints, a two-arm
//! canary on `orders`, 6 request types sampled like the example config
//! (market 1.0, limit 0.1, cancel 0.5, ...; anything slower than 50 ms kept
//! at p = 1, as the sampler's keep-slow rule does), and N workers (shards).
//! Latency is lognormal per route with a natural heavy tail (0.2% of
//! requests 3-10x slower, tied to nothing).
//!
//! A [`Fault`] picks one culprit value of one dimension (route, endpoint,
//! request type, canary arm, worker or phase), gives it `share` of all
//! traffic (0.5-10% in [`Scenario::random`]), and during its window makes
//! `affected` of those requests 40-150 ms slower in the culprit's phase,
//! which at least doubles p99.9. Everything is a pure function of the seed.

use crate::analyze::Dim;
use crate::record::{Flags, KeepReason, P_ONE, Phase, Record};
use crate::sampler::code_of;
use crate::synth::mix;
use crate::writer::{RingWriter, WriterError};
use crate::{Event, EventKind, NameKind};

/// What a fault is pinned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Culprit {
    /// One route.
    Route,
    /// One endpoint.
    Endpoint,
    /// One request type.
    Type,
    /// One canary arm of `orders`.
    Arm,
    /// One worker.
    Worker,
    /// One phase (connect, TLS or downstream write) of some requests.
    Phase,
    /// The agent's own rate limit: one route's requests delayed by
    /// smoothing (queue phase, flag `rate_limited`). Named as
    /// `policy=delayed`, not as the route.
    Throttle,
}

impl Culprit {
    /// Every kind.
    pub const ALL: [Culprit; 7] = [
        Culprit::Route,
        Culprit::Endpoint,
        Culprit::Type,
        Culprit::Arm,
        Culprit::Worker,
        Culprit::Phase,
        Culprit::Throttle,
    ];
    /// The analysis dimension that should name it.
    pub fn dim(self) -> Dim {
        match self {
            Culprit::Route => Dim::Route,
            Culprit::Endpoint => Dim::Endpoint,
            Culprit::Type => Dim::Type,
            Culprit::Arm => Dim::Arm,
            Culprit::Worker => Dim::Worker,
            Culprit::Phase => Dim::Phase,
            Culprit::Throttle => Dim::Policy,
        }
    }
}

/// An injected fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// Kind of culprit.
    pub culprit: Culprit,
    /// Index of the culprit value among its kind's values.
    pub pick: usize,
    /// Fraction of all traffic the culprit value carries.
    pub share: f64,
    /// Fraction of the culprit's requests slowed inside the window.
    pub affected: f64,
    /// Window start, seconds after the traffic starts.
    pub start_s: f64,
    /// Window length, seconds.
    pub len_s: f64,
}

/// A synthetic ring's traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Seed of every random choice.
    pub seed: u64,
    /// Seconds of traffic.
    pub seconds: u64,
    /// Requests per second (before sampling).
    pub rate: u64,
    /// Workers (the ring needs this many shards).
    pub workers: u32,
    /// The fault, if any.
    pub fault: Option<Fault>,
}

/// Where the fault is, as the analysis sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    /// Dimension.
    pub dim: Dim,
    /// Value (name id, `route << 8 | arm`, worker or phase index).
    pub value: u64,
    /// Window, monotonic ns.
    pub from_ns: u64,
    /// End of the window.
    pub to_ns: u64,
}

/// Monotonic time of the first request.
pub const T0_NS: u64 = 1_000_000_000_000;

/// (name, weight, cluster index, median first-byte µs).
const ROUTES: [(&str, f64, usize, f64); 6] = [
    ("orders", 0.40, 0, 800.0),
    ("quotes", 0.30, 0, 600.0),
    ("positions", 0.12, 0, 1200.0),
    ("accounts", 0.10, 1, 1500.0),
    ("health", 0.05, 1, 200.0),
    ("reports", 0.03, 1, 4000.0),
];
const CLUSTERS: [&str; 2] = ["trading", "accounts"];
/// (address, cluster, orders arm: 1 = v1, 2 = v2, 0 = not in orders).
const ENDPOINTS: [(&str, usize, u8); 10] = [
    ("10.0.1.1:8080", 0, 1),
    ("10.0.1.2:8080", 0, 1),
    ("10.0.1.3:8080", 0, 1),
    ("10.0.1.4:8080", 0, 1),
    ("10.0.1.5:8080", 0, 2),
    ("10.0.1.6:8080", 0, 2),
    ("10.0.2.1:8080", 1, 0),
    ("10.0.2.2:8080", 1, 0),
    ("10.0.2.3:8080", 1, 0),
    ("10.0.2.4:8080", 1, 0),
];
/// (name, weight, sampling p); "default" is type 0.
const TYPES: [(&str, f64, f64); 6] = [
    ("default", 0.02, 0.05),
    ("market", 0.30, 1.0),
    ("limit", 0.35, 0.1),
    ("cancel", 0.20, 0.5),
    ("quote", 0.08, 0.2),
    ("amend", 0.05, 1.0),
];
/// Share of `orders` on arm 2 (v2) when the arm is not the culprit.
const CANARY: f64 = 0.1;
/// Phases a [`Culprit::Phase`] fault can hit.
const FAULT_PHASES: [Phase; 3] = [Phase::Connect, Phase::Tls, Phase::Write];
/// Records slower than this are kept at p = 1.
const KEEP_SLOWER_NS: u64 = 50_000_000;

/// SplitMix64 stream.
struct Rng(u64);

impl Rng {
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    /// Uniform in [0, 1).
    fn f(&mut self) -> f64 {
        (self.u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.u64() % n.max(1) as u64) as usize
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.f().max(1e-12);
        let v = self.f();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    /// Index drawn by weight, never `skip`.
    fn weighted(&mut self, w: &[f64], skip: Option<usize>) -> usize {
        let total: f64 = (0..w.len())
            .filter(|i| Some(*i) != skip)
            .map(|i| w[i])
            .sum();
        let mut x = self.f() * total;
        for (i, wi) in w.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            if x < *wi {
                return i;
            }
            x -= wi;
        }
        (0..w.len()).rev().find(|i| Some(*i) != skip).unwrap_or(0)
    }
}

/// How many values a culprit kind has.
fn values(c: Culprit, workers: u32) -> usize {
    match c {
        Culprit::Route => ROUTES.len(),
        Culprit::Endpoint => ENDPOINTS.len(),
        Culprit::Type => TYPES.len(),
        Culprit::Arm => 2,
        Culprit::Worker => workers as usize,
        Culprit::Phase => FAULT_PHASES.len(),
        Culprit::Throttle => ROUTES.len(),
    }
}

/// Ring name ids.
struct Ids {
    routes: Vec<u16>,
    clusters: Vec<u16>,
    endpoints: Vec<u16>,
    types: Vec<u16>,
}

/// One request before sampling: indexes into the tables above.
struct Draw {
    route: usize,
    arm: u8,
    endpoint: usize,
    req_type: usize,
    worker: u32,
    hit: bool,
}

impl Scenario {
    /// A randomised 90 s scenario at 2000 req/s on 4 workers with a fault
    /// of kind `c` (share 0.5-10%, 70-100% affected, 3-8 s starting 62-80 s
    /// in), or none.
    pub fn random(seed: u64, c: Option<Culprit>) -> Scenario {
        let mut g = Rng(mix(seed ^ 0x5ce0_a210));
        let workers = 4;
        Scenario {
            seed,
            seconds: 90,
            rate: 2000,
            workers,
            fault: c.map(|culprit| Fault {
                culprit,
                pick: g.below(values(culprit, workers)),
                share: g.range(0.005, 0.10),
                affected: g.range(0.7, 1.0),
                start_s: g.range(62.0, 80.0).floor(),
                len_s: g.range(3.0, 8.0).floor(),
            }),
        }
    }

    fn draw(&self, g: &mut Rng) -> Draw {
        let f = self.fault;
        let hit = f.is_some_and(|f| g.f() < f.share);
        let (kind, cv) = match f {
            Some(f) => (Some(f.culprit), f.pick),
            None => (None, usize::MAX),
        };
        let culprit = |c: Culprit| kind == Some(c);
        let route = if hit && (culprit(Culprit::Route) || culprit(Culprit::Throttle)) {
            cv
        } else if hit && culprit(Culprit::Arm) {
            0
        } else if hit && culprit(Culprit::Endpoint) {
            let c = ENDPOINTS[cv].1;
            let w: Vec<f64> = ROUTES
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    // orders reaches only its arms' endpoints
                    let ok = r.2 == c && (i != 0 || ENDPOINTS[cv].2 != 0);
                    if ok { r.1 } else { 0.0 }
                })
                .collect();
            g.weighted(&w, None)
        } else {
            let own = culprit(Culprit::Route) || culprit(Culprit::Throttle);
            g.weighted(&ROUTES.map(|r| r.1), own.then_some(cv))
        };
        let arm = if route != 0 {
            0
        } else if hit && culprit(Culprit::Arm) {
            cv as u8 + 1
        } else if hit && culprit(Culprit::Endpoint) {
            ENDPOINTS[cv].2
        } else if culprit(Culprit::Arm) {
            2 - cv as u8 // the other arm
        } else if g.f() < CANARY {
            2
        } else {
            1
        };
        let endpoint = if hit && culprit(Culprit::Endpoint) {
            cv
        } else {
            let c = ROUTES[route].2;
            let ok: Vec<usize> = (0..ENDPOINTS.len())
                .filter(|&e| ENDPOINTS[e].1 == c && (arm == 0 || ENDPOINTS[e].2 == arm))
                .filter(|&e| !(culprit(Culprit::Endpoint) && e == cv))
                .collect();
            // Never empty: every cluster and arm has at least two endpoints,
            // so one remains with the culprit excluded.
            ok.get(g.below(ok.len())).copied().unwrap_or_default()
        };
        let req_type = if hit && culprit(Culprit::Type) {
            cv
        } else {
            g.weighted(&TYPES.map(|t| t.1), culprit(Culprit::Type).then_some(cv))
        };
        let workers = self.workers.max(1) as usize;
        let worker = if hit && culprit(Culprit::Worker) {
            cv
        } else if culprit(Culprit::Worker) && workers > 1 {
            let w = g.below(workers - 1);
            if w >= cv { w + 1 } else { w }
        } else {
            g.below(workers)
        };
        Draw {
            route,
            arm,
            endpoint,
            req_type,
            worker: worker as u32,
            hit,
        }
    }

    /// The request's phases, and whether the fault slowed it.
    fn phases(&self, g: &mut Rng, d: &Draw, t_s: f64) -> ([u64; 6], bool) {
        let us = |x: f64| (x * 1000.0) as u64;
        let mut p = [0u64; 6];
        p[Phase::Queue as usize] = us(g.range(10.0, 40.0));
        let ep_factor = 0.9 + 0.2 * (mix(d.endpoint as u64) % 100) as f64 / 100.0;
        let mut fb = ROUTES[d.route].3 * ep_factor * (0.45 * g.normal()).exp();
        if g.f() < 0.002 {
            fb *= g.range(3.0, 10.0);
        }
        p[Phase::FirstByte as usize] = us(fb);
        p[Phase::Transfer as usize] = us(g.range(20.0, 80.0));
        p[Phase::Write as usize] = us(g.range(5.0, 20.0));
        let Some(f) = self.fault else {
            return (p, false);
        };
        let phase = match f.culprit {
            Culprit::Worker | Culprit::Throttle => Phase::Queue,
            Culprit::Phase => FAULT_PHASES[f.pick],
            _ => Phase::FirstByte,
        };
        if f.culprit == Culprit::Phase && d.hit {
            // Requests that have the phase at all (a new connection, a TLS
            // handshake); others skip it.
            match phase {
                Phase::Connect => p[1] = us(g.range(80.0, 300.0)),
                Phase::Tls => p[2] = us(g.range(300.0, 900.0)),
                _ => {}
            }
        }
        let inside = t_s >= f.start_s && t_s < f.start_s + f.len_s;
        let slowed = inside && d.hit && g.f() < f.affected;
        if slowed {
            p[phase as usize] += us(g.range(40_000.0, 150_000.0));
        }
        (p, slowed)
    }

    /// Writes the traffic into `w` (which needs [`Scenario::workers`]
    /// shards) and says where the fault is.
    pub fn write(&self, w: &RingWriter) -> Result<Option<Truth>, WriterError> {
        let ids = Ids {
            routes: ROUTES
                .iter()
                .map(|r| w.intern(NameKind::Route, r.0, 1))
                .collect::<Result<_, _>>()?,
            clusters: CLUSTERS
                .iter()
                .map(|c| w.intern(NameKind::Cluster, c, 1))
                .collect::<Result<_, _>>()?,
            endpoints: ENDPOINTS
                .iter()
                .map(|e| w.intern(NameKind::Endpoint, e.0, 1))
                .collect::<Result<_, _>>()?,
            types: std::iter::once(Ok(0))
                .chain(
                    TYPES[1..]
                        .iter()
                        .map(|t| w.intern(NameKind::RequestType, t.0, 1)),
                )
                .collect::<Result<_, _>>()?,
        };
        let mut shards = (0..self.workers)
            .map(|s| {
                w.name_worker(s, &format!("worker-{s}"))?;
                w.shard(s)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut g = Rng(mix(self.seed));
        let n = self.seconds * self.rate;
        let gap = 1_000_000_000 / self.rate.max(1);
        let mut ev = Event::new(EventKind::ConfigApplied, T0_NS);
        ev.generation = 7;
        if let Some(s) = shards.first_mut() {
            s.write_event(&ev);
        }
        for i in 0..n {
            let t = T0_NS + i * gap + g.u64() % gap;
            let d = self.draw(&mut g);
            let (phases_ns, slowed) = self.phases(&mut g, &d, (i * gap) as f64 / 1e9);
            let throttled = slowed && self.fault.is_some_and(|f| f.culprit == Culprit::Throttle);
            let total_ns: u64 = phases_ns.iter().sum();
            let p = TYPES[d.req_type].2;
            let (sample_p, keep) = if total_ns > KEEP_SLOWER_NS {
                (P_ONE, KeepReason::Slow)
            } else if g.f() < p {
                (code_of(p).unwrap_or(P_ONE), KeepReason::Sampled)
            } else {
                continue;
            };
            let r = Record {
                start_ns: t,
                total_ns,
                phases_ns,
                generation: 7,
                route: ids.routes[d.route],
                cluster: ids.clusters[ROUTES[d.route].2],
                endpoint: ids.endpoints[d.endpoint],
                req_type: ids.types[d.req_type],
                status: 200,
                sample_p,
                arm: d.arm,
                keep,
                flags: Flags(if throttled { Flags::RATE_LIMITED } else { 0 }),
                ..Record::default()
            };
            if let Some(s) = shards.get_mut(d.worker as usize) {
                s.write(&r);
            }
        }
        Ok(self.fault.map(|f| Truth {
            dim: f.culprit.dim(),
            value: match f.culprit {
                Culprit::Route => u64::from(ids.routes[f.pick]),
                Culprit::Endpoint => u64::from(ids.endpoints[f.pick]),
                Culprit::Type => u64::from(ids.types[f.pick]),
                Culprit::Arm => u64::from(ids.routes[0]) << 8 | (f.pick as u64 + 1),
                Culprit::Worker => f.pick as u64,
                Culprit::Phase => FAULT_PHASES[f.pick] as u64,
                Culprit::Throttle => 2, // policy "delayed"
            },
            from_ns: T0_NS + (f.start_s * 1e9) as u64,
            to_ns: T0_NS + ((f.start_s + f.len_s) * 1e9) as u64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn culprit_carries_its_share_and_nothing_else_does() {
        for c in Culprit::ALL {
            let mut s = Scenario::random(7, Some(c));
            if let Some(f) = &mut s.fault {
                f.share = 0.05;
            }
            let mut g = Rng(1);
            let n = 200_000;
            let hits = (0..n).filter(|_| s.draw(&mut g).hit).count();
            let share = hits as f64 / f64::from(n);
            assert!((share - 0.05).abs() < 0.005, "{c:?} {share}");
            // Draws stay consistent with the topology.
            for _ in 0..10_000 {
                let d = s.draw(&mut g);
                assert_eq!(ENDPOINTS[d.endpoint].1, ROUTES[d.route].2, "{c:?}");
                assert_eq!(d.arm != 0, d.route == 0);
                if d.arm != 0 {
                    assert_eq!(ENDPOINTS[d.endpoint].2, d.arm);
                }
                assert!(d.worker < s.workers);
            }
        }
    }

    #[test]
    fn same_seed_same_scenario() {
        assert_eq!(
            Scenario::random(3, Some(Culprit::Arm)),
            Scenario::random(3, Some(Culprit::Arm))
        );
    }
}
