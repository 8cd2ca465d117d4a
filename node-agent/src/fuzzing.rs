//! Entry points shared by the cargo-fuzz targets (`node-agent/fuzz`) and the
//! test that replays their corpora under `cargo test`.

use crate::http1::{Limits, chunked, request, rewrite};

/// Parses `data` as a request head (and its chunked body, and the upstream
/// rewrite). Must never panic. Returns the status it would answer with.
pub fn request_head(data: &[u8]) -> u16 {
    let small = Limits {
        max_head: 4096,
        max_request_line: 512,
        max_headers: 32,
    };
    for limits in [Limits::default(), small] {
        let _ = request::parse(data, &limits, &mut request::header_slots());
    }
    let mut slots = request::header_slots();
    let head = match request::parse(data, &Limits::default(), &mut slots) {
        Err(r) => return r.status,
        Ok(None) => return 0,
        Ok(Some(h)) => h,
    };
    let mut out = Vec::new();
    let meta = rewrite::upstream_head(
        &head,
        std::net::Ipv4Addr::LOCALHOST.into(),
        None,
        || *b"0123456789abcdef0123456789abcdef",
        &mut out,
    );
    // The rewritten head must itself parse and keep the same framing.
    let mut slots2 = request::header_slots();
    let again = request::parse(
        &out,
        &Limits {
            max_head: usize::MAX / 2,
            max_request_line: usize::MAX / 2,
            max_headers: 1000,
        },
        &mut slots2,
    );
    if let Ok(Some(h2)) = &again {
        assert_eq!(h2.body, head.body, "rewrite changed the body framing");
        assert_eq!(h2.target, head.target);
    }
    let _ = meta.sampling_hash;
    if head.body == request::Body::Chunked {
        return u16::from(chunked_body(&data[head.len..]).is_some()) * 200;
    }
    200
}

/// Decodes `data` as a chunked body, fed in two parts split where the
/// first byte says; both ways must agree. Returns the body length if done.
pub fn chunked_body(data: &[u8]) -> Option<usize> {
    let mut whole = chunked::Decoder::new();
    let r1 = whole.feed(data);
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut parts = chunked::Decoder::new();
    let r2 = parts.feed(&data[..split]).and_then(|a| {
        if a < split {
            return Ok(a); // the body ended inside the first part
        }
        parts.feed(&data[split..]).map(|b| a + b)
    });
    assert_eq!(r1.is_ok(), r2.is_ok(), "split changed the verdict");
    if let (Ok(a), Ok(b)) = (&r1, &r2) {
        assert_eq!(a, b, "split changed the body length");
        assert_eq!(whole.payload, parts.payload);
    }
    r1.ok().filter(|_| whole.done())
}

/// One request as a parser framed it: method, target and body payload.
type Framed = (String, String, Vec<u8>);

/// Frames `data` as consecutive requests with the agent's parser and
/// chunked decoder: every complete, valid request until the first invalid
/// or incomplete one. The reference for [`session_stream`].
fn frame_all(data: &[u8]) -> Vec<Framed> {
    let mut out = Vec::new();
    let mut rest = data;
    let limits = Limits {
        max_head: usize::MAX / 2,
        max_request_line: usize::MAX / 2,
        max_headers: 1000,
    };
    loop {
        let mut slots = request::header_slots();
        let Ok(Some(head)) = request::parse(rest, &limits, &mut slots) else {
            return out;
        };
        let (method, target) = (head.method.to_string(), head.target.to_string());
        let body_start = &rest[head.len..];
        let (payload, used) = match head.body {
            request::Body::None => (Vec::new(), 0),
            request::Body::Length(n) => {
                let Some(b) = usize::try_from(n).ok().and_then(|n| body_start.get(..n)) else {
                    return out;
                };
                (b.to_vec(), b.len())
            }
            request::Body::Chunked => {
                let mut d = chunked::Decoder::new();
                let mut payload = Vec::new();
                let Ok(n) = d.feed_with(body_start, |r| {
                    payload.extend_from_slice(body_start.get(r).unwrap_or_default());
                }) else {
                    return out;
                };
                if !d.done() {
                    return out;
                }
                (payload, n)
            }
        };
        out.push((method, target, payload));
        rest = &body_start[used..];
        if head.tunnel {
            return out; // what follows is tunnel bytes, not requests
        }
    }
}

