//! Parsing and vetting a request head (see the table in [`super`]).

use super::{Limits, Reject};
use ringlog::Reason;

pub use super::{HeaderSlots, MAX_HEADERS, header_slots};
use super::{content_length, token_list};

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding (decode with [`super::chunked::Decoder`]).
    Chunked,
}

/// A vetted request head, borrowing from the input buffer.
#[derive(Debug)]
pub struct RequestHead<'a> {
    /// Bytes of the head, including the blank line.
    pub len: usize,
    /// Method.
    pub method: &'a str,
    /// Request target.
    pub target: &'a str,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    headers: &'a [httparse::Header<'a>],
    /// Body framing.
    pub body: Body,
    /// The client wants the connection closed after this exchange.
    pub close: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// `CONNECT`, or an `Upgrade` request: becomes an L4 tunnel once accepted.
    pub tunnel: bool,
}

impl<'a> RequestHead<'a> {
    /// The header fields in order.
    pub fn headers(&self) -> &[httparse::Header<'a>] {
        self.headers
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// Parses and vets the request head at the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (and call again). `Err`: refuse with
/// the given status and close the connection. The fields land in `slots`.
pub fn parse<'h, 'b: 'h>(
    buf: &'b [u8],
    limits: &Limits,
    slots: &'h mut HeaderSlots<'b>,
) -> Result<Option<RequestHead<'h>>, Reject> {
    let line_end = buf.iter().position(|&b| b == b'\n');
    match line_end {
        Some(i) if i > limits.max_request_line + 1 => return Err(uri_too_long()),
        None if buf.len() > limits.max_request_line + 1 => return Err(uri_too_long()),
        _ => {}
    }
    let Some(head_len) = head_end(buf) else {
        if buf.len() > limits.max_head {
            return Err(head_too_large());
        }
        check_line_endings(buf, false)?;
        return Ok(None);
    };
    if head_len > limits.max_head {
        return Err(head_too_large());
    }
    check_line_endings(&buf[..head_len], true)?;
    let mut req = httparse::Request::new(&mut []);
    let status = req
        .parse_with_uninit_headers(&buf[..head_len], slots)
        .map_err(|e| match e {
            httparse::Error::TooManyHeaders => head_too_large(),
            httparse::Error::HeaderName => {
                Reject::bad("invalid header name (bad byte, space before ':' or obs-fold)")
            }
            httparse::Error::HeaderValue => Reject::bad("invalid byte in a header value"),
            httparse::Error::Version => Reject::bad("unsupported or malformed HTTP version"),
            httparse::Error::Token => Reject::bad("invalid method"),
            _ => Reject::bad("malformed request head"),
        })?;
    if !status.is_complete() {
        return Ok(None);
    }
    let (method, target, minor) = (
        req.method.unwrap_or(""),
        req.path.unwrap_or(""),
        req.version.unwrap_or(1),
    );
    let headers: &'h [httparse::Header<'b>] = req.headers;
    if headers.len() > limits.max_headers {
        return Err(head_too_large());
    }
    let mut head = RequestHead {
        len: head_len,
        method,
        target,
        minor,
        headers,
        body: Body::None,
        close: minor == 0,
        expect_continue: false,
        tunnel: method == "CONNECT",
    };
    vet(&mut head)?;
    Ok(Some(head))
}

/// How far [`head_ready`] has checked a head that is still arriving.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadScan {
    /// Bytes checked so far.
    checked: usize,
    /// The request line's LF was seen.
    line_seen: bool,
}

/// Incremental check of a head still arriving: `buf` holds the bytes so
/// far; `scan` remembers what earlier calls checked. Looks only at the new
/// bytes (and three before them), so a head that arrives a byte per read
/// costs linear time, not quadratic. `Ok(true)`: the head is complete, call
/// [`parse`]. Errors are the ones [`parse`] would give on the same bytes.
pub fn head_ready(buf: &[u8], scan: &mut HeadScan, limits: &Limits) -> Result<bool, Reject> {
    let from = scan.checked.min(buf.len());
    scan.checked = buf.len();
    if !scan.line_seen {
        match buf[from..].iter().position(|&b| b == b'\n') {
            Some(i) if from + i > limits.max_request_line + 1 => return Err(uri_too_long()),
            Some(_) => scan.line_seen = true,
            None if buf.len() > limits.max_request_line + 1 => return Err(uri_too_long()),
            None => {}
        }
    }
    let back = from.saturating_sub(3);
    let end = buf[back..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + back + 4);
    match end {
        Some(e) if e > limits.max_head => Err(head_too_large()),
        Some(_) => Ok(true),
        None if buf.len() > limits.max_head => Err(head_too_large()),
        None => {
            // Start one byte early: a CR that ended the last read may have
            // been waiting for its LF (one more byte of context before it).
            let start = from.saturating_sub(1);
            let ctx = start.saturating_sub(1);
            check_line_endings_from(&buf[ctx..], start - ctx, false)?;
            Ok(false)
        }
    }
}

