//! One downstream connection: HTTP/1.1 exchanges (keep-alive, pipelining
//! answered in order, streamed bodies, 1xx, upgrade/CONNECT tunnels) or an
//! L4 tunnel, as a state machine over bytes, events and `now`.
//!
//! The request side lives here; the upstream side (response framing, EOF,
//! connect results, timeouts) is in `session/upstream.rs`.

mod attempt;
mod mirror;
mod policy;
mod start;
mod tls;
mod upstream;

use std::net::{IpAddr, SocketAddr};

use ringlog::Reason;
use ringlog::record::{Flags, Record};

use super::sniff::{Sniffed, sniff};
use super::{Chunk, Connect, Cx, Marks, Out};
use crate::config::schema::{ListenerTimeouts, Protocol};
use crate::http1::chunked::Decoder;
use crate::http1::request::{self, HeadScan};
use crate::http1::response::Persist;
use crate::http1::{Reject, response};

/// Client-side timeouts of a session (its listener's `timeouts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A request head must arrive within this after its first byte (408).
    pub head_timeout_ns: u64,
    /// Longest gap between two reads of a request body (408, or a cut).
    pub body_timeout_ns: u64,
    /// Longest time response bytes may wait for a client that stopped
    /// reading; then the connection is reset.
    pub write_timeout_ns: u64,
    /// An idle keep-alive downstream connection is closed after this.
    pub idle_timeout_ns: u64,
    /// A tunnel that moves nothing either way for this long is closed.
    pub tunnel_idle_ns: u64,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits::from(&ListenerTimeouts::default())
    }
}

impl From<&ListenerTimeouts> for SessionLimits {
    fn from(t: &ListenerTimeouts) -> SessionLimits {
        SessionLimits {
            head_timeout_ns: t.header_read.0,
            body_timeout_ns: t.body_read.0,
            write_timeout_ns: t.write.0,
            idle_timeout_ns: t.idle.0,
            tunnel_idle_ns: t.tunnel_idle.0,
        }
    }
}

/// A body delimited by a length or by chunks, as it streams by. Requests
/// and responses frame their bodies the same way.
#[derive(Debug)]
enum Framed {
    Len(u64),
    Chunked(Decoder),
}

impl Framed {
    /// How many bytes at the start of `input` belong to the body, and
    /// whether the body ended with them.
    fn take(&mut self, input: &[u8]) -> Result<(usize, bool), Reject> {
        match self {
            Framed::Len(left) => {
                let n = (*left).min(input.len() as u64);
                *left -= n;
                Ok((n as usize, *left == 0))
            }
            Framed::Chunked(dec) => {
                let n = dec.feed(input)?;
                Ok((n, dec.done()))
            }
        }
    }
}

/// Request body still to come.
#[derive(Debug)]
enum ReqBody {
    Body(Framed),
    Done,
}

/// Response progress.
#[derive(Debug)]
enum Resp {
    Head,
    Body(Framed),
    /// A chunked body sent on de-chunked (close-delimited) to an HTTP/1.0
    /// client.
    Dechunk(Decoder),
    UntilClose,
    Done,
}

