//! Session tests of the connection-slot queue: a request whose cluster is
//! at `max_connections` waits (holding its body back) until the driver
//! says a slot may be free, or is answered 503 `overflow` at its connect
//! timeout; one an idle pooled connection serves does not wait.

use super::*;

const CFG_SLOTS: &str = r#"
version: 1
listeners:
  - { name: api, bind: "127.0.0.1:18000", protocol: http, default_route: r }
clusters:
  - name: c
    endpoints: [ { addr: "127.0.0.1:9" } ]
    timeouts: { connect: 1s }
    breaker: { max_connections: 1 }
routes:
  - { name: r, to: [ { cluster: c } ] }
"#;

const POST: &[u8] = b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody";

#[test]
fn a_request_at_max_connections_waits_for_a_slot_with_its_body() {
    let mut h = H::with_cfg(Protocol::Http, CFG_SLOTS);
    let b = h.snap.clusters[0].breaker.clone();
    let held = b.open_connection().unwrap();
    h.down(POST);
    assert_eq!((h.awaits, h.connects), (1, 0));
    assert!(h.up.is_empty(), "nothing goes out while it waits");
    assert!(!h.s.wants_down_data(), "the client is not read meanwhile");
    assert_eq!(b.waiting(), 1);
    assert_eq!(b.load().1, 1, "it counts against max_pending");
    let (addr, _) = h.s.awaited_slot().unwrap();
    assert_eq!(addr.port(), 9);
    // A slot frees: the head and the body held back go out.
    drop(held);
    h.run(b"", |s, cx, out| {
        assert!(s.on_slot_free(cx, out));
    });
    assert_eq!(h.connects, 1);
    let up = H::text(&h.up);
    assert!(up.starts_with("POST /u HTTP/1.1\r\n"), "{up}");
    assert!(up.ends_with("\r\n\r\nbody"), "{up}");
    assert_eq!(b.waiting(), 0);
    assert!(h.s.awaited_slot().is_none());
    h.ready();
    assert_eq!(b.load().1, 0, "connected: no longer pending");
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.records[0].record.status, 200);
    assert!(!h.records[0].record.flags.has(Flags::BREAKER_OPEN));
}

#[test]
fn a_request_waiting_past_its_connect_timeout_gets_503_overflow() {
    let mut h = H::with_cfg(Protocol::Http, CFG_SLOTS);
    let b = h.snap.clusters[0].breaker.clone();
    let _held = b.open_connection().unwrap();
    h.down(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    let started = h.now;
    let d = h.s.deadline().unwrap();
    assert_eq!(d, started + 1_000_000_000, "it waits the connect timeout");
    // An early timer does nothing.
    h.now = d - 1_000;
    h.run(b"", |s, cx, out| s.on_timer(cx, out));
    assert!(h.down.is_empty());
    h.now = d;
    h.run(b"", |s, cx, out| s.on_timer(cx, out));
    let reply = H::text(&h.down);
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    assert!(reply.contains("x-tailmesh-reason: overflow\r\n"), "{reply}");
    assert_eq!(h.connects, 0);
    let r = h.records[0].record;
    assert_eq!((r.status, r.reason), (503, Reason::Overflow));
    assert!(r.flags.has(Flags::BREAKER_OPEN) && r.flags.has(Flags::TIMEOUT));
    let conns = b
        .stats
        .overflow_connections
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(conns, 1);
    assert_eq!((b.waiting(), b.load()), (0, (0, 0)));
    // A late wake finds nothing to release; the connection serves on.
    h.run(b"", |s, cx, out| {
        assert!(!s.on_slot_free(cx, out));
    });
    assert!(!h.closed);
}

#[test]
fn a_client_leaving_while_it_waits_frees_its_place() {
    let mut h = H::with_cfg(Protocol::Http, CFG_SLOTS);
    let b = h.snap.clusters[0].breaker.clone();
    let _held = b.open_connection().unwrap();
    h.down(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(b.waiting(), 1);
    h.run(b"", |s, _, out| s.on_down_closed(100_000, out));
    assert_eq!((b.waiting(), b.load()), (0, (0, 0)));
}

#[test]
fn an_idle_pooled_connection_serves_a_request_without_waiting() {
    let mut h = H::with_cfg(Protocol::Http, CFG_SLOTS);
    let b = h.snap.clusters[0].breaker.clone();
    let _held = b.open_connection().unwrap();
    h.now += 100;
    let mut out = Out::default();
    let pooled = |_: std::net::SocketAddr, _: &crate::policy::breaker::Breaker| true;
    let mut cx = Cx {
        now: h.now,
        snap: &h.snap,
        rr: &mut h.rr,
        ids: &mut h.ids,
        idle: &pooled,
    };
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    h.s.on_down_data(&mut cx, req, &mut out);
    assert!(matches!(out.up.as_slice(), [UpOp::Connect(_)]), "{out:?}");
    assert_eq!(b.waiting(), 0);
}