/// The differential check: `data` goes through a real [`Session`] as a
/// client's byte stream (in two reads, split where the first byte says),
/// an upstream answers every request it receives with an empty 200, and
/// what the upstream received is framed again. It must be exactly the
/// client's own requests, in order (same methods, targets and body
/// payloads), or a prefix of them where the session answered one itself:
/// never a request the client did not send. Returns how many went
/// upstream.
///
/// [`Session`]: crate::proxy::Session
pub fn session_stream(data: &[u8]) -> usize {
    use crate::config::schema::Protocol;
    use crate::proxy::{IdGen, Session, SessionLimits};

    const CFG: &str = "version: 1\nlisteners:\n  - { name: l, bind: \"127.0.0.1:1\", protocol: http, default_route: r }\nclusters:\n  - { name: c, endpoints: [ { addr: \"127.0.0.1:9\" } ] }\nroutes:\n  - { name: r, to: [ { cluster: c } ] }\n";
    let Ok(cfg) = crate::config::parse(CFG, false) else {
        return 0;
    };
    let mut id = 0;
    let Ok(snap) = crate::snapshot::Snapshot::build(cfg, 1, |_, _| {
        id += 1;
        Ok(id)
    }) else {
        return 0;
    };
    let client = std::net::Ipv4Addr::new(10, 0, 0, 1).into();
    let mut d = Drive {
        s: Session::new(0, 0, Protocol::Http, client, None, SessionLimits::default()),
        rr: Vec::new(),
        ids: IdGen::new(0, 1),
        now: 1,
        upstream: Vec::new(),
    };
    let mut answered = 0;
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    for part in [&data[..split], &data[split..]] {
        d.feed(&snap, part, false);
        // Answer each complete request the upstream has, so pipelined ones
        // move on (each answer may release the next held request).
        while frame_all(&d.upstream).len() > answered {
            answered += 1;
            d.feed(&snap, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", true);
        }
    }
    let sent = frame_all(data);
    let got = frame_all(&d.upstream);
    assert!(
        got.len() <= sent.len(),
        "{} requests upstream, the client sent {}",
        got.len(),
        sent.len()
    );
    for (g, c) in got.iter().zip(&sent) {
        assert_eq!(g.0, c.0, "method");
        assert_eq!(g.1, c.1, "target");
        assert_eq!(g.2, c.2, "body payload of {} {}", c.0, c.1);
    }
    got.len()
}

/// A session driven by [`session_stream`], and what it sent upstream.
struct Drive {
    s: crate::proxy::Session,
    rr: Vec<u32>,
    ids: crate::proxy::IdGen,
    now: u64,
    upstream: Vec<u8>,
}

impl Drive {
    /// Feeds client bytes (or, with `up`, upstream bytes) to the session;
    /// collects what it sends upstream and connects when it asks to.
    fn feed(&mut self, snap: &crate::snapshot::Snapshot, input: &[u8], up: bool) {
        use crate::proxy::{Cx, Out, UpOp};
        self.now += 1;
        let mut out = Out::default();
        let mut cx = Cx {
            now: self.now,
            snap,
            rr: &mut self.rr,
            ids: &mut self.ids,
            idle: &crate::proxy::no_idle,
        };
        if up {
            self.s.on_up_data(&mut cx, input, &mut out);
        } else {
            self.s.on_down_data(&mut cx, input, &mut out);
        }
        for c in &out.to_up {
            self.upstream.extend_from_slice(c.bytes(input));
        }
        if out.up.iter().any(|op| matches!(op, UpOp::Connect(_))) {
            self.s.on_up_ready(self.now, false);
        }
    }
}

/// The resilience policies under arbitrary input. The first byte picks
/// which: even, `data[1..]` is a config text (YAML) whose policies are
/// validated and built; odd, `data` drives a breaker and a rate limit as
/// a sequence of events (admit, outcome, drop, clock steps). Must never
/// panic; the invariants (counters back to zero, probes within their
/// limit) are asserted. Returns the number of admitted requests.
pub fn policy_events(data: &[u8]) -> usize {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use crate::policy::breaker::{Breaker, Outcome, Params};
    use crate::policy::ratelimit::Gcra;

    let Some((&first, rest)) = data.split_first() else {
        return 0;
    };
    if first % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        if let Ok(cfg) = crate::config::parse(&text, false) {
            let _ = crate::snapshot::Snapshot::build(cfg, 1, |_, _| Ok(1));
        }
        return 0;
    }
    let byte = |i: usize| u64::from(data.get(i).copied().unwrap_or(1));
    let b = Arc::new(Breaker::new(
        Params {
            consecutive_failures: (byte(1) % 6) as u32,
            error_rate: (byte(2) % 11) as f64 / 10.0,
            min_requests: (byte(3) % 8) as u32,
            window_ns: (byte(4) + 1) * 10_000_000,
            open_for_ns: (byte(5) + 1) * 1_000_000,
            half_open_probes: (byte(6) % 4) as u32,
        },
        (byte(7) % 8 + 1) as u32,
        (byte(8) % 4 + 1) as u32,
        crate::policy::FailureOn::default(),
    ));
    let gcra = Gcra::new(
        (byte(9) + 1) as f64,
        byte(10) % 8,
        byte(11) % 2 == 1,
        byte(12) * 1_000_000,
    );
    let tat = AtomicU64::new(0);
    let retry = crate::policy::retry::RetryPolicy::new(
        3,
        crate::policy::FailureOn::default(),
        None,
        byte(12) * 1_000_000 + 1,
        (byte(10) % 101) as u32,
        (byte(11) % 4) as u32,
    );
    let mut now = 1_000_000_000u64;
    let mut held = Vec::new();
    let mut admitted = 0;
    for &op in data.iter().skip(13) {
        now += u64::from(op >> 3) * 1_000_000;
        let _ = gcra.check(&tat, now);
        retry.request(now);
        if op & 8 != 0 {
            let _ = retry.take_budget(now);
        }
        let _ = retry.backoff(u32::from(op), u64::from(op));
        match op & 7 {
            0 | 1 => {
                if let (Ok(mut p), _) = b.admit(now) {
                    admitted += 1;
                    let _ = p.wait_for_connection();
                    held.push(p);
                }
            }
            2 | 3 => {
                if let Some(p) = held.pop() {
                    let o = if op & 1 == 0 {
                        Outcome::Success
                    } else {
                        Outcome::Failure
                    };
                    let _ = p.finish(now, o, u64::from(op));
                }
            }
            4 => {
                if let Some(p) = held.first_mut() {
                    p.connected();
                }
            }
            5 => drop(held.pop()),
            _ => {
                if !held.is_empty() {
                    let p = held.remove(0);
                    let _ = p.end(now, 500 + u16::from(op % 8), ringlog::Reason::None, 0);
                }
            }
        }
        let (in_flight, pending) = b.load();
        assert_eq!(in_flight as usize, held.len());
        assert!(pending as usize <= held.len());
    }
    held.clear();
    assert_eq!(b.load(), (0, 0));
    admitted
}

