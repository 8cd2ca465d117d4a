//! Resilience policies end to end, with the real agent and fault-injecting
//! `tailmesh-bench upstream`s (both drivers via ./test.sh): a rate limit's
//! 429s at its rate, a smoothing limit's spacing, a breaker that opens on
//! an erroring upstream, fails fast, probes and closes (its transitions on
//! the ring), a concurrency limit's fast 503s, and requests queued for a
//! connection slot (bounded by `max_pending`, timed out by the connect
//! timeout).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::*;

fn policy_config(port: u16, up: u16, ring: &std::path::Path, route: &str, cluster: &str) -> String {
    format!(
        r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http, default_route: r }}
clusters:
  - name: c
    endpoints: [ {{ addr: "127.0.0.1:{up}" }} ]
    {cluster}
routes:
  - {{ name: r, match: {{ path_prefix: / }}, to: [ {{ cluster: c }} ], {route} }}
sampling: {{ default: 1.0, keep_errors: true, max_records_per_sec: 0 }}
ring: {{ path: "{}", size: 8MiB }}
"#,
        ring.display()
    )
}

/// The agent in front of upstream port `up`, with `route` and `cluster`
/// policy fields (YAML, inline).
fn policy_agent(up: u16, route: &str, cluster: &str, extra: &[&str]) -> Agent {
    let (route, cluster) = (route.to_string(), cluster.to_string());
    Agent::start(
        move |port, ring| policy_config(port, up, ring, &route, &cluster),
        extra,
    )
}

