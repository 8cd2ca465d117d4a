//! The response side: vetting an upstream response head (anything the proxy
//! cannot frame with certainty is a 502), the head sent downstream, and the
//! agent's own local responses, which always carry `x-tailmesh-reason`.

use std::io::Write;

use ringlog::Reason;

use super::edit::HeaderEdit;
use super::{Limits, Reject};

pub use super::{HeaderSlots, MAX_HEADERS, header_slots};
use super::{content_length, token_list};

/// How a response body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the upstream closes.
    UntilClose,
}

/// A vetted upstream response head, borrowing from the buffer.
#[derive(Debug)]
pub struct ResponseHead<'a> {
    /// Bytes of the head, including the blank line.
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: &'a str,
    headers: &'a [httparse::Header<'a>],
    /// Body framing.
    pub body: Body,
    /// The upstream will close after this response.
    pub close: bool,
    /// The Content-Length value, if one was sent (also on HEAD and 304
    /// answers, where it describes a body that is not there).
    pub length: Option<u64>,
    /// Transfer-Encoding lists a coding other than `chunked` (gzip, ...).
    pub other_codings: bool,
}

/// What the downstream connection does after a response, as its head
/// tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1 keep-alive (the default: nothing to say).
    Keep,
    /// An HTTP/1.0 client that asked for keep-alive: `connection: keep-alive`.
    KeepHttp10,
    /// `connection: close`, then the agent closes.
    Close,
}

impl<'a> ResponseHead<'a> {
    /// Header fields in order.
    pub fn headers(&self) -> &[httparse::Header<'a>] {
        self.headers
    }
}

fn bad_upstream(detail: &'static str) -> Reject {
    Reject {
        status: 502,
        reason: Reason::UpstreamProtocol,
        detail,
    }
}

/// Parses and vets an upstream response head to a request with method
/// `method`. `Ok(None)`: read more.
pub fn parse<'h, 'b: 'h>(
    buf: &'b [u8],
    method: &str,
    limits: &Limits,
    slots: &'h mut HeaderSlots<'b>,
) -> Result<Option<ResponseHead<'h>>, Reject> {
    let framing = |e: Reject| bad_upstream(e.detail);
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) else {
        if buf.len() > limits.max_head {
            return Err(bad_upstream("response head too large"));
        }
        super::request::check_line_endings(buf, false).map_err(framing)?;
        return Ok(None);
    };
    if end > limits.max_head {
        return Err(bad_upstream("response head too large"));
    }
    let head = &buf[..end];
    super::request::check_line_endings(head, true).map_err(framing)?;
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, head, slots)
    {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(bad_upstream("malformed response head")),
    }
    let status = resp.code.unwrap_or(0);
    let minor = resp.version.unwrap_or(1);
    let reason = resp.reason.unwrap_or("");
    let headers: &'h [httparse::Header<'b>] = resp.headers;
    if !(100..=599).contains(&status) {
        return Err(bad_upstream("status code out of range"));
    }
    let mut r = ResponseHead {
        len: end,
        status,
        reason,
        headers,
        body: Body::None,
        close: minor == 0,
        length: None,
        other_codings: false,
    };
    let (mut length, mut te, mut chunked_last) = (None::<u64>, false, false);
    let mut other_codings = false;
    let mut close = r.close;
    for h in r.headers() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value).ok_or(bad_upstream("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad_upstream("conflicting Content-Length"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            for t in token_list(h.value) {
                chunked_last = t.eq_ignore_ascii_case(b"chunked");
                other_codings |= !chunked_last;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for t in token_list(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
                    close = false;
                }
            }
        }
    }
    r.close = close;
    r.length = length;
    r.other_codings = other_codings;
    if te && length.is_some() {
        return Err(bad_upstream("both Content-Length and Transfer-Encoding"));
    }
    let no_body =
        method.eq_ignore_ascii_case("HEAD") || status < 200 || status == 204 || status == 304;
    r.body = if no_body {
        Body::None
    } else if te && chunked_last {
        Body::Chunked
    } else if te {
        Body::UntilClose // a non-chunked final coding: delimited by close
    } else {
        length.map_or(Body::UntilClose, Body::Length)
    };
    if r.body == Body::UntilClose {
        r.close = true;
    }
    Ok(Some(r))
}

