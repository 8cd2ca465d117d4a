//! One upstream worker thread: its own SO_REUSEPORT listeners, an
//! edge-triggered mio poll, a slab of connections and a timer heap for
//! delayed responses, paced bodies and accept stalls.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use crate::rng::Rng;
use crate::upstream::Shared;
use crate::upstream::conn::{Answer, Conn, Next, Pending, SLOW_STEP, State, next_request};

/// Timer token that means "accept again" (end of an accept stall).
const ACCEPT: usize = usize::MAX;
/// Longest poll sleep, so an exit deadline is noticed.
const TICK: Duration = Duration::from_millis(100);

struct Worker {
    poll: Poll,
    listeners: Vec<TcpListener>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    shared: Arc<Shared>,
    rng: Rng,
    generation: u64,
    bulk: Vec<u8>,
}

/// Runs a worker until `until` (forever if None).
pub fn run(
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    seed: u64,
    until: Option<Instant>,
) -> io::Result<()> {
    let poll = Poll::new()?;
    let mut w = Worker {
        poll,
        listeners,
        conns: Vec::new(),
        free: Vec::new(),
        timers: BinaryHeap::new(),
        shared,
        rng: Rng::new(seed),
        generation: 0,
        bulk: vec![b'b'; 64 * 1024],
    };
    for (i, l) in w.listeners.iter_mut().enumerate() {
        w.poll
            .registry()
            .register(l, Token(i), Interest::READABLE)?;
    }
    let nl = w.listeners.len();
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        if until.is_some_and(|u| now >= u) {
            return Ok(());
        }
        let timeout = w.timers.peek().map_or(TICK, |Reverse((t, _, _))| {
            t.saturating_duration_since(now).min(TICK)
        });
        if let Err(e) = w.poll.poll(&mut events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        for ev in events.iter() {
            let t = ev.token().0;
            if t < nl {
                w.accept_all();
            } else {
                // Readable covers the read side closing; if it closed, read to EOF.
                w.drive(t - nl, true, ev.is_read_closed());
            }
        }
        let now = Instant::now();
        while let Some(Reverse((at, idx, generation))) = w.timers.peek().copied() {
            if at > now {
                break;
            }
            w.timers.pop();
            if idx == ACCEPT {
                w.accept_all();
            } else if w
                .conns
                .get(idx)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.generation == generation)
            {
                w.drive(idx, false, false);
            }
        }
    }
}

impl Worker {
    fn accept_all(&mut self) {
        let applied = self.shared.faults.load();
        if let Some(end) = applied.faults.accept_paused(applied.at.elapsed()) {
            self.timers.push(Reverse((applied.at + end, ACCEPT, 0)));
            return;
        }
        let nl = self.listeners.len();
        for li in 0..nl {
            while let Some(listener) = self.listeners.get(li) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        if let Some(n) = self.shared.sndbuf {
                            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(n);
                        }
                        self.generation += 1;
                        let idx = self.free.pop().unwrap_or(self.conns.len());
                        let token = Token(idx + nl);
                        if self
                            .poll
                            .registry()
                            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                            .is_err()
                        {
                            continue;
                        }
                        let conn = Conn::new(stream, self.generation);
                        if idx == self.conns.len() {
                            self.conns.push(Some(conn));
                        } else {
                            self.conns[idx] = Some(conn);
                        }
                        self.shared.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break, // e.g. EMFILE: try again on the next event
                }
            }
        }
    }

    fn drive(&mut self, idx: usize, readable: bool, read_closed: bool) {
        let Some(Some(conn)) = self.conns.get_mut(idx) else {
            return;
        };
        if readable && !conn.fill(read_closed) {
            self.close(idx, false);
            return;
        }
        let mut next = step(conn, &self.shared, &mut self.rng, &self.bulk);
        // The buffer was full with bytes left in the socket (edge-triggered:
        // no new event for them): read on while the step frees space.
        while conn.unread && conn.rlen < conn.rbuf.len() && matches!(next, Next::Wait) {
            conn.unread = false;
            let before = conn.rlen;
            if !conn.fill(read_closed) {
                self.close(idx, false);
                return;
            }
            if conn.rlen == before {
                break;
            }
            next = step(conn, &self.shared, &mut self.rng, &self.bulk);
        }
        match next {
            Next::Wait => {}
            Next::Timer(at) => {
                let generation = conn.generation;
                self.timers.push(Reverse((at, idx, generation)));
            }
            Next::Close => self.close(idx, false),
            Next::Reset => self.close(idx, true),
        }
    }

    fn close(&mut self, idx: usize, reset: bool) {
        if let Some(slot) = self.conns.get_mut(idx)
            && let Some(mut conn) = slot.take()
        {
            if reset {
                let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
            }
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.free.push(idx);
        }
    }
}