/// `n` keep-alive clients send requests back to back for `secs`; the
/// responses' (status, reason header) and the time it took.
fn hammer(port: u16, n: usize, secs: f64) -> (Vec<(u16, String)>, f64) {
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(secs);
    let got: Vec<(u16, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(move || {
                    let mut c = connect(port);
                    let mut carry = Vec::new();
                    let mut got = Vec::new();
                    while Instant::now() < until {
                        c.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                        let r = read_response(&mut c, &mut carry).unwrap();
                        if r.status == 429 {
                            assert!(r.header("retry-after").is_some(), "{}", r.head);
                        }
                        got.push((r.status, r.header("x-tailmesh-reason").unwrap_or_default()));
                    }
                    got
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    (got, t0.elapsed().as_secs_f64())
}

#[test]
fn a_rate_limit_answers_429_past_its_rate_node_wide() {
    let up = Upstream::start(&[]);
    let p = up.port;
    let agent = policy_agent(
        p,
        "rate_limit: { rps: 200, burst: 20 }",
        "",
        &["--workers", "2"],
    );
    let (got, secs) = hammer(agent.port, 4, 2.0);
    let ok = got.iter().filter(|(s, _)| *s == 200).count();
    let limited = got
        .iter()
        .filter(|(s, r)| *s == 429 && r == "rate_limited")
        .count();
    assert_eq!(ok + limited, got.len(), "only 200 and 429 expected");
    // Whatever worker each connection landed on, the route as a whole
    // gets its burst plus 200 per second.
    let want = 20.0 + 200.0 * secs;
    eprintln!("{ok} passed, {limited} limited in {secs:.2} s (want {want:.0} passed)");
    assert!(
        (ok as f64 - want).abs() <= want * 0.05,
        "{ok} passed in {secs:.2} s, want {want:.0} ± 5%"
    );
    assert!(limited > ok, "the clients asked for far more than the rate");
    let metric = agent.metric("tailmesh_rate_limited_total{route=\"r\"} ");
    assert_eq!(metric, limited as u64);
}

#[test]
fn a_smoothing_limit_releases_requests_spaced_at_its_rate() {
    let up = Upstream::start(&[]);
    let p = up.port;
    let agent = policy_agent(
        p,
        "rate_limit: { rps: 50, burst: 40, smooth: true, max_delay: 2s }",
        "",
        &[],
    );
    // 20 clients at once: one passes, 19 wait their turn 20 ms apart.
    let port = agent.port;
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20)
            .map(|_| s.spawn(move || request(port, "GET /s HTTP/1.1\r\nHost: t\r\n\r\n").status))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let recs = agent.records_at_least(20);
    // Release time: start plus the queue phase (where the wait is charged).
    let mut released: Vec<u64> = recs
        .iter()
        .filter(|r| r["kind"] == "record")
        .map(|r| r["start_mono_ns"].as_u64().unwrap() + r["phases_ns"]["queue"].as_u64().unwrap())
        .collect();
    assert_eq!(released.len(), 20);
    released.sort_unstable();
    let delayed = recs
        .iter()
        .filter(|r| {
            r["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "rate_limited"))
        })
        .count();
    let mean_gap = (released[19] - released[0]) as f64 / 19.0 / 1e6;
    eprintln!("mean release gap {mean_gap:.3} ms (1/rps = 20 ms); {delayed} delayed");
    assert!((mean_gap - 20.0).abs() <= 1.0, "mean gap {mean_gap:.3} ms");
    assert!(delayed >= 18, "{delayed} records flagged as delayed");
    assert!(agent.metric("tailmesh_rate_limit_delayed_total{route=\"r\"} ") >= 18);
}

#[test]
fn a_breaker_opens_on_errors_fails_fast_probes_and_closes() {
    let up = Upstream::start(&[]);
    let p = up.port;
    let agent = policy_agent(
        p,
        "",
        "breaker: { consecutive_failures: 5, open_for: 1s, half_open_probes: 2 }",
        &[],
    );
    let port = agent.port;
    faults(up.port, r#"{"error_fraction":1.0,"error_status":503}"#);
    let mut c = connect(port);
    let mut carry = Vec::new();
    let mut send = |c: &mut std::net::TcpStream| {
        c.write_all(b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = read_response(c, &mut carry).unwrap();
        (r.status, r.header("x-tailmesh-reason").unwrap_or_default())
    };
    for _ in 0..5 {
        assert_eq!(send(&mut c), (503, String::new()), "the upstream's own 503");
    }
    // (Reading the stats may count as a request itself: measure that.)
    let s0 = up.served();
    let s1 = up.served();
    for _ in 0..100 {
        assert_eq!(send(&mut c), (503, "breaker_open".to_string()));
    }
    assert_eq!(
        up.served() - s1,
        s1 - s0,
        "an open breaker sends nothing upstream"
    );
    assert_eq!(agent.metric("tailmesh_breaker_state{cluster=\"c\"} "), 1);
    // Recovery: after open_for, two probes succeed and it closes.
    faults(up.port, r#"{"error_fraction":0.0}"#);
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..5 {
        assert_eq!(send(&mut c).0, 200);
    }
    assert_eq!(agent.metric("tailmesh_breaker_state{cluster=\"c\"} "), 0);
    let recs = agent.records_at_least(110);
    // Fast failure, measured inside the agent (first byte to flush).
    let mut fast: Vec<u64> = recs
        .iter()
        .filter(|r| r["reason"] == "breaker_open")
        .map(|r| r["total_ns"].as_u64().unwrap())
        .collect();
    fast.sort_unstable();
    assert_eq!(fast.len(), 100);
    let p99 = fast[98];
    eprintln!(
        "rejected while open: p99 {:.3} ms inside the agent",
        p99 as f64 / 1e6
    );
    assert!(p99 < 1_000_000, "p99 of breaker_open answers {p99} ns");
    // The transitions are on the ring's timeline, in order.
    let moves: Vec<(String, String)> = recs
        .iter()
        .filter(|r| r["kind"] == "event" && r["event"] == "breaker_transition")
        .map(|r| (r["from"].to_string(), r["to"].to_string()))
        .collect();
    assert_eq!(moves.len(), 3, "{moves:?}");
}

#[test]
fn a_concurrency_limit_answers_503_overflow_at_once() {
    let up = Upstream::start(&[]);
    let p = up.port;
    let agent = policy_agent(p, "", "breaker: { max_concurrent: 2 }", &[]);
    faults(up.port, r#"{"latency":"400ms"}"#);
    let port = agent.port;
    let got: Vec<(u16, String, Duration)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|i| {
                s.spawn(move || {
                    // The first two are in flight before the rest arrive.
                    std::thread::sleep(Duration::from_millis(if i < 2 { 0 } else { 150 }));
                    let t = Instant::now();
                    let r = request(port, "GET /c HTTP/1.1\r\nHost: t\r\n\r\n");
                    (
                        r.status,
                        r.header("x-tailmesh-reason").unwrap_or_default(),
                        t.elapsed(),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = got.iter().filter(|g| g.0 == 200).count();
    let overflow: Vec<_> = got
        .iter()
        .filter(|g| g.0 == 503 && g.1 == "overflow")
        .collect();
    assert_eq!((ok, overflow.len()), (2, 4), "{got:?}");
    assert!(
        overflow.iter().all(|g| g.2 < Duration::from_millis(200)),
        "{got:?}"
    );
    let m = "tailmesh_breaker_rejected_total{cluster=\"c\",reason=\"overflow\",limit=\"max_concurrent\"} ";
    assert_eq!(agent.metric(m), 4);
    assert_eq!(
        agent.metric("tailmesh_cluster_requests_in_flight{cluster=\"c\"} "),
        0
    );
}

/// Cluster `c` over two endpoints, with `cluster` fields (YAML lines).
fn two_endpoint_config(
    port: u16,
    ups: (u16, u16),
    ring: &std::path::Path,
    cluster: &str,
) -> String {
    format!(
        r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http, default_route: r }}
clusters:
  - name: c
    endpoints: [ {{ addr: "127.0.0.1:{}" }}, {{ addr: "127.0.0.1:{}" }} ]
    {cluster}
routes:
  - {{ name: r, match: {{ path_prefix: / }}, to: [ {{ cluster: c }} ] }}
sampling: {{ default: 1.0, keep_errors: true, max_records_per_sec: 0 }}
ring: {{ path: "{}", size: 8MiB }}
"#,
        ups.0,
        ups.1,
        ring.display()
    )
}

#[test]
fn a_retried_request_lands_on_another_endpoint_and_succeeds() {
    let (bad, good) = (Upstream::start(&[]), Upstream::start(&[]));
    let ports = (bad.port, good.port);
    faults(bad.port, r#"{"error_fraction":1.0,"error_status":503}"#);
    let agent = Agent::start(
        move |port, ring| {
            two_endpoint_config(
                port,
                ports,
                ring,
                r#"retry: { attempts: 1, on: ["503"], backoff: 1ms }"#,
            )
        },
        &[],
    );
    let mut c = connect(agent.port);
    let mut carry = Vec::new();
    for _ in 0..20 {
        c.write_all(b"GET /r HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = read_response(&mut c, &mut carry).unwrap();
        assert_eq!(r.status, 200, "{}", r.head);
    }
    let recs = agent.records_at_least(20);
    let recs: Vec<_> = recs.iter().filter(|r| r["kind"] == "record").collect();
    let good_ep = format!("127.0.0.1:{}", good.port);
    assert!(
        recs.iter().all(|r| r["endpoint"] == good_ep.as_str()),
        "every answer came from the healthy endpoint"
    );
    let retried = recs.iter().filter(|r| r["retries"] == 1).count();
    // Round robin sent about half the first attempts to the failing one.
    assert!((5..=15).contains(&retried), "{retried} of 20 retried");
    assert_eq!(
        agent.metric("tailmesh_retries_total{cluster=\"c\"} "),
        retried as u64
    );
}

#[test]
fn a_retry_storm_against_a_failing_upstream_is_capped_by_the_budget() {
    let (a, b) = (Upstream::start(&[]), Upstream::start(&[]));
    for u in [&a, &b] {
        faults(u.port, r#"{"error_fraction":1.0,"error_status":503}"#);
    }
    let ports = (a.port, b.port);
    let agent = Agent::start(
        move |port, ring| {
            two_endpoint_config(
                port,
                ports,
                ring,
                r#"retry: { attempts: 3, on: ["503"], backoff: 1ms, budget_percent: 20, min_retries_per_sec: 1 }"#,
            )
        },
        &["--workers", "2"],
    );
    let (got, secs) = hammer(agent.port, 4, 2.0);
    assert!(got.iter().all(|(s, _)| *s == 503));
    let requests = got.len() as f64;
    let retries = agent.metric("tailmesh_retries_total{cluster=\"c\"} ") as f64;
    let refused = agent.metric("tailmesh_retry_budget_exhausted_total{cluster=\"c\"} ");
    eprintln!(
        "{requests} requests in {secs:.1} s, {retries} retries, {refused} refused by the budget"
    );
    // 20% of the requests plus the floor (1/s over the 10 s window), and
    // one check per worker may race past the limit.
    assert!(
        retries <= requests * 0.2 + 10.0 + 2.0,
        "{retries} retries for {requests} requests"
    );
    assert!(refused > 0, "a storm asks for more than the budget");
    assert!(retries >= requests * 0.1, "the budget is used: {retries}");
}

/// `n` requests to `port`, the first at once and the rest `stagger`
/// later (so the first holds the connection): (status, reason, time).
fn burst(port: u16, n: usize, stagger: Duration) -> Vec<(u16, String, Duration)> {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                s.spawn(move || {
                    if i > 0 {
                        std::thread::sleep(stagger);
                    }
                    let t = Instant::now();
                    let r = request(port, "GET /m HTTP/1.1\r\nHost: t\r\n\r\n");
                    let reason = r.header("x-tailmesh-reason").unwrap_or_default();
                    (r.status, reason, t.elapsed())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn requests_at_max_connections_queue_for_a_slot_bounded_by_max_pending() {
    let up = Upstream::start(&[]);
    let cluster = "breaker: { max_connections: 1, max_pending: 3 }\n    timeouts: { connect: 5s }";
    let agent = policy_agent(up.port, "", cluster, &[]);
    faults(up.port, r#"{"latency":"200ms"}"#);
    let got = burst(agent.port, 5, Duration::from_millis(60));
    let ok: Vec<_> = got.iter().filter(|g| g.0 == 200).collect();
    let overflow = got
        .iter()
        .filter(|g| g.0 == 503 && g.1 == "overflow")
        .count();
    // One holds the connection, three wait for it (max_pending), one is
    // refused at once.
    assert_eq!((ok.len(), overflow), (4, 1), "{got:?}");
    // The queued ones were served one after another on the one connection:
    // the last waited for three before it.
    let slowest = ok.iter().map(|g| g.2).max().unwrap();
    assert!(slowest >= Duration::from_millis(650), "{got:?}");
    let pending =
        "tailmesh_breaker_rejected_total{cluster=\"c\",reason=\"overflow\",limit=\"max_pending\"} ";
    assert_eq!(agent.metric(pending), 1);
    let conns = "tailmesh_breaker_rejected_total{cluster=\"c\",reason=\"overflow\",limit=\"max_connections\"} ";
    assert_eq!(agent.metric(conns), 0);
    assert_eq!(
        agent.metric("tailmesh_cluster_requests_pending{cluster=\"c\"} "),
        0
    );
    // Never more than the one connection.
    assert_eq!(
        agent.metric("tailmesh_cluster_upstream_connections{cluster=\"c\"} "),
        1
    );
}

#[test]
fn a_request_waiting_for_a_slot_gets_503_overflow_after_the_connect_timeout() {
    let up = Upstream::start(&[]);
    let cluster = "breaker: { max_connections: 1 }\n    timeouts: { connect: 300ms }";
    let agent = policy_agent(up.port, "", cluster, &[]);
    faults(up.port, r#"{"latency":"1500ms"}"#);
    let got = burst(agent.port, 2, Duration::from_millis(100));
    assert_eq!((got[0].0, got[1].0), (200, 503), "{got:?}");
    assert_eq!(got[1].1, "overflow", "{got:?}");
    // It waited the connect timeout, not the first request's 1.5 s.
    let waited = got[1].2;
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_millis(1200),
        "{got:?}"
    );
    let m = "tailmesh_breaker_rejected_total{cluster=\"c\",reason=\"overflow\",limit=\"max_connections\"} ";
    assert_eq!(agent.metric(m), 1);
    // The one connection went back to the pool and still counts; the next
    // request reuses it.
    assert_eq!(
        agent.metric("tailmesh_cluster_upstream_connections{cluster=\"c\"} "),
        1
    );
    faults(up.port, r#"{"latency":"0ms"}"#);
    assert_eq!(
        request(agent.port, "GET /m HTTP/1.1\r\nHost: t\r\n\r\n").status,
        200
    );
    assert_eq!(agent.metric(m), 1);
}

#[test]
fn at_max_connections_an_idle_connection_to_another_endpoint_makes_room() {
    let (a, b) = (Upstream::start(&[]), Upstream::start(&[]));
    let ports = (a.port, b.port);
    let agent = Agent::start(
        move |port, ring| two_endpoint_config(port, ports, ring, "breaker: { max_connections: 1 }"),
        &[],
    );
    // Round robin alternates the endpoints; the one slot is held by an
    // idle pooled connection to the other endpoint each time.
    for i in 0..6 {
        let t = Instant::now();
        let r = request(agent.port, "GET /e HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 200, "request {i}: {}", r.head);
        // Another worker's idle connection is given up within its loop's
        // longest wait (100 ms).
        assert!(t.elapsed() < Duration::from_millis(900), "request {i}");
    }
    let m = "tailmesh_breaker_rejected_total{cluster=\"c\",reason=\"overflow\",limit=\"max_connections\"} ";
    assert_eq!(agent.metric(m), 0);
    assert!(agent.metric("tailmesh_cluster_upstream_connections{cluster=\"c\"} ") <= 1);
}
