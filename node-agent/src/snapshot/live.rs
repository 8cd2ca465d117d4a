//! Live state of each endpoint, shared by every worker and read without
//! locks: requests in flight, the peak-EWMA latency `p2c_ewma` weighs,
//! request and failure counts, and passive outlier ejection (consecutive
//! 5xx, consecutive gateway failures, success rate). Sans-IO: every call
//! takes `now`; the data path reports each attempt's outcome, the health
//! checker (off the workers) each check's, and [`ClusterLive::tick`]
//! (called by workers, at most one of them at a time) returns ejected
//! endpoints on schedule, runs the success-rate detector once per
//! `interval`, and hands the health flips to the ring.
//!
//! Updates from two workers can race (a latency sample or a counter reset
//! lost in a window of a few ns): these are estimates, and no invariant
//! rests on them. The ejected count is kept exact with compare-and-swap.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use ringlog::record::{Event, EventKind};

use crate::config::schema::Outlier;

/// How fast the latency estimate forgets, ns (linkerd's default: 10 s).
pub const DEFAULT_DECAY_NS: u64 = 10_000_000_000;
/// The cost of an endpoint not measured yet that already has a request
/// in flight (higher than any measured one).
pub const UNMEASURED_BUSY: f64 = 1e15;
/// A failed attempt counts as at least this slow, so `p2c_ewma` moves load
/// off an endpoint that fails fast; it decays like any sample.
pub const FAILURE_PENALTY_NS: f64 = 250_000_000.0;
/// How often ejected endpoints are checked for their return.
pub const TICK_NS: u64 = 100_000_000;
/// How often `score_weighted` scores are recomputed.
pub const SCORE_NS: u64 = 1_000_000_000;
/// The lowest score, as a share of the weight.
pub const SCORE_FLOOR: f64 = 0.01;

/// How an attempt on an endpoint ended, for its stats and the outlier
/// detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered below 500.
    Success,
    /// The upstream answered 5xx.
    Http5xx,
    /// Connect failure, reset or timeout (a gateway failure, which counts
    /// as a 5xx too).
    Gateway,
}

/// A change of an endpoint's rotation state, for the ring and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Ejected (`ms`: for how long; `cause`: 1 consecutive 5xx, 2
    /// consecutive gateway failures, 3 success rate).
    Ejected {
        /// Endpoint position in the cluster.
        endpoint: usize,
        /// Ejection length, ms.
        ms: u64,
        /// What ejected it.
        cause: u8,
    },
    /// Back in rotation.
    Restored {
        /// Endpoint position in the cluster.
        endpoint: usize,
    },
    /// Active health checks flipped it.
    Health {
        /// Endpoint position in the cluster.
        endpoint: usize,
        /// Healthy now.
        up: bool,
        /// Checks in a row that decided it (`rise` or `fall`).
        run: u32,
    },
}

impl Change {
    /// The endpoint it is about (its position in the cluster).
    pub fn endpoint(self) -> usize {
        match self {
            Change::Ejected { endpoint, .. }
            | Change::Restored { endpoint }
            | Change::Health { endpoint, .. } => endpoint,
        }
    }

    /// Its ring event at `now`, for the cluster and endpoint with these
    /// name ids: `endpoint_ejected` (`a`: ms, `b`: cause) or
    /// `endpoint_restored`.
    pub fn event(self, now: u64, cluster: u16, endpoint: u16) -> Event {
        let mut ev = match self {
            Change::Ejected { ms, cause, .. } => {
                let mut ev = Event::new(EventKind::EndpointEjected, now);
                ev.a = ms;
                ev.b = u64::from(cause);
                ev
            }
            Change::Restored { .. } => Event::new(EventKind::EndpointRestored, now),
            Change::Health { up, run, .. } => {
                let mut ev = Event::new(EventKind::EndpointHealth, now);
                ev.from = u8::from(!up);
                ev.to = u8::from(up);
                ev.a = u64::from(run);
                ev
            }
        };
        ev.cluster = cluster;
        ev.endpoint = endpoint;
        ev
    }
}

