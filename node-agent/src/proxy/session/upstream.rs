//! The session's upstream side and lifecycle events: connect results,
//! response framing (1xx, tunnels, bodies by length, chunks or close),
//! upstream EOF and reset, downstream EOF, timeouts, and the downstream
//! flush that completes a record's write phase.

use ringlog::Reason;
use ringlog::record::Flags;

use super::policy::{retry_after, retry_exchange};
use super::{Exchange, Framed, ReqBody, Resp, Session};
use crate::http1::Reject;
use crate::http1::chunked::Decoder;
use crate::http1::response::{self, Body, Persist};
use crate::proxy::{Chunk, Connect, Cx, Finished, Out, UpOp};

impl Session {
    /// The upstream connection is ready: connected, or taken from the pool
    /// (`reused`).
    pub fn on_up_ready(&mut self, now: u64, reused: bool) {
        if let Some(ex) = &mut self.ex
            && !ex.up_ready
        {
            ex.up_ready = true;
            ex.reused = reused;
            if let Some(pass) = &mut ex.pass {
                pass.connected();
            }
            ex.marks.upstream = now;
            ex.active = ex.active.max(now);
        }
    }

    /// A pooled connection closed before any byte of the response: the
    /// upstream most likely timed it out while it sat idle, racing this
    /// request. An idempotent request without a body is sent again, once,
    /// on a new connection. True if it was.
    fn retry_stale(&mut self, now: u64, out: &mut Out) -> bool {
        // No response byte yet (every one sets `first_byte` before it is
        // parsed, so nothing is held or sent downstream either); `replay`
        // is only kept for a bodyless idempotent request that is not a
        // tunnel.
        let Some(ex) = &mut self.ex else {
            return false;
        };
        if !ex.reused || ex.marks.first_byte != 0 {
            return false;
        }
        // Once: the new connection is not a reused one. (The copy stays
        // for the cluster's own retries.)
        let (Some(c), Some(bytes)) = (ex.connect, ex.replay.clone()) else {
            return false;
        };
        out.release(false);
        out.to_up.push(Chunk::Owned(bytes));
        out.up.push(UpOp::Connect(Connect { fresh: true, ..c }));
        ex.reused = false;
        ex.up_ready = false;
        ex.up_eof = false;
        ex.record.flags.0 &= !Flags::RESET;
        ex.record.retries = ex.record.retries.saturating_add(1);
        // The connect timeout runs again; the request deadline does not.
        ex.connect_deadline = now.saturating_add(c.timeout_ns);
        true
    }

    /// Connecting failed (`timeout`: the connect timeout expired).
    pub fn on_up_failed(&mut self, cx: &mut Cx<'_>, timeout: bool, out: &mut Out) {
        if let Some(ex) = &mut self.ex
            && retry_exchange(ex, cx, 503, Reason::UpstreamConnect, None, out)
        {
            self.hold_up.clear();
            return;
        }
        let (flags, msg) = if timeout {
            (Flags::TIMEOUT, "upstream connect timed out")
        } else {
            (0, "upstream connect failed or was refused")
        };
        self.no_connection(cx, 503, Reason::UpstreamConnect, flags, msg, out);
    }

    /// No connection could be opened: the cluster is at its
    /// `max_connections`. A fast 503 `overflow` (no retry: another attempt
    /// would meet the same limit).
    pub fn on_up_refused(&mut self, cx: &mut Cx<'_>, out: &mut Out) {
        let msg = "too many connections to the cluster";
        self.no_connection(cx, 503, Reason::Overflow, Flags::BREAKER_OPEN, msg, out);
    }

