//! Session unit tests: byte-level scenarios without a network.

use std::net::{IpAddr, Ipv4Addr};

use ringlog::Reason;
use ringlog::record::Flags;

use super::*;
use crate::proxy::{Finished, IdGen};
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
    closed: bool,
    now: u64,
}

impl H {
    fn new(protocol: Protocol) -> H {
        let cfg = crate::config::parse(CFG, false).unwrap();
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
            closed: false,
            now: 1000,
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
        };
        f(&mut self.s, &mut cx, &mut out);
        for c in &out.to_up {
            self.up.extend_from_slice(c.bytes(input));
        }
        for c in &out.to_down {
            self.down.extend_from_slice(c.bytes(input));
        }
        self.connects += usize::from(out.connect.is_some());
        self.fresh.extend(out.connect.map(|c| c.fresh));
        self.releases.extend(out.release_up);
        self.closed |= out.close_down;
        self.records.append(&mut out.records);
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
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
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
        shut = out.shutdown_up;
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
    h.s.on_tunnel_up_bytes(h.now);
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
    h.run(b"", |s, cx, out| s.on_timer(cx, out));
    assert!(h.closed && h.down.is_empty() && h.records.is_empty());
}