/// Fields that describe the upstream hop, or that the agent writes itself
/// (framing), and so are never copied downstream as received.
const NOT_COPIED: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "trailer",
    "content-length",
];

/// Writes the head sent downstream for `resp`. Hop-by-hop fields and the
/// fields the upstream's `Connection` names are removed; the framing is
/// written from what the parser decided: one `content-length`, or the
/// upstream's transfer codings (a chunked body is forwarded as is, other
/// codings are kept, never dropped while their bytes pass through). With
/// `dechunk` the body goes out de-chunked and close-delimited (for an
/// HTTP/1.0 client). `persist` says what the connection does next; a
/// close-delimited body always closes. `edit`: the route's response
/// header edits.
pub fn downstream_head(
    resp: &ResponseHead<'_>,
    persist: Persist,
    dechunk: bool,
    edit: Option<&HeaderEdit>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    super::write_u64(u64::from(resp.status), out);
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    // The tokens of the Connection fields, gathered once (no allocation
    // when there are none, the common case on a kept-alive upstream).
    let named: Vec<&[u8]> = resp
        .headers()
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| token_list(h.value))
        .collect();
    for h in resp.headers() {
        let is_named = named
            .iter()
            .any(|t| t.eq_ignore_ascii_case(h.name.as_bytes()));
        let edited = edit.is_some_and(|e| e.removes(h.name));
        if is_named || edited || NOT_COPIED.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(e) = edit {
        e.write_added(out);
    }
    let coded = resp.body == Body::Chunked || (resp.body == Body::UntilClose && resp.other_codings);
    if coded && !dechunk {
        for h in resp
            .headers()
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        {
            out.extend_from_slice(b"transfer-encoding: ");
            out.extend_from_slice(h.value.trim_ascii());
            out.extend_from_slice(b"\r\n");
        }
    } else if let (Some(n), false) = (resp.length, coded) {
        out.extend_from_slice(b"content-length: ");
        super::write_u64(n, out);
        out.extend_from_slice(b"\r\n");
    }
    let close = persist == Persist::Close || dechunk || resp.body == Body::UntilClose;
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if persist == Persist::KeepHttp10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A response the agent makes itself: status, `x-tailmesh-reason`, a
/// one-line plain-text body (none for a HEAD request: `head_only`; its
/// content-length still says what a GET would get), and the connection
/// header `persist` calls for.
pub fn local(
    status: u16,
    reason: Reason,
    detail: &str,
    persist: Persist,
    head_only: bool,
    out: &mut Vec<u8>,
) {
    local_with(status, reason, detail, persist, head_only, "", out);
}

/// [`local`] with `extra` header lines (each ending in CRLF, e.g.
/// `retry-after: 1\r\n`).
pub fn local_with(
    status: u16,
    reason: Reason,
    detail: &str,
    persist: Persist,
    head_only: bool,
    extra: &str,
    out: &mut Vec<u8>,
) {
    let body_len = detail.len() + 1;
    let conn = match persist {
        Persist::Keep => "",
        Persist::KeepHttp10 => "connection: keep-alive\r\n",
        Persist::Close => "connection: close\r\n",
    };
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nx-tailmesh-reason: {}\r\ncontent-type: text/plain\r\ncontent-length: {body_len}\r\n{extra}{conn}\r\n",
        phrase(status),
        reason.name(),
    );
    if !head_only {
        out.extend_from_slice(detail.as_bytes());
        out.push(b'\n');
    }
}

