//! Sticky routing end to end (both drivers via ./test.sh): a route split
//! 50/50 over two upstreams keeps each user on one of them by a cookie,
//! and each client address by `source_ip`, while users spread over both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::*;

fn split_config(port: u16, ups: (u16, u16), ring: &std::path::Path, hash_on: &str) -> String {
    format!(
        r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http, default_route: r }}
clusters:
  - name: c
    endpoints:
      - {{ addr: "127.0.0.1:{}", labels: {{ version: v1 }} }}
      - {{ addr: "127.0.0.1:{}", labels: {{ version: v2 }} }}
routes:
  - name: r
    to:
      - {{ cluster: c, subset: {{ version: v1 }}, weight: 1 }}
      - {{ cluster: c, subset: {{ version: v2 }}, weight: 1 }}
    hash_on: "{hash_on}"
sampling: {{ default: 1.0, keep_errors: true, max_records_per_sec: 0 }}
ring: {{ path: "{}", size: 4MiB }}
"#,
        ups.0,
        ups.1,
        ring.display()
    )
}

/// One request from local address `from` with these extra header lines;
/// the answering upstream's name.
fn served_by(from: &str, port: u16, extra: &str) -> String {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&local.into()).unwrap();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    sock.connect(&to.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET /x HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes())
        .unwrap();
    let r = read_response(&mut s, &mut Vec::new()).unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    r.header("x-upstream").unwrap()
}

/// Users (by `key`) to the set of upstreams that answered them.
fn spread(
    port: u16,
    requests: impl Fn(u32) -> (String, String),
) -> BTreeMap<u32, BTreeSet<String>> {
    let mut seen: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for user in 0..40u32 {
        for _ in 0..4 {
            let (from, extra) = requests(user);
            seen.entry(user)
                .or_default()
                .insert(served_by(&from, port, &extra));
        }
    }
    seen
}

fn check(seen: &BTreeMap<u32, BTreeSet<String>>, what: &str) {
    assert!(
        seen.values().all(|s| s.len() == 1),
        "{what}: a user moved: {seen:?}"
    );
    let v1 = seen.values().filter(|s| s.contains("v1")).count();
    // 40 users over a 50/50 split: both sides well used.
    assert!((8..=32).contains(&v1), "{what}: {v1} of 40 on v1");
}

#[test]
fn users_stick_to_one_arm_by_cookie_and_by_source_ip() {
    let a = Upstream::start(&["--name", "v1"]);
    let b = Upstream::start(&["--name", "v2"]);
    let ups = (a.port, b.port);
    let agent = Agent::start(
        move |port, ring| split_config(port, ups, ring, "cookie:session"),
        &[],
    );
    let seen = spread(agent.port, |u| {
        (
            "127.0.0.1".into(),
            format!("Cookie: theme=dark; session=s{u}\r\n"),
        )
    });
    check(&seen, "cookie");
    drop(agent);

    let agent = Agent::start(
        move |port, ring| split_config(port, ups, ring, "source_ip"),
        &[],
    );
    // Each user is a different loopback address (127.0.0.0/8 is all local).
    let seen = spread(agent.port, |u| {
        (format!("127.0.1.{}", u + 1), String::new())
    });
    check(&seen, "source_ip");
}