/// Cause codes of [`Change::Ejected`].
pub const CAUSE_5XX: u8 = 1;
/// See [`Change::Ejected`].
pub const CAUSE_GATEWAY: u8 = 2;
/// See [`Change::Ejected`].
pub const CAUSE_SUCCESS_RATE: u8 = 3;

/// One endpoint's live state.
#[derive(Debug)]
pub struct EndpointLive {
    in_flight: AtomicU32,
    /// Peak-EWMA latency estimate, ns, as f64 bits.
    rtt: AtomicU64,
    /// When `rtt` was last set (monotonic ns).
    stamp: AtomicU64,
    /// A sample was taken (the first one replaces the default).
    measured: AtomicBool,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Outcomes since the success-rate detector last looked.
    window_ok: AtomicU32,
    window_failed: AtomicU32,
    /// Attempts finished, all time.
    pub requests: AtomicU64,
    /// Attempts that failed (5xx or gateway), all time.
    pub failures: AtomicU64,
    /// In rotation again at this time (monotonic ns; 0: not ejected).
    ejected_until: AtomicU64,
    /// Times ejected, less one per clean interval (Envoy's multiplier).
    ejections: AtomicU32,
    /// Times ejected, all time.
    pub ejected_total: AtomicU64,
    /// Active health checks pass (true until they say otherwise).
    healthy: AtomicBool,
    /// Health checks in a row that disagreed with `healthy`.
    hc_run: AtomicU32,
    /// Outcomes since the last score (`score_weighted`).
    score_ok: AtomicU32,
    score_failed: AtomicU32,
    /// Success rate smoothed over score periods, f64 bits.
    score_sr: AtomicU64,
    /// The `score_weighted` score, f64 bits.
    score: AtomicU64,
    /// Health checks done, and failed, all time.
    pub checks: AtomicU64,
    /// See `checks`.
    pub checks_failed: AtomicU64,
}

impl Default for EndpointLive {
    fn default() -> Self {
        EndpointLive {
            in_flight: AtomicU32::new(0),
            rtt: AtomicU64::new(0),
            stamp: AtomicU64::new(0),
            measured: AtomicBool::new(false),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            window_ok: AtomicU32::new(0),
            window_failed: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            ejected_total: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            hc_run: AtomicU32::new(0),
            score_ok: AtomicU32::new(0),
            score_failed: AtomicU32::new(0),
            score_sr: AtomicU64::new(1f64.to_bits()),
            score: AtomicU64::new(1f64.to_bits()),
            checks: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
        }
    }
}

impl EndpointLive {
    /// Requests in flight to it, node-wide.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// An attempt starts.
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// The latency estimate at `now`, ns: the last one, decayed toward 0
    /// for the time since (so an endpoint that was slow is tried again);
    /// 0 before the first sample.
    pub fn rtt(&self, now: u64, decay_ns: u64) -> f64 {
        if !self.measured.load(Ordering::Relaxed) {
            return 0.0;
        }
        let est = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        let stamp = self.stamp.load(Ordering::Relaxed);
        est * decay(now.saturating_sub(stamp), decay_ns)
    }

    /// `p2c_ewma`'s cost: latency estimate × (requests in flight + 1). An
    /// endpoint not measured yet costs nothing while idle, so it is tried
    /// at once, and [`UNMEASURED_BUSY`] once a request is on it, so it is
    /// not flooded before its first answer (Finagle's rule).
    pub fn cost(&self, now: u64, decay_ns: u64) -> f64 {
        let n = self.in_flight();
        if !self.measured.load(Ordering::Relaxed) {
            return if n == 0 { 0.0 } else { UNMEASURED_BUSY };
        }
        self.rtt(now, decay_ns) * f64::from(n + 1)
    }

    /// Success rate over all time (1 with no request yet).
    pub fn success_rate(&self) -> f64 {
        let n = self.requests.load(Ordering::Relaxed);
        if n == 0 {
            return 1.0;
        }
        1.0 - self.failures.load(Ordering::Relaxed) as f64 / n as f64
    }