/// Routing under arbitrary input: the first byte picks the mode. Even,
/// `data[1..]` is a whole config text (YAML): it validates or is refused,
/// and a snapshot built from it routes and picks. Odd, the rest is split
/// at 0xff bytes into strings placed in a fixed config's route matches
/// (host, prefix, regex, header value, query value), header edits and
/// rewrite, and into a request (host, path, header): the matcher builder
/// and matcher, the edits and every load balancer (with endpoints out of
/// rotation by the data's bits) run on them. Never panics; returns the
/// number of picks made.
pub fn routing(data: &[u8]) -> usize {
    let Some((&first, rest)) = data.split_first() else {
        return 0;
    };
    if first % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        let Ok(cfg) = crate::config::parse(&text, false) else {
            return 0;
        };
        let Ok(snap) = crate::snapshot::Snapshot::build(cfg, 1, |_, _| Ok(1)) else {
            return 0;
        };
        return route_some(&snap, "h", "/", "v", rest);
    }
    let parts: Vec<String> = rest
        .split(|&b| b == 0xff)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let part = |i: usize| parts.get(i).cloned().unwrap_or_default();
    let q = |s: String| serde_json::Value::String(s).to_string();
    let lb = [
        "round_robin",
        "weighted_random",
        "ring_hash",
        "p2c_ewma",
        "score_weighted",
    ][usize::from(first / 2) % 5];
    let text = format!(
        r#"version: 1
listeners:
  - {{ name: l, bind: "127.0.0.1:1", protocol: http, default_route: d }}
clusters:
  - name: c
    lb: {lb}
    locality: {{ prefer: zone }}
    outlier: {{ consecutive_5xx: 2 }}
    endpoints:
      - {{ addr: "127.0.0.1:2", weight: 3, labels: {{ zone: a, region: r, v: "1" }} }}
      - {{ addr: "127.0.0.1:3", labels: {{ zone: b, region: r, v: "1" }} }}
      - {{ addr: "127.0.0.1:4", labels: {{ zone: c, region: s, v: "2" }} }}
routes:
  - name: m
    match: {{ host: {}, path_prefix: {}, headers: {{ x-a: {} }}, query: {{ k: {} }} }}
    to: [ {{ cluster: c, subset: {{ v: "1" }}, weight: 9 }}, {{ cluster: c, subset: {{ v: "2" }} }} ]
    hash_on: "header:x-a"
    prefix_rewrite: {}
    headers: {{ request_set: {{ x-s: {} }}, response_remove: [ {} ] }}
  - name: r
    match: {{ path_regex: {} }}
    to: [ {{ cluster: c }} ]
  - {{ name: d, to: [ {{ cluster: c }} ] }}
node: {{ zone: a, region: r }}
"#,
        q(part(0)),
        q(format!("/{}", part(1))),
        q(part(3)),
        q(part(4)),
        q(format!("/{}", part(5))),
        q(part(6)),
        q(part(7)),
        q(part(2)),
    );
    let Ok(cfg) = crate::config::parse(&text, false) else {
        return 0;
    };
    let Ok(snap) = crate::snapshot::Snapshot::build(cfg, 1, |_, _| Ok(1)) else {
        return 0;
    };
    route_some(&snap, &part(8), &part(9), &part(10), rest)
}

