//! Session unit tests: byte-level scenarios without a network.

use std::net::{IpAddr, Ipv4Addr};

use ringlog::Reason;
use ringlog::record::Flags;

mod policy;
mod slots;

use super::*;
use crate::proxy::{Finished, IdGen, UpOp};
use crate::snapshot::Snapshot;

const CFG: &str = r#"
version: 1
listeners:
  - { name: api, bind: "127.0.0.1:18000", protocol: http, default_route: r }
clusters:
  - name: c
    endpoints: [ { addr: "127.0.0.1:9" } ]
    timeouts: { connect: 1s, request: 5s }
routes:
  - { name: r, match: { path_prefix: /api }, to: [ { cluster: c } ] }
"#;

struct H {
    snap: Snapshot,
    rr: Vec<u32>,
    ids: IdGen,
    s: Session,
    up: Vec<u8>,
    down: Vec<u8>,
    records: Vec<Finished>,
    connects: usize,
    /// `fresh` of every connect asked for.
    fresh: Vec<bool>,
    releases: Vec<bool>,
    shutdowns: usize,
    /// Times the session queued for a connection slot.
    awaits: usize,
    closed: bool,
    reset: bool,
    now: u64,
    events: Vec<ringlog::record::Event>,
}

impl H {
    fn new(protocol: Protocol) -> H {
        H::with_cfg(protocol, CFG)
    }

    fn with_cfg(protocol: Protocol, yaml: &str) -> H {
        let cfg = crate::config::parse(yaml, false).unwrap();
        let mut n = 0;
        let snap = Snapshot::build(cfg, 3, |_, _| {
            n += 1;
            Ok(n)
        })
        .unwrap();
        let client = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        let s = Session::new(1000, 0, protocol, client, None, SessionLimits::default());
        H {
            snap,
            rr: Vec::new(),
            ids: IdGen::new(0, 1),
            s,
            up: Vec::new(),
            down: Vec::new(),
            records: Vec::new(),
            connects: 0,
            fresh: Vec::new(),
            releases: Vec::new(),
            shutdowns: 0,
            awaits: 0,
            closed: false,
            reset: false,
            now: 1000,
            events: Vec::new(),
        }
    }