/// Drives one connection as far as it can go without blocking.
fn step(conn: &mut Conn, shared: &Shared, rng: &mut Rng, bulk: &[u8]) -> Next {
    loop {
        let now = Instant::now();
        match &mut conn.state {
            State::Head => {
                if conn.rlen == 0 && conn.eof {
                    return Next::Close;
                }
                let applied = shared.faults.load();
                let since = applied.at.elapsed();
                let parsed = next_request(conn, applied.matcher.as_ref(), |matched| {
                    applied.faults.decide(since, matched, rng)
                });
                match parsed {
                    Ok(Some(state)) => conn.state = state,
                    Ok(None) if conn.eof => return Next::Close,
                    Ok(None) => return Next::Wait,
                    Err(reason) => {
                        let p = Pending {
                            kind: Answer::Fixed {
                                status: 400,
                                body: format!("{reason}\n"),
                            },
                            close: true,
                            chunked: false,
                        };
                        start(conn, shared, p);
                    }
                }
            }
            State::Body(reader, _) => {
                let Ok(used) = reader.consume(&conn.rbuf[..conn.rlen]) else {
                    return Next::Reset;
                };
                let done = reader.done();
                conn.consume(used);
                if !done {
                    return if conn.eof { Next::Close } else { Next::Wait };
                }
                let State::Body(_, pending) = std::mem::replace(&mut conn.state, State::Head)
                else {
                    return Next::Close;
                };
                match &pending.kind {
                    Answer::Normal(a) if a.reset => return Next::Reset,
                    Answer::Normal(a) if !a.delay.is_zero() => {
                        let at = now + a.delay;
                        conn.state = State::Delayed(at, pending);
                        return Next::Timer(at);
                    }
                    _ => start(conn, shared, pending),
                }
            }
            State::ControlBody(want, _) => {
                let want = *want;
                let take = (want - conn.control.len()).min(conn.rlen);
                conn.control.extend_from_slice(&conn.rbuf[..take]);
                conn.consume(take);
                if conn.control.len() < want {
                    return if conn.eof { Next::Close } else { Next::Wait };
                }
                let State::ControlBody(_, pending) =
                    std::mem::replace(&mut conn.state, State::Head)
                else {
                    return Next::Close;
                };
                start(conn, shared, pending);
            }
            State::Delayed(at, _) => {
                if now < *at {
                    return Next::Timer(*at);
                }
                let State::Delayed(_, pending) = std::mem::replace(&mut conn.state, State::Head)
                else {
                    return Next::Close;
                };
                start(conn, shared, pending);
            }
            State::Writing { .. } => match conn.flush() {
                Err(_) => return Next::Close,
                Ok(false) => return Next::Wait,
                Ok(true) => {
                    let State::Writing {
                        body_left,
                        bps,
                        next_at,
                        close,
                    } = &mut conn.state
                    else {
                        return Next::Close;
                    };
                    if *body_left > 0 {
                        let step = match bps {
                            Some(bps) => {
                                if let Some(at) = next_at.filter(|at| *at > now) {
                                    return Next::Timer(at);
                                }
                                *next_at = Some(now + SLOW_STEP);
                                (*bps / 100).max(1)
                            }
                            None => bulk.len() as u64,
                        };
                        let n = step.min(*body_left) as usize;
                        *body_left -= n as u64;
                        conn.wbuf.extend_from_slice(&bulk[..n.min(bulk.len())]);
                        continue;
                    }
                    let close = *close;
                    conn.served += 1;
                    shared.served.fetch_add(1, Ordering::Relaxed);
                    if close {
                        return Next::Close;
                    }
                    conn.state = State::Head;
                }
            },
        }
    }
}

/// Builds the response for `pending` into the write buffer.
fn start(conn: &mut Conn, shared: &Shared, pending: Pending) {
    let applied = shared.faults.load();
    let close_after = applied
        .faults
        .close_after
        .is_some_and(|n| conn.served + 1 >= n);
    let mut close = pending.close || close_after;
    let chunked = (pending.chunked || shared.chunked)
        && matches!(&pending.kind, Answer::Normal(a) if a.slow_body_bps.is_none());
    let owned: Vec<u8>;
    let (status, inline, body_len, bps): (u16, Option<&[u8]>, u64, Option<u64>) = match pending.kind
    {
        Answer::Normal(a) if a.status == 200 && !close && !chunked && a.slow_body_bps.is_none() => {
            // The common case: a prebuilt head and body.
            conn.wbuf.extend_from_slice(&shared.ok_response);
            conn.state = State::Writing {
                body_left: 0,
                bps: None,
                next_at: None,
                close: false,
            };
            return;
        }
        Answer::Normal(a) => {
            let n = shared.body.len() as u64;
            match a.slow_body_bps {
                Some(bps) => (a.status, None, n, Some(bps)),
                None => (a.status, Some(&shared.body[..]), n, None),
            }
        }
        Answer::Bulk(n) => (200, None, n, None),
        Answer::Fixed { status, body } => {
            close |= status == 400;
            owned = body.into_bytes();
            (status, Some(&owned[..]), owned.len() as u64, None)
        }
        Answer::Control { method, path } => {
            let (status, body) = crate::upstream::control(shared, &method, &path, &conn.control);
            owned = body.into_bytes();
            (status, Some(&owned[..]), owned.len() as u64, None)
        }
    };
    let w = &mut conn.wbuf;
    let connection = if close { "connection: close\r\n" } else { "" };
    if chunked {
        // The whole body as one chunk, then the last chunk.
        let body = inline.unwrap_or(b"");
        let _ = write!(
            w,
            "HTTP/1.1 {status} {}\r\nx-upstream: {}\r\ntransfer-encoding: chunked\r\n{connection}\r\n{:x}\r\n",
            reason(status),
            shared.name,
            body.len()
        );
        w.extend_from_slice(body);
        w.extend_from_slice(b"\r\n0\r\n\r\n");
        conn.state = State::Writing {
            body_left: 0,
            bps: None,
            next_at: None,
            close,
        };
        return;
    }
    let _ = write!(
        w,
        "HTTP/1.1 {status} {}\r\nx-upstream: {}\r\ncontent-length: {body_len}\r\n{connection}\r\n",
        reason(status),
        shared.name,
    );
    let body_left = match inline {
        Some(b) => {
            w.extend_from_slice(b);
            0
        }
        None => body_len,
    };
    conn.state = State::Writing {
        body_left,
        bps,
        next_at: None,
        close,
    };
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
