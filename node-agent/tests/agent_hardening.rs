//! Regression tests for the data-path hardening findings, at the HTTP
//! level: raw sockets against the real agent, with a lenient upstream that
//! logs every request it parses (support/lenient.rs), so a smuggled
//! request would show up there. Run on both drivers by ./test.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/lenient.rs"]
mod lenient;
#[path = "support/agent.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use lenient::Lenient;
use support::*;

/// Routes: `tunnel.svc` (CONNECT allowed), `svc`, `/nohost` (any host)
/// and `/ab` (any host); anything else is 404 `no_route`.
fn hardening_config(port: u16, up: u16, ring: &std::path::Path) -> String {
    format!(
        r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http }}
clusters:
  - name: c
    endpoints: [ {{ addr: "127.0.0.1:{up}" }} ]
routes:
  - {{ name: tun, match: {{ host: tunnel.svc }}, to: [ {{ cluster: c }} ], allow_connect: true }}
  - {{ name: r, match: {{ host: svc }}, to: [ {{ cluster: c }} ] }}
  - {{ name: nohost, match: {{ path_prefix: /nohost }}, to: [ {{ cluster: c }} ] }}
  - {{ name: ab, match: {{ path_prefix: /ab }}, to: [ {{ cluster: c }} ] }}
sampling: {{ default: 1.0, keep_errors: true, max_records_per_sec: 0 }}
ring: {{ path: "{}", size: 4MiB }}
"#,
        ring.display()
    )
}

fn start() -> (Lenient, Agent) {
    let up = Lenient::start();
    let p = up.port;
    let agent = Agent::start(move |port, ring| hardening_config(port, p, ring), &[]);
    (up, agent)
}

/// Reads one response head (through the blank line) and returns it; the
/// bytes after it stay in `carry`.
fn read_head(s: &mut TcpStream, carry: &mut Vec<u8>) -> String {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = carry.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&carry[..i + 4]).to_string();
            carry.drain(..i + 4);
            return head;
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "EOF before a response head: {:?}",
            String::from_utf8_lossy(carry)
        );
        carry.extend_from_slice(&chunk[..n]);
    }
}

fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    all
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: svc\r\n\r\n";