/// One request/response exchange (or an L4 connection).
#[derive(Debug)]
struct Exchange {
    marks: Marks,
    record: Record,
    hash: u64,
    req: ReqBody,
    resp: Resp,
    head_method: bool,
    connect_method: bool,
    upgrade: bool,
    /// The client speaks HTTP/1.0 (no chunked, no 1xx, keep-alive only
    /// when asked for).
    http10: bool,
    /// Bytes already went downstream for this exchange (a local error
    /// response is no longer possible).
    down_started: bool,
    /// The upstream is connected (or taken from the pool).
    up_ready: bool,
    /// Both directions are raw bytes now.
    tunnel: bool,
    up_eof: bool,
    down_eof: bool,
    /// Close the downstream after this exchange.
    close_after: bool,
    /// The upstream said it closes after this response: never pool it.
    /// (The client's connection is another hop and stays open.)
    up_close: bool,
    connect_deadline: u64,
    /// Whole-exchange deadline (`timeouts.request`; u64::MAX: none).
    request_deadline: u64,
    /// Upstream read-idle timeout (`timeouts.read`), ns.
    read_ns: u64,
    /// Last sign of life of the upstream side (connected, a response
    /// byte), or of either side of a tunnel: the idle timers count from it.
    active: u64,
    /// Last request body byte from the client (the body-read timer).
    body_active: u64,
    /// Lengths of `Out::to_up` and `Out::up` before this exchange added its
    /// head and its connect, while they have not left this call yet (so a
    /// late rejection can withdraw them).
    uncommitted: Option<(usize, usize)>,
    /// Where the upstream connection goes (for a retry).
    connect: Option<Connect>,
    /// The upstream connection came from the pool (it may have been closed
    /// by the upstream while idle).
    reused: bool,
    /// The whole upstream request (head, no body) of an idempotent request,
    /// kept to send again if a pooled connection turns out closed before
    /// any response byte.
    replay: Option<Vec<u8>>,
    /// Admitted by its cluster's breaker and concurrency limits: in flight
    /// until dropped; its outcome is reported when the exchange finishes.
    pass: Option<crate::policy::breaker::Pass>,
    /// The current attempt on its endpoint (load, latency, ejection).
    attempt: Option<attempt::Attempt>,
    /// Its route's edits, when they touch the response head.
    edits: Option<std::sync::Arc<crate::http1::edit::RouteEdits>>,
    /// Its copy for a shadow cluster, while the body fills it.
    mirror: Option<Box<mirror::Filling>>,
    /// What the rarer policies hold for it (boxed: most exchanges have
    /// none, and every idle connection carries an `Exchange`-sized slot).
    policy: Option<Box<policy::Policed>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sniff,
    Http,
    Tcp,
}

/// A downstream connection's proxy state.
#[derive(Debug)]
pub struct Session {
    listener: usize,
    client: IpAddr,
    orig_dst: Option<SocketAddr>,
    mode: Mode,
    limits: SessionLimits,
    ex: Option<Exchange>,
    /// Downstream bytes not consumed yet (partial head, pipelined requests).
    hold_down: Vec<u8>,
    /// Upstream bytes of a partial response head.
    hold_up: Vec<u8>,
    /// When the next request started (its first byte; accept for L4).
    next_start: u64,
    /// Records waiting for the downstream flush (write phase).
    pending: Vec<Exchange>,
    closing: bool,
    down_eof: bool,
    /// How far the partial request head in `hold_down` has been checked.
    scan: HeadScan,
    /// Since when response bytes wait for the client (write timer).
    down_backlog: Option<u64>,
    /// Since when request bytes wait for the upstream (pauses the
    /// body-read timer: the client is not the slow side then).
    up_backlog: Option<u64>,
    /// The TLS peer (None: plaintext), boxed: most sessions have none.
    peer: Option<Box<tls::Peer>>,
    /// A TLS handshake or mesh header still to come.
    tls_wait: tls::TlsWait,
}

impl Session {
    /// A session for a connection accepted at `now` on listener index
    /// `listener` with protocol `protocol`.
    /// `orig_dst` is the pre-REDIRECT destination on transparent listeners.
    pub fn new(
        now: u64,
        listener: usize,
        protocol: Protocol,
        client: IpAddr,
        orig_dst: Option<SocketAddr>,
        limits: SessionLimits,
    ) -> Session {
        Session {
            listener,
            client,
            orig_dst,
            mode: match protocol {
                Protocol::Http => Mode::Http,
                Protocol::Tcp => Mode::Tcp,
                Protocol::Auto => Mode::Sniff,
            },
            limits,
            ex: None,
            hold_down: Vec::new(),
            hold_up: Vec::new(),
            next_start: now,
            pending: Vec::new(),
            closing: false,
            down_eof: false,
            scan: HeadScan::default(),
            down_backlog: None,
            up_backlog: None,
            peer: None,
            tls_wait: tls::TlsWait::No,
        }
    }

    /// The listener index this session was accepted on.
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// The driver's send queues: `down` response bytes wait for the
    /// client, `up` request bytes wait for the upstream. A client that
    /// keeps response bytes waiting for `timeouts.write` is reset; while
    /// one side waits, the timer that would blame the other is paused
    /// (its clock restarts when the wait ends).
    pub fn set_backlog(&mut self, now: u64, down: bool, up: bool) {
        match (self.down_backlog, down) {
            (None, true) => self.down_backlog = Some(now),
            (Some(_), false) => {
                self.down_backlog = None;
                if let Some(ex) = &mut self.ex {
                    ex.active = ex.active.max(now);
                }
            }
            _ => {}
        }
        match (self.up_backlog, up) {
            (None, true) => self.up_backlog = Some(now),
            (Some(_), false) => {
                self.up_backlog = None;
                if let Some(ex) = &mut self.ex {
                    ex.body_active = ex.body_active.max(now);
                }
            }
            _ => {}
        }
    }

