//! Minimal sans-IO HTTP/1.1 framing shared by the bench upstream and load
//! generator: request and response heads (via httparse) and a streaming body
//! decoder for Content-Length and chunked bodies. Bodies are skipped as they
//! stream by, never buffered whole.

/// Most headers a head may carry.
pub const MAX_HEADERS: usize = 64;

/// Framing errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The head did not parse.
    #[error("malformed head: {0}")]
    Head(String),
    /// Content-Length unparsable, or both Content-Length and chunked.
    #[error("ambiguous or invalid body length")]
    Length,
    /// A chunk size line did not parse.
    #[error("malformed chunk")]
    Chunk,
}

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// A parsed request head (owned parts only; headers stay in the buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head including the blank line.
    pub len: usize,
    /// Where the method is in the parsed buffer (no allocation per request).
    pub method: std::ops::Range<usize>,
    /// Where the request target is in the parsed buffer.
    pub path: std::ops::Range<usize>,
    /// Body framing.
    pub body: Body,
    /// The client asked to close after this request.
    pub close: bool,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head including the blank line.
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// Body framing.
    pub body: Body,
    /// The server will close after this response.
    pub close: bool,
}

fn framing(headers: &[httparse::Header<'_>]) -> Result<(Option<u64>, bool, bool), FramingError> {
    let (mut length, mut chunked, mut close) = (None, false, false);
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| FramingError::Length)?;
            let n: u64 = v.trim().parse().map_err(|_| FramingError::Length)?;
            if length.is_some_and(|l| l != n) {
                return Err(FramingError::Length);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
            if !chunked {
                return Err(FramingError::Length);
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    if chunked && length.is_some() {
        return Err(FramingError::Length);
    }
    Ok((length, chunked, close))
}

/// Parses a request head; `Ok(None)` if incomplete. `on_header` sees every
/// header (for fault matching) while the buffer is borrowed.
pub fn parse_request(
    buf: &[u8],
    mut on_header: impl FnMut(&str, &[u8]),
) -> Result<Option<RequestHead>, FramingError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(FramingError::Head(e.to_string())),
    };
    let (length, chunked, mut close) = framing(req.headers)?;
    for h in req.headers.iter() {
        on_header(h.name, h.value);
    }
    if req.version == Some(0) {
        close = !req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"keep-alive")
        });
    }
    let body = if chunked {
        Body::Chunked
    } else {
        length.map_or(Body::None, Body::Length)
    };
    Ok(Some(RequestHead {
        len,
        method: span(buf, req.method.unwrap_or("")),
        path: span(buf, req.path.unwrap_or("")),
        body,
        close,
    }))
}

/// The range of `part` (a slice httparse borrowed from `buf`) within `buf`.
fn span(buf: &[u8], part: &str) -> std::ops::Range<usize> {
    let start = (part.as_ptr() as usize)
        .saturating_sub(buf.as_ptr() as usize)
        .min(buf.len());
    start..(start + part.len()).min(buf.len())
}

/// Parses a response head to a request of `method`; `Ok(None)` if incomplete.
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<ResponseHead>, FramingError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(FramingError::Head(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    let (length, chunked, close) = framing(resp.headers)?;
    let body = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        Body::None
    } else if chunked {
        Body::Chunked
    } else {
        length.map_or(Body::UntilClose, Body::Length)
    };
    Ok(Some(ResponseHead {
        len,
        status,
        body,
        close: close || resp.version == Some(0),
    }))
}

/// Streaming body skipper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyReader {
    state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize { line: Vec<u8> },
    ChunkData(u64),
    ChunkDataEnd(u8),
    Trailer { line_len: usize },
    UntilClose,
    Done,
}

impl BodyReader {
    /// A reader for `body`.
    pub fn new(body: Body) -> BodyReader {
        let state = match body {
            Body::None | Body::Length(0) => State::Done,
            Body::Length(n) => State::Length(n),
            Body::Chunked => State::ChunkSize { line: Vec::new() },
            Body::UntilClose => State::UntilClose,
        };
        BodyReader { state }
    }

