//! The agent's upstream keep-alive pool:
//! - against an upstream that closes idle keep-alive connections the way
//!   real servers do when their idle timer fires (it reads the next request
//!   and closes without answering), an idempotent request on such a stale
//!   pooled connection is sent again, once, on a new connection; a POST is
//!   not (502 with a reason);
//! - a pooled connection unused for the cluster's `timeouts.idle` is closed
//!   by the agent, and the next request opens a new one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

/// Answers the first `answers` requests on each connection (keep-alive,
/// `x-conn: N`), then reads the next one and closes without a byte.
struct TestUpstream {
    port: u16,
    conns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn read_head(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
    true
}

impl TestUpstream {
    fn start(answers: usize) -> TestUpstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let conns = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (conns.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: stops when told, or after 60 s whatever happens.
            let t0 = Instant::now();
            while !st.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(60) {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let n = c.fetch_add(1, Ordering::Relaxed) + 1;
                std::thread::spawn(move || {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    for _ in 0..answers {
                        if !read_head(&mut s) {
                            return;
                        }
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nx-conn: {n}\r\nContent-Length: 2\r\n\r\nok"
                        );
                        if s.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                    // The next request finds the connection "timed out".
                    read_head(&mut s);
                });
            }
        });
        TestUpstream {
            port,
            conns,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn stale_pooled_connection_is_retried_for_idempotent_requests_only() {
    let up = TestUpstream::start(1);
    let up_port = up.port;
    let agent = Agent::start(move |port, ring| config(port, &[up_port], "5s", ring), &[]);
    let mut s = connect(agent.port);
    let mut carry = Vec::new();
    let mut seen = Vec::new();
    for i in 0..5 {
        s.write_all(format!("GET /r{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut s, &mut carry).unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.head);
        seen.push(r.header("x-conn").unwrap());
        // Let the agent put the upstream back in its pool.
        std::thread::sleep(Duration::from_millis(30));
    }
    // Each request after the first met a stale pooled connection, and was
    // answered on a new one: five connections, one per request.
    assert_eq!(seen, ["1", "2", "3", "4", "5"]);
    assert_eq!(up.conns.load(Ordering::Relaxed), 5);
    assert_eq!(agent.driver_event("stale_retries"), 4);

    // Not idempotent: a POST on the stale pooled connection is a 502.
    s.write_all(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut carry).unwrap();
    assert_eq!(r.status, 502, "{}", r.head);
    assert_eq!(
        r.header("x-tailmesh-reason").as_deref(),
        Some("upstream_reset")
    );
    assert_eq!(
        up.conns.load(Ordering::Relaxed),
        5,
        "no new connection for the POST"
    );

    // The records say which requests were retried.
    let records = agent.records_at_least(6);
    let retried: Vec<(String, u64)> = records
        .iter()
        .filter(|r| r["kind"] == "record")
        .map(|r| (r["status"].to_string(), r["retries"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        retried,
        [
            ("200".to_string(), 0),
            ("200".to_string(), 1),
            ("200".to_string(), 1),
            ("200".to_string(), 1),
            ("200".to_string(), 1),
            ("502".to_string(), 0),
        ]
    );
}

#[test]
fn pooled_connection_closes_after_the_cluster_idle_timeout() {
    let up = TestUpstream::start(usize::MAX);
    let up_port = up.port;
    // The same cluster with `timeouts.idle: 400ms`.
    let agent = Agent::start(
        move |port, ring| config(port, &[up_port], "5s", ring).replace("idle: 60s", "idle: 400ms"),
        &[],
    );
    let get = |path: &str| -> String {
        let r = request(
            agent.port,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
        );
        assert_eq!(r.status, 200, "{}", r.head);
        r.header("x-conn").unwrap()
    };
    // Back to back: the pooled connection is reused.
    assert_eq!(get("/a"), "1");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(get("/b"), "1");
    // Idle for longer than 400 ms (+ the 250 ms sweep): closed by the agent,
    // so the next request opens connection 2.
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(agent.driver_event("pool_expired"), 1);
    assert_eq!(get("/c"), "2");
    assert_eq!(up.conns.load(Ordering::Relaxed), 2);
}
