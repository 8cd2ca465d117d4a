//! The session's side of the resilience policies: a route's rate limit
//! (429 with `Retry-After`, or a delay spent in the queue phase), a
//! cluster's breaker and concurrency limits (a fast 503), the release of a
//! delayed request, and each request's outcome back to its breaker.

use ringlog::Reason;
use ringlog::record::{Event, EventKind, Flags};

use super::{Exchange, Session, connect_to};
use crate::policy::RateLimiter;
use crate::policy::breaker::{Pass, Refusal, Transition};
use crate::policy::ratelimit::Decision;
use crate::proxy::{Chunk, Cx, Out};
use crate::snapshot::{ClusterRt, RequestView, Target};

/// A request the rate limit delayed: what it sends once released.
#[derive(Debug)]
pub(super) struct Deferred {
    /// When it is released (CLOCK_MONOTONIC ns).
    pub until: u64,
    /// Its rewritten head.
    pub head: Vec<u8>,
    /// Where it goes.
    pub target: Target,
}

/// What the policies hold for one exchange.
#[derive(Debug, Default)]
pub(super) struct Policed {
    /// Admitted by the cluster's breaker: in flight until dropped; its
    /// outcome is reported when the exchange finishes.
    pub pass: Option<Pass>,
    /// Held back by a smoothing rate limit until its time comes.
    pub deferred: Option<Deferred>,
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

    /// Its breaker admission, if any.
    pub(super) fn pass_mut(&mut self) -> Option<&mut Pass> {
        self.policy.as_mut()?.pass.as_mut()
    }
}

/// The ring event of a breaker's state change.
fn transition_event(cluster: u16, t: Transition, now: u64) -> Event {
    let mut ev = Event::new(EventKind::BreakerTransition, now);
    ev.cluster = cluster;
    ev.from = t.from as u8;
    ev.to = t.to as u8;
    ev.a = t.open_ns / 1_000_000;
    ev
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
        let Some(b) = &cluster.breaker else {
            return Some(ex);
        };
        let (got, moved) = b.admit(now);
        if let Some(t) = moved {
            out.events.push(transition_event(cluster.id, t, now));
        }
        let refusal = match got {
            Ok(mut pass) => match pass.wait_for_connection() {
                Ok(()) => {
                    ex.policed().pass = Some(pass);
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
        if ex.tunnel {
            ex.record.reason = reason;
            ex.record.flags.0 |= Flags::ERROR;
            ex.close_after = true;
            self.finish(ex, now, out);
        } else {
            self.local(ex, now, 503, reason, msg, out);
        }
        None
    }

    /// The request's outcome goes to its cluster's breaker (at its end).
    pub(super) fn settle(ex: &mut Exchange, now: u64, out: &mut Out) {
        if let Some(pass) = ex.policy.as_mut().and_then(|p| p.pass.take())
            && let Some(t) = pass.end(now, ex.record.status, ex.record.reason, ex.hash)
        {
            out.events.push(transition_event(ex.record.cluster, t, now));
        }
    }

    /// Releases a delayed request whose time has come: its head goes out,
    /// its connection is asked for, and body bytes held meanwhile follow.
    /// True if one was released.
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
        // The wait belongs to the queue phase.
        ex.marks.head = now;
        ex.active = now;
        ex.body_active = now;
        ex.uncommitted = Some((out.to_up.len(), out.up.len()));
        out.to_up.push(Chunk::Owned(d.head));
        connect_to(ex, d.target, now, out);
        self.process_held(cx, out);
        self.commit();
        true
    }
}
