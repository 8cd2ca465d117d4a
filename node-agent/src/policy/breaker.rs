//! Circuit breaking per cluster: a sans-IO state machine ([`BreakerCore`])
//! that takes `now` and request outcomes, and its node-wide shared form
//! ([`Breaker`]) with the concurrency limits.
//!
//! Closed → open after `consecutive_failures` failures in a row, or when
//! the failure rate over the sliding `window` exceeds `error_rate` with at
//! least `min_requests` in it. Open for `open_for`, then half-open: up to
//! `half_open_probes` requests pass; as many successes close it, one
//! failure reopens it for twice as long as the last time (capped at
//! [`MAX_BACKOFF_NS`] or `open_for` if larger, jittered ±25%, so many
//! agents do not probe a recovering upstream in step). linkerd's failure
//! accrual is the model.
//!
//! Outcomes only count for the state they were admitted in: a failure that
//! was in flight when the breaker opened does not extend the open period,
//! and only probes decide a half-open breaker.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ringlog::Reason;

use super::FailureOn;

/// Longest open period a backoff reaches (unless `open_for` is longer).
pub const MAX_BACKOFF_NS: u64 = 60_000_000_000;

/// Buckets of the sliding failure-rate window.
const BUCKETS: usize = 10;

/// Breaker states; the number is the metric value and the ring event's
/// `from` / `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests pass; outcomes are counted.
    Closed = 0,
    /// Requests are rejected at once.
    Open = 1,
    /// A few probes pass; they decide.
    HalfOpen = 2,
}

impl State {
    fn from_code(c: u64) -> State {
        match c {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }

    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// How a request admitted by the breaker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counts as a success.
    Success,
    /// Counts as a failure (by the cluster's failure list).
    Failure,
}

/// A state change, for the ring and the metrics. `open_ns`: how long it
/// opens for (0 unless `to` is open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Open period, ns (when `to` is [`State::Open`]).
    pub open_ns: u64,
}

impl Transition {
    /// Its ring event, for cluster name id `cluster` (`a`: the open period
    /// in ms).
    pub fn event(self, cluster: u16, now: u64) -> ringlog::record::Event {
        let mut ev =
            ringlog::record::Event::new(ringlog::record::EventKind::BreakerTransition, now);
        ev.cluster = cluster;
        ev.from = self.from as u8;
        ev.to = self.to as u8;
        ev.a = self.open_ns / 1_000_000;
        ev
    }
}

/// Breaker thresholds, in ns where a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Failures in a row that open it (0: off).
    pub consecutive_failures: u32,
    /// Failure share over the window that opens it (above 1: off).
    pub error_rate: f64,
    /// Outcomes the window needs before the rate counts.
    pub min_requests: u32,
    /// Sliding window length.
    pub window_ns: u64,
    /// First open period.
    pub open_for_ns: u64,
    /// Probes admitted half-open (≥ 1).
    pub half_open_probes: u32,
}

/// What [`BreakerCore::admit`] handed out: which state's outcome it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u32,
    probe: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed {
        consecutive: u32,
    },
    Open {
        until: u64,
        level: u32,
    },
    HalfOpen {
        level: u32,
        in_flight: u32,
        successes: u32,
    },
}

/// The breaker state machine. Every change of phase bumps the epoch, so
/// tickets from an earlier phase are told apart.
#[derive(Debug, Clone)]
pub struct BreakerCore {
    p: Params,
    phase: Phase,
    epoch: u32,
    /// (successes, failures) per bucket of `window / BUCKETS`, oldest
    /// first; `newest` is the last one's index (`now / width`).
    buckets: [(u32, u32); BUCKETS],
    newest: u64,
}