/// Standard reason phrases for the statuses the agent produces.
pub fn phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p<'a>(raw: &'a [u8], method: &str) -> Result<Option<ResponseHead<'a>>, Reject> {
        // Leaked so the head can outlive this helper; tests only.
        parse(
            raw,
            method,
            &Limits::default(),
            Box::leak(Box::new(header_slots())),
        )
    }

    #[test]
    fn framing() {
        let r = p(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "GET")
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body, r.close), (200, Body::Length(5), false));
        let r = p(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body, Body::Chunked);
        let r = p(b"HTTP/1.1 200 OK\r\n\r\n", "GET").unwrap().unwrap();
        assert_eq!((r.body, r.close), (Body::UntilClose, true));
        let r = p(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD")
            .unwrap()
            .unwrap();
        assert_eq!(r.body, Body::None);
        for s in [
            "101 Switching Protocols",
            "204 No Content",
            "304 Not Modified",
            "100 Continue",
        ] {
            let raw = format!("HTTP/1.1 {s}\r\nContent-Length: 5\r\n\r\n");
            assert_eq!(
                p(raw.as_bytes(), "GET").unwrap().unwrap().body,
                Body::None,
                "{s}"
            );
        }
        let r = p(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", "GET")
            .unwrap()
            .unwrap();
        assert!(r.close);
        assert!(
            p(b"HTTP/1.1 200 OK\r\nContent-Le", "GET")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn malformed_upstream_responses_are_502() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\nContent-Length: 1\n\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Header: 1\r\n\r\n",
            b"HTTP/1.1 999 Nope\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        ] {
            let e = p(raw, "GET").unwrap_err();
            assert_eq!(
                (e.status, e.reason),
                (502, Reason::UpstreamProtocol),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(70_000));
        assert_eq!(p(big.as_bytes(), "GET").unwrap_err().status, 502);
    }

    #[test]
    fn downstream_head_and_local_responses() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n";
        let r = p(raw, "GET").unwrap().unwrap();
        let mut out = Vec::new();
        downstream_head(&r, Persist::Keep, false, None, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut out = Vec::new();
        local(
            503,
            Reason::UpstreamConnect,
            "upstream connect failed",
            Persist::Close,
            false,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "HTTP/1.1 503 Service Unavailable\r\nx-tailmesh-reason: upstream_connect\r\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("connection: close\r\n\r\nupstream connect failed\n"));
        assert!(text.contains("content-length: 24\r\n"));
        let mut out = Vec::new();
        local(
            404,
            Reason::NoRoute,
            "no route",
            Persist::KeepHttp10,
            true,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with("content-length: 9\r\nconnection: keep-alive\r\n\r\n"),
            "a HEAD answer has no body: {text}"
        );
    }

    #[test]
    fn downstream_framing_connection_names_and_codings() {
        // Connection-named fields go; duplicate equal lengths become one.
        let raw = b"HTTP/1.1 200 OK\r\nConnection: x-secret, content-length\r\nX-Secret: s\r\n\
Content-Length: 2\r\ncontent-length: 2\r\nX-B: 2\r\n\r\n";
        let r = p(raw, "GET").unwrap().unwrap();
        let mut out = Vec::new();
        downstream_head(&r, Persist::KeepHttp10, false, None, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nX-B: 2\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n"
        );
        // Other codings are kept with their bytes; chunked is kept as sent.
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        let r = p(raw, "GET").unwrap().unwrap();
        let mut out = Vec::new();
        downstream_head(&r, Persist::Keep, false, None, &mut out);
        assert!(out.ends_with(b"transfer-encoding: gzip, chunked\r\n\r\n"));
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
        let r = p(raw, "GET").unwrap().unwrap();
        let mut out = Vec::new();
        downstream_head(&r, Persist::Keep, false, None, &mut out);
        assert!(out.ends_with(b"transfer-encoding: gzip\r\nconnection: close\r\n\r\n"));
        // De-chunked for an HTTP/1.0 client: no framing field, close.
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let r = p(raw, "GET").unwrap().unwrap();
        let mut out = Vec::new();
        downstream_head(&r, Persist::KeepHttp10, true, None, &mut out);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
        // HEAD keeps the length it describes.
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n";
        let r = p(raw, "HEAD").unwrap().unwrap();
        let mut out = Vec::new();
        downstream_head(&r, Persist::Keep, false, None, &mut out);
        assert!(out.ends_with(b"content-length: 7\r\n\r\n"));
    }
}