    /// Starts an L4 session right away if the listener is `tcp` (no bytes
    /// needed to decide). Call once after [`Session::new`].
    pub fn start(&mut self, cx: &mut Cx<'_>, out: &mut Out) {
        if self.mode == Mode::Tcp {
            self.start_l4(cx, out);
        }
    }

    /// True once the session is over (the driver closes both sides when its
    /// queues drain).
    pub fn is_closed(&self) -> bool {
        self.closing
    }

    /// True while the session is a plain two-way byte pipe with nothing held
    /// back and neither side closed: an L4 connection or an upgraded tunnel
    /// whose upstream is connected. A driver may then move the bytes itself
    /// (splice) without showing them to the session, provided it reports
    /// upstream bytes with [`Session::on_tunnel_up_bytes`] and EOFs as usual.
    pub fn is_raw_tunnel(&self) -> bool {
        !self.closing
            && self.hold_down.is_empty()
            && self.hold_up.is_empty()
            && matches!(&self.ex, Some(ex) if ex.tunnel && ex.up_ready && !ex.down_eof && !ex.up_eof)
    }

    /// True while the exchange is a tunnel (L4 or upgraded). Its upstream
    /// stays open after the upstream's FIN: the client may still send on
    /// its half, so drivers keep the socket until the session releases it.
    pub fn is_tunnel(&self) -> bool {
        matches!(&self.ex, Some(ex) if ex.tunnel)
    }

    /// The driver moved bytes of a raw tunnel at `now` (`up`: some came
    /// from the upstream, the record's first byte mark). Keeps the tunnel's
    /// idle timer from firing.
    pub fn on_tunnel_bytes(&mut self, now: u64, up: bool) {
        if let Some(ex) = &mut self.ex {
            ex.active = ex.active.max(now);
            if up && ex.marks.first_byte == 0 {
                ex.marks.first_byte = now;
            }
        }
    }

    /// Whether the driver should read more downstream bytes now.
    pub fn wants_down_data(&self) -> bool {
        if self.closing || self.down_eof {
            return false;
        }
        match &self.ex {
            Some(ex) if ex.deferred().is_some() => false,
            Some(ex) if ex.tunnel => !ex.down_eof,
            Some(ex) => !matches!(ex.req, ReqBody::Done) || self.hold_down.is_empty(),
            None => true,
        }
    }

    /// Nothing in flight, nothing held, no record waiting: safe to close
    /// while draining.
    pub fn is_idle(&self) -> bool {
        self.ex.is_none() && self.hold_down.is_empty() && self.pending.is_empty()
    }