    /// True once the whole body went by.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes body bytes from `input`; returns how many were body (the
    /// rest belongs to the next message).
    pub fn consume(&mut self, input: &[u8]) -> Result<usize, FramingError> {
        let mut i = 0;
        while i < input.len() {
            match &mut self.state {
                State::Done => break,
                State::UntilClose => return Ok(input.len()),
                State::Length(n) => {
                    let take = (*n).min((input.len() - i) as u64);
                    *n -= take;
                    i += take as usize;
                    if *n == 0 {
                        self.state = State::Done;
                    }
                }
                State::ChunkSize { line } => {
                    let b = input[i];
                    i += 1;
                    if b != b'\n' {
                        if line.len() > 64 {
                            return Err(FramingError::Chunk);
                        }
                        line.push(b);
                        continue;
                    }
                    let text = std::str::from_utf8(line).map_err(|_| FramingError::Chunk)?;
                    let text = text.strip_suffix('\r').ok_or(FramingError::Chunk)?;
                    let hex = text.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(hex, 16).map_err(|_| FramingError::Chunk)?;
                    self.state = if size == 0 {
                        State::Trailer { line_len: 0 }
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkData(n) => {
                    let take = (*n).min((input.len() - i) as u64);
                    *n -= take;
                    i += take as usize;
                    if *n == 0 {
                        self.state = State::ChunkDataEnd(0);
                    }
                }
                State::ChunkDataEnd(seen) => {
                    let want = if *seen == 0 { b'\r' } else { b'\n' };
                    if input[i] != want {
                        return Err(FramingError::Chunk);
                    }
                    i += 1;
                    if *seen == 1 {
                        self.state = State::ChunkSize { line: Vec::new() };
                    } else {
                        *seen = 1;
                    }
                }
                State::Trailer { line_len } => {
                    let b = input[i];
                    i += 1;
                    if b == b'\n' {
                        if *line_len <= 1 {
                            self.state = State::Done;
                        } else {
                            *line_len = 0;
                        }
                    } else {
                        *line_len += 1;
                    }
                }
            }
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let raw =
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Order-Type: limit\r\n\r\nhello";
        let mut seen = Vec::new();
        let h = parse_request(raw, |n, v| seen.push((n.to_string(), v.to_vec())))
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                &raw[h.method.clone()],
                &raw[h.path.clone()],
                h.body,
                h.close
            ),
            (&b"POST"[..], &b"/x"[..], Body::Length(5), false)
        );
        assert_eq!(&raw[h.len..], b"hello");
        assert!(
            seen.iter()
                .any(|(n, v)| n == "X-Order-Type" && v == b"limit")
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost:", |_, _| {}).unwrap(),
            None
        );
        let bad = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_request(bad, |_, _| {}), Err(FramingError::Length));
        let h10 = parse_request(b"GET / HTTP/1.0\r\n\r\n", |_, _| {})
            .unwrap()
            .unwrap();
        assert!(h10.close);
    }

    #[test]
    fn chunked_bodies_stream_in_any_split() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let body_len = body.len() - b"NEXT".len();
        for split in 0..body.len() {
            let mut r = BodyReader::new(Body::Chunked);
            let a = r.consume(&body[..split]).unwrap();
            assert_eq!(
                a,
                split.min(body_len),
                "a prefix is body up to the body's end"
            );
            let b = r.consume(&body[a..]).unwrap();
            assert!(r.done());
            assert_eq!(&body[a + b..], b"NEXT");
        }
        let mut r = BodyReader::new(Body::Chunked);
        assert_eq!(r.consume(b"zz\r\n"), Err(FramingError::Chunk));
    }

    #[test]
    fn response_heads_and_lengths() {
        let h = parse_response(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc", false)
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.body, h.close), (503, Body::Length(3), true));
        let mut r = BodyReader::new(h.body);
        assert_eq!(r.consume(b"abcHTTP").unwrap(), 3);
        assert!(r.done());
        let h = parse_response(b"HTTP/1.1 200 OK\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(h.body, Body::UntilClose);
    }
}