    /// The exchange gets no upstream connection: a `status` answer with
    /// `reason` (a tunnel is closed with it in its record), `flags` added
    /// to its record.
    pub(super) fn no_connection(
        &mut self,
        cx: &mut Cx<'_>,
        status: u16,
        reason: Reason,
        flags: u8,
        msg: &str,
        out: &mut Out,
    ) {
        let Some(mut ex) = self.ex.take() else {
            return;
        };
        out.release(false);
        ex.record.flags.0 |= flags;
        if ex.tunnel {
            ex.record.reason = reason;
            ex.record.flags.0 |= Flags::ERROR;
            ex.close_after = true;
            self.finish(ex, cx.now, out);
            return;
        }
        self.local(ex, cx.now, status, reason, msg, out);
        self.after_exchange(cx, out);
    }

    /// Upstream bytes arrived.
    pub fn on_up_data(&mut self, cx: &mut Cx<'_>, data: &[u8], out: &mut Out) {
        let Some(ex) = &mut self.ex else {
            // Bytes nobody asked for: the connection cannot be reused.
            out.release(false);
            return;
        };
        if ex.marks.first_byte == 0 {
            ex.marks.first_byte = cx.now;
        }
        ex.active = ex.active.max(cx.now);
        if self.hold_up.is_empty() {
            let n = self.process_up(cx, data, true, out);
            if n < data.len() && self.ex.is_some() {
                self.hold_up.extend_from_slice(&data[n..]);
            }
        } else {
            self.hold_up.extend_from_slice(data);
            let held = std::mem::take(&mut self.hold_up);
            let n = self.process_up(cx, &held, false, out);
            if self.ex.is_some() && n < held.len() {
                self.hold_up = held[n..].to_vec();
            }
        }
        // Bytes the client sent right after an Upgrade/CONNECT head waited
        // for the answer; now that the tunnel is open they go at once.
        if self.ex.as_ref().is_some_and(|ex| ex.tunnel) {
            self.process_held(cx, out);
        }
        self.commit();
    }

