//! The session's side of the resilience policies: a route's rate limit
//! (429 with `Retry-After`, or a delay spent in the queue phase), a
//! cluster's breaker and concurrency limits (a fast 503), the release of a
//! delayed request, and each request's outcome back to its breaker.

use ringlog::Reason;
use ringlog::record::{Event, EventKind, Flags};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::attempt::Attempt;
use super::start::{connect_to, dispatch};
use super::{Exchange, Session};
use crate::policy::RateLimiter;
use crate::policy::breaker::{Breaker, Refusal, SlotWait, Transition};
use crate::policy::ratelimit::Decision;
use crate::policy::retry::{MAX_WAIT_NS, RetryPolicy};
use crate::proxy::{Chunk, Cx, Out, UpOp};
use crate::snapshot::{ClusterRt, Pick, RequestView, Target};

/// A request the rate limit delayed: what it sends once released.
#[derive(Debug)]
pub(super) struct Deferred {
    /// When it is released (CLOCK_MONOTONIC ns).
    pub until: u64,
    /// Its rewritten head.
    pub head: Vec<u8>,
    /// Where it goes.
    pub target: Target,
    /// Why it waits.
    pub hold: Hold,
}

/// Why a request is held back before its connect.
#[derive(Debug)]
pub(super) enum Hold {
    /// A smoothing rate limit's delay: released at `until`, the wait
    /// counted as queueing.
    RateLimit,
    /// A retry's backoff: released at `until`, counted in the connect
    /// phase.
    Backoff,
    /// Queued for a connection slot (its cluster is at `max_connections`
    /// and the worker's pool has no idle connection for it): released
    /// when the driver finds one free, answered 503 `overflow` at `until`
    /// (the connect timeout). Counted in the connect phase.
    Slot(SlotWait),
}

/// What the policies hold for one exchange.
#[derive(Debug, Default)]
pub(super) struct Policed {
    /// Held back by a smoothing rate limit, or waiting for its retry.
    pub deferred: Option<Deferred>,
    /// The cluster retries it (an idempotent request without a body).
    pub retry: Option<RetryState>,
}

/// A retryable request's progress.
#[derive(Debug)]
pub(super) struct RetryState {
    policy: Arc<RetryPolicy>,
    /// The first attempt's pick (retries rotate through its arm).
    pick: Pick,
    /// Retries sent so far.
    done: u32,
    /// The current attempt's deadline for the response head (u64::MAX:
    /// no per-try timeout).
    attempt_deadline: u64,
    /// When the current attempt started (its connect).
    attempt_start: u64,
}

impl RetryState {
    /// Retries of a request first sent per `pick` under `policy`.
    pub fn new(policy: Arc<RetryPolicy>, pick: Pick) -> RetryState {
        RetryState {
            policy,
            pick,
            done: 0,
            attempt_deadline: u64::MAX,
            attempt_start: 0,
        }
    }
}

impl Exchange {
    /// The policy state, created on first use.
    pub(super) fn policed(&mut self) -> &mut Policed {
        self.policy.get_or_insert_with(Box::default)
    }

    /// The delay a smoothing limit holds it for, if any.
    pub(super) fn deferred(&self) -> Option<&Deferred> {
        self.policy.as_ref()?.deferred.as_ref()
    }

    /// The current attempt's per-try deadline (u64::MAX: none).
    pub(super) fn attempt_deadline(&self) -> u64 {
        self.policy
            .as_ref()
            .and_then(|p| p.retry.as_ref())
            .map_or(u64::MAX, |r| r.attempt_deadline)
    }

    /// An attempt starts now: its per-try timer starts.
    pub(super) fn begin_attempt(&mut self, now: u64) {
        if let Some(r) = self.policy.as_mut().and_then(|p| p.retry.as_mut()) {
            r.attempt_start = now;
            if let Some(t) = r.policy.per_try_ns {
                r.attempt_deadline = now.saturating_add(t);
            }
        }
    }
}

/// The value of `Retry-After` in a raw response head, as a wait in ns
/// (delay-seconds only; an HTTP date is not honoured).
pub(super) fn retry_after(head: &[u8]) -> Option<u64> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = line.split_at(colon);
        if !name.eq_ignore_ascii_case(b"retry-after") {
            return None;
        }
        let v = std::str::from_utf8(&value[1..]).ok()?.trim();
        v.parse::<u64>()
            .ok()
            .map(|s| s.saturating_mul(1_000_000_000))
    })
}