#[test]
fn regex_method_header_absent_and_query_routes() {
    let a = Upstream::start(&["--name", "a"]);
    let b = Upstream::start(&["--name", "b"]);
    let (pa, pb) = (a.port, b.port);
    let agent = Agent::start(
        move |port, ring| {
            format!(
                r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http, default_route: rest }}
clusters:
  - {{ name: a, endpoints: [ {{ addr: "127.0.0.1:{pa}" }} ] }}
  - {{ name: b, endpoints: [ {{ addr: "127.0.0.1:{pb}" }} ] }}
routes:
  - {{ name: users, match: {{ path_regex: "/users/[0-9]+" }}, to: [ {{ cluster: a }} ] }}
  - {{ name: writes, match: {{ methods: [POST, PUT] }}, to: [ {{ cluster: a }} ] }}
  - {{ name: beta, match: {{ query: {{ beta: "1" }}, headers_absent: [x-stable] }}, to: [ {{ cluster: a }} ] }}
  - {{ name: svc, match: {{ host: "*.svc.local" }}, to: [ {{ cluster: a }} ] }}
  - {{ name: rest, to: [ {{ cluster: b }} ] }}
ring: {{ path: "{}", size: 4MiB }}
"#,
                ring.display()
            )
        },
        &[],
    );
    let via = |head: &str| {
        let r = request(agent.port, &format!("{head}\r\n"));
        assert_eq!(r.status, 200, "{head}: {}", r.head);
        r.header("x-upstream").unwrap()
    };
    let get = |path: &str, extra: &str| via(&format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}"));
    assert_eq!(get("/users/42", ""), "a");
    assert_eq!(
        get("/users/42/photos", ""),
        "b",
        "the regex matches the whole path"
    );
    assert_eq!(get("/users/x", ""), "b");
    assert_eq!(
        via("POST /x HTTP/1.1\r\nHost: t\r\ncontent-length: 0\r\n"),
        "a"
    );
    assert_eq!(get("/x?beta=1", ""), "a");
    assert_eq!(get("/x?beta=1", "X-Stable: yes\r\n"), "b", "header present");
    assert_eq!(get("/x?beta=2", ""), "b");
    assert_eq!(
        via("GET / HTTP/1.1\r\nHost: orders.svc.local:8080\r\n"),
        "a"
    );
    assert_eq!(via("GET / HTTP/1.1\r\nHost: svc.local\r\n"), "b");
}

/// A one-shot upstream: accepts one connection, reads one request head,
/// answers 200 with `server` and `x-up` fields; the head it read.
fn capture_once() -> (u16, std::thread::JoinHandle<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            use std::io::Read;
            if s.read(&mut b).unwrap() == 0 {
                break;
            }
            head.push(b[0]);
        }
        s.write_all(
            b"HTTP/1.1 200 OK\r\nserver: secret/1.0\r\nx-up: 1\r\ncontent-length: 2\r\n\r\nok",
        )
        .unwrap();
        String::from_utf8(head).unwrap()
    });
    (port, h)
}

