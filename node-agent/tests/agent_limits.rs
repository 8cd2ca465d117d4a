//! Tables stay bounded under load, on the real agent (both drivers via
//! ./test.sh): the timer heap grows with open connections, not with
//! requests served, and the upstream pool keeps at most 256 idle
//! connections per endpoint, evicting the least recently used.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/agent.rs"]
mod support;

use std::io::Write;
use std::time::Duration;

use support::*;

/// 8,000 keep-alive requests over 4 connections leave the heap near the
/// connection count. (The old arming rule pushed an entry on every
/// deadline change, two per request, each living until its deadline.)
#[test]
fn the_timer_heap_follows_connections_not_requests() {
    let up = Upstream::start(&[]);
    let p = up.port;
    let agent = Agent::start(move |port, ring| config(port, &[p], "5s", ring), &[]);
    let port = agent.port;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect(port);
                let mut carry = Vec::new();
                for _ in 0..2000 {
                    s.write_all(b"GET /t HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                    assert_eq!(read_response(&mut s, &mut carry).unwrap().status, 200);
                }
                s
            })
        })
        .collect();
    let open: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let entries = agent.metric("tailmesh_timer_entries ");
    eprintln!("timer entries after 8,000 requests on 4 connections: {entries}");
    assert!(entries <= 64, "{entries} timer entries");
    drop(open);
}

/// 300 concurrent requests to one endpoint open 300 upstream connections;
/// when they finish, the pool keeps 256 and evicts the rest.
#[test]
fn the_pool_keeps_at_most_256_idle_connections_per_endpoint() {
    let up = Upstream::start(&["--latency", "300ms"]);
    let p = up.port;
    let agent = Agent::start(move |port, ring| config(port, &[p], "5s", ring), &[]);
    let port = agent.port;
    let clients: Vec<_> = (0..300)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect(port);
                s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                let r = read_response(&mut s, &mut Vec::new()).unwrap();
                (r.status, s)
            })
        })
        .collect();
    let done: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(done.iter().all(|(st, _)| *st == 200));
    std::thread::sleep(Duration::from_millis(300));
    let pooled = agent.metric("tailmesh_pooled_upstream_connections ");
    let evicted = agent.metric("tailmesh_driver_events_total{event=\"pool_evicted\"} ");
    let connects = agent.metric("tailmesh_driver_events_total{event=\"connects\"} ");
    eprintln!("{connects} upstream connects, {pooled} pooled, {evicted} evicted");
    assert_eq!(pooled, 256);
    assert_eq!(evicted, connects - 256);
}