    /// An attempt begun with [`EndpointLive::begin`] ended at `now` after
    /// `rtt_ns`: the latency estimate takes it (peak-sensitive: a slower
    /// sample replaces the estimate, a faster one is averaged in), a
    /// failure counting as at least [`FAILURE_PENALTY_NS`]. Returns the
    /// run of consecutive (5xx, gateway) failures it ends or extends.
    pub fn end(&self, now: u64, rtt_ns: u64, outcome: Outcome, decay_ns: u64) -> (u32, u32) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let failed = outcome != Outcome::Success;
        let mut sample = rtt_ns as f64;
        if failed {
            sample = sample.max(FAILURE_PENALTY_NS);
        }
        // The estimate as of now (decayed since the last sample), then
        // the sample: a peak replaces it, a dip is averaged in with the
        // weight of the time since (frequent samples move it slowly).
        let w = decay(
            now.saturating_sub(self.stamp.load(Ordering::Relaxed)),
            decay_ns,
        );
        let cur = f64::from_bits(self.rtt.load(Ordering::Relaxed)) * w;
        self.stamp.store(now, Ordering::Relaxed);
        let first = !self.measured.load(Ordering::Relaxed);
        if first {
            self.measured.store(true, Ordering::Relaxed);
        }
        let next = if sample >= cur || first {
            sample
        } else {
            cur * w + sample * (1.0 - w)
        };
        self.rtt.store(next.to_bits(), Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !failed {
            // Stores only when there is a run to end (a line written by
            // every response would bounce between workers).
            if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                self.consecutive_5xx.store(0, Ordering::Relaxed);
            }
            if self.consecutive_gateway.load(Ordering::Relaxed) != 0 {
                self.consecutive_gateway.store(0, Ordering::Relaxed);
            }
            return (0, 0);
        }
        self.failures.fetch_add(1, Ordering::Relaxed);
        let c5 = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let gw = if outcome == Outcome::Gateway {
            self.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        (c5, gw)
    }