impl BreakerCore {
    /// A closed breaker.
    pub fn new(p: Params) -> BreakerCore {
        BreakerCore {
            p: Params {
                half_open_probes: p.half_open_probes.max(1),
                window_ns: p.window_ns.max(BUCKETS as u64),
                ..p
            },
            phase: Phase::Closed { consecutive: 0 },
            epoch: 0,
            buckets: [(0, 0); BUCKETS],
            newest: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Closed { .. } => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// When an open breaker turns half-open (u64::MAX unless open).
    pub fn open_until(&self) -> u64 {
        match self.phase {
            Phase::Open { until, .. } => until,
            _ => u64::MAX,
        }
    }

    /// The phase epoch (changes with every transition).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// A ticket for a request admitted while closed in the current epoch
    /// (what the lock-free fast path hands out).
    pub fn closed_ticket(epoch: u32) -> Ticket {
        Ticket {
            epoch,
            probe: false,
        }
    }

    fn go(&mut self, phase: Phase, open_ns: u64) -> Transition {
        let from = self.state();
        self.phase = phase;
        self.epoch = self.epoch.wrapping_add(1);
        Transition {
            from,
            to: self.state(),
            open_ns,
        }
    }

    /// Whether a request may pass at `now`, and the state change the check
    /// caused (open → half-open once `open_for` is over).
    pub fn admit(&mut self, now: u64) -> (Option<Ticket>, Option<Transition>) {
        let mut moved = None;
        if let Phase::Open { until, level } = self.phase {
            if now < until {
                return (None, None);
            }
            let half = Phase::HalfOpen {
                level,
                in_flight: 0,
                successes: 0,
            };
            moved = Some(self.go(half, 0));
        }
        let epoch = self.epoch;
        let ticket = match &mut self.phase {
            Phase::Closed { .. } => Some(Ticket {
                epoch,
                probe: false,
            }),
            Phase::HalfOpen { in_flight, .. } if *in_flight < self.p.half_open_probes => {
                *in_flight += 1;
                Some(Ticket { epoch, probe: true })
            }
            _ => None,
        };
        (ticket, moved)
    }

    /// A request admitted with `t` ended with `outcome` at `now`. `rand`
    /// (any random bits) jitters a backoff. Returns the state change, if any.
    pub fn record(
        &mut self,
        now: u64,
        t: Ticket,
        outcome: Outcome,
        rand: u64,
    ) -> Option<Transition> {
        if t.epoch != self.epoch {
            return None; // admitted in an earlier phase
        }
        match &mut self.phase {
            Phase::Closed { consecutive } => {
                let failed = outcome == Outcome::Failure;
                *consecutive = if failed { *consecutive + 1 } else { 0 };
                let run = *consecutive;
                self.count(now, failed);
                let by_run = self.p.consecutive_failures > 0 && run >= self.p.consecutive_failures;
                (failed && (by_run || self.rate_exceeded())).then(|| self.open(now, 0, rand))
            }
            Phase::HalfOpen {
                level,
                in_flight,
                successes,
            } if t.probe => {
                *in_flight = in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Failure => {
                        let next = level.saturating_add(1);
                        Some(self.open(now, next, rand))
                    }
                    Outcome::Success => {
                        *successes += 1;
                        (*successes >= self.p.half_open_probes).then(|| {
                            self.buckets = [(0, 0); BUCKETS];
                            self.go(Phase::Closed { consecutive: 0 }, 0)
                        })
                    }
                }
            }
            _ => None,
        }
    }

    /// Another node's breaker for the same cluster opened (a shared hint):
    /// a closed breaker goes straight to half-open, so only its probes
    /// reach the cluster until they succeed. Open and half-open ones are
    /// left as they are.
    pub fn hint(&mut self) -> Option<Transition> {
        let Phase::Closed { .. } = self.phase else {
            return None;
        };
        let half = Phase::HalfOpen {
            level: 0,
            in_flight: 0,
            successes: 0,
        };
        Some(self.go(half, 0))
    }

    /// A ticket whose request ended without an outcome (the client left):
    /// its probe slot is free again.
    pub fn abandon(&mut self, t: Ticket) {
        if t.epoch == self.epoch
            && t.probe
            && let Phase::HalfOpen { in_flight, .. } = &mut self.phase
        {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    fn open(&mut self, now: u64, level: u32, rand: u64) -> Transition {
        let base = self.p.open_for_ns;
        let ns = if level == 0 {
            base
        } else {
            let cap = MAX_BACKOFF_NS.max(base);
            let grown = base.saturating_mul(1u64 << level.min(32)).min(cap);
            // ±25%: 0.75 + [0, 0.5) of the period, from 16 random bits.
            let jitter = 0.75 + 0.5 * ((rand & 0xffff) as f64 / 65536.0);
            ((grown as f64 * jitter) as u64).min(cap)
        };
        let until = now.saturating_add(ns);
        self.go(Phase::Open { until, level }, ns)
    }

    /// Adds one outcome to the sliding window at `now`.
    fn count(&mut self, now: u64, failed: bool) {
        let idx = now / (self.p.window_ns / BUCKETS as u64);
        if idx > self.newest {
            // Age the window: buckets that ended are emptied.
            let steps = (idx - self.newest).min(BUCKETS as u64) as usize;
            self.buckets.rotate_left(steps);
            for b in &mut self.buckets[BUCKETS - steps..] {
                *b = (0, 0);
            }
            self.newest = idx;
        }
        // (A `now` a little older than the newest bucket, read by another
        // worker just before, counts in the newest.)
        let last = &mut self.buckets[BUCKETS - 1];
        if failed {
            last.1 += 1;
        } else {
            last.0 += 1;
        }
    }

    fn rate_exceeded(&self) -> bool {
        if self.p.error_rate > 1.0 {
            return false;
        }
        let (ok, failed) = self.buckets.iter().fold((0u64, 0u64), |(a, b), &(s, f)| {
            (a + u64::from(s), b + u64::from(f))
        });
        let total = ok + failed;
        total >= u64::from(self.p.min_requests.max(1))
            && failed as f64 > self.p.error_rate * total as f64
    }
}

/// Counters of one breaker, for `/metrics`.
#[derive(Debug, Default)]
pub struct BreakerStats {
    /// Transitions into each state, indexed by [`State`].
    pub transitions: [AtomicU64; 3],
    /// Requests rejected because it was open (or half-open and full).
    pub rejected_open: AtomicU64,
    /// Requests rejected by `max_concurrent`.
    pub overflow_concurrent: AtomicU64,
    /// Requests rejected by `max_pending`.
    pub overflow_pending: AtomicU64,
    /// Requests rejected by `max_connections`.
    pub overflow_connections: AtomicU64,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The breaker is open (or half-open with its probes out).
    Open,
    /// `max_concurrent` requests are in flight.
    Concurrent,
    /// `max_pending` requests wait for a connection.
    Pending,
}

/// A cluster's breaker, shared by every worker. Reading whether it admits
/// is lock-free (one atomic holds the state and epoch, another the end of
/// the open period); outcomes and the rare transitions take a mutex that
/// no reader waits on.
#[derive(Debug)]
pub struct Breaker {
    core: Mutex<BreakerCore>,
    /// `epoch << 8 | state`.
    word: AtomicU64,
    open_until: AtomicU64,
    in_flight: AtomicU32,
    pending: AtomicU32,
    connections: AtomicU32,
    /// Requests queued for a connection slot (see [`SlotWait`]).
    waiting: AtomicU32,
    /// Outcomes can open it (false: concurrency limits only).
    trips: bool,
    max_concurrent: u32,
    max_pending: u32,
    max_connections: u32,
    failure_on: FailureOn,
    /// Counters for `/metrics`.
    pub stats: BreakerStats,
}

impl Breaker {
    /// A closed breaker with these thresholds and concurrency limits,
    /// counting the endings `failure_on` names as failures.
    pub fn new(p: Params, max_concurrent: u32, max_pending: u32, failure_on: FailureOn) -> Breaker {
        Breaker {
            core: Mutex::new(BreakerCore::new(p)),
            word: AtomicU64::new(State::Closed as u64),
            open_until: AtomicU64::new(u64::MAX),
            in_flight: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            connections: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            trips: true,
            max_concurrent,
            max_pending,
            max_connections: u32::MAX,
            failure_on,
            stats: BreakerStats::default(),
        }
    }

    /// Concurrency limits without a breaker: it never opens, and outcomes
    /// are not counted (what a cluster without a `breaker` section gets,
    /// with Envoy's defaults).
    pub fn limits_only(max_concurrent: u32, max_pending: u32, max_connections: u32) -> Breaker {
        let off = Params {
            consecutive_failures: 0,
            error_rate: 2.0,
            min_requests: 0,
            window_ns: 1,
            open_for_ns: 1,
            half_open_probes: 1,
        };
        Breaker {
            trips: false,
            ..Breaker::new(off, max_concurrent, max_pending, FailureOn::default())
        }
        .with_max_connections(max_connections)
    }

    /// Whether outcomes can open it (false for [`Breaker::limits_only`]).
    pub fn trips(&self) -> bool {
        self.trips
    }

    /// The state as workers see it.
    pub fn state(&self) -> State {
        State::from_code(self.word.load(Ordering::Acquire) & 0xff)
    }

    /// The same breaker with a cap on the upstream connections open to the
    /// cluster (pooled ones included).
    pub fn with_max_connections(self, max: u32) -> Breaker {
        Breaker {
            max_connections: max,
            ..self
        }
    }

    /// Upstream connections open to the cluster, node-wide.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts a new upstream connection to the cluster (it stays counted
    /// until the slot is dropped), or None over `max_connections` (the
    /// caller counts a request refused for it in
    /// [`BreakerStats::overflow_connections`]).
    pub fn open_connection(self: &Arc<Self>) -> Option<ConnSlot> {
        if self.connections.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnSlot(self.clone()))
    }

    /// Whether a new connection would be under `max_connections` now
    /// (another worker may take the place first).
    pub fn has_room(&self) -> bool {
        self.connections.load(Ordering::Relaxed) < self.max_connections
    }

    /// Requests queued for a connection slot, node-wide.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A request starts waiting for a connection slot: counted (here and
    /// in [`slot_waiters`]) until the guard is dropped, so workers holding
    /// idle pooled connections to the cluster give them up.
    pub fn queue(self: &Arc<Self>) -> SlotWait {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        SLOT_WAITERS.fetch_add(1, Ordering::AcqRel);
        SlotWait(self.clone())
    }

    /// Requests in flight and waiting for a connection.
    pub fn load(&self) -> (u32, u32) {
        (
            self.in_flight.load(Ordering::Relaxed),
            self.pending.load(Ordering::Relaxed),
        )
    }

    fn with_core<T>(&self, f: impl FnOnce(&mut BreakerCore) -> T) -> T {
        // A panic while holding it cannot leave the core inconsistent
        // (every method completes its update before returning), so a
        // poisoned lock is used as is.
        let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut core);
        self.word.store(
            u64::from(core.epoch()) << 8 | core.state() as u64,
            Ordering::Release,
        );
        self.open_until.store(core.open_until(), Ordering::Release);
        out
    }

    fn note(&self, t: Option<Transition>) -> Option<Transition> {
        if let Some(t) = t {
            self.stats.transitions[t.to as usize].fetch_add(1, Ordering::Relaxed);
        }
        t
    }

    /// A shared hint from another node (see [`BreakerCore::hint`]); the
    /// state change, if any, for the ring. Breakers that do not trip
    /// ignore hints.
    pub fn hint(&self) -> Option<Transition> {
        if !self.trips {
            return None;
        }
        let t = self.with_core(BreakerCore::hint);
        self.note(t)
    }

    /// Admits a request at `now` (it is in flight until the [`Pass`] is
    /// dropped), or says why not. Either way, a state change the check
    /// caused is returned for the ring.
    pub fn admit(self: &Arc<Self>, now: u64) -> (Result<Pass, Refusal>, Option<Transition>) {
        let word = self.word.load(Ordering::Acquire);
        let (ticket, moved) = match State::from_code(word & 0xff) {
            State::Closed => (Some(BreakerCore::closed_ticket((word >> 8) as u32)), None),
            State::Open if now < self.open_until.load(Ordering::Acquire) => (None, None),
            _ => self.with_core(|c| c.admit(now)),
        };
        let moved = self.note(moved);
        let Some(ticket) = ticket else {
            self.stats.rejected_open.fetch_add(1, Ordering::Relaxed);
            return (Err(Refusal::Open), moved);
        };
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max_concurrent {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            if ticket.probe {
                self.with_core(|c| c.abandon(ticket));
            }
            self.stats
                .overflow_concurrent
                .fetch_add(1, Ordering::Relaxed);
            return (Err(Refusal::Concurrent), moved);
        }
        let pass = Pass {
            breaker: self.clone(),
            ticket,
            pending: false,
            decided: false,
        };
        (Ok(pass), moved)
    }
}

/// Requests queued for a connection slot in the whole process, all
/// clusters: a hint that lets a worker skip looking for idle pooled
/// connections to give up while nobody waits (one load per loop turn).
static SLOT_WAITERS: AtomicU32 = AtomicU32::new(0);

/// Requests queued for a connection slot in this process (a hint: any
/// cluster, any agent in the process).
pub fn slot_waiters() -> u32 {
    SLOT_WAITERS.load(Ordering::Relaxed)
}

/// A request queued for a connection slot of its cluster, until dropped.
#[derive(Debug)]
pub struct SlotWait(Arc<Breaker>);

impl SlotWait {
    /// The cluster's limits it waits on.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.0
    }
}

