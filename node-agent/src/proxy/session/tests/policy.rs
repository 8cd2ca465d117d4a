//! Session tests of the resilience policies: 429 with `Retry-After`, a
//! smoothed request held back (body included) and released on its timer,
//! and a breaker that opens on failures, fails fast, probes and closes.

use ringlog::record::EventKind;

use super::*;

const MS: u64 = 1_000_000;

fn cfg(route_extra: &str, cluster_extra: &str) -> String {
    format!(
        r#"
version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:18000", protocol: http, default_route: r }}
clusters:
  - name: c
    endpoints: [ {{ addr: "127.0.0.1:9" }} ]
    {cluster_extra}
routes:
  - {{ name: r, to: [ {{ cluster: c }} ], {route_extra} }}
"#
    )
}

/// One request answered 200 by the upstream.
fn ok_exchange(h: &mut H, path: &str) {
    h.down(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
}

#[test]
fn over_the_rate_gets_429_with_retry_after_and_a_flagged_record() {
    let yaml = cfg("rate_limit: { rps: 0.5, burst: 2 }", "");
    let mut h = H::with_cfg(Protocol::Http, &yaml);
    ok_exchange(&mut h, "/a");
    ok_exchange(&mut h, "/b");
    assert_eq!(h.connects, 2);
    let before = h.down.len();
    h.down(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = H::text(&h.down[before..]);
    assert!(
        reply.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{reply}"
    );
    assert!(
        reply.contains("x-tailmesh-reason: rate_limited\r\n"),
        "{reply}"
    );
    // One token per 2 s: the next one is 2 s away.
    assert!(reply.contains("retry-after: 2\r\n"), "{reply}");
    assert_eq!(h.connects, 2, "a rejected request never goes upstream");
    assert!(!h.closed, "a bodiless request keeps its connection");
    let r = h.records[2].record;
    assert_eq!((r.status, r.reason), (429, Reason::RateLimited));
    assert!(r.flags.has(Flags::RATE_LIMITED) && r.flags.has(Flags::ERROR));
    assert!(r.route > 0);
    let limit = h.snap.routes[0].limit.clone().unwrap();
    assert_eq!(
        limit
            .stats
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_smoothed_request_waits_in_the_queue_phase_with_its_body_held() {
    let yaml = cfg("rate_limit: { rps: 10, burst: 5, smooth: true }", "");
    let mut h = H::with_cfg(Protocol::Http, &yaml);
    ok_exchange(&mut h, "/a");
    let sent = h.up.len();
    // Right behind it: 100 ms early. Head and body arrive together.
    h.down(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody");
    assert_eq!(h.connects, 1, "held back: no connection yet");
    assert_eq!(h.up.len(), sent, "nothing goes upstream while held");
    assert!(!h.s.wants_down_data(), "the client is not read while held");
    let due = h.s.deadline().unwrap();
    assert!(
        (99 * MS..=100 * MS).contains(&(due - h.now)),
        "{}",
        due - h.now
    );
    // An early timer does nothing.
    h.now = due - 200;
    h.run(b"", |s, cx, out| s.on_timer(cx, out));
    assert_eq!(h.connects, 1);
    h.now = due - 100;
    h.run(b"", |s, cx, out| s.on_timer(cx, out));
    assert_eq!(h.connects, 2);
    let up = H::text(&h.up[sent..]);
    assert!(
        up.starts_with("POST /b HTTP/1.1\r\n") && up.ends_with("\r\n\r\nbody"),
        "{up}"
    );
    h.ready();
    h.upstream(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    let r = h.records[1].record;
    assert_eq!((r.status, r.reason), (201, Reason::None));
    assert!(r.flags.has(Flags::RATE_LIMITED) && !r.flags.has(Flags::ERROR));
    assert!(r.phases_ns[0] >= 99 * MS, "queue phase {}", r.phases_ns[0]);
    let limit = h.snap.routes[0].limit.clone().unwrap();
    assert_eq!(
        limit
            .stats
            .delayed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn the_breaker_opens_fails_fast_probes_and_closes_with_events() {
    let yaml = cfg(
        "",
        "breaker: { consecutive_failures: 2, open_for: 1s, half_open_probes: 1 }",
    );
    let mut h = H::with_cfg(Protocol::Http, &yaml);
    for _ in 0..2 {
        h.down(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
        h.run(b"", |s, cx, out| s.on_up_failed(cx, false, out));
    }
    assert_eq!(h.connects, 2);
    let ev: Vec<(EventKind, u8, u8)> = h.events.iter().map(|e| (e.kind, e.from, e.to)).collect();
    assert_eq!(ev, [(EventKind::BreakerTransition, 0, 1)]);
    assert_eq!(h.events[0].a, 1000, "open for 1000 ms");
    assert!(h.events[0].cluster > 0);
    // Open: a fast 503, no connect.
    let before = h.down.len();
    h.down(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = H::text(&h.down[before..]);
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    assert!(
        reply.contains("x-tailmesh-reason: breaker_open\r\n"),
        "{reply}"
    );
    assert_eq!(h.connects, 2);
    let r = h.records[2].record;
    assert_eq!(r.reason, Reason::BreakerOpen);
    assert!(r.flags.has(Flags::BREAKER_OPEN) && r.cluster > 0);
    // After open_for, one probe passes; its success closes the breaker.
    h.now += 1_000 * MS;
    ok_exchange(&mut h, "/probe");
    assert_eq!(h.connects, 3);
    let ev: Vec<(u8, u8)> = h.events.iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(ev, [(0, 1), (1, 2), (2, 0)]);
    ok_exchange(&mut h, "/after");
    assert_eq!(h.connects, 4);
}

fn retry_cfg() -> String {
    r#"
version: 1
listeners:
  - { name: api, bind: "127.0.0.1:18000", protocol: http, default_route: r }
clusters:
  - name: c
    endpoints: [ { addr: "127.0.0.1:9" }, { addr: "127.0.0.1:10" } ]
    retry: { attempts: 2, on: [connect_failure, "503"], backoff: 10ms }
routes:
  - { name: r, to: [ { cluster: c } ] }
"#
    .to_string()
}

/// Fires the session's timer at its deadline.
fn fire(h: &mut H) {
    h.now = h.s.deadline().unwrap().max(h.now);
    h.run(b"", |s, cx, out| s.on_timer(cx, out));
}

#[test]
fn a_failed_connect_is_retried_on_the_other_endpoint_after_the_backoff() {
    let mut h = H::with_cfg(Protocol::Http, &retry_cfg());
    h.down(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    let first = H::text(&h.up);
    h.run(b"", |s, cx, out| s.on_up_failed(cx, false, out));
    assert!(h.down.is_empty(), "nothing answered while a retry is due");
    assert_eq!(h.releases, [false]);
    let wait = h.s.deadline().unwrap() - h.now;
    assert!((5 * MS..=10 * MS).contains(&wait), "backoff {wait}");
    fire(&mut h);
    assert_eq!(h.connects, 2);
    assert_eq!(
        H::text(&h.up),
        format!("{first}{first}"),
        "the same request again"
    );
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert!(H::text(&h.down).starts_with("HTTP/1.1 200 OK"));
    let r = h.records[0].record;
    assert_eq!((r.status, r.retries, r.reason), (200, 1, Reason::None));
    assert!(!r.flags.has(Flags::ERROR));
    assert_eq!(r.phases_ns.iter().sum::<u64>(), r.total_ns);
    let retry = h.snap.clusters[0].retry.clone().unwrap();
    assert_eq!(
        retry
            .stats
            .retries
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The failed attempt is on the timeline, on the other endpoint.
    let ev: Vec<_> = h
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Retry)
        .collect();
    assert_eq!(ev.len(), 1);
    let code = u64::from(Reason::UpstreamConnect.code());
    assert_eq!((ev[0].b, ev[0].c & 0xff), (1, code));
    assert!(
        ev[0].endpoint > 0 && ev[0].endpoint != r.endpoint,
        "{:?}",
        ev[0]
    );
}

#[test]
fn a_503_answer_is_dropped_and_retried_and_retry_after_is_honoured() {
    let mut h = H::with_cfg(Protocol::Http, &retry_cfg());
    h.down(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    h.ready();
    h.upstream(b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 4\r\n\r\nbusy");
    assert!(
        h.down.is_empty(),
        "the failed attempt's answer never reaches the client"
    );
    assert_eq!(
        h.s.deadline().unwrap() - h.now,
        1_000 * MS,
        "Retry-After: 1"
    );
    fire(&mut h);
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let down = H::text(&h.down);
    assert!(
        down.starts_with("HTTP/1.1 200 OK") && !down.contains("busy"),
        "{down}"
    );
    assert_eq!(h.records[0].record.retries, 1);
}

#[test]
fn retries_stop_at_the_attempts_and_never_replay_a_body() {
    let mut h = H::with_cfg(Protocol::Http, &retry_cfg());
    h.down(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    for _ in 0..2 {
        h.run(b"", |s, cx, out| s.on_up_failed(cx, false, out));
        fire(&mut h);
    }
    assert_eq!(h.connects, 3);
    h.run(b"", |s, cx, out| s.on_up_failed(cx, false, out));
    assert!(
        H::text(&h.down).starts_with("HTTP/1.1 503 "),
        "the third failure is answered"
    );
    let r = h.records[0].record;
    assert_eq!((r.retries, r.reason), (2, Reason::UpstreamConnect));
    // A POST with a body is not retried: its 503 goes to the client.
    let mut h = H::with_cfg(Protocol::Http, &retry_cfg());
    h.down(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx");
    h.ready();
    h.upstream(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
    assert!(H::text(&h.down).starts_with("HTTP/1.1 503 Busy"));
    assert_eq!(h.connects, 1);
}

#[test]
fn a_routes_timeouts_override_its_clusters() {
    let yaml = cfg(
        "timeouts: { read: 2s, connect: 300ms }",
        "timeouts: { connect: 1s, read: 60s }",
    );
    let mut h = H::with_cfg(Protocol::Http, &yaml);
    h.down(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.s.deadline().unwrap() - h.now, 300 * MS, "connect");
    h.ready();
    assert_eq!(h.s.deadline().unwrap() - h.now, 2_000 * MS, "read");
    fire(&mut h);
    assert!(H::text(&h.down).starts_with("HTTP/1.1 504 "));
}

#[test]
fn a_route_may_let_retries_resend_any_bodyless_method() {
    let yaml = retry_cfg();
    let plain = yaml.clone();
    let any = yaml.replace(
        "{ name: r, to: [ { cluster: c } ] }",
        "{ name: r, to: [ { cluster: c } ], retry_any_method: true }",
    );
    for (cfg, retried) in [(plain, false), (any, true)] {
        let mut h = H::with_cfg(Protocol::Http, &cfg);
        h.down(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        h.ready();
        h.upstream(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.down.is_empty(), retried, "{}", H::text(&h.down));
        if retried {
            fire(&mut h);
            assert_eq!(h.connects, 2);
        }
    }
}