/// Routes and picks a few requests (host, path, `x-a` value) on `snap`,
/// with endpoints taken out of rotation and attempts ended as `bits` say.
fn route_some(
    snap: &crate::snapshot::Snapshot,
    host: &str,
    path: &str,
    v: &str,
    bits: &[u8],
) -> usize {
    use crate::snapshot::RequestView;
    use crate::snapshot::live::Outcome;

    let header = |n: &str| (n == "x-a").then_some(v.as_bytes());
    let view = RequestView {
        host: Some(host.as_bytes()),
        path,
        method: "GET",
        header: &header,
    };
    let mut rr = Vec::new();
    let client = std::net::IpAddr::from([10, 0, 0, 1]);
    let mut picks = 0;
    for (k, &b) in bits.iter().enumerate().take(256) {
        let now = 1_000_000_000 + k as u64 * 50_000_000;
        let Some(r) = snap.route(0, &view) else {
            continue;
        };
        if let Some(c) = snap.clusters.first() {
            c.live.set_healthy(usize::from(b % 4), b & 0x40 == 0);
            c.live.tick(now, &mut Vec::new());
        }
        let Some(p) = snap.pick(r, &view, u64::from(b) << 7 | k as u64, &mut rr, client, now)
        else {
            continue;
        };
        picks += 1;
        let _ = snap.retry_pick(p, usize::from(b % 3) + 1, now);
        if let Some(c) = snap.clusters.get(p.cluster) {
            let o = [Outcome::Success, Outcome::Http5xx, Outcome::Gateway][usize::from(b % 3)];
            if let Some(e) = c.live.endpoints.get(p.endpoint) {
                e.begin();
            }
            let _ = c.live.end(p.endpoint, now, u64::from(b) * 1_000_000, o);
        }
        if let Some(e) = snap.routes.get(r).and_then(|r| r.edits.as_ref()) {
            let mut out = Vec::new();
            e.write_target(path, &mut out);
            e.request.write_added(&mut out);
        }
    }
    picks
}