fn uri_too_long() -> Reject {
    Reject {
        status: 414,
        reason: Reason::UriTooLong,
        detail: "request line too long",
    }
}

fn head_too_large() -> Reject {
    Reject {
        status: 431,
        reason: Reason::HeaderTooLarge,
        detail: "request head too large",
    }
}

/// End of the head (after the blank line), CRLF only.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Every CR must start a CRLF and every LF must end one. `complete`: the
/// slice is a whole head, so a trailing lone CR is also an error.
pub(crate) fn check_line_endings(head: &[u8], complete: bool) -> Result<(), Reject> {
    check_line_endings_from(head, 0, complete)
}

/// [`check_line_endings`] for the bytes from `skip` on (the ones before
/// are context for a CR or LF at `skip`).
fn check_line_endings_from(head: &[u8], skip: usize, complete: bool) -> Result<(), Reject> {
    for (i, &b) in head.iter().enumerate().skip(skip) {
        match b {
            b'\r' => match head.get(i + 1) {
                Some(b'\n') => {}
                None if !complete => {}
                _ => return Err(Reject::bad("bare CR")),
            },
            b'\n' if i == 0 || head[i - 1] != b'\r' => {
                return Err(Reject::bad("bare LF line ending"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Framing rules: Content-Length / Transfer-Encoding, Connection, Expect, Upgrade.
fn vet(head: &mut RequestHead<'_>) -> Result<(), Reject> {
    let mut length: Option<u64> = None;
    let mut te_seen = false;
    let mut chunked_last = false;
    for h in head.headers() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value).ok_or(Reject::bad("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Reject::bad("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in token_list(h.value) {
                if chunked_last {
                    return Err(Reject::bad("chunked is not the final transfer coding"));
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked_last = true;
                } else {
                    return Err(Reject::bad("unsupported transfer coding"));
                }
            }
            te_seen = true;
        }
    }
    if te_seen && length.is_some() {
        return Err(Reject::bad("both Content-Length and Transfer-Encoding"));
    }
    if te_seen && !chunked_last {
        return Err(Reject::bad("Transfer-Encoding without a final chunked"));
    }
    if te_seen && head.minor == 0 {
        return Err(Reject::bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    head.body = if te_seen {
        Body::Chunked
    } else {
        length.map_or(Body::None, Body::Length)
    };
    let mut close = head.close;
    let mut upgrade = false;
    let mut expect_continue = false;
    for h in head.headers() {
        if h.name.eq_ignore_ascii_case("connection") {
            for t in token_list(h.value) {
                if names_framing(t) {
                    return Err(Reject {
                        status: 400,
                        reason: Reason::BadConnectionHeader,
                        detail: "Connection names a field that frames the request or names its target",
                    });
                }
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && head.minor == 0 {
                    close = false;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    upgrade = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            if h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(Reject {
                    status: 417,
                    reason: Reason::BadRequest,
                    detail: "unsupported expectation",
                });
            }
        }
    }
    head.close = close;
    head.expect_continue = expect_continue;
    head.tunnel |= upgrade && head.header("upgrade").is_some();
    if head.method == "CONNECT" && !authority_form(head.target) {
        return Err(Reject::bad("CONNECT target must be host:port"));
    }
    if head.minor == 1 && head.header("host").is_none() {
        return Err(Reject::bad("missing Host header"));
    }
    if head
        .headers()
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count()
        > 1
    {
        return Err(Reject::bad("more than one Host header"));
    }
    Ok(())
}

/// Fields that frame a message or name its target. Removing one because
/// `Connection` lists it would change what the next hop reads as the
/// message (request smuggling), so such a `Connection` is refused.
const FRAMING: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// True if the `Connection` token `t` names a framing field.
pub(crate) fn names_framing(t: &[u8]) -> bool {
    FRAMING.iter().any(|f| t.eq_ignore_ascii_case(f.as_bytes()))
}

/// `host:port` (RFC 9112 section 3.2.3): a non-empty host without `/`, `?`,
/// `#` or `@`, and a port of 1 to 5 digits.
fn authority_form(target: &str) -> bool {
    let Some((host, port)) = target.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && !host.bytes().any(|b| matches!(b, b'/' | b'?' | b'#' | b'@'))
        && (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &[u8]) -> RequestHead<'_> {
        // Leaked so the head can outlive this helper; tests only.
        match parse(raw, &Limits::default(), Box::leak(Box::new(header_slots()))) {
            Ok(Some(h)) => h,
            other => panic!(
                "{:?} for {:?}",
                other.map(|h| h.map(|h| h.len)),
                String::from_utf8_lossy(raw)
            ),
        }
    }

    fn status(raw: &[u8]) -> u16 {
        match parse(raw, &Limits::default(), &mut header_slots()) {
            Err(r) => r.status,
            Ok(Some(_)) => 200,
            Ok(None) => 0,
        }
    }

    #[test]
    fn accepts_ordinary_requests() {
        let h = ok(b"POST /api?x=1 HTTP/1.1\r\nHost: orders.svc\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(
            (h.method, h.target, h.body, h.close),
            ("POST", "/api?x=1", Body::Length(5), false)
        );
        assert_eq!(h.header("HOST"), Some(&b"orders.svc"[..]));
        let h = ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!((h.body, h.expect_continue), (Body::Chunked, true));
        let h = ok(b"GET / HTTP/1.0\r\n\r\n");
        assert!(h.close);
        let h = ok(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(!h.close);
        let h =
            ok(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(h.tunnel);
        assert!(ok(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n").tunnel);
    }

    #[test]
    fn connection_naming_a_framing_field_is_refused() {
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive, Content-Length\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 5\r\nconnection: CONTENT-LENGTH\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: host\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n",
        ] {
            let e = parse(raw, &Limits::default(), &mut header_slots()).unwrap_err();
            assert_eq!(
                (e.status, e.reason),
                (400, Reason::BadConnectionHeader),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn connect_needs_an_authority_target() {
        assert_eq!(status(b"CONNECT /app/x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"CONNECT a:b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"CONNECT u@a:1 HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"CONNECT a.b:443 HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(
            status(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
            200
        );
    }

    #[test]
    fn byte_by_byte_scanning_agrees_with_a_whole_parse() {
        let cases: [&[u8]; 5] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rX\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r",
        ];
        for raw in cases {
            let mut verdict = Ok(false);
            let mut scan = HeadScan::default();
            for n in 1..=raw.len() {
                verdict = head_ready(&raw[..n], &mut scan, &Limits::default());
                if !matches!(verdict, Ok(false)) {
                    break;
                }
            }
            let whole = match parse(raw, &Limits::default(), &mut header_slots()) {
                Ok(Some(_)) => Ok(true),
                Ok(None) => Ok(false),
                Err(e) => Err(e.status),
            };
            assert_eq!(
                verdict.map_err(|e| e.status),
                whole,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
        let mut got = Ok(false);
        let mut scan = HeadScan::default();
        for n in (1..=long.len()).step_by(7) {
            got = head_ready(&long.as_bytes()[..n], &mut scan, &Limits::default());
            if got.is_err() {
                break;
            }
        }
        assert_eq!(got.map_err(|e| e.status), Err(414));
    }

    #[test]
    fn incomplete_until_the_blank_line() {
        let full = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(status(&full[..cut]), 0, "cut at {cut}");
        }
        assert_eq!(status(full), 200);
    }

    #[test]
    fn limits() {
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(long_line.as_bytes()), 414);
        assert_eq!(
            status(&long_line.as_bytes()[..8500]),
            414,
            "known before the head ends"
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "b".repeat(70_000)
        );
        assert_eq!(status(big.as_bytes()), 431);
        assert_eq!(
            status(&big.as_bytes()[..66_000]),
            431,
            "known before the head ends"
        );
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes()),
            431
        );
        let small = Limits {
            max_head: 100,
            max_request_line: 20,
            max_headers: 4,
        };
        assert_eq!(
            parse(
                b"GET /aaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n",
                &small,
                &mut header_slots()
            )
            .unwrap_err()
            .status,
            414
        );
    }
}
