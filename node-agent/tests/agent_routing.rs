//! Sticky routing end to end (both drivers via ./test.sh): a route split
//! 50/50 over two upstreams keeps each user on one of them by a cookie,
//! and each client address by `source_ip`, while users spread over both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};

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
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
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