    fn run(&mut self, input: &[u8], f: impl FnOnce(&mut Session, &mut Cx<'_>, &mut Out)) {
        self.now += 100;
        let mut out = Out::default();
        let mut cx = Cx {
            now: self.now,
            snap: &self.snap,
            rr: &mut self.rr,
            ids: &mut self.ids,
            idle: &crate::proxy::no_idle,
        };
        f(&mut self.s, &mut cx, &mut out);
        for c in &out.to_up {
            self.up.extend_from_slice(c.bytes(input));
        }
        for c in &out.to_down {
            self.down.extend_from_slice(c.bytes(input));
        }
        for op in &out.up {
            match op {
                UpOp::Connect(c) => {
                    self.connects += 1;
                    self.fresh.push(c.fresh);
                }
                UpOp::Release { reuse } => self.releases.push(*reuse),
                UpOp::Shutdown => self.shutdowns += 1,
                UpOp::AwaitSlot => self.awaits += 1,
            }
        }
        self.closed |= out.close_down;
        self.reset |= out.reset_down;
        self.records.append(&mut out.records);
        self.events.append(&mut out.events);
        let mut out = Out::default();
        self.s.on_down_flushed(self.now, &mut out);
        self.records.append(&mut out.records);
    }

    fn down(&mut self, data: &[u8]) {
        self.run(data, |s, cx, out| s.on_down_data(cx, data, out));
    }

    fn upstream(&mut self, data: &[u8]) {
        self.run(data, |s, cx, out| s.on_up_data(cx, data, out));
    }

    fn ready(&mut self) {
        self.now += 100;
        self.s.on_up_ready(self.now, false);
    }

    /// The upstream is ready from the pool.
    fn ready_pooled(&mut self) {
        self.now += 100;
        self.s.on_up_ready(self.now, true);
    }

    fn text(v: &[u8]) -> String {
        String::from_utf8_lossy(v).into_owned()
    }
}

#[test]
fn keep_alive_exchange_rewrites_and_records() {
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api/a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(h.connects, 1);
    let up = H::text(&h.up);
    assert!(up.starts_with("GET /api/a HTTP/1.1\r\n"), "{up}");
    assert!(up.contains("x-forwarded-for: 10.1.2.3\r\n"), "{up}");
    assert!(up.contains("x-request-id: "), "{up}");
    assert!(!up.to_ascii_lowercase().contains("connection"), "{up}");
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok");
    assert_eq!(
        H::text(&h.down),
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    );
    assert_eq!(h.releases, vec![true]);
    assert!(!h.closed);
    assert_eq!(h.records.len(), 1);
    let r = h.records[0].record;
    assert_eq!(r.status, 200);
    assert_eq!(r.generation, 3);
    assert!(r.route > 0 && r.cluster > 0 && r.endpoint > 0);
    assert_eq!(r.phases_ns.iter().sum::<u64>(), r.total_ns);
    // It starts at its first byte, not at accept (1000): idle time after
    // accept is the client's, not queueing.
    assert!(r.start_ns > 1000, "{}", r.start_ns);
    assert!(r.phases_ns[1] > 0 && r.phases_ns[3] > 0);
    // A second request on the same connection starts at its first byte.
    h.down(b"GET /api/b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.connects, 2, "{}", H::text(&h.down));
    h.ready();
    h.upstream(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(h.records.len(), 2);
    assert!(h.records[1].record.start_ns > 1000);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /api/2 HTTP/1.1\r\nHost: x\r\n\r\nGET /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(h.connects, 1);
    assert!(!h.s.wants_down_data(), "pipelined bytes are held");
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1");
    assert_eq!(
        h.connects, 2,
        "second request goes out after the first response"
    );
    assert!(H::text(&h.up).contains("GET /api/2"));
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2");
    let down = H::text(&h.down);
    let one = down.find("\r\n\r\n1").unwrap();
    let two = down.find("\r\n\r\n2").unwrap();
    let three = down.find("HTTP/1.1 400").unwrap();
    assert!(one < two && two < three, "{down}");
    assert!(down.contains("x-tailmesh-reason: bad_request"), "{down}");
    assert!(h.closed);
    assert_eq!(h.records.len(), 3);
    assert_eq!(h.records[2].record.reason, Reason::BadRequest);
}

#[test]
fn chunked_request_and_response_stream_through() {
    let mut h = H::new(Protocol::Http);
    h.down(b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    assert!(h.s.wants_down_data());
    h.down(b"0\r\n\r\n");
    let up = H::text(&h.up);
    assert!(up.ends_with("transfer-encoding: chunked\r\nx-forwarded-for: 10.1.2.3\r\nx-request-id: 0000000000000001000000000000000000000001\r\n\r\n5\r\nhello\r\n0\r\n\r\n") || up.ends_with("5\r\nhello\r\n0\r\n\r\n"), "{up}");
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    assert!(h.records.is_empty());
    h.upstream(b"0\r\n\r\n");
    assert!(H::text(&h.down).ends_with("3\r\nabc\r\n0\r\n\r\n"));
    assert_eq!(h.records.len(), 1);
    assert_eq!(h.releases, vec![true]);
}

#[test]
fn malformed_chunk_in_first_read_is_withdrawn() {
    let mut h = H::new(Protocol::Http);
    h.down(b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n");
    assert_eq!(h.connects, 0);
    assert!(
        h.up.is_empty(),
        "nothing of a rejected request goes upstream"
    );
    let down = H::text(&h.down);
    assert!(down.starts_with("HTTP/1.1 400 "), "{down}");
    assert!(down.contains("x-tailmesh-reason: bad_request"));
    assert!(h.closed);
    assert_eq!(h.records[0].record.status, 400);
}

#[test]
fn smuggling_head_is_rejected_before_routing() {
    let mut h = H::new(Protocol::Http);
    h.down(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc");
    assert_eq!(h.connects, 0);
    assert!(h.up.is_empty());
    assert!(H::text(&h.down).starts_with("HTTP/1.1 400 "));
    assert!(h.closed);
}

#[test]
fn upstream_failures_map_to_503_504_502() {
    // Refused.
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n");
    h.run(b"", |s, cx, out| s.on_up_failed(cx, false, out));
    assert!(H::text(&h.down).starts_with("HTTP/1.1 503 "));
    assert!(H::text(&h.down).contains("x-tailmesh-reason: upstream_connect"));
    assert!(!h.closed, "a bodiless request keeps the connection");
    assert_eq!(h.records[0].record.reason, Reason::UpstreamConnect);
    // Timeout waiting for the response.
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n");
    h.ready();
    let deadline = h.s.deadline().unwrap();
    h.now = deadline;
    h.run(b"", |s, cx, out| s.on_timer(cx, out));
    assert!(
        H::text(&h.down).starts_with("HTTP/1.1 504 "),
        "{}",
        H::text(&h.down)
    );
    let r = h.records[0].record;
    assert_eq!((r.status, r.reason), (504, Reason::UpstreamTimeout));
    assert!(r.flags.has(Flags::TIMEOUT));
    assert!(
        r.phases_ns[3] >= 5_000_000_000 - 1000,
        "waiting is first_byte time"
    );
    // Reset before any response byte.
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n");
    h.ready();
    h.run(b"", |s, cx, out| s.on_up_eof(cx, true, out));
    assert!(H::text(&h.down).starts_with("HTTP/1.1 502 "));
    assert_eq!(h.records[0].record.reason, Reason::UpstreamReset);
    assert_eq!(h.releases, vec![false]);
    // Malformed response head.
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n");
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    assert!(H::text(&h.down).starts_with("HTTP/1.1 502 "));
    assert_eq!(h.records[0].record.reason, Reason::UpstreamProtocol);
}

#[test]
fn stale_pooled_connection_is_retried_once_on_a_new_one() {
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n");
    let first = H::text(&h.up);
    h.ready_pooled();
    // The pooled connection closes before any response byte.
    h.run(b"", |s, cx, out| s.on_up_eof(cx, false, out));
    assert!(h.down.is_empty(), "{}", H::text(&h.down));
    assert_eq!(h.releases, vec![false], "the stale one is closed");
    assert_eq!(h.fresh, vec![false, true], "the retry skips the pool");
    assert_eq!(
        H::text(&h.up),
        format!("{first}{first}"),
        "the same head again"
    );
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert!(H::text(&h.down).starts_with("HTTP/1.1 200 OK"));
    let r = h.records[0].record;
    assert_eq!((r.status, r.retries), (200, 1));
    assert_eq!(r.flags.0 & (Flags::ERROR | Flags::RESET), 0);
    assert_eq!(r.phases_ns.iter().sum::<u64>(), r.total_ns);

    // Only once: the new connection failing the same way is a 502.
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n");
    h.ready_pooled();
    h.run(b"", |s, cx, out| s.on_up_eof(cx, true, out));
    h.ready();
    h.run(b"", |s, cx, out| s.on_up_eof(cx, true, out));
    assert!(H::text(&h.down).starts_with("HTTP/1.1 502 "));
    assert_eq!(h.records[0].record.retries, 1);
}

#[test]
fn no_retry_when_unsafe_or_already_answering() {
    let stale = |req: &[u8], pooled: bool, partial: &[u8]| -> H {
        let mut h = H::new(Protocol::Http);
        h.down(req);
        if pooled {
            h.ready_pooled();
        } else {
            h.ready();
        }
        if !partial.is_empty() {
            h.upstream(partial);
        }
        h.run(b"", |s, cx, out| s.on_up_eof(cx, false, out));
        h
    };
    // Not idempotent, even without a body.
    let h = stale(
        b"POST /api/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        true,
        b"",
    );
    assert!(H::text(&h.down).starts_with("HTTP/1.1 502 "));
    assert_eq!(h.fresh, vec![false]);
    // A body was streamed (and is gone).
    let h = stale(
        b"PUT /api/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab",
        true,
        b"",
    );
    assert!(H::text(&h.down).starts_with("HTTP/1.1 502 "));
    // A new connection that closes is not a stale pool entry.
    let h = stale(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n", false, b"");
    assert!(H::text(&h.down).starts_with("HTTP/1.1 502 "));
    // Part of a response head already arrived.
    let h = stale(
        b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n",
        true,
        b"HTTP/1.1 200",
    );
    assert!(H::text(&h.down).starts_with("HTTP/1.1 502 "));
    assert_eq!(h.fresh, vec![false]);
}

#[test]
fn close_delimited_response_and_reset_mid_body() {
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n");
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\n\r\npart");
    h.run(b"", |s, cx, out| s.on_up_eof(cx, false, out));
    assert!(H::text(&h.down).ends_with("connection: close\r\n\r\npart"));
    assert!(h.closed);
    assert_eq!(h.records[0].record.status, 200);
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n");
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart");
    h.run(b"", |s, cx, out| s.on_up_eof(cx, true, out));
    assert!(h.closed, "a cut body cuts the downstream");
    let r = h.records[0].record;
    assert_eq!((r.status, r.reason), (200, Reason::UpstreamReset));
}

#[test]
fn upgrade_becomes_a_tunnel_with_half_close() {
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let up = H::text(&h.up);
    assert!(up.contains("Upgrade: websocket"), "{up}");
    h.ready();
    h.upstream(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhi",
    );
    assert!(H::text(&h.down).ends_with("\r\n\r\nhi"));
    h.down(b"raw client bytes");
    assert!(H::text(&h.up).ends_with("raw client bytes"));
    assert!(h.s.is_tunnel() && h.s.is_raw_tunnel());
    let mut shut = false;
    h.run(b"", |s, cx, out| {
        s.on_down_eof(cx, out);
        shut = out.up.contains(&UpOp::Shutdown);
    });
    assert!(shut);
    assert!(h.records.is_empty());
    h.run(b"", |s, cx, out| s.on_up_eof(cx, false, out));
    assert_eq!(h.records.len(), 1);
    assert_eq!(h.records[0].record.status, 101);
}

#[test]
fn auto_listener_sniffs_tcp_and_tunnels() {
    let mut h = H::new(Protocol::Auto);
    h.down(b"\x16\x03\x01 not http");
    assert_eq!(h.connects, 1);
    assert_eq!(h.up, b"\x16\x03\x01 not http");
    h.ready();
    h.upstream(b"reply");
    assert_eq!(h.down, b"reply");
    h.run(b"", |s, cx, out| s.on_down_eof(cx, out));
    h.run(b"", |s, cx, out| s.on_up_eof(cx, false, out));
    let r = h.records[0].record;
    assert!(r.flags.has(Flags::L4));
    assert_eq!(r.phases_ns.iter().sum::<u64>(), r.total_ns);
}

#[test]
fn raw_tunnel_only_once_connected_and_until_an_eof() {
    let mut h = H::new(Protocol::Auto);
    assert!(!h.s.is_raw_tunnel(), "sniffing is not a tunnel yet");
    h.down(b"\x16\x03\x01 not http");
    assert!(h.s.is_tunnel() && !h.s.is_raw_tunnel(), "not connected yet");
    h.ready();
    assert!(h.s.is_raw_tunnel());
    // Bytes moved by the driver (splice) still mark the first byte.
    h.now += 50;
    h.s.on_tunnel_bytes(h.now, true);
    h.run(b"", |s, cx, out| s.on_up_eof(cx, false, out));
    assert!(h.s.is_tunnel() && !h.s.is_raw_tunnel(), "half-closed");
    h.run(b"", |s, cx, out| s.on_down_eof(cx, out));
    let r = h.records[0].record;
    assert!(r.phases_ns[3] > 0, "first byte phase {:?}", r.phases_ns);
    assert_eq!(r.phases_ns.iter().sum::<u64>(), r.total_ns);
    assert!(!h.s.is_tunnel());
}

#[test]
fn slow_head_gets_408_and_idle_connection_closes() {
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api HTTP/1.1\r\nHost: x\r\nHost:");
    let d = h.s.deadline().unwrap();
    h.now = d;
    h.run(b"", |s, cx, out| s.on_timer(cx, out));
    assert!(H::text(&h.down).starts_with("HTTP/1.1 408 "));
    assert!(h.closed);
    let mut h = H::new(Protocol::Http);
    let d = h.s.deadline().unwrap();
    h.now = d;
    let mut idle = false;
    h.run(b"", |s, cx, out| {
        s.on_timer(cx, out);
        idle = out.idle_closed;
    });
    assert!(h.closed && h.down.is_empty() && h.records.is_empty());
    assert!(idle, "counted as an idle close");
}

/// [`CFG`] without a total request timeout (2 s read-idle instead), and
/// with a route that allows CONNECT.
fn cfg_open() -> String {
    CFG.replace(
        "timeouts: { connect: 1s, request: 5s }",
        "timeouts: { connect: 1s, read: 2s }",
    )
    .replace(
        "routes:\n",
        "routes:\n  - { name: tun, match: { host: tunnel.svc }, to: [ { cluster: c } ], allow_connect: true }\n",
    )
}

#[test]
fn connection_naming_content_length_never_reaches_the_upstream() {
    for raw in [
        &b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nConnection: content-length\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET /api HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: Host\r\n\r\n",
    ] {
        let mut h = H::new(Protocol::Http);
        h.down(raw);
        assert_eq!(h.connects, 0);
        assert!(h.up.is_empty());
        let down = H::text(&h.down);
        assert!(down.starts_with("HTTP/1.1 400 "), "{down}");
        assert!(down.contains("x-tailmesh-reason: bad_connection_header"), "{down}");
        assert!(h.closed);
    }
}

#[test]
fn local_replies_to_head_have_no_body() {
    let mut h = H::new(Protocol::Http);
    h.down(b"HEAD /api HTTP/1.1\r\nHost: x\r\n\r\nGET /api/2 HTTP/1.1\r\nHost: x\r\n\r\n");
    h.run(b"", |s, cx, out| s.on_up_failed(cx, false, out));
    let down = H::text(&h.down);
    assert!(down.starts_with("HTTP/1.1 503 "), "{down}");
    assert!(
        down.ends_with("\r\n\r\n"),
        "no body after the head: {down:?}"
    );
    assert!(!h.closed);
    assert_eq!(h.connects, 2, "the pipelined GET is the next request");
}

#[test]
fn http10_clients_get_readable_bodies_and_their_keep_alive() {
    // Chunked upstream answer: de-chunked, close-delimited.
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let up = H::text(&h.up);
    assert!(up.contains("host: 127.0.0.1:9\r\n"), "Host supplied: {up}");
    assert!(up.starts_with("GET /api HTTP/1.1\r\n"));
    h.ready();
    h.upstream(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    let down = H::text(&h.down);
    assert_eq!(down, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nabcde");
    assert!(h.closed);
    assert_eq!(h.releases, vec![true], "the upstream is still reusable");
    // Length-delimited answer: keep-alive said out loud.
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    h.ready();
    h.upstream(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok");
    assert_eq!(
        H::text(&h.down),
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok",
        "no 1xx to a 1.0 client"
    );
    assert!(!h.closed);
    // A plain 1.0 request closes.
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api HTTP/1.0\r\n\r\n");
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert!(H::text(&h.down).contains("connection: close\r\n"));
    assert!(h.closed);
}

#[test]
fn upstream_close_does_not_close_the_client() {
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n");
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    assert!(!h.closed);
    assert_eq!(h.releases, vec![false], "that upstream is not pooled");
    assert!(!H::text(&h.down).contains("close"), "{}", H::text(&h.down));
    h.down(b"GET /api/2 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.connects, 2);
}

#[test]
fn bytes_past_the_framed_response_close_the_upstream() {
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /api/2 HTTP/1.1\r\nHost: x\r\n\r\n");
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled");
    assert_eq!(h.releases, vec![false], "never pooled");
    assert_eq!(h.connects, 2, "the second request gets its own connection");
    assert!(!H::text(&h.down).contains("smuggled"));
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2");
    let down = H::text(&h.down);
    assert!(down.ends_with("\r\n\r\n2"), "{down}");
    assert_eq!(down.matches("HTTP/1.1 200").count(), 2);
}

#[test]
fn upgrade_and_connect_rules() {
    // Bytes right after an Upgrade head go out with the 101.
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nEARLY");
    assert!(!H::text(&h.up).contains("EARLY"));
    h.ready();
    h.upstream(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert!(H::text(&h.up).ends_with("EARLY"), "{}", H::text(&h.up));
    // A 101 nobody asked for is a protocol error.
    let mut h = H::new(Protocol::Http);
    h.down(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n");
    h.ready();
    h.upstream(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n");
    assert!(H::text(&h.down).starts_with("HTTP/1.1 502 "));
    assert!(!h.s.is_tunnel());
    // CONNECT with a path target is malformed.
    let mut h = H::with_cfg(Protocol::Http, &cfg_open());
    h.down(b"CONNECT /api/x HTTP/1.1\r\nHost: tunnel.svc\r\n\r\n");
    assert!(H::text(&h.down).starts_with("HTTP/1.1 400 "));
    assert_eq!(h.connects, 0);
    // CONNECT where no route allows it.
    let mut h = H::with_cfg(Protocol::Http, &cfg_open());
    h.down(b"CONNECT db:5432 HTTP/1.1\r\nHost: x\r\n\r\n");
    let down = H::text(&h.down);
    assert!(down.starts_with("HTTP/1.1 405 "), "{down}");
    assert!(down.contains("method_not_allowed"));
    assert!(h.closed && h.connects == 0);
    // Allowed: a tunnel after 200.
    let mut h = H::with_cfg(Protocol::Http, &cfg_open());
    h.down(b"CONNECT db:5432 HTTP/1.1\r\nHost: tunnel.svc\r\n\r\n");
    assert_eq!(h.connects, 1);
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\n\r\n");
    assert!(h.s.is_tunnel());
}

#[test]
fn read_idle_timeout_moves_with_response_bytes() {
    let mut h = H::with_cfg(Protocol::Http, &cfg_open());
    h.down(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n");
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    // A trickle every 1.5 s for 9 s: past any 5 s total, within 2 s read-idle.
    for _ in 0..6 {
        h.now += 1_500_000_000;
        let d = h.s.deadline().unwrap();
        assert!(d > h.now, "not due while bytes keep coming");
        h.run(b"", |s, cx, out| s.on_timer(cx, out));
        h.upstream(b"0123456789");
    }
    assert!(!h.closed && h.records.is_empty());
    // Then silence: 504 is impossible (bytes went down), so the cut.
    h.now = h.s.deadline().unwrap();
    h.run(b"", |s, cx, out| s.on_timer(cx, out));
    assert!(h.closed);
    assert_eq!(h.records[0].record.reason, Reason::UpstreamTimeout);
}

#[test]
fn a_client_that_stops_reading_is_reset_after_the_write_timeout() {
    let mut h = H::with_cfg(Protocol::Http, &cfg_open());
    h.down(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n");
    h.ready();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nxxxx");
    h.s.set_backlog(h.now, true, false);
    let d = h.s.deadline().unwrap();
    assert_eq!(d, h.now + SessionLimits::default().write_timeout_ns);
    h.now = d - 1000; // `run` advances the clock by 100 ns
    h.run(b"", |s, cx, out| s.on_timer(cx, out));
    assert!(!h.reset, "not yet");
    h.now = d;
    h.run(b"", |s, cx, out| s.on_timer(cx, out));
    assert!(h.reset);
    let r = h.records[0].record;
    assert_eq!(r.reason, Reason::WriteTimeout);
    assert!(r.flags.has(Flags::TIMEOUT));
    assert_eq!(h.releases, vec![false]);
}

#[test]
fn a_stalled_request_body_gets_408() {
    let mut h = H::with_cfg(Protocol::Http, &cfg_open());
    h.down(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    h.ready();
    let d = h.s.deadline().unwrap();
    assert!(d <= h.now + SessionLimits::default().body_timeout_ns);
    // Upstream backlog pauses the body timer: not the client's fault.
    h.s.set_backlog(h.now, false, true);
    assert!(h.s.deadline().is_none_or(|x| x > d));
    h.s.set_backlog(h.now, false, false);
    h.now = h.s.deadline().unwrap();
    h.run(b"", |s, cx, out| s.on_timer(cx, out));
    let down = H::text(&h.down);
    assert!(down.starts_with("HTTP/1.1 408 "), "{down}");
    assert!(h.closed);
    assert_eq!(h.releases, vec![false]);
}

#[test]
fn idle_tunnels_close() {
    let mut h = H::new(Protocol::Tcp);
    h.run(b"", |s, cx, out| s.start(cx, out));
    h.ready();
    h.down(b"ping");
    let d = h.s.deadline().unwrap();
    assert_eq!(d, h.now + SessionLimits::default().tunnel_idle_ns);
    h.now = d;
    h.run(b"", |s, cx, out| s.on_timer(cx, out));
    assert!(h.closed);
    assert_eq!(h.records[0].record.reason, Reason::IdleTimeout);
}

#[test]
fn a_head_arriving_byte_by_byte_is_parsed_once() {
    let mut h = H::new(Protocol::Http);
    let raw = b"GET /api HTTP/1.1\r\nHost: x\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    for b in raw.iter() {
        h.down(std::slice::from_ref(b));
    }
    assert_eq!(h.connects, 1);
    assert!(H::text(&h.up).starts_with("GET /api HTTP/1.1\r\n"));
}
