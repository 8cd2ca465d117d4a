//! The head sent upstream: the request line and the client's fields minus
//! hop-by-hop ones, plus `x-forwarded-for` (appended), `x-request-id`
//! (generated when absent, propagated otherwise) and, for a chunked body,
//! `transfer-encoding: chunked` (the body is forwarded unchanged).
//! `traceparent` passes through; its trace id, or else a hash of
//! `x-request-id`, is the sampling key.

use std::net::IpAddr;

use super::edit::RouteEdits;
use super::request::{Body, RequestHead};

/// Fields that describe one hop and never go upstream as received.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// What the rewrite decided about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The id was generated here.
    pub generated_id: bool,
    /// Sampling key: hash of the W3C trace id, else of the request id.
    pub sampling_hash: u64,
}

/// Writes the upstream head for `head` into `out` (appending), with the
/// route's `edits` (fields dropped before anything else looks at them,
/// fields added after the client's, the path prefix rewritten). `new_id`
/// is called only when the request carries no `x-request-id`.
pub fn upstream_head(
    head: &RequestHead<'_>,
    client: IpAddr,
    edits: Option<&RouteEdits>,
    new_id: impl FnOnce() -> [u8; 32],
    out: &mut Vec<u8>,
) -> Meta {
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    match edits {
        Some(e) => e.write_target(head.target, out),
        None => out.extend_from_slice(head.target.as_bytes()),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // Fields named in Connection are hop-by-hop too.
    let connection_named: Vec<&[u8]> = head
        .headers()
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b',').map(|t| t.trim_ascii()))
        .filter(|t| !t.is_empty())
        .collect();
    let mut xff: Vec<&[u8]> = Vec::new();
    let mut request_id: Option<&[u8]> = None;
    for h in head.headers() {
        let name = h.name;
        let lower_is = |n: &str| name.eq_ignore_ascii_case(n);
        // The framing is written once below from what the parser decided
        // (several identical Content-Length fields become one).
        if lower_is("content-length") || edits.is_some_and(|e| e.request.removes(name)) {
            continue;
        }
        let named = connection_named
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name.as_bytes()));
        // A field the client made hop-by-hop is dropped before it can
        // count: a Connection-named x-request-id is treated as absent.
        // (Connection naming a framing field never gets here: the parser
        // refuses it.)
        let hop = HOP_BY_HOP.iter().any(|n| lower_is(n)) || named;
        let keep_for_tunnel = head.tunnel && (lower_is("upgrade") || lower_is("connection"));
        if hop && !keep_for_tunnel {
            continue;
        }
        if lower_is("x-forwarded-for") {
            xff.push(h.value.trim_ascii());
            continue;
        }
        if lower_is("x-request-id") && request_id.is_none() {
            request_id = Some(h.value);
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(e) = edits {
        e.request.write_added(out);
    }
    match head.body {
        Body::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Body::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            super::write_u64(n, out);
            out.extend_from_slice(b"\r\n");
        }
        Body::None => {}
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for v in xff.iter().filter(|v| !v.is_empty()) {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    super::write_ip(client, out);
    out.extend_from_slice(b"\r\n");
    let generated;
    let id_hash = match request_id {
        Some(v) => {
            generated = None;
            ringlog::sampler::hash_bytes(v)
        }
        None => {
            let id = new_id();
            out.extend_from_slice(b"x-request-id: ");
            out.extend_from_slice(&id);
            out.extend_from_slice(b"\r\n");
            generated = Some(id);
            ringlog::sampler::hash_bytes(&id)
        }
    };
    out.extend_from_slice(b"\r\n");
    let generated_id = generated.is_some();
    let sampling_hash = head
        .header("traceparent")
        .and_then(trace_id)
        .map(|id| ringlog::sampler::hash_trace_id(&id))
        .unwrap_or(id_hash);
    Meta {
        generated_id,
        sampling_hash,
    }
}

/// Adds `name: value` to a finished head in `out` (before its blank line).
pub fn add_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    if out.ends_with(b"\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n\r\n");
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`);
/// None if malformed or all zero.
pub fn trace_id(value: &[u8]) -> Option<[u8; 16]> {
    let v = value.trim_ascii();
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, pair) in v[3..35].chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        id[i] = u8::from_str_radix(s, 16).ok()?;
    }
    (id != [0; 16]).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::{Limits, request};

    fn rewrite(raw: &[u8]) -> (String, Meta) {
        rewrite_with(raw, None)
    }

    fn rewrite_with(raw: &[u8], edits: Option<&RouteEdits>) -> (String, Meta) {
        let mut slots = request::header_slots();
        let head = request::parse(raw, &Limits::default(), &mut slots)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        let meta = upstream_head(
            &head,
            "10.1.2.3".parse().unwrap(),
            edits,
            || *b"00000000000000000000000000000001",
            &mut out,
        );
        (String::from_utf8(out).unwrap(), meta)
    }

    #[test]
    fn strips_hop_by_hop_and_appends_forwarding() {
        let (h, m) = rewrite(
            b"POST /a HTTP/1.1\r\nHost: s\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n\
TE: trailers\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\nAccept: */*\r\n\r\n",
        );
        assert!(h.starts_with("POST /a HTTP/1.1\r\nHost: s\r\n"), "{h}");
        for gone in [
            "Connection",
            "X-Secret",
            "Keep-Alive",
            "TE:",
            "Transfer-Encoding",
        ] {
            assert!(!h.contains(gone), "{gone} leaked: {h}");
        }
        assert!(h.contains("transfer-encoding: chunked\r\n"));
        assert!(
            h.contains("x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.1.2.3\r\n"),
            "{h}"
        );
        assert!(h.contains("Accept: */*\r\n"));
        assert!(h.contains("x-request-id: 00000000000000000000000000000001\r\n"));
        assert!(m.generated_id);
        assert!(h.ends_with("\r\n\r\n"));
    }

    #[test]
    fn propagates_ids_and_derives_the_sampling_key() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let raw =
            format!("GET / HTTP/1.1\r\nHost: s\r\nX-Request-Id: abc\r\ntraceparent: {tp}\r\n\r\n");
        let (h, m) = rewrite(raw.as_bytes());
        assert!(h.contains(&format!("traceparent: {tp}\r\n")));
        assert!(!h.contains("00000000000000000000000000000001"));
        assert!(!m.generated_id);
        assert!(h.contains("X-Request-Id: abc\r\n"), "{h}");
        let id = trace_id(tp.as_bytes()).unwrap();
        assert_eq!(m.sampling_hash, ringlog::sampler::hash_trace_id(&id));
        // Without traceparent the request id is the key: same id, same key everywhere.
        let (_, m2) = rewrite(b"GET / HTTP/1.1\r\nHost: s\r\nX-Request-Id: abc\r\n\r\n");
        assert_eq!(m2.sampling_hash, ringlog::sampler::hash_bytes(b"abc"));
        assert_eq!(
            trace_id(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id(b"garbage"), None);
    }

    #[test]
    fn framing_is_written_once_and_connection_named_ids_do_not_count() {
        let (h, m) = rewrite(
            b"POST /a HTTP/1.1\r\nHost: s\r\nContent-Length: 3\r\ncontent-length: 3\r\n\
Connection: x-request-id, x-forwarded-for\r\nX-Request-Id: evil\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
        );
        assert_eq!(h.matches("content-length: 3\r\n").count(), 1, "{h}");
        assert!(
            !h.to_ascii_lowercase()
                .contains("content-length: 3\r\ncontent-length")
        );
        assert!(!h.contains("evil") && !h.contains("6.6.6.6"), "{h}");
        assert!(h.contains("x-forwarded-for: 10.1.2.3\r\n"), "{h}");
        assert!(m.generated_id);
        let mut out = b"GET / HTTP/1.1\r\nA: 1\r\n\r\n".to_vec();
        add_field(&mut out, b"host", b"10.0.0.1:80");
        assert_eq!(out, b"GET / HTTP/1.1\r\nA: 1\r\nhost: 10.0.0.1:80\r\n\r\n");
    }

    #[test]
    fn upgrade_keeps_its_fields() {
        let (h, _) = rewrite(
            b"GET /ws HTTP/1.1\r\nHost: s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert!(
            h.contains("Connection: Upgrade\r\n") && h.contains("Upgrade: websocket\r\n"),
            "{h}"
        );
    }

    #[test]
    fn route_edits_drop_set_add_and_rewrite_the_prefix() {
        let a = crate::config::schema::HeaderActions {
            request_add: [("x-env".to_string(), "prod".to_string())].into(),
            request_set: [("x-tenant".to_string(), "t1".to_string())].into(),
            request_remove: vec!["x-debug".into()],
            ..Default::default()
        };
        let e = RouteEdits::build(Some(&a), Some("/api/"), Some("/")).unwrap();
        let raw = b"GET /api/users HTTP/1.1\r\nHost: s\r\nX-Debug: 1\r\nX-Tenant: evil\r\nx-env: dev\r\n\r\n";
        let (h, _) = rewrite_with(raw, Some(&e));
        assert!(h.starts_with("GET /users HTTP/1.1\r\n"), "{h}");
        assert!(!h.contains("X-Debug") && !h.contains("evil"), "{h}");
        assert!(
            h.contains("x-env: dev\r\n") && h.contains("x-env: prod\r\n"),
            "{h}"
        );
        assert!(
            h.contains("x-tenant: t1\r\n") && h.ends_with("\r\n\r\n"),
            "{h}"
        );
        // The result is still one well-framed request.
        let mut slots = request::header_slots();
        let again = request::parse(h.as_bytes(), &Limits::default(), &mut slots);
        assert!(matches!(again, Ok(Some(_))), "{h}");
    }
}