    fn process_up(&mut self, cx: &mut Cx<'_>, buf: &[u8], input: bool, out: &mut Out) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            let Some(ex) = &mut self.ex else {
                // A finished exchange with bytes left over: do not reuse.
                out.release(false);
                return buf.len();
            };
            match &mut ex.resp {
                Resp::Head => {
                    let method = if ex.head_method {
                        "HEAD"
                    } else if ex.connect_method {
                        "CONNECT"
                    } else {
                        "GET"
                    };
                    let mut slots = response::header_slots();
                    match response::parse(&buf[pos..], method, &cx.snap.limits, &mut slots) {
                        Ok(None) => return pos,
                        Err(rej) => {
                            self.bad_upstream(cx, rej.status, rej.reason, rej.detail, out);
                            return buf.len();
                        }
                        Ok(Some(h)) => {
                            if h.status == 101 && !ex.upgrade {
                                let d = "101 Switching Protocols to a request that asked for no upgrade";
                                self.bad_upstream(cx, 502, Reason::UpstreamProtocol, d, out);
                                return buf.len();
                            }
                            let upgraded = (h.status == 101 && ex.upgrade)
                                || (ex.connect_method && (200..300).contains(&h.status));
                            if upgraded {
                                // Forward the head verbatim (it carries the
                                // Upgrade/Connection fields), then raw bytes.
                                out.to_down.push(Chunk::of(input, buf, pos..pos + h.len));
                                ex.record.status = h.status;
                                ex.down_started = true;
                                ex.tunnel = true;
                                ex.resp = Resp::UntilClose;
                                pos += h.len;
                                continue;
                            }
                            if h.status < 200 {
                                // Interim (100 Continue, 103): pass it on,
                                // except to HTTP/1.0 clients, which do not
                                // expect one.
                                if !ex.http10 {
                                    let mut head = Vec::with_capacity(h.len + 32);
                                    response::downstream_head(
                                        &h,
                                        Persist::Keep,
                                        false,
                                        None,
                                        &mut head,
                                    );
                                    out.to_down.push(Chunk::Owned(head));
                                }
                                pos += h.len;
                                continue;
                            }
                            if h.status >= 500 {
                                let hint = retry_after(&buf[pos..pos + h.len]);
                                if retry_exchange(ex, cx, h.status, Reason::None, hint, out) {
                                    // The failed attempt's answer is dropped
                                    // with its connection.
                                    return buf.len();
                                }
                            }
                            if ex.http10 && h.other_codings {
                                let d = "transfer coding an HTTP/1.0 client cannot read";
                                self.bad_upstream(cx, 502, Reason::UpstreamProtocol, d, out);
                                return buf.len();
                            }
                            // The upstream closing is its own hop's
                            // business; the client keeps its connection
                            // unless the body can only end with a close.
                            ex.up_close = h.close;
                            let dechunk = ex.http10 && h.body == Body::Chunked;
                            ex.close_after |= dechunk || h.body == Body::UntilClose;
                            let mut head = Vec::with_capacity(h.len + 32);
                            let persist = Session::persist(ex);
                            let edit = ex.edits.as_ref().map(|e| &e.response);
                            response::downstream_head(&h, persist, dechunk, edit, &mut head);
                            out.to_down.push(Chunk::Owned(head));
                            ex.down_started = true;
                            ex.record.status = h.status;
                            if h.status >= 500 {
                                ex.record.flags.0 |= Flags::ERROR;
                            }
                            ex.resp = match h.body {
                                Body::None | Body::Length(0) => Resp::Done,
                                Body::Length(n) => Resp::Body(Framed::Len(n)),
                                Body::Chunked if dechunk => Resp::Dechunk(Decoder::new()),
                                Body::Chunked => Resp::Body(Framed::Chunked(Decoder::new())),
                                Body::UntilClose => Resp::UntilClose,
                            };
                            pos += h.len;
                        }
                    }
                }
                Resp::Body(body) => match body.take(&buf[pos..]) {
                    Ok((n, done)) => {
                        out.to_down.push(Chunk::of(input, buf, pos..pos + n));
                        pos += n;
                        if done {
                            ex.resp = Resp::Done;
                        }
                    }
                    Err(_) => {
                        let d = "malformed chunked response body";
                        self.bad_upstream(cx, 502, Reason::UpstreamProtocol, d, out);
                        return buf.len();
                    }
                },
                Resp::Dechunk(dec) => {
                    let at = pos;
                    let fed = dec.feed_with(&buf[at..], |r| {
                        out.to_down
                            .push(Chunk::of(input, buf, at + r.start..at + r.end));
                    });
                    match fed {
                        Ok(n) => {
                            pos += n;
                            if dec.done() {
                                ex.resp = Resp::Done;
                            }
                        }
                        Err(_) => {
                            let d = "malformed chunked response body";
                            self.bad_upstream(cx, 502, Reason::UpstreamProtocol, d, out);
                            return buf.len();
                        }
                    }
                }
                Resp::UntilClose => {
                    out.to_down.push(Chunk::of(input, buf, pos..buf.len()));
                    pos = buf.len();
                }
                Resp::Done => {}
            }
            if self
                .ex
                .as_ref()
                .is_some_and(|ex| matches!(ex.resp, Resp::Done))
            {
                let leftover = pos < buf.len();
                self.response_done(cx, leftover, out);
                if leftover {
                    // The upstream sent more than it framed: those bytes
                    // answer no request. They are dropped with the
                    // connection (closed, never pooled), so they can never
                    // be read as the next request's response.
                    return buf.len();
                }
            }
        }
        if self
            .ex
            .as_ref()
            .is_some_and(|ex| matches!(ex.resp, Resp::Done))
        {
            self.response_done(cx, false, out);
        }
        pos
    }

    /// The response is complete: release or close the upstream, finish the
    /// exchange, and go on with a pipelined request if one is waiting.
    fn response_done(&mut self, cx: &mut Cx<'_>, leftover: bool, out: &mut Out) {
        let Some(mut ex) = self.ex.take() else {
            return;
        };
        let body_sent = matches!(ex.req, ReqBody::Done);
        let reusable = body_sent && !leftover && !ex.up_close && !ex.up_eof;
        out.release(reusable);
        // An early response before the whole request body: the rest of the
        // body cannot be skipped safely, so the downstream closes.
        ex.close_after |= !body_sent;
        self.finish(ex, cx.now, out);
        self.after_exchange(cx, out);
    }

    /// After an exchange ended: run a held pipelined request.
    fn after_exchange(&mut self, cx: &mut Cx<'_>, out: &mut Out) {
        self.hold_up.clear();
        if !self.closing && self.ex.is_none() {
            self.process_held(cx, out);
        }
    }

    /// The upstream failed (unframeable answer, reset, timeout): answer
    /// `status` if nothing went downstream yet, else cut the downstream.
    fn bad_upstream(
        &mut self,
        cx: &mut Cx<'_>,
        status: u16,
        reason: Reason,
        detail: &str,
        out: &mut Out,
    ) {
        if let Some(ex) = &mut self.ex
            && retry_exchange(ex, cx, status, reason, None, out)
        {
            self.hold_up.clear();
            return;
        }
        let Some(mut ex) = self.ex.take() else {
            return;
        };
        out.release(false);
        ex.close_after = true;
        if ex.down_started {
            ex.record.reason = reason;
            ex.record.flags.0 |= Flags::ERROR;
            self.finish(ex, cx.now, out);
        } else {
            self.local(ex, cx.now, status, reason, detail, out);
        }
    }

    /// The upstream closed its side (`reset`: with an error).
    pub fn on_up_eof(&mut self, cx: &mut Cx<'_>, reset: bool, out: &mut Out) {
        if self.retry_stale(cx.now, out) {
            return;
        }
        let Some(ex) = &mut self.ex else {
            return;
        };
        ex.up_eof = true;
        if reset {
            ex.record.flags.0 |= Flags::RESET;
        }
        if ex.tunnel && !reset {
            out.shutdown_down = true;
            if ex.down_eof {
                self.tunnel_done(cx.now, out);
            }
            return;
        }
        match ex.resp {
            Resp::UntilClose if !reset => {
                ex.resp = Resp::Done;
                self.response_done(cx, false, out);
            }
            _ => {
                let detail = "upstream closed the connection before a complete response";
                self.bad_upstream(cx, 502, Reason::UpstreamReset, detail, out);
            }
        }
        self.commit();
    }

    fn tunnel_done(&mut self, now: u64, out: &mut Out) {
        if let Some(mut ex) = self.ex.take() {
            out.release(false);
            ex.close_after = true;
            self.finish(ex, now, out);
        }
    }

    /// The client closed its write side.
    pub fn on_down_eof(&mut self, cx: &mut Cx<'_>, out: &mut Out) {
        self.down_eof = true;
        let Some(ex) = &mut self.ex else {
            // Idle or a partial head: nothing to answer.
            if !self.closing {
                self.closing = true;
                out.close_down = true;
            }
            return;
        };
        ex.down_eof = true;
        if ex.tunnel {
            out.up.push(UpOp::Shutdown);
            if ex.up_eof {
                self.tunnel_done(cx.now, out);
            }
            return;
        }
        if matches!(ex.req, ReqBody::Done) {
            // Answer the request, then close.
            ex.close_after = true;
            return;
        }
        self.abort_down(cx.now, out);
    }

    /// The downstream went away mid-request: close the upstream, record.
    fn abort_down(&mut self, now: u64, out: &mut Out) {
        if let Some(mut ex) = self.ex.take() {
            out.release(false);
            ex.record.reason = Reason::DownstreamReset;
            ex.record.flags.0 |= Flags::RESET;
            ex.close_after = true;
            self.finish(ex, now, out);
        }
        self.closing = true;
        out.close_down = true;
    }

    /// The downstream connection failed or is being torn down: abort what
    /// is in flight and emit every pending record.
    pub fn on_down_closed(&mut self, now: u64, out: &mut Out) {
        self.abort_down(now, out);
        self.on_down_flushed(now, out);
    }

    /// A deadline passed (call when `now >= deadline()`; an early call
    /// does nothing).
    pub fn on_timer(&mut self, cx: &mut Cx<'_>, out: &mut Out) {
        let now = cx.now;
        if self
            .down_backlog
            .is_some_and(|t| now >= t.saturating_add(self.limits.write_timeout_ns))
        {
            self.write_timeout(now, out);
            return;
        }
        if self.closing || self.wait_deadline().is_none_or(|d| now < d) {
            return;
        }
        if self.release_deferred(cx, out) {
            return;
        }
        let Some(ex) = &mut self.ex else {
            self.closing = true;
            out.close_down = true;
            // A TLS handshake or mesh header that did not come in time
            // is no idle keep-alive connection.
            out.idle_closed = self.hold_down.is_empty() && !self.awaits_tls();
            if !self.hold_down.is_empty() {
                let mut ex = self.new_exchange(now, ReqBody::Done);
                ex.close_after = true;
                ex.record.flags.0 |= Flags::TIMEOUT;
                let msg = "request head not received in time";
                self.local(ex, now, 408, Reason::RequestTimeout, msg, out);
            }
            return;
        };
        ex.record.flags.0 |= Flags::TIMEOUT;
        if !ex.up_ready {
            self.on_up_failed(cx, true, out);
            return;
        }
        if ex.tunnel {
            ex.record.reason = Reason::IdleTimeout;
            self.tunnel_done(now, out);
            return;
        }
        let body_due = matches!(ex.req, ReqBody::Body(_))
            && self.up_backlog.is_none()
            && now >= ex.body_active.saturating_add(self.limits.body_timeout_ns);
        if body_due {
            let rej = Reject {
                status: 408,
                reason: Reason::RequestTimeout,
                detail: "request body not received in time",
            };
            self.reject_body(now, &rej, out);
        } else {
            let d = "upstream did not answer in time";
            self.bad_upstream(cx, 504, Reason::UpstreamTimeout, d, out);
        }
        self.commit();
    }

    /// The client left response bytes unread for `timeouts.write`: reset
    /// the connection (its queued bytes are dropped, buffers returned) and
    /// record why.
    fn write_timeout(&mut self, now: u64, out: &mut Out) {
        let reason = Reason::WriteTimeout;
        if let Some(mut ex) = self.ex.take() {
            out.release(false);
            ex.record.reason = reason;
            ex.record.flags.0 |= Flags::TIMEOUT | Flags::ERROR;
            ex.close_after = true;
            self.finish(ex, now, out);
        } else if let Some(ex) = self.pending.last_mut() {
            ex.record.reason = reason;
            ex.record.flags.0 |= Flags::TIMEOUT | Flags::ERROR;
        }
        self.closing = true;
        self.down_backlog = None;
        out.reset_down = true;
        self.on_down_flushed(now, out);
    }

    /// The downstream send queue is empty: finished exchanges get their
    /// write phase and become records.
    pub fn on_down_flushed(&mut self, now: u64, out: &mut Out) {
        for ex in self.pending.drain(..) {
            out.records.push(finished(ex, now));
        }
        if self.ex.is_none() {
            // An idle keep-alive connection keeps no exchange-sized block
            // (10,000 idle connections would hold 4.7 MiB): the next
            // request allocates one again.
            self.pending = Vec::new();
        }
    }
}

fn finished(ex: Exchange, flushed: u64) -> Finished {
    let (phases, total) = ex.marks.phases(flushed);
    let mut record = ex.record;
    record.start_ns = ex.marks.start;
    record.total_ns = total;
    record.phases_ns = phases;
    Finished {
        record,
        hash: ex.hash,
    }
}