#[test]
fn route_header_edits_and_prefix_rewrite_reach_both_sides() {
    let (up, seen) = capture_once();
    let agent = Agent::start(
        move |port, ring| {
            format!(
                r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http }}
clusters:
  - {{ name: a, endpoints: [ {{ addr: "127.0.0.1:{up}" }} ] }}
routes:
  - name: api
    match: {{ path_prefix: /api/ }}
    to: [ {{ cluster: a }} ]
    prefix_rewrite: /v2/
    headers:
      request_add: {{ x-env: prod }}
      request_set: {{ x-tenant: t1 }}
      request_remove: [ x-debug ]
      response_add: {{ x-served-by: tailmesh }}
      response_remove: [ server ]
ring: {{ path: "{}", size: 4MiB }}
"#,
                ring.display()
            )
        },
        &[],
    );
    let r = request(
        agent.port,
        "GET /api/users?id=7 HTTP/1.1\r\nHost: t\r\nX-Debug: 1\r\nX-Tenant: spoofed\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("x-served-by").as_deref(), Some("tailmesh"));
    assert_eq!(r.header("x-up").as_deref(), Some("1"));
    assert!(r.header("server").is_none(), "{}", r.head);
    let head = seen.join().unwrap();
    assert!(
        head.starts_with("GET /v2/users?id=7 HTTP/1.1\r\n"),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(
        !lower.contains("x-debug") && !lower.contains("spoofed"),
        "{head}"
    );
    assert!(
        lower.contains("x-env: prod\r\n") && lower.contains("x-tenant: t1\r\n"),
        "{head}"
    );
}

#[test]
fn header_edits_of_framing_fields_are_config_errors() {
    let yaml = r#"version: 1
listeners:
  - { name: api, bind: "127.0.0.1:1", protocol: http }
clusters:
  - { name: a, endpoints: [ { addr: "127.0.0.1:2" } ] }
routes:
  - name: r
    to: [ { cluster: a } ]
    prefix_rewrite: /v2/
    headers: { request_set: { content-length: "0" }, request_remove: [ host ], response_add: { x-bad: "a\u0001" } }
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(sibling("node-agent"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "routes[r]: headers.request_set.content-length",
        "routes[r]: headers.request_remove: an HTTP/1.1 request needs its Host",
        "routes[r]: headers.response_add.x-bad",
        "routes[r]: prefix_rewrite: needs match.path_prefix",
    ] {
        assert!(err.contains(want), "{want} not in:\n{err}");
    }
}

#[test]
fn a_mirror_copies_requests_to_a_shadow_that_never_slows_the_primary() {
    let primary = Upstream::start(&["--name", "primary"]);
    let shadow = Upstream::start(&["--name", "shadow"]);
    let (pp, ps) = (primary.port, shadow.port);
    let agent = Agent::start(
        move |port, ring| {
            format!(
                r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http, default_route: r }}
clusters:
  - {{ name: main, endpoints: [ {{ addr: "127.0.0.1:{pp}" }} ] }}
  - {{ name: shadow, endpoints: [ {{ addr: "127.0.0.1:{ps}" }} ], timeouts: {{ connect: 1s, read: 1s }} }}
routes:
  - {{ name: r, to: [ {{ cluster: main }} ], mirror: {{ cluster: shadow, percent: 100, max_body: 1KiB }} }}
ring: {{ path: "{}", size: 4MiB }}
"#,
                ring.display()
            )
        },
        &[],
    );
    let send = |raw: &str| {
        let r = request(agent.port, raw);
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(r.header("x-upstream").as_deref(), Some("primary"));
    };
    for _ in 0..10 {
        send("GET /m HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    let small = "x".repeat(500);
    send(&format!(
        "POST /m HTTP/1.1\r\nHost: t\r\ncontent-length: 500\r\n\r\n{small}"
    ));
    let big = "y".repeat(5000);
    send(&format!(
        "POST /m HTTP/1.1\r\nHost: t\r\ncontent-length: 5000\r\n\r\n{big}"
    ));
    // Eleven copies arrive (the 5,000-byte body is over max_body). (Each
    // stats read is itself served and counted after it answers: read once.)
    let t = Instant::now();
    while agent.driver_event("mirror_sent") < 11 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(shadow.served(), 11);
    assert_eq!(
        agent.metric("tailmesh_mirror_skipped_total{route=\"r\"} "),
        1
    );
    assert_eq!(agent.driver_event("mirror_sent"), 11);
    // A shadow that takes 2 s per answer does not slow the primary.
    faults(shadow.port, r#"{"latency":"2s"}"#);
    let t = Instant::now();
    for _ in 0..20 {
        send("GET /m HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // A shadow that is gone does not fail it either.
    drop(shadow);
    for _ in 0..5 {
        send("GET /m HTTP/1.1\r\nHost: t\r\n\r\n");
    }
}

#[test]
fn a_90_10_canary_split_holds_within_two_percent() {
    let stable = Upstream::start(&["--name", "stable"]);
    let canary = Upstream::start(&["--name", "canary"]);
    let (ps, pc) = (stable.port, canary.port);
    let agent = Agent::start(
        move |port, ring| {
            format!(
                r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http, default_route: r }}
clusters:
  - name: c
    endpoints:
      - {{ addr: "127.0.0.1:{ps}", labels: {{ version: v1 }} }}
      - {{ addr: "127.0.0.1:{pc}", labels: {{ version: v2 }} }}
routes:
  - name: r
    to:
      - {{ cluster: c, subset: {{ version: v1 }}, weight: 90 }}
      - {{ cluster: c, subset: {{ version: v2 }}, weight: 10 }}
ring: {{ path: "{}", size: 4MiB }}
"#,
                ring.display()
            )
        },
        &[],
    );
    // Each request gets its own id, so the split is per request.
    let port = agent.port;
    let per_client = 1_500;
    let counts: Vec<(usize, usize)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(move || {
                    let mut c = connect(port);
                    let mut carry = Vec::new();
                    let mut n = (0, 0);
                    for _ in 0..per_client {
                        c.write_all(b"GET /c HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                        let r = read_response(&mut c, &mut carry).unwrap();
                        match r.header("x-upstream").as_deref() {
                            Some("stable") => n.0 += 1,
                            Some("canary") => n.1 += 1,
                            other => panic!("{other:?}"),
                        }
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let canaries: usize = counts.iter().map(|c| c.1).sum();
    let share = canaries as f64 / (4 * per_client) as f64;
    assert!((share - 0.10).abs() <= 0.02, "canary share {share:.4}");
}