impl Drop for SlotWait {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        SLOT_WAITERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One upstream connection counted against its cluster's
/// `max_connections`, until dropped (with the connection).
#[derive(Debug)]
pub struct ConnSlot(Arc<Breaker>);

impl ConnSlot {
    /// The cluster's limits it counts against.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.0
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One admitted request: in flight until dropped. Its outcome goes back
/// through [`Pass::finish`]; dropped without one (the client left), a
/// probe slot is freed and nothing is counted.
#[derive(Debug)]
pub struct Pass {
    breaker: Arc<Breaker>,
    ticket: Ticket,
    pending: bool,
    decided: bool,
}

impl Pass {
    /// The request starts waiting for an upstream connection: counted
    /// against `max_pending`, or refused over it.
    pub fn wait_for_connection(&mut self) -> Result<(), Refusal> {
        if self.pending {
            return Ok(());
        }
        let b = &self.breaker;
        if b.pending.fetch_add(1, Ordering::AcqRel) >= b.max_pending {
            b.pending.fetch_sub(1, Ordering::AcqRel);
            b.stats.overflow_pending.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Pending);
        }
        self.pending = true;
        Ok(())
    }

    /// The request has its connection (no longer pending).
    pub fn connected(&mut self) {
        if std::mem::take(&mut self.pending) {
            self.breaker.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The request ended at `now` with this status and reason: its outcome
    /// by the cluster's failure list goes to the breaker (an ending that
    /// says nothing about the upstream counts as none). The state change
    /// it caused, if any.
    pub fn end(self, now: u64, status: u16, reason: Reason, rand: u64) -> Option<Transition> {
        if !self.breaker.trips {
            return None;
        }
        let outcome = self.breaker.failure_on.classify(status, reason)?;
        self.finish(now, outcome, rand)
    }

    /// The request ended with `outcome` at `now`; the state change it
    /// caused, if any.
    pub fn finish(mut self, now: u64, outcome: Outcome, rand: u64) -> Option<Transition> {
        self.decided = true;
        if !self.breaker.trips {
            return None;
        }
        let t = self.ticket;
        let moved = self.breaker.with_core(|c| c.record(now, t, outcome, rand));
        self.breaker.note(moved)
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.connected();
        self.breaker.in_flight.fetch_sub(1, Ordering::AcqRel);
        if !self.decided && self.ticket.probe {
            let t = self.ticket;
            self.breaker.with_core(|c| c.abandon(t));
        }
    }
}

#[cfg(test)]
mod tests;
