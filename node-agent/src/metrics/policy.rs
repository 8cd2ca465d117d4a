//! `/metrics` families of the resilience policies, read from the shared
//! state the snapshot holds (node-wide already: no per-worker sum).

use std::sync::atomic::Ordering;

use super::Expo;
use crate::policy::breaker::State;
use crate::snapshot::Snapshot;

/// Appends the rate-limit and breaker families for `snap`'s routes that
/// have a limit and its clusters (breaker state only where a `breaker`
/// section makes one).
pub fn render(snap: &Snapshot, o: &mut Expo) {
    let limited: Vec<_> = snap
        .routes
        .iter()
        .filter_map(|r| Some((r.name.as_str(), r.limit.as_ref()?)))
        .collect();
    o.family(
        "rate_limited_total",
        "counter",
        "Requests a route's rate limit rejected (429).",
    );
    for (route, l) in &limited {
        let v = l.stats.rejected.load(Ordering::Relaxed);
        o.value(&[("route", route)], v as f64);
    }
    o.family(
        "rate_limit_delayed_total",
        "counter",
        "Requests a smoothing rate limit delayed, then sent.",
    );
    for (route, l) in &limited {
        let v = l.stats.delayed.load(Ordering::Relaxed);
        o.value(&[("route", route)], v as f64);
    }
    let breakers: Vec<_> = snap
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), &c.breaker))
        .collect();
    // A cluster without a breaker section has limits only: no state.
    let tripping: Vec<_> = breakers.iter().filter(|(_, b)| b.trips()).collect();
    o.family(
        "breaker_state",
        "gauge",
        "Circuit breaker state per cluster: 0 closed, 1 open, 2 half-open.",
    );
    for (c, b) in &tripping {
        o.value(&[("cluster", c)], (b.state() as u8) as f64);
    }
    o.family(
        "breaker_transitions_total",
        "counter",
        "Circuit breaker state changes, by the state entered.",
    );
    for (c, b) in &tripping {
        for s in [State::Open, State::HalfOpen, State::Closed] {
            let v = b.stats.transitions[s as usize].load(Ordering::Relaxed);
            let to = s.name();
            o.value(&[("cluster", c), ("to", to)], v as f64);
        }
    }
    o.family(
        "breaker_rejected_total",
        "counter",
        "Requests refused with a fast 503: breaker_open, or overflow of max_concurrent / max_pending / max_connections (a wait for a connection slot that timed out counts as max_connections).",
    );
    for (c, b) in &breakers {
        let s = &b.stats;
        for (reason, limit, v) in [
            ("breaker_open", "", &s.rejected_open),
            ("overflow", "max_concurrent", &s.overflow_concurrent),
            ("overflow", "max_pending", &s.overflow_pending),
            ("overflow", "max_connections", &s.overflow_connections),
        ] {
            let v = v.load(Ordering::Relaxed);
            o.value(
                &[("cluster", c), ("reason", reason), ("limit", limit)],
                v as f64,
            );
        }
    }
    o.family(
        "cluster_requests_in_flight",
        "gauge",
        "Requests in flight to a cluster (max_concurrent counts these).",
    );
    for (c, b) in &breakers {
        o.value(&[("cluster", c)], (b.load().0) as f64);
    }
    o.family(
        "cluster_upstream_connections",
        "gauge",
        "Upstream connections open to a cluster, pooled ones included (max_connections counts these).",
    );
    for (c, b) in &breakers {
        o.value(&[("cluster", c)], (b.connections()) as f64);
    }
    o.family(
        "cluster_requests_pending",
        "gauge",
        "Requests waiting for an upstream connection to a cluster (max_pending counts these).",
    );
    for (c, b) in &breakers {
        o.value(&[("cluster", c)], (b.load().1) as f64);
    }
    o.family(
        "outlier_ejections_total",
        "counter",
        "Endpoints ejected by the outlier detector (consecutive 5xx or gateway failures, success rate).",
    );
    for c in &snap.clusters {
        let v: u64 = c
            .live
            .endpoints
            .iter()
            .map(|e| e.ejected_total.load(Ordering::Relaxed))
            .sum();
        o.value(&[("cluster", c.name.as_str())], v as f64);
    }
    o.family(
        "outlier_ejected_endpoints",
        "gauge",
        "Endpoints currently ejected.",
    );
    for c in &snap.clusters {
        let v = c.live.ejected_count();
        o.value(&[("cluster", c.name.as_str())], v as f64);
    }
    let checked: Vec<_> = snap
        .clusters
        .iter()
        .filter(|c| c.live.health.is_some())
        .collect();
    o.family(
        "health_checks_total",
        "counter",
        "Active health checks done, by result (clusters with a health_check).",
    );
    for c in &checked {
        let (done, failed) = c.live.endpoints.iter().fold((0, 0), |(d, f), e| {
            (
                d + e.checks.load(Ordering::Relaxed),
                f + e.checks_failed.load(Ordering::Relaxed),
            )
        });
        let n = &c.name;
        let pass = done.saturating_sub(failed);
        o.value(&[("cluster", n.as_str()), ("result", "pass")], pass as f64);
        o.value(
            &[("cluster", n.as_str()), ("result", "fail")],
            failed as f64,
        );
    }
    o.family(
        "unhealthy_endpoints",
        "gauge",
        "Endpoints the active health checks hold out of rotation.",
    );
    for c in &checked {
        let down = c.live.endpoints.iter().filter(|e| !e.healthy()).count();
        o.value(&[("cluster", c.name.as_str())], down as f64);
    }
    o.family(
        "lb_panic_total",
        "counter",
        "Picks made with every endpoint of the route arm out of rotation (panic mode: spread over all).",
    );
    for c in &snap.clusters {
        let v = c.live.panics.load(Ordering::Relaxed);
        o.value(&[("cluster", c.name.as_str())], v as f64);
    }
    o.family(
        "mirror_skipped_total",
        "counter",
        "Requests a route's mirror did not copy because their body was over max_body.",
    );
    for r in &snap.routes {
        if let Some(m) = &r.mirror {
            let v = m.skipped.load(Ordering::Relaxed);
            o.value(&[("route", r.name.as_str())], v as f64);
        }
    }
    let retrying: Vec<_> = snap
        .clusters
        .iter()
        .filter_map(|c| Some((c.name.as_str(), c.retry.as_ref()?)))
        .collect();
    o.family(
        "retries_total",
        "counter",
        "Attempts after the first sent to a cluster with a retry policy.",
    );
    for (c, r) in &retrying {
        let v = r.stats.retries.load(Ordering::Relaxed);
        o.value(&[("cluster", c)], v as f64);
    }
    o.family(
        "retry_budget_exhausted_total",
        "counter",
        "Retries not sent because the cluster's retry budget was used up.",
    );
    for (c, r) in &retrying {
        let v = r.stats.budget_exhausted.load(Ordering::Relaxed);
        o.value(&[("cluster", c)], v as f64);
    }
}
