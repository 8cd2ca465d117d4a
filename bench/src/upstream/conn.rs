//! One upstream connection: read requests, apply the fault decision, write
//! responses. Requests on a connection are answered strictly in order; a
//! pipelined request waits until the previous response is fully written.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::http1::{self, Body, BodyReader};
use crate::upstream::faults::Action;

/// Largest control-request body (`PUT /_bench/faults`).
const MAX_CONTROL_BODY: usize = 64 * 1024;
/// Read buffer size.
const RBUF: usize = 16 * 1024;
/// Slow bodies are paced in steps of this length.
pub const SLOW_STEP: Duration = Duration::from_millis(10);

/// What the connection is doing.
#[derive(Debug)]
pub enum State {
    /// Waiting for (more of) a request head.
    Head,
    /// Skipping the request body; then answer.
    Body(BodyReader, Pending),
    /// Reading a control request's body into `control`.
    ControlBody(usize, Pending),
    /// Holding the response until the deadline.
    Delayed(Instant, Pending),
    /// Writing `wbuf[wpos..]`, then `body_left` bytes paced at `bps` (if any).
    Writing {
        body_left: u64,
        bps: Option<u64>,
        next_at: Option<Instant>,
        close: bool,
    },
}

/// A request waiting for its answer.
#[derive(Debug, Clone)]
pub struct Pending {
    /// How to answer.
    pub kind: Answer,
    /// Close after answering.
    pub close: bool,
    /// Send the body chunked (`x-bench-response: chunked` or `--chunked`).
    pub chunked: bool,
}

/// The kinds of answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A normal response with the fault decision.
    Normal(Action),
    /// `GET /_bench/bulk?bytes=N`.
    Bulk(u64),
    /// A control endpoint; the body has been read into `Conn::control`.
    Control { method: String, path: String },
    /// Fixed response (healthz, errors).
    Fixed { status: u16, body: String },
}

/// Connection state.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Read buffer and how much of it is filled.
    pub rbuf: Vec<u8>,
    /// Bytes in `rbuf`.
    pub rlen: usize,
    /// Pending output.
    pub wbuf: Vec<u8>,
    /// Bytes of `wbuf` already written.
    pub wpos: usize,
    /// Where we are.
    pub state: State,
    /// Responses completed on this connection.
    pub served: u64,
    /// Control request body.
    pub control: Vec<u8>,
    /// Generation, to ignore stale timers after slab reuse.
    pub generation: u64,
    /// The peer closed its side.
    pub eof: bool,
    /// Reading stopped on a full buffer with bytes still in the socket:
    /// no new edge will come for them, so read again once space frees.
    pub unread: bool,
}

/// What the event loop should do after driving a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for readiness.
    Wait,
    /// Wake at this instant.
    Timer(Instant),
    /// Close the connection (gracefully).
    Close,
    /// Reset the connection.
    Reset,
}

impl Conn {
    /// A new connection.
    pub fn new(stream: TcpStream, generation: u64) -> Conn {
        Conn {
            stream,
            rbuf: vec![0; RBUF],
            rlen: 0,
            wbuf: Vec::with_capacity(512),
            wpos: 0,
            state: State::Head,
            served: 0,
            control: Vec::new(),
            generation,
            eof: false,
            unread: false,
        }
    }

    /// Reads what is available. Returns false on a hard error. Unless the
    /// peer closed its side (`to_eof`), a short read ends it.
    pub fn fill(&mut self, to_eof: bool) -> bool {
        loop {
            if self.rlen == self.rbuf.len() {
                if self.rbuf.len() >= 1 << 20 {
                    // A head this large is refused by the parser; a body
                    // is consumed by the caller, who then reads on.
                    self.unread = true;
                    return true;
                }
                self.rbuf.resize(self.rbuf.len() * 2, 0);
            }
            match self.stream.read(&mut self.rbuf[self.rlen..]) {
                Ok(0) => {
                    self.eof = true;
                    return true;
                }
                Ok(n) => {
                    let short = self.rlen + n < self.rbuf.len();
                    self.rlen += n;
                    // A short read drained the socket; with edge-triggered
                    // readiness, anything arriving later raises a new event,
                    // so the extra read that would only return EAGAIN is skipped.
                    if short && !to_eof {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Drops `n` consumed bytes from the front of the read buffer.
    pub fn consume(&mut self, n: usize) {
        self.rbuf.copy_within(n..self.rlen, 0);
        self.rlen -= n;
    }

    /// Writes pending output; Ok(true) when all of `wbuf` is out.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        Ok(true)
    }
}

/// Parses the next request head in `conn`, classifying it. Returns
/// `Ok(None)` when more bytes are needed.
pub fn next_request(
    conn: &mut Conn,
    match_header: Option<&(String, String)>,
    decide: impl FnOnce(bool) -> Action,
) -> Result<Option<State>, String> {
    let mut matched = false;
    let mut chunked = false;
    let head = http1::parse_request(&conn.rbuf[..conn.rlen], |name, value| {
        if name.eq_ignore_ascii_case("x-bench-response") && value.eq_ignore_ascii_case(b"chunked") {
            chunked = true;
        }
        if let Some((n, v)) = match_header
            && name.eq_ignore_ascii_case(n)
            && value == v.as_bytes()
        {
            matched = true;
        }
    })
    .map_err(|e| e.to_string())?;
    let Some(head) = head else {
        if conn.rlen >= 1 << 20 {
            return Err("request head too large".into());
        }
        return Ok(None);
    };
    let close = head.close;
    let text = |r: std::ops::Range<usize>| {
        std::str::from_utf8(conn.rbuf.get(r).unwrap_or(b"")).unwrap_or("")
    };
    let path = text(head.path.clone());
    let kind = if path.starts_with("/_bench/")
        && path != "/_bench/bulk"
        && !path.starts_with("/_bench/bulk?")
    {
        Answer::Control {
            method: text(head.method.clone()).to_string(),
            path: path.to_string(),
        }
    } else if path == "/healthz" {
        Answer::Fixed {
            status: 200,
            body: "ok\n".into(),
        }
    } else if let Some(q) = path.strip_prefix("/_bench/bulk?bytes=") {
        match q.parse::<u64>() {
            Ok(n) => Answer::Bulk(n),
            Err(_) => Answer::Fixed {
                status: 400,
                body: "bytes must be a number\n".into(),
            },
        }
    } else {
        Answer::Normal(decide(matched))
    };
    conn.consume(head.len);
    let pending = Pending {
        kind,
        close,
        chunked,
    };
    Ok(Some(match (&pending.kind, head.body) {
        (Answer::Control { .. }, Body::Length(n)) if n as usize > MAX_CONTROL_BODY => {
            return Err("control body too large".into());
        }
        (Answer::Control { .. }, Body::Length(n)) => {
            conn.control.clear();
            State::ControlBody(n as usize, pending)
        }
        (Answer::Control { .. }, Body::Chunked) => {
            return Err("control body must use content-length".into());
        }
        (_, body) => State::Body(BodyReader::new(body), pending),
    }))
}
