//! `/metrics` families of the resilience policies, read from the shared
//! state the snapshot holds (node-wide already: no per-worker sum).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::family;
use crate::policy::breaker::State;
use crate::snapshot::Snapshot;

/// Appends the rate-limit and breaker families for `snap`'s routes that
/// have a limit and its clusters (breaker state only where a `breaker`
/// section makes one).
pub fn render(snap: &Snapshot, o: &mut String) {
    let limited: Vec<_> = snap
        .routes
        .iter()
        .filter_map(|r| Some((r.name.as_str(), r.limit.as_ref()?)))
        .collect();
    family(
        o,
        "rate_limited_total",
        "counter",
        "Requests a route's rate limit rejected (429).",
    );
    for (route, l) in &limited {
        let v = l.stats.rejected.load(Ordering::Relaxed);
        let _ = writeln!(o, "tailmesh_rate_limited_total{{route=\"{route}\"}} {v}");
    }
    family(
        o,
        "rate_limit_delayed_total",
        "counter",
        "Requests a smoothing rate limit delayed, then sent.",
    );
    for (route, l) in &limited {
        let v = l.stats.delayed.load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "tailmesh_rate_limit_delayed_total{{route=\"{route}\"}} {v}"
        );
    }
    let breakers: Vec<_> = snap
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), &c.breaker))
        .collect();
    // A cluster without a breaker section has limits only: no state.
    let tripping: Vec<_> = breakers.iter().filter(|(_, b)| b.trips()).collect();
    family(
        o,
        "breaker_state",
        "gauge",
        "Circuit breaker state per cluster: 0 closed, 1 open, 2 half-open.",
    );
    for (c, b) in &tripping {
        let _ = writeln!(
            o,
            "tailmesh_breaker_state{{cluster=\"{c}\"}} {}",
            b.state() as u8
        );
    }
    family(
        o,
        "breaker_transitions_total",
        "counter",
        "Circuit breaker state changes, by the state entered.",
    );
    for (c, b) in &tripping {
        for s in [State::Open, State::HalfOpen, State::Closed] {
            let v = b.stats.transitions[s as usize].load(Ordering::Relaxed);
            let to = s.name();
            let _ = writeln!(
                o,
                "tailmesh_breaker_transitions_total{{cluster=\"{c}\",to=\"{to}\"}} {v}"
            );
        }
    }
    family(
        o,
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
            let _ = writeln!(
                o,
                "tailmesh_breaker_rejected_total{{cluster=\"{c}\",reason=\"{reason}\",limit=\"{limit}\"}} {v}"
            );
        }
    }
    family(
        o,
        "cluster_requests_in_flight",
        "gauge",
        "Requests in flight to a cluster (max_concurrent counts these).",
    );
    for (c, b) in &breakers {
        let _ = writeln!(
            o,
            "tailmesh_cluster_requests_in_flight{{cluster=\"{c}\"}} {}",
            b.load().0
        );
    }
    family(
        o,
        "cluster_upstream_connections",
        "gauge",
        "Upstream connections open to a cluster, pooled ones included (max_connections counts these).",
    );
    for (c, b) in &breakers {
        let _ = writeln!(
            o,
            "tailmesh_cluster_upstream_connections{{cluster=\"{c}\"}} {}",
            b.connections()
        );
    }
    family(
        o,
        "cluster_requests_pending",
        "gauge",
        "Requests waiting for an upstream connection to a cluster (max_pending counts these).",
    );
    for (c, b) in &breakers {
        let _ = writeln!(
            o,
            "tailmesh_cluster_requests_pending{{cluster=\"{c}\"}} {}",
            b.load().1
        );
    }
    family(
        o,
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
        let _ = writeln!(
            o,
            "tailmesh_outlier_ejections_total{{cluster=\"{}\"}} {v}",
            c.name
        );
    }
    family(
        o,
        "outlier_ejected_endpoints",
        "gauge",
        "Endpoints currently ejected.",
    );
    for c in &snap.clusters {
        let v = c.live.ejected_count();
        let _ = writeln!(
            o,
            "tailmesh_outlier_ejected_endpoints{{cluster=\"{}\"}} {v}",
            c.name
        );
    }
    let checked: Vec<_> = snap
        .clusters
        .iter()
        .filter(|c| c.live.health.is_some())
        .collect();
    family(
        o,
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
        let _ = writeln!(
            o,
            "tailmesh_health_checks_total{{cluster=\"{n}\",result=\"pass\"}} {pass}"
        );
        let _ = writeln!(
            o,
            "tailmesh_health_checks_total{{cluster=\"{n}\",result=\"fail\"}} {failed}"
        );
    }
    family(
        o,
        "unhealthy_endpoints",
        "gauge",
        "Endpoints the active health checks hold out of rotation.",
    );
    for c in &checked {
        let down = c.live.endpoints.iter().filter(|e| !e.healthy()).count();
        let _ = writeln!(
            o,
            "tailmesh_unhealthy_endpoints{{cluster=\"{}\"}} {down}",
            c.name
        );
    }
    family(
        o,
        "lb_panic_total",
        "counter",
        "Picks made with every endpoint of the route arm out of rotation (panic mode: spread over all).",
    );
    for c in &snap.clusters {
        let v = c.live.panics.load(Ordering::Relaxed);
        let _ = writeln!(o, "tailmesh_lb_panic_total{{cluster=\"{}\"}} {v}", c.name);
    }
    family(
        o,
        "mirror_skipped_total",
        "counter",
        "Requests a route's mirror did not copy because their body was over max_body.",
    );
    for r in &snap.routes {
        if let Some(m) = &r.mirror {
            let v = m.skipped.load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "tailmesh_mirror_skipped_total{{route=\"{}\"}} {v}",
                r.name
            );
        }
    }
    let retrying: Vec<_> = snap
        .clusters
        .iter()
        .filter_map(|c| Some((c.name.as_str(), c.retry.as_ref()?)))
        .collect();
    family(
        o,
        "retries_total",
        "counter",
        "Attempts after the first sent to a cluster with a retry policy.",
    );
    for (c, r) in &retrying {
        let v = r.stats.retries.load(Ordering::Relaxed);
        let _ = writeln!(o, "tailmesh_retries_total{{cluster=\"{c}\"}} {v}");
    }
    family(
        o,
        "retry_budget_exhausted_total",
        "counter",
        "Retries not sent because the cluster's retry budget was used up.",
    );
    for (c, r) in &retrying {
        let v = r.stats.budget_exhausted.load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "tailmesh_retry_budget_exhausted_total{{cluster=\"{c}\"}} {v}"
        );
    }
}