/// Sets up the next attempt of `ex` after its current one ended with this
/// status and reason, if the cluster retries it: the failed upstream is
/// let go, and the request goes out again after the backoff (or the
/// upstream's `Retry-After`, honoured up to [`MAX_WAIT_NS`]) to the next
/// endpoint of its arm. Never once a response byte went downstream, never
/// past the attempts or the budget. True if it was.
pub(super) fn retry_exchange(
    ex: &mut Exchange,
    cx: &Cx<'_>,
    status: u16,
    reason: Reason,
    hint: Option<u64>,
    out: &mut Out,
) -> bool {
    let now = cx.now;
    if ex.down_started || ex.tunnel {
        return false;
    }
    let Some(head) = ex.replay.clone() else {
        return false;
    };
    let hash = ex.hash;
    let Some(st) = ex.policy.as_mut().and_then(|p| p.retry.as_mut()) else {
        return false;
    };
    if st.done >= st.policy.attempts || !st.policy.retries_on(status, reason) {
        return false;
    }
    let wait = match hint {
        Some(w) if w > MAX_WAIT_NS => return false,
        Some(w) => w,
        None => st.policy.backoff(st.done + 1, hash ^ now),
    };
    let next = cx.snap.retry_pick(st.pick, st.done as usize + 1, now);
    let Some((next, target)) = next.and_then(|p| Some((p, cx.snap.target(p)?))) else {
        return false;
    };
    if !st.policy.take_budget(now) {
        return false;
    }
    st.done += 1;
    // The failed attempt teaches its endpoint's stats; the next one is in
    // flight on its own endpoint from now.
    if let Some(a) = ex.attempt.take()
        && let Some(ev) = a.end(now, 0, status, reason, false)
    {
        out.events.push(ev);
    }
    if let Some(c) = cx.snap.clusters.get(next.cluster) {
        let ids = (target.cluster, target.endpoint);
        ex.attempt = Some(Attempt::begin(&c.live, next.endpoint, ids, now));
    }
    let Some(st) = ex.policy.as_mut().and_then(|p| p.retry.as_mut()) else {
        return false;
    };
    // The failed attempt on the timeline: the record only has room for
    // the phases of the attempt that answers.
    let mut ev = Event::new(EventKind::Retry, now);
    ev.route = ex.record.route;
    ev.cluster = ex.record.cluster;
    ev.endpoint = ex.record.endpoint;
    ev.a = now.saturating_sub(st.attempt_start);
    ev.b = u64::from(st.done);
    ev.c = u64::from(status) << 8 | u64::from(reason.code());
    out.events.push(ev);
    out.release(false);
    ex.up_ready = false;
    ex.up_eof = false;
    ex.up_close = false;
    ex.reused = false;
    ex.resp = super::Resp::Head;
    // The failed attempts and the wait are the connect phase of the one
    // that answers.
    ex.marks.upstream = 0;
    ex.marks.first_byte = 0;
    ex.record.status = 0;
    ex.record.flags.0 &= !(Flags::RESET | Flags::TIMEOUT | Flags::ERROR);
    ex.record.retries = ex.record.retries.saturating_add(1);
    ex.connect_deadline = u64::MAX;
    ex.policed().deferred = Some(Deferred {
        until: now.saturating_add(wait),
        head,
        target,
        hold: Hold::Backoff,
    });
    true
}

/// The ring event of a breaker's state change.
fn transition_event(cluster: u16, t: Transition, now: u64) -> Event {
    t.event(cluster, now)
}

impl Session {
    /// Applies a route's rate limit to `ex`: the request and the delay it
    /// must wait (0: none), or None when it was answered 429.
    pub(super) fn rate_limit(
        &mut self,
        mut ex: Exchange,
        limit: &RateLimiter,
        view: &RequestView<'_>,
        now: u64,
        out: &mut Out,
    ) -> Option<(Exchange, u64)> {
        match limit.check(view, self.client, now) {
            Decision::Allow => Some((ex, 0)),
            Decision::Delay(ns) => {
                ex.record.flags.0 |= Flags::RATE_LIMITED;
                Some((ex, ns))
            }
            Decision::Reject { retry_after_ns } => {
                ex.record.flags.0 |= Flags::RATE_LIMITED;
                let secs = retry_after_ns.div_ceil(1_000_000_000).max(1);
                let extra = format!("retry-after: {secs}\r\n");
                let msg = "rate limit exceeded";
                self.local_with(ex, now, 429, Reason::RateLimited, msg, &extra, out);
                None
            }
        }
    }

    /// Admits `ex` to its cluster's breaker and concurrency limits. None
    /// when it was refused (answered 503 for HTTP, closed for L4).
    pub(super) fn admit(
        &mut self,
        mut ex: Exchange,
        cluster: &ClusterRt,
        now: u64,
        out: &mut Out,
    ) -> Option<Exchange> {
        let b = &cluster.breaker;
        let (got, moved) = b.admit(now);
        if let Some(t) = moved {
            out.events.push(transition_event(cluster.id, t, now));
        }
        let refusal = match got {
            Ok(mut pass) => match pass.wait_for_connection() {
                Ok(()) => {
                    ex.pass = Some(pass);
                    return Some(ex);
                }
                Err(r) => r,
            },
            Err(r) => r,
        };
        ex.record.cluster = cluster.id;
        ex.record.flags.0 |= Flags::BREAKER_OPEN;
        let (reason, msg) = match refusal {
            Refusal::Open => (Reason::BreakerOpen, "the cluster's circuit breaker is open"),
            Refusal::Concurrent => (
                Reason::Overflow,
                "too many requests in flight to the cluster",
            ),
            Refusal::Pending => (
                Reason::Overflow,
                "too many requests waiting for a connection",
            ),
        };
        self.refuse(ex, now, reason, msg, out);
        None
    }