/// Finding 1: every spelling of a Connection header that names a framing
/// or target field, then a race of attackers and a victim on one pool.
#[test]
fn connection_named_framing_fields_are_refused_and_nothing_is_smuggled() {
    let (up, agent) = start();
    let n = SMUGGLED.len();
    let variants = [
        format!(
            "POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: {n}\r\nConnection: content-length\r\n\r\n{SMUGGLED}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: {n}\r\nConnection: Content-Length\r\n\r\n{SMUGGLED}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: svc\r\nContent-Length: {n}\r\nConnection: keep-alive, CONTENT-LENGTH\r\n\r\n{SMUGGLED}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive\r\nContent-Length: {n}\r\nconnection: content-length\r\n\r\n{SMUGGLED}"
        ),
        format!(
            "GET /a HTTP/1.1\r\nHost: svc\r\nContent-Length: {n}\r\nConnection: content-length\r\n\r\n{SMUGGLED}"
        ),
        format!("GET /a HTTP/1.1\r\nHost: svc\r\nConnection: host\r\n\r\n{SMUGGLED}"),
        format!(
            "POST /a HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n{n:x}\r\n{SMUGGLED}\r\n0\r\n\r\n"
        ),
    ];
    for v in &variants {
        let r = request(agent.port, v);
        assert_eq!(r.status, 400, "{v:?} -> {}", r.head);
        assert_eq!(
            r.header("x-tailmesh-reason").as_deref(),
            Some("bad_connection_header")
        );
    }
    // Eight attackers beside one victim, all through one agent worker and
    // its upstream pool: the victim gets exactly its own answers.
    let port = agent.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..8)
        .map(|_| {
            let (stop, v) = (stop.clone(), variants[0].clone());
            std::thread::spawn(move || {
                let t0 = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && t0.elapsed() < Duration::from_secs(20)
                {
                    let _ = try_request(port, &v);
                }
            })
        })
        .collect();
    let mut s = connect(port);
    let mut carry = Vec::new();
    for i in 0..200 {
        s.write_all(format!("GET /victim/{i} HTTP/1.1\r\nHost: svc\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut s, &mut carry).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(String::from_utf8_lossy(&r.body), format!("GET /victim/{i}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let lines = up.lines();
    assert!(
        !lines.iter().any(|l| l.contains("smuggled")),
        "smuggled: {lines:?}"
    );
    assert!(lines.iter().all(|l| l.contains("/victim/")), "{lines:?}");
}

/// Finding 2: a local answer to HEAD is a head only; the next response on
/// the connection starts right after it.
#[test]
fn local_replies_to_head_carry_no_body() {
    let (_up, agent) = start();
    let mut s = connect(agent.port);
    s.write_all(b"HEAD /x HTTP/1.1\r\nHost: nowhere\r\n\r\n")
        .unwrap();
    let mut carry = Vec::new();
    let head = read_head(&mut s, &mut carry);
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
    assert!(head.contains("x-tailmesh-reason: no_route"));
    s.write_all(b"GET /next HTTP/1.1\r\nHost: svc\r\n\r\n")
        .unwrap();
    let head = read_head(&mut s, &mut carry);
    assert!(
        head.starts_with("HTTP/1.1 200 "),
        "body bytes were read as a response: {head}"
    );
}

/// Findings 3, 7 and 8: HTTP/1.0 clients.
#[test]
fn http10_clients_get_readable_bodies_keep_alive_and_a_host_upstream() {
    let (up, agent) = start();
    // A chunked upstream answer reaches a 1.0 client de-chunked.
    let mut s = connect(agent.port);
    s.write_all(b"GET /chunked HTTP/1.0\r\nHost: svc\r\n\r\n")
        .unwrap();
    let all = String::from_utf8(read_to_end(&mut s)).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert_eq!(body, "GET /chunked");
    // Keep-alive asked for: said out loud, and the connection serves again.
    let mut s = connect(agent.port);
    let mut carry = Vec::new();
    for i in 0..3 {
        s.write_all(
            format!("GET /ka/{i} HTTP/1.0\r\nHost: svc\r\nConnection: keep-alive\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let r = read_response(&mut s, &mut carry).unwrap();
        assert_eq!(
            r.header("connection").as_deref(),
            Some("keep-alive"),
            "{}",
            r.head
        );
        assert_eq!(String::from_utf8_lossy(&r.body), format!("GET /ka/{i}"));
    }
    // No Host: the upstream still gets a valid HTTP/1.1 request.
    let r = request(agent.port, "GET /nohost HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = up.all();
    let last = seen.iter().find(|s| s.line == "GET /nohost").unwrap();
    assert!(
        last.head
            .to_ascii_lowercase()
            .contains(&format!("host: 127.0.0.1:{}", up.port)),
        "{}",
        last.head
    );
}

/// Finding 4: bytes an upstream sends past its framed response never
/// answer the next request.
#[test]
fn extra_upstream_bytes_never_answer_the_next_request() {
    let (up, agent) = start();
    let mut s = connect(agent.port);
    s.write_all(
        b"GET /extra HTTP/1.1\r\nHost: svc\r\n\r\nGET /after HTTP/1.1\r\nHost: svc\r\n\r\n",
    )
    .unwrap();
    let mut carry = Vec::new();
    let a = read_response(&mut s, &mut carry).unwrap();
    let b = read_response(&mut s, &mut carry).unwrap();
    assert_eq!(String::from_utf8_lossy(&a.body), "GET /extra");
    assert_eq!(String::from_utf8_lossy(&b.body), "GET /after");
    let seen = up.all();
    let conn_of = |l: &str| seen.iter().find(|s| s.line == l).unwrap().conn;
    assert_ne!(
        conn_of("GET /extra"),
        conn_of("GET /after"),
        "the connection was reused"
    );
}

/// Finding 5: Upgrade and CONNECT.
#[test]
fn upgrade_and_connect_are_held_to_their_rules() {
    let (up, agent) = start();
    // CONNECT with a path target.
    let r = request(
        agent.port,
        "CONNECT /app/x HTTP/1.1\r\nHost: tunnel.svc\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.head);
    // CONNECT on a route that does not allow it.
    let r = request(agent.port, "CONNECT db:5432 HTTP/1.1\r\nHost: svc\r\n\r\n");
    assert_eq!(
        (r.status, r.header("x-tailmesh-reason").as_deref()),
        (405, Some("method_not_allowed"))
    );
    assert!(
        !up.lines().iter().any(|l| l.starts_with("CONNECT")),
        "{:?}",
        up.lines()
    );
    // A 101 to a request that asked for no upgrade.
    let r = request(agent.port, "GET /101 HTTP/1.1\r\nHost: svc\r\n\r\n");
    assert_eq!(r.status, 502, "{}", r.head);
    // Bytes sent right after an Upgrade head come back without another send.
    let mut s = connect(agent.port);
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nEARLY",
    )
    .unwrap();
    let mut carry = Vec::new();
    let head = read_head(&mut s, &mut carry);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut chunk = [0u8; 64];
    while carry.len() < 5 {
        let n = s.read(&mut chunk).expect("early bytes were held back");
        assert!(n > 0);
        carry.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(carry, b"EARLY");
    // Framing goes upstream normalised: one Content-Length.
    let r = request(
        agent.port,
        "POST /dup HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(r.status, 200);
    let seen = up.all();
    let dup = seen.iter().find(|s| s.line == "POST /dup").unwrap();
    assert_eq!(
        dup.head
            .to_ascii_lowercase()
            .matches("content-length")
            .count(),
        1,
        "{}",
        dup.head
    );
    // A chunk-size line with trailing whitespace is refused.
    let r = request(
        agent.port,
        "POST /ws-chunk HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3 \t\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.head);
    assert!(!up.lines().iter().any(|l| l.contains("ws-chunk")));
}

/// Findings 6 and 9: the response's Connection-named fields are removed;
/// an upstream that closes does not close the client.
#[test]
fn response_connection_fields_go_and_client_keep_alive_is_its_own() {
    let (_up, agent) = start();
    let r = request(agent.port, "GET /connhdr HTTP/1.1\r\nHost: svc\r\n\r\n");
    assert!(r.header("x-secret").is_none(), "{}", r.head);
    assert!(r.header("x-kept").is_some(), "{}", r.head);
    let accepted = agent.driver_event("accepted");
    let mut s = connect(agent.port);
    let mut carry = Vec::new();
    for _ in 0..3 {
        s.write_all(b"GET /close HTTP/1.1\r\nHost: svc\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s, &mut carry).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.header("connection").is_none(), "{}", r.head);
    }
    assert_eq!(agent.driver_event("accepted"), accepted + 1);
    // curl with three URLs reuses its one connection.
    let url = format!("http://127.0.0.1:{}/close", agent.port);
    let out = Command::new("curl")
        .args([
            "-sv",
            "-H",
            "Host: svc",
            "--max-time",
            "10",
            &url,
            &url,
            &url,
        ])
        .output()
        .expect("curl (./test.sh installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("Connected to").count(), 1, "{err}");
}

/// Finding 7 with a tool we did not write: `ab -k` (HTTP/1.0 keep-alive).
#[test]
fn ab_keep_alive_completes_with_no_failures() {
    let (_up, agent) = start();
    let url = format!("http://127.0.0.1:{}/ab", agent.port);
    let out = Command::new("timeout")
        .args(["60", "ab", "-k", "-n", "2000", "-c", "20", "-s", "10", &url])
        .output()
        .expect("ab (apache2-utils; ./test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("{name} missing: {text}"))
    };
    assert_eq!(field("Complete requests:"), "2000", "{text}");
    assert_eq!(field("Failed requests:"), "0", "{text}");
    let ka: u64 = field("Keep-Alive requests:").parse().unwrap();
    assert!(ka >= 1900, "{ka} keep-alive requests: {text}");
}

/// Finding 10: with the default timeouts, an 8 s event stream and an 8 s
/// paced download both complete.
#[test]
fn long_streams_complete_with_default_timeouts() {
    let (_up, agent) = start();
    let port = agent.port;
    let run = move |path: &'static str, want: usize| {
        std::thread::spawn(move || {
            let mut s = connect(port);
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .unwrap();
            let t0 = Instant::now();
            let all = String::from_utf8_lossy(&read_to_end(&mut s)).to_string();
            let events = all.matches("data: ").count();
            assert_eq!(
                events,
                want,
                "{path}: {events} events after {:?}",
                t0.elapsed()
            );
            assert!(all.ends_with("0\r\n\r\n"), "{path} cut short");
            t0.elapsed()
        })
    };
    let sse = run("/drip?ms=500&n=16", 16);
    let download = run("/drip?ms=100&n=80", 80);
    let (a, b) = (sse.join().unwrap(), download.join().unwrap());
    assert!(
        a >= Duration::from_secs(7) && b >= Duration::from_secs(7),
        "{a:?} {b:?}"
    );
}

/// A listener whose accept queue is full: the kernel drops further SYNs,
/// so a connect to it hangs like one to a blackholed address (on loopback).
fn blackhole() -> (socket2::Socket, Vec<socket2::Socket>, u16) {
    use socket2::{Domain, Socket, Type};
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    l.listen(0).unwrap();
    let port = l.local_addr().unwrap().as_socket().unwrap().port();
    let fill: Vec<Socket> = (0..4)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(
                &format!("127.0.0.1:{port}")
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            );
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    (l, fill, port)
}

/// The connect timeout holds for HTTP and for L4 tunnels on both drivers
/// (an L4 tunnel on epoll used to wait for the kernel's SYN timeout).
#[test]
fn a_blackholed_connect_ends_at_the_connect_timeout() {
    let (_l, _fill, hole) = blackhole();
    let agent = Agent::start(
        move |port, ring| {
            let l4 = free_port();
            std::fs::write(ring.with_extension("l4port"), l4.to_string()).unwrap();
            format!(
                r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: http, default_route: r }}
  - {{ name: raw, bind: "127.0.0.1:{l4}", protocol: tcp, default_route: r }}
clusters:
  - name: c
    endpoints: [ {{ addr: "127.0.0.1:{hole}" }} ]
    timeouts: {{ connect: 1s }}
routes:
  - {{ name: r, to: [ {{ cluster: c }} ] }}
ring: {{ path: "{}", size: 4MiB }}
"#,
                ring.display()
            )
        },
        &[],
    );
    let l4: u16 = std::fs::read_to_string(agent.ring().with_extension("l4port"))
        .unwrap()
        .parse()
        .unwrap();
    let t0 = Instant::now();
    let r = request(agent.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let http = t0.elapsed();
    assert_eq!(
        (r.status, r.header("x-tailmesh-reason").as_deref()),
        (503, Some("upstream_connect"))
    );
    let t0 = Instant::now();
    let mut s = connect(l4);
    s.write_all(b"hello").unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    let tcp = t0.elapsed();
    assert_eq!(n, 0, "the tunnel closes");
    eprintln!("blackholed connect: http {http:?}, l4 {tcp:?}");
    for t in [http, tcp] {
        assert!(
            t >= Duration::from_millis(900) && t < Duration::from_secs(3),
            "{t:?}"
        );
    }
}