    /// The next deadline (CLOCK_MONOTONIC ns) at which [`Session::on_timer`]
    /// must be called, if any. A deadline may move later without a new
    /// call here (activity); a timer that fires early finds nothing due.
    pub fn deadline(&self) -> Option<u64> {
        let write = self
            .down_backlog
            .map(|t| t.saturating_add(self.limits.write_timeout_ns));
        let own = if self.closing {
            None
        } else {
            self.wait_deadline()
        };
        match (write, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The deadline of what the session waits for, not counting the
    /// client's reading (see [`Session::set_backlog`]).
    fn wait_deadline(&self) -> Option<u64> {
        let l = &self.limits;
        let Some(ex) = &self.ex else {
            let limit = if self.hold_down.is_empty() && !self.awaits_tls() {
                l.idle_timeout_ns
            } else {
                l.head_timeout_ns
            };
            return Some(self.next_start.saturating_add(limit));
        };
        if let Some(d) = ex.deferred() {
            return Some(d.until);
        }
        let attempt = ex.attempt_deadline();
        if !ex.up_ready {
            return Some(ex.connect_deadline.min(attempt));
        }
        if ex.tunnel {
            return Some(ex.active.saturating_add(l.tunnel_idle_ns));
        }
        let mut d = u64::MAX;
        if matches!(ex.resp, Resp::Head) {
            d = d.min(attempt);
        }
        if !matches!(ex.resp, Resp::Done) {
            d = d.min(ex.request_deadline);
            // Read-idle runs once the whole request went out (an upload
            // has its own timer), and not while the client holds things up.
            if self.down_backlog.is_none() && matches!(ex.req, ReqBody::Done) {
                d = d.min(ex.active.saturating_add(ex.read_ns));
            }
        }
        if matches!(ex.req, ReqBody::Body(_)) && self.up_backlog.is_none() {
            d = d.min(ex.body_active.saturating_add(l.body_timeout_ns));
        }
        (d != u64::MAX).then_some(d)
    }

    /// Downstream bytes arrived.
    pub fn on_down_data(&mut self, cx: &mut Cx<'_>, data: &[u8], out: &mut Out) {
        if self.closing {
            return;
        }
        if self.ex.is_none() && self.hold_down.is_empty() {
            // First byte of a request: its queue phase starts now. (Not at
            // accept: a client that connects and sends later, like a load
            // generator opening its pool, is idle, not queued.)
            self.next_start = cx.now;
        }
        if self.hold_down.is_empty() {
            let n = self.process_down(cx, data, true, out);
            if n < data.len() && !self.closing {
                self.hold_down.extend_from_slice(&data[n..]);
            }
        } else {
            self.hold_down.extend_from_slice(data);
            self.process_held(cx, out);
        }
        self.commit();
    }

    /// Processes held downstream bytes if the session can take them.
    fn process_held(&mut self, cx: &mut Cx<'_>, out: &mut Out) {
        if self.hold_down.is_empty() || self.closing {
            return;
        }
        if let Some(ex) = &self.ex
            && !ex.tunnel
            && matches!(ex.req, ReqBody::Done)
        {
            return;
        }
        let mut held = std::mem::take(&mut self.hold_down);
        let n = self.process_down(cx, &held, false, out);
        if !self.closing {
            held.drain(..n.min(held.len()));
            held.append(&mut self.hold_down);
            self.hold_down = held;
        }
    }

    /// The exchange's bytes have left this call: they can no longer be
    /// withdrawn.
    fn commit(&mut self) {
        if let Some(ex) = &mut self.ex {
            ex.uncommitted = None;
        }
    }

    /// Consumes what it can of `buf`; returns how many bytes it took.
    /// `input`: `buf` is the caller's buffer (chunks may refer to it).
    fn process_down(&mut self, cx: &mut Cx<'_>, buf: &[u8], input: bool, out: &mut Out) -> usize {
        let mut pos = 0;
        while pos < buf.len() && !self.closing {
            if self.mode == Mode::Sniff {
                match sniff(&buf[pos..]) {
                    Sniffed::NeedMore => return pos,
                    Sniffed::Http => self.mode = Mode::Http,
                    Sniffed::Tcp => {
                        self.mode = Mode::Tcp;
                        self.start_l4(cx, out);
                    }
                }
                continue;
            }
            let Some(ex) = &mut self.ex else {
                // A head that came whole is parsed once. One that is
                // still arriving is checked in its new bytes only (linear,
                // not quadratic, in reads), and parsed when complete.
                if self.scan != HeadScan::default() {
                    match request::head_ready(&buf[pos..], &mut self.scan, &cx.snap.limits) {
                        Ok(false) => return pos,
                        Ok(true) => {}
                        Err(rej) => {
                            self.reject_head(cx.now, &rej, out);
                            return buf.len();
                        }
                    }
                }
                let mut slots = request::header_slots();
                match request::parse(&buf[pos..], &cx.snap.limits, &mut slots) {
                    Ok(None) => {
                        // Incomplete: what was checked is remembered.
                        let _ = request::head_ready(&buf[pos..], &mut self.scan, &cx.snap.limits);
                        return pos;
                    }
                    Err(rej) => {
                        self.reject_head(cx.now, &rej, out);
                        return buf.len();
                    }
                    Ok(Some(head)) => {
                        self.scan = HeadScan::default();
                        pos += head.len;
                        self.start_exchange(cx, &head, out);
                    }
                }
                continue;
            };
            if ex.deferred().is_some() {
                return pos; // held until the request is released
            }
            if ex.tunnel {
                if ex.down_eof {
                    return buf.len();
                }
                ex.active = ex.active.max(cx.now);
                out.to_up.push(Chunk::of(input, buf, pos..buf.len()));
                return buf.len();
            }
            let ReqBody::Body(body) = &mut ex.req else {
                return pos; // held until the response completes (pipelining)
            };
            ex.body_active = cx.now;
            match body.take(&buf[pos..]) {
                Ok((n, done)) => {
                    out.to_up.push(Chunk::of(input, buf, pos..pos + n));
                    mirror::body(ex, &buf[pos..pos + n], done, out);
                    pos += n;
                    if done {
                        ex.req = ReqBody::Done;
                        ex.active = ex.active.max(cx.now);
                    }
                }
                Err(rej) => {
                    self.reject_body(cx.now, &rej, out);
                    return buf.len();
                }
            }
        }
        pos
    }

    /// A request head that cannot be trusted: answer, close, record.
    fn reject_head(&mut self, now: u64, rej: &Reject, out: &mut Out) {
        let mut ex = self.new_exchange(now, ReqBody::Done);
        ex.close_after = true;
        self.local(ex, now, rej.status, rej.reason, rej.detail, out);
    }

    /// A request body turned out malformed after its head was accepted.
    fn reject_body(&mut self, now: u64, rej: &Reject, out: &mut Out) {
        let Some(mut ex) = self.ex.take() else {
            return;
        };
        ex.close_after = true;
        if let Some((bytes, ops)) = ex.uncommitted {
            // Nothing of this request has left yet: withdraw all of it.
            out.to_up.truncate(bytes);
            out.up.truncate(ops);
        } else {
            out.release(false);
        }
        if ex.down_started {
            ex.record.reason = rej.reason;
            ex.record.flags.0 |= Flags::ERROR;
            self.finish(ex, now, out);
        } else {
            self.local(ex, now, rej.status, rej.reason, rej.detail, out);
        }
    }

    /// What the client's connection does after `ex`, as its head says.
    fn persist(ex: &Exchange) -> Persist {
        if ex.close_after {
            Persist::Close
        } else if ex.http10 {
            Persist::KeepHttp10
        } else {
            Persist::Keep
        }
    }

    fn new_exchange(&mut self, now: u64, req: ReqBody) -> Exchange {
        let mut ex = Exchange {
            marks: Marks {
                start: self.next_start.min(now),
                head: now,
                ..Marks::default()
            },
            record: Record::default(),
            hash: 0,
            req,
            resp: Resp::Head,
            head_method: false,
            connect_method: false,
            upgrade: false,
            http10: false,
            down_started: false,
            up_ready: false,
            tunnel: false,
            up_eof: false,
            down_eof: false,
            close_after: false,
            up_close: false,
            connect_deadline: u64::MAX,
            request_deadline: u64::MAX,
            read_ns: u64::MAX,
            active: now,
            body_active: now,
            uncommitted: None,
            connect: None,
            reused: false,
            replay: None,
            pass: None,
            attempt: None,
            edits: None,
            mirror: None,
            policy: None,
        };
        self.stamp_peer(&mut ex);
        ex
    }

    /// Answers `ex` locally (the agent's own response) and finishes it.
    fn local(
        &mut self,
        ex: Exchange,
        now: u64,
        status: u16,
        reason: Reason,
        detail: &str,
        out: &mut Out,
    ) {
        self.local_with(ex, now, status, reason, detail, "", out);
    }

    /// [`Session::local`] with `extra` header lines.
    #[allow(clippy::too_many_arguments)] // local() plus the header lines
    fn local_with(
        &mut self,
        mut ex: Exchange,
        now: u64,
        status: u16,
        reason: Reason,
        detail: &str,
        extra: &str,
        out: &mut Out,
    ) {
        // A request body that was not consumed cannot be skipped safely.
        ex.close_after |= !matches!(ex.req, ReqBody::Done);
        let mut bytes = Vec::with_capacity(160 + detail.len() + extra.len());
        let persist = Session::persist(&ex);
        response::local_with(
            status,
            reason,
            detail,
            persist,
            ex.head_method,
            extra,
            &mut bytes,
        );
        out.to_down.push(Chunk::Owned(bytes));
        ex.down_started = true;
        ex.record.status = status;
        ex.record.reason = reason;
        ex.record.flags.0 |= Flags::ERROR;
        self.finish(ex, now, out);
    }

    /// Ends an exchange: its record waits for the downstream flush; the
    /// next request's queue phase starts now.
    fn finish(&mut self, mut ex: Exchange, now: u64, out: &mut Out) {
        Session::settle(&mut ex, now, out);
        ex.marks.done = now;
        self.next_start = now;
        if ex.close_after {
            out.close_down = true;
            self.closing = true;
        }
        if self.pending.capacity() == 0 {
            // One exchange waits here at a time unless the client
            // pipelines: room for one, not the four a first push makes.
            self.pending.reserve_exact(1);
        }
        self.pending.push(ex);
    }
}

#[cfg(test)]
mod tests;