/// The etcd snapshot builder from an arbitrary key set: `data` is split
/// at 0xff bytes into key, value, key, value, ... (keys go under the
/// prefix `/p/`, so `routes/r`, `clusters/c`, `endpoints/c/1.2.3.4:5`,
/// `sampling` ... are reachable). The set is assembled over a base
/// config, validated and, if valid, built into a snapshot whose
/// listeners are placed against the base's. Never panics; returns the
/// number of routes built (0: rejected).
pub fn etcd_keys(data: &[u8]) -> usize {
    const BASE: &str = r#"version: 1
listeners:
  - { name: api, bind: "127.0.0.1:1", protocol: http, default_route: r }
  - { name: tcp, bind: "127.0.0.1:2", protocol: tcp, default_route: r }
clusters:
  - { name: c, endpoints: [ { addr: "127.0.0.1:3" } ] }
routes:
  - { name: r, to: [ { cluster: c } ] }
"#;
    let Ok(base) = crate::config::parse(BASE, false) else {
        return 0;
    };
    let Ok(prev) = crate::snapshot::Snapshot::build(base.clone(), 1, |_, _| Ok(1)) else {
        return 0;
    };
    let parts: Vec<&[u8]> = data.split(|&b| b == 0xff).collect();
    let kvs: std::collections::BTreeMap<String, Vec<u8>> = parts
        .chunks(2)
        .map(|kv| {
            let key = format!("/p/{}", String::from_utf8_lossy(kv[0]));
            (key, kv.get(1).map_or_else(Vec::new, |v| v.to_vec()))
        })
        .collect();
    let Ok(a) = crate::etcd::build("/p/", &kvs, Some(&base)) else {
        return 0;
    };
    let Ok(mut snap) = crate::snapshot::Snapshot::build(a.config, 2, |_, _| Ok(1)) else {
        return 0;
    };
    if snap.place_listeners(&prev, |i| i as u64 % 2).is_err() {
        return 0;
    }
    snap.routes.len()
}

/// Fuzz entry for the mesh transport header: a header that parses
/// re-encodes to the same bytes, and parsing is incremental: every
/// prefix shorter than the header needs more (or already fails with the
/// same error), every longer one gives the same header. Returns 1 when
/// `data` starts with a valid header.
pub fn mesh_header(data: &[u8]) -> usize {
    use crate::tls::header::Header;
    let full = Header::parse(data);
    for k in 0..data.len().min(64) {
        let part = Header::parse(&data[..k]);
        match (&full, &part) {
            (Ok(Some((_, n))), Ok(None)) => assert!(k < *n, "a whole header needs more"),
            (Ok(Some((h, n))), Ok(Some((g, m)))) => assert!(h == g && n == m && k >= *n),
            (Ok(Some(_)), Err(e)) => panic!("a prefix of a valid header failed: {e}"),
            (Err(e), Err(f)) => assert_eq!(e, f, "the same bytes fail the same way"),
            (Err(_), Ok(None)) => {}
            (Err(e), Ok(Some(_))) => panic!("a prefix parsed where the whole fails: {e}"),
            (Ok(None), Ok(None)) => {}
            (Ok(None), other) => panic!("a prefix decided what the whole did not: {other:?}"),
        }
    }
    match full {
        Ok(Some((h, n))) => {
            let bytes = h.encode();
            assert_eq!(&data[..n], &bytes[..], "re-encodes to the same bytes");
            1
        }
        _ => 0,
    }
}