    /// Counts an outcome for the success-rate detector's interval.
    fn count_window(&self, failed: bool) {
        let c = if failed {
            &self.window_failed
        } else {
            &self.window_ok
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an outcome for the next `score_weighted` score.
    fn count_score(&self, failed: bool) {
        let c = if failed {
            &self.score_failed
        } else {
            &self.score_ok
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt begun with [`EndpointLive::begin`] was abandoned (the
    /// client left): in flight no more, nothing learned.
    pub fn abandon(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Ejected at `now`.
    pub fn ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    /// Takes new requests: healthy and not ejected.
    pub fn available(&self, now: u64) -> bool {
        self.healthy() && !self.ejected(now)
    }

    /// What the active health checks last said.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets the health-check verdict; true if it changed.
    pub fn set_healthy(&self, up: bool) -> bool {
        self.healthy.swap(up, Ordering::Relaxed) != up
    }

    /// Its `score_weighted` score (its weight until first scored).
    pub fn score(&self) -> f64 {
        f64::from_bits(self.score.load(Ordering::Relaxed))
    }

    /// When it returns (0: not ejected).
    pub fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Relaxed)
    }

    /// Times ejected, less the clean intervals since (the multiplier of
    /// its next ejection).
    pub fn ejection_level(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }
}

/// e^(−elapsed / decay). A busy endpoint is sampled every few µs, far
/// below its decay time: there 1 − x is exact to 1e-6 and spares the
/// exponential on the hot path.
fn decay(elapsed_ns: u64, decay_ns: u64) -> f64 {
    let x = elapsed_ns as f64 / decay_ns.max(1) as f64;
    if x < 1e-3 { 1.0 - x } else { (-x).exp() }
}

/// Outlier detection settings, in ns where a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierParams {
    /// Consecutive 5xx (gateway failures included) that eject (0: off).
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures that eject (0: off).
    pub consecutive_gateway: u32,
    /// Success-rate detector period, and the multiplier decay period.
    pub interval_ns: u64,
    /// First ejection length; the n-th lasts n times as long.
    pub base_ns: u64,
    /// Longest ejection (at least `base_ns`).
    pub max_ns: u64,
    /// Most of the cluster ejected at once, percent (one endpoint always
    /// may be).
    pub max_percent: u32,
    /// Success-rate detection needs this many endpoints with enough
    /// requests (0: off).
    pub sr_min_hosts: u32,
    /// Requests an endpoint needs in an interval to count.
    pub sr_volume: u32,
    /// Ejects below mean − factor × standard deviation.
    pub sr_stdev_factor: f64,
}

impl OutlierParams {
    /// From the config section.
    pub fn from_config(o: &Outlier) -> OutlierParams {
        OutlierParams {
            consecutive_5xx: o.consecutive_5xx,
            consecutive_gateway: o.consecutive_gateway_failure,
            interval_ns: o.interval.0,
            base_ns: o.base_ejection.0,
            max_ns: o.max_ejection.0.max(o.base_ejection.0),
            max_percent: o.max_ejection_percent,
            sr_min_hosts: o.success_rate_minimum_hosts,
            sr_volume: o.success_rate_request_volume,
            sr_stdev_factor: o.success_rate_stdev_factor,
        }
    }
}

/// A cluster's endpoints' live state and its outlier detector.
#[derive(Debug)]
pub struct ClusterLive {
    /// Per endpoint, in cluster order.
    pub endpoints: Vec<EndpointLive>,
    /// The detector's settings (None: no outlier detection).
    pub outlier: Option<OutlierParams>,
    /// `p2c_ewma`'s decay, ns.
    pub decay_ns: u64,
    /// Endpoints out of rotation (ejected or failing health checks): 0
    /// lets a pick skip looking.
    out: AtomicU32,
    ejected: AtomicU32,
    next_tick: AtomicU64,
    next_interval: AtomicU64,
    /// Picks made with every endpoint of the arm out (panic mode).
    pub panics: AtomicU64,
    /// Health checks (`rise`, `fall`) run on it.
    pub health: Option<(u32, u32)>,
    /// `score_weighted`: the endpoints' weights and τ (ns).
    pub scoring: Option<(Vec<u32>, u64)>,
    next_score: AtomicU64,
    /// Changes made off the workers (health checks), for the next tick to
    /// put on the ring.
    queued: Mutex<Vec<Change>>,
    has_queued: AtomicBool,
}

impl ClusterLive {
    /// Live state for `n` endpoints.
    pub fn new(n: usize, outlier: Option<OutlierParams>, decay_ns: u64) -> ClusterLive {
        ClusterLive {
            endpoints: (0..n).map(|_| EndpointLive::default()).collect(),
            outlier,
            decay_ns,
            out: AtomicU32::new(0),
            ejected: AtomicU32::new(0),
            next_tick: AtomicU64::new(0),
            next_interval: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            health: None,
            scoring: None,
            next_score: AtomicU64::new(0),
            queued: Mutex::new(Vec::new()),
            has_queued: AtomicBool::new(false),
        }
    }

    /// The same, with health checks deciding after `rise` successes or
    /// `fall` failures in a row.
    pub fn with_health(self, rise: u32, fall: u32) -> ClusterLive {
        ClusterLive {
            health: Some((rise.max(1), fall.max(1))),
            ..self
        }
    }

    /// The same, scoring endpoints of these weights with latency scale
    /// `tau_ns` (`score_weighted`); scores start at the weights.
    pub fn with_scores(self, weights: Vec<u32>, tau_ns: u64) -> ClusterLive {
        for (e, w) in self.endpoints.iter().zip(&weights) {
            e.score.store(f64::from(*w).to_bits(), Ordering::Relaxed);
        }
        ClusterLive {
            scoring: Some((weights, tau_ns.max(1))),
            ..self
        }
    }

    /// Whether [`ClusterLive::tick`] has anything to do for it.
    pub fn watched(&self) -> bool {
        self.outlier.is_some() || self.health.is_some() || self.scoring.is_some()
    }

    /// Recomputes the `score_weighted` scores at `now` (once per
    /// [`SCORE_NS`], by whichever worker comes first): weight × success
    /// rate × e^(−latency / τ). The success rate is smoothed over periods
    /// (half the last period's, half the earlier; a period without requests
    /// keeps it), the latency is the peak-EWMA estimate. A score never
    /// drops below [`SCORE_FLOOR`] of the weight, so a recovered endpoint
    /// still gets the requests that show it.
    fn rescore(&self, now: u64) {
        let Some((weights, tau)) = &self.scoring else {
            return;
        };
        let due = self.next_score.load(Ordering::Relaxed);
        if now < due
            || self
                .next_score
                .compare_exchange(due, now + SCORE_NS, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for (e, &w) in self.endpoints.iter().zip(weights) {
            let ok = e.score_ok.swap(0, Ordering::Relaxed);
            let failed = e.score_failed.swap(0, Ordering::Relaxed);
            let mut sr = f64::from_bits(e.score_sr.load(Ordering::Relaxed));
            if ok + failed > 0 {
                sr = 0.5 * sr + 0.5 * f64::from(ok) / f64::from(ok + failed);
                e.score_sr.store(sr.to_bits(), Ordering::Relaxed);
            }
            let w = f64::from(w.max(1));
            let score =
                (w * sr * (-e.rtt(now, self.decay_ns) / *tau as f64).exp()).max(w * SCORE_FLOOR);
            e.score.store(score.to_bits(), Ordering::Relaxed);
        }
    }

    /// A health check of endpoint `i` passed (`ok`) or failed: after
    /// `rise` passes in a row an unhealthy endpoint is healthy again,
    /// after `fall` failures a healthy one is out of rotation. The flip
    /// is queued for the ring (the checks run off the workers).
    pub fn health_result(&self, i: usize, ok: bool) {
        let (Some(e), Some((rise, fall))) = (self.endpoints.get(i), self.health) else {
            return;
        };
        e.checks.fetch_add(1, Ordering::Relaxed);
        if !ok {
            e.checks_failed.fetch_add(1, Ordering::Relaxed);
        }
        if ok == e.healthy() {
            e.hc_run.store(0, Ordering::Relaxed);
            return;
        }
        let run = e.hc_run.fetch_add(1, Ordering::Relaxed) + 1;
        if run < if ok { rise } else { fall } {
            return;
        }
        e.hc_run.store(0, Ordering::Relaxed);
        if self.set_healthy(i, ok) {
            let change = Change::Health {
                endpoint: i,
                up: ok,
                run,
            };
            self.queued
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(change);
            self.has_queued.store(true, Ordering::Release);
        }
    }

    /// Whether any endpoint may be out of rotation (false: every endpoint
    /// takes requests, no need to look).
    pub fn any_out(&self) -> bool {
        self.out.load(Ordering::Relaxed) > 0
    }

    /// Endpoints currently ejected.
    pub fn ejected_count(&self) -> u32 {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Endpoint `i` takes new requests at `now`.
    pub fn available(&self, i: usize, now: u64) -> bool {
        self.endpoints.get(i).is_some_and(|e| e.available(now))
    }

    /// Records an attempt's end on endpoint `i` (see [`EndpointLive::end`])
    /// and ejects it if a consecutive-failure threshold was reached.
    pub fn end(&self, i: usize, now: u64, rtt_ns: u64, outcome: Outcome) -> Option<Change> {
        let e = self.endpoints.get(i)?;
        let (c5, gw) = e.end(now, rtt_ns, outcome, self.decay_ns);
        // Only the detectors configured pay for their counters.
        let failed = outcome != Outcome::Success;
        if self.scoring.is_some() {
            e.count_score(failed);
        }
        let p = self.outlier?;
        if p.sr_min_hosts > 0 {
            e.count_window(failed);
        }
        let cause = if p.consecutive_gateway > 0 && gw >= p.consecutive_gateway {
            CAUSE_GATEWAY
        } else if p.consecutive_5xx > 0 && c5 >= p.consecutive_5xx {
            CAUSE_5XX
        } else {
            return None;
        };
        self.eject(i, now, cause, &p)
    }

    /// Ejects endpoint `i` at `now` unless it already is or the cluster's
    /// `max_ejection_percent` is reached (one endpoint always may be).
    fn eject(&self, i: usize, now: u64, cause: u8, p: &OutlierParams) -> Option<Change> {
        let e = self.endpoints.get(i)?;
        let n = self.endpoints.len() as u64;
        let cap = (n * u64::from(p.max_percent) / 100).max(1) as u32;
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |k| {
                (k < cap).then_some(k + 1)
            })
            .ok()?;
        let level = e.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let ms_ns = p.base_ns.saturating_mul(u64::from(level)).min(p.max_ns);
        let until = now.saturating_add(ms_ns).max(1);
        if e.ejected_until
            .compare_exchange(0, until, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Already ejected (another worker, same moment).
            e.ejections.fetch_sub(1, Ordering::Relaxed);
            self.ejected.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        e.consecutive_5xx.store(0, Ordering::Relaxed);
        e.consecutive_gateway.store(0, Ordering::Relaxed);
        e.ejected_total.fetch_add(1, Ordering::Relaxed);
        self.out.fetch_add(1, Ordering::AcqRel);
        Some(Change::Ejected {
            endpoint: i,
            ms: ms_ns / 1_000_000,
            cause,
        })
    }

    /// Sets endpoint `i`'s health-check verdict (keeps the out count).
    pub fn set_healthy(&self, i: usize, up: bool) -> bool {
        let Some(e) = self.endpoints.get(i) else {
            return false;
        };
        if !e.set_healthy(up) {
            return false;
        }
        if up {
            self.out.fetch_sub(1, Ordering::AcqRel);
        } else {
            self.out.fetch_add(1, Ordering::AcqRel);
        }
        true
    }

    /// Housekeeping at `now`, done by whichever worker gets here first
    /// once per [`TICK_NS`]: ejected endpoints whose time is over return,
    /// and once per `interval` the success-rate detector runs and the
    /// ejection multipliers of endpoints that stayed in decay by one.
    /// The changes, for the ring.
    pub fn tick(&self, now: u64, changes: &mut Vec<Change>) {
        if self.has_queued.load(Ordering::Relaxed) && self.has_queued.swap(false, Ordering::AcqRel)
        {
            // A poisoned lock holds a complete list: use it.
            let mut q = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
            changes.append(&mut q);
        }
        self.rescore(now);
        let Some(p) = self.outlier else {
            return;
        };
        let due = self.next_tick.load(Ordering::Relaxed);
        if now < due
            || self
                .next_tick
                .compare_exchange(due, now + TICK_NS, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let until = e.ejected_until.load(Ordering::Relaxed);
            if until != 0
                && now >= until
                && e.ejected_until
                    .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                self.ejected.fetch_sub(1, Ordering::AcqRel);
                self.out.fetch_sub(1, Ordering::AcqRel);
                changes.push(Change::Restored { endpoint: i });
            }
        }
        let next = self.next_interval.load(Ordering::Relaxed);
        if next == 0 {
            self.next_interval
                .store(now.saturating_add(p.interval_ns), Ordering::Relaxed);
            return;
        }
        if now < next {
            return;
        }
        self.next_interval
            .store(now.saturating_add(p.interval_ns), Ordering::Relaxed);
        self.success_rate(now, &p, changes);
    }

    /// The success-rate detector: with at least `sr_min_hosts` endpoints
    /// that had `sr_volume` requests this interval, those whose success
    /// rate is below mean − factor × stdev are ejected. Windows restart;
    /// multipliers of endpoints not ejected decay by one.
    fn success_rate(&self, now: u64, p: &OutlierParams, changes: &mut Vec<Change>) {
        let rates: Vec<(usize, f64)> = self
            .endpoints
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let ok = e.window_ok.swap(0, Ordering::Relaxed);
                let failed = e.window_failed.swap(0, Ordering::Relaxed);
                if !e.ejected(now) {
                    let _ = e
                        .ejections
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1));
                }
                let total = ok + failed;
                (total >= p.sr_volume.max(1) && !e.ejected(now))
                    .then(|| (i, f64::from(ok) / f64::from(total)))
            })
            .collect();
        if p.sr_min_hosts == 0 || rates.len() < p.sr_min_hosts as usize {
            return;
        }
        let n = rates.len() as f64;
        let mean = rates.iter().map(|r| r.1).sum::<f64>() / n;
        let var = rates.iter().map(|r| (r.1 - mean).powi(2)).sum::<f64>() / n;
        let threshold = mean - p.sr_stdev_factor * var.sqrt();
        for &(i, rate) in &rates {
            if rate < threshold
                && let Some(c) = self.eject(i, now, CAUSE_SUCCESS_RATE, p)
            {
                changes.push(c);
            }
        }
    }
}

#[cfg(test)]
mod tests;