    /// The request's outcome goes to its cluster's breaker (at its end).
    pub(super) fn settle(ex: &mut Exchange, now: u64, out: &mut Out) {
        let (status, reason) = (ex.record.status, ex.record.reason);
        if let Some(pass) = ex.pass.take()
            && let Some(t) = pass.end(now, status, reason, ex.hash)
        {
            out.events.push(transition_event(ex.record.cluster, t, now));
        }
        if let Some(a) = ex.attempt.take()
            && let Some(ev) = a.end(now, ex.marks.first_byte, status, reason, ex.tunnel)
        {
            out.events.push(ev);
        }
    }

    /// Releases a delayed request whose time has come: its head goes out,
    /// its connection is asked for, and body bytes held meanwhile follow.
    /// A request queued for a connection slot is answered 503 instead.
    /// True if one was released or answered.
    pub(super) fn release_deferred(&mut self, cx: &mut Cx<'_>, out: &mut Out) -> bool {
        let now = cx.now;
        let Some(ex) = &mut self.ex else {
            return false;
        };
        let Some(d) = ex
            .policy
            .as_mut()
            .and_then(|p| p.deferred.take_if(|d| now >= d.until))
        else {
            return false;
        };
        if let Hold::Slot(wait) = &d.hold {
            wait.breaker()
                .stats
                .overflow_connections
                .fetch_add(1, Ordering::Relaxed);
            ex.record.flags.0 |= Flags::BREAKER_OPEN | Flags::TIMEOUT;
            let msg = "no upstream connection to the cluster came free in time";
            if let Some(ex) = self.ex.take() {
                self.refuse(ex, now, Reason::Overflow, msg, out);
            }
            return true;
        }
        self.release(cx, d, out);
        true
    }

    /// The request queued for a connection slot may find one now: it is
    /// released (the driver found the cluster under `max_connections`, or
    /// an idle connection in its pool). False if it was not waiting.
    pub fn on_slot_free(&mut self, cx: &mut Cx<'_>, out: &mut Out) -> bool {
        let Some(d) = self
            .ex
            .as_mut()
            .and_then(|ex| ex.policy.as_mut())
            .and_then(|p| p.deferred.take_if(|d| matches!(d.hold, Hold::Slot(_))))
        else {
            return false;
        };
        self.release(cx, d, out);
        true
    }

    /// What a request queued for a connection slot waits on: its
    /// destination and cluster limits.
    pub fn awaited_slot(&self) -> Option<(std::net::SocketAddr, &Arc<Breaker>)> {
        let d = self.ex.as_ref()?.deferred()?;
        match &d.hold {
            Hold::Slot(w) => Some((d.target.addr, w.breaker())),
            _ => None,
        }
    }

    /// Sends a held request: head, connect, then the body bytes held.
    fn release(&mut self, cx: &mut Cx<'_>, d: Deferred, out: &mut Out) {
        let now = cx.now;
        let Some(ex) = &mut self.ex else {
            return;
        };
        ex.active = now;
        ex.body_active = now;
        if matches!(d.hold, Hold::RateLimit) {
            // Its connection may have to wait for a slot now.
            ex.marks.head = now;
            dispatch(ex, cx, d.head, d.target, out);
        } else {
            ex.uncommitted = Some((out.to_up.len(), out.up.len()));
            if !d.head.is_empty() {
                out.to_up.push(Chunk::Owned(d.head));
            }
            connect_to(ex, d.target, now, out);
            ex.begin_attempt(now);
        }
        self.process_held(cx, out);
        self.commit();
    }

    /// Holds `ex` until a connection slot of its cluster frees (`b` is at
    /// its `max_connections` and no idle pooled connection serves it), at
    /// most its connect timeout; the driver is asked to wake it. The
    /// request stays counted against `max_pending` meanwhile.
    pub(super) fn await_slot(
        ex: &mut Exchange,
        b: &Arc<Breaker>,
        head: Vec<u8>,
        target: Target,
        now: u64,
        out: &mut Out,
    ) {
        let until = now.saturating_add(target.connect_timeout_ns);
        ex.policed().deferred = Some(Deferred {
            until,
            head,
            target,
            hold: Hold::Slot(b.queue()),
        });
        out.up.push(UpOp::AwaitSlot);
    }

    /// Answers a request the concurrency limits refused: 503 for HTTP, a
    /// closed connection for L4.
    fn refuse(&mut self, mut ex: Exchange, now: u64, reason: Reason, msg: &str, out: &mut Out) {
        if ex.tunnel {
            ex.record.reason = reason;
            ex.record.flags.0 |= Flags::ERROR;
            ex.close_after = true;
            self.finish(ex, now, out);
        } else {
            self.local(ex, now, 503, reason, msg, out);
        }
    }
}
