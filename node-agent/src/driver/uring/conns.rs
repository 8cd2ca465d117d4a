//! Connections on the io_uring driver: completions turned into session
//! events, session actions turned into operations, and closing.

use super::*;
use crate::driver::core::{PoolPut, QUEUE_CAP};
use crate::driver::uring::io::Rx;

/// Where the input of a session call came from.
#[derive(Debug, Clone, Copy)]
enum Src<'a> {
    /// No input.
    None,
    /// Receive buffer `bid`: input ranges are sent from it (held).
    Ring(u16),
    /// Owned bytes (a spilled receive): input ranges are copied.
    Copy(&'a [u8]),
}

/// Turns session chunks into queued sends: owned bytes move, ranges of a
/// receive buffer are held and sent from that buffer, ranges of spilled
/// bytes are copied.
fn queue(io: &mut Io, bufs: &mut Bufs, chunks: &mut Vec<Chunk>, src: Src<'_>) {
    for c in chunks.drain(..) {
        match (c, src) {
            (Chunk::Owned(v), _) if !v.is_empty() => io.tx.push_back(Tx::Owned(v, 0)),
            (Chunk::Input(r), Src::Ring(b)) if !r.is_empty() => {
                bufs.hold(b);
                io.tx.push_back(Tx::Buf {
                    bid: b,
                    start: r.start,
                    end: r.end,
                });
            }
            (Chunk::Input(r), Src::Copy(bytes)) if !r.is_empty() => {
                let copy = bytes.get(r).unwrap_or_default().to_vec();
                io.tx.push_back(Tx::Owned(copy, 0));
            }
            _ => {}
        }
    }
}

impl Worker {
    pub(super) fn arm_accept(&mut self, li: usize) {
        let Some(Slot::Listener(l)) = self.slab.get_mut(li) else {
            return;
        };
        if l.armed || l.closing || l.paused {
            return;
        }
        l.armed = true;
        l.inflight += 1;
        let e = opcode::AcceptMulti::new(Fd(l.sock.as_raw_fd()))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(ud(li, OP_ACCEPT));
        self.push(&e);
    }

    pub(super) fn on_accept(&mut self, li: usize, res: i32, flags: u32) {
        let Some(Slot::Listener(l)) = self.slab.get_mut(li) else {
            return;
        };
        if !cqueue::more(flags) {
            l.armed = false;
            l.inflight = l.inflight.saturating_sub(1);
        }
        let (idx, closing) = (l.idx, l.closing);
        if res >= 0 {
            // SAFETY: a successful accept completion carries a new file
            // descriptor that nothing else owns.
            let sock = unsafe { socket2::Socket::from_raw_fd(res) };
            if !closing {
                self.new_down(idx, sock);
            }
        } else if self.core.accept_failed(-res) {
            // Out of descriptors: re-arming now would spin on the same
            // error. The core resumes accepting after a pause.
            if let Some(Slot::Listener(l)) = self.slab.get_mut(li) {
                l.paused = true;
            }
            return;
        }
        if !closing {
            self.arm_accept(li);
        }
    }

    /// Re-arms listeners paused by an accept error.
    pub(super) fn resume_accepts(&mut self) {
        for li in 0..self.slab.len() {
            if let Slot::Listener(l) = &mut self.slab[li]
                && std::mem::take(&mut l.paused)
            {
                self.arm_accept(li);
            }
        }
    }

    fn new_down(&mut self, idx: usize, sock: socket2::Socket) {
        super::super::tune_downstream(&sock);
        let Some(peer) = sock.peer_addr().ok().and_then(|a| a.as_socket()) else {
            return;
        };
        // None: over a connection limit; dropping the socket closes it.
        let Some(session) = self.core.accept_session(idx, peer.ip(), &sock) else {
            return;
        };
        let i = self.alloc();
        let serial = self.core.next_serial();
        self.slab[i] = Slot::Down(Box::new(Down {
            io: Io::new(sock),
            session,
            up: None,
            close: false,
            serial,
            armed: None,
        }));
        self.arm_recv(i);
        self.with_session(i, |s, cx, out| s.start(cx, out));
        self.core.todo.push(i);
    }

    pub(super) fn arm_recv(&mut self, i: usize) {
        let Some(io) = self.io_mut(i) else {
            return;
        };
        if io.recv_armed || io.starved || io.closing || io.eof || io.err || io.rx.len() >= RX_CAP {
            return;
        }
        io.recv_armed = true;
        io.inflight += 1;
        let e = opcode::RecvMulti::new(Fd(io.sock.as_raw_fd()), GROUP)
            .build()
            .user_data(ud(i, OP_RECV));
        self.push(&e);
    }

    pub(super) fn on_recv(&mut self, i: usize, res: i32, flags: u32) {
        let nobufs = res == -libc::ENOBUFS;
        let Some(io) = (match self.slab.get_mut(i) {
            Some(Slot::Down(d)) => Some(&mut d.io),
            Some(Slot::Up(u)) => Some(&mut u.io),
            _ => None,
        }) else {
            return;
        };
        if !cqueue::more(flags) {
            io.recv_armed = false;
            io.recv_cancelling = false;
            io.inflight = io.inflight.saturating_sub(1);
        }
        if res > 0 {
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.bufs.take(bid);
                io.rx.push_back(Rx::Ring(bid, res as usize));
            }
        } else if res == 0 {
            io.eof = true;
        } else if res != -libc::ECANCELED && res != -libc::EAGAIN && res != -libc::EINTR && !nobufs
        {
            // EAGAIN/EINTR end a multishot recv without failing the socket
            // (it is re-armed by its pump), as cancel and ENOBUFS do.
            io.err = true;
        }
        let pause = io.recv_armed && !io.recv_cancelling && io.rx.len() >= RX_CAP;
        if pause {
            // The consumer is behind: pause this socket's reads.
            io.recv_cancelling = true;
            io.inflight += 1;
        }
        if nobufs {
            io.starved = true;
        }
        if pause {
            let e = opcode::AsyncCancel::new(ud(i, OP_RECV))
                .build()
                .user_data(ud(i, OP_CANCEL));
            self.push(&e);
        }
        if nobufs {
            let first = self.starved.is_empty();
            self.starved.push(i);
            self.core.stats().driver(Driver::NoBufs, 1);
            if first {
                // Buffer ring empty: on the timeline as ring_full (b = 2),
                // once per loop turn.
                let mut ev = Event::new(EventKind::RingFull, self.core.now);
                ev.a = 1;
                ev.b = 2;
                self.core.event(&ev);
            }
        }
        self.core.todo.push(i);
    }

    pub(super) fn on_send(&mut self, i: usize, res: i32, flags: u32) {
        // Zero-copy sends complete twice: the result (with MORE), then a
        // notification once the kernel no longer reads the buffers. The
        // send counts as done (buffers released) only at the notification.
        if let Some(io) = self.io_mut(i) {
            if cqueue::notif(flags) {
                match io.zc_sent.take() {
                    Some(res) => return self.send_done(i, res),
                    None => return self.dec(i),
                }
            }
            if cqueue::more(flags) {
                io.zc_sent = Some(res);
                return;
            }
        }
        self.send_done(i, res);
    }

    fn send_done(&mut self, i: usize, res: i32) {
        let (peer, is_down) = match self.slab.get(i) {
            Some(Slot::Down(d)) => (d.up, true),
            Some(Slot::Up(u)) => (u.owner, false),
            _ => return,
        };
        let io = match self.slab.get_mut(i) {
            Some(Slot::Down(d)) => &mut d.io,
            Some(Slot::Up(u)) => &mut u.io,
            _ => return,
        };
        io.inflight = io.inflight.saturating_sub(1);
        // On a non-blocking socket, the retry io_uring makes after its poll
        // wake-up can still find the send buffer full and complete with
        // EAGAIN: nothing was sent, so it is a short send of 0 bytes and the
        // queue is sent again (the next attempt arms a poll again).
        let res = if res == -libc::EAGAIN || res == -libc::EINTR {
            0
        } else {
            res
        };
        let short = if res < 0 {
            io.sending = false;
            io.err = true;
            false
        } else {
            io.sent(res as usize, &mut self.bufs)
        };
        if short {
            // The peer's socket buffer is full: what waits must not keep
            // shared receive buffers while it reads (or never does).
            io.spill_tx(&mut self.bufs);
            self.core.stats().driver(Driver::ShortSends, 1);
        }
        if res < 0 && is_down {
            self.kill_down(i);
            return;
        }
        self.core.todo.push(i);
        if let Some(p) = peer {
            self.core.todo.push(p);
        }
    }

    pub(super) fn on_connect(&mut self, j: usize, res: i32) {
        let Some(Slot::Up(u)) = self.slab.get_mut(j) else {
            return;
        };
        u.io.inflight = u.io.inflight.saturating_sub(1);
        u.connecting = false;
        if u.io.closing {
            return;
        }
        let owner = u.owner;
        if res == 0 {
            u.connected = true;
            if let Some(o) = owner
                && let Some(Slot::Down(d)) = self.slab.get_mut(o)
            {
                d.session.on_up_ready(self.core.now, false);
                self.core.todo.push(o);
            }
            self.arm_recv(j);
            self.core.todo.push(j);
            return;
        }
        // -ECANCELED: the linked timeout fired first.
        let timeout = res == -libc::ECANCELED;
        self.core.stats().driver(Driver::ConnectErrors, 1);
        self.close_up(j);
        if let Some(o) = owner {
            self.with_session(o, |s, cx, out| s.on_up_failed(cx, timeout, out));
        }
    }

    /// Starts a send on slot `i` if one is due and none is in flight.
    fn kick_send(&mut self, i: usize) {
        let io = match self.slab.get_mut(i) {
            Some(Slot::Down(d)) => &mut d.io,
            Some(Slot::Up(u)) if u.connected => &mut u.io,
            _ => return,
        };
        if io.closing {
            return;
        }
        let Some(msg) = io.prepare_send(&self.bufs) else {
            return;
        };
        io.inflight += 1;
        let fd = Fd(io.sock.as_raw_fd());
        let flags = libc::MSG_NOSIGNAL as u32;
        let e = if self.zc_min > 0 && io.sending_len() >= self.zc_min {
            opcode::SendMsgZc::new(fd, msg).flags(flags).build()
        } else {
            opcode::SendMsg::new(fd, msg).flags(flags).build()
        };
        self.push(&e.user_data(ud(i, OP_SEND)));
    }

    pub(super) fn run_todo(&mut self) {
        while let Some(i) = self.core.todo.pop() {
            match self.slab.get(i) {
                Some(Slot::Down(_)) => self.pump_down(i),
                Some(Slot::Up(_)) => self.pump_up(i),
                _ => {}
            }
            self.maybe_free(i);
        }
    }

    /// Whether slot `i`'s send queue can take more (the backpressure rule
    /// shared with epoll: [`QUEUE_CAP`] bytes).
    fn has_room(&self, i: Option<usize>) -> bool {
        match i.and_then(|i| self.slab.get(i)) {
            Some(Slot::Down(d)) => d.io.tx_bytes() < QUEUE_CAP,
            Some(Slot::Up(u)) => u.io.tx_bytes() < QUEUE_CAP,
            _ => true,
        }
    }

    /// Slot `i` stops being read because its peer is slow: its unconsumed
    /// receive buffers are copied out and given back.
    fn stall(&mut self, i: usize) {
        let io = match self.slab.get_mut(i) {
            Some(Slot::Down(d)) => &mut d.io,
            Some(Slot::Up(u)) => &mut u.io,
            _ => return,
        };
        if io.rx.iter().any(|r| matches!(r, Rx::Ring(..))) {
            io.spill_rx(&mut self.bufs);
        }
    }

    fn pump_down(&mut self, i: usize) {
        loop {
            self.kick_send(i);
            let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
                return;
            };
            if d.io.closing {
                return;
            }
            if d.io.tx_idle() {
                let mut out = self.core.take_out();
                d.session.on_down_flushed(self.core.now, &mut out);
                self.core.record_all(&mut out);
                self.core.put_out(out);
                let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
                    return;
                };
                if d.close || d.session.is_closed() {
                    self.close_down(i);
                    return;
                }
                if std::mem::take(&mut d.io.shut_wr) {
                    let _ = d.io.sock.shutdown(Shutdown::Write);
                }
            }
            let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
                return;
            };
            let up = d.up;
            if !d.session.wants_down_data() {
                break;
            }
            if !self.has_room(up) {
                self.stall(i);
                break;
            }
            let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
                return;
            };
            if let Some(rx) = d.io.rx.pop_front() {
                self.feed(i, rx, false);
            } else if (d.io.eof || d.io.err) && !d.io.reported {
                d.io.reported = true;
                if d.io.err {
                    self.kill_down(i);
                    return;
                }
                self.with_session(i, |s, cx, out| s.on_down_eof(cx, out));
            } else {
                self.arm_recv(i);
                break;
            }
        }
        self.arm_timer(i);
    }

    fn pump_up(&mut self, j: usize) {
        loop {
            self.kick_send(j);
            let Some(Slot::Up(u)) = self.slab.get_mut(j) else {
                return;
            };
            if u.io.closing || !u.connected {
                return;
            }
            if u.io.tx_idle() {
                if u.close_when_flushed {
                    self.close_up(j);
                    return;
                }
                if std::mem::take(&mut u.io.shut_wr) {
                    let _ = u.io.sock.shutdown(Shutdown::Write);
                }
            }
            let Some(o) = u.owner else {
                if u.close_when_flushed {
                    // Released with bytes still queued (e.g. a tunnel whose
                    // upstream FIN came first): its own EOF must not drop
                    // them; the next send completion brings it back here.
                    if u.io.err {
                        self.close_up(j);
                    }
                    return;
                }
                // Idle in the pool: anything arriving means it is done.
                if !u.io.rx.is_empty() || u.io.eof || u.io.err {
                    self.close_up(j);
                } else {
                    self.arm_recv(j);
                }
                return;
            };
            if !self.has_room(Some(o)) {
                self.stall(j);
                return; // backpressure: the downstream is slower
            }
            let Some(Slot::Up(u)) = self.slab.get_mut(j) else {
                return;
            };
            if let Some(rx) = u.io.rx.pop_front() {
                self.feed(o, rx, true);
            } else if (u.io.eof || u.io.err) && !u.io.reported {
                u.io.reported = true;
                let reset = u.io.err;
                // A tunnel's upstream half-closed: keep it for the client's
                // remaining bytes; the session releases it when both are done.
                let half = !reset
                    && matches!(self.slab.get(o), Some(Slot::Down(d)) if d.session.is_tunnel());
                if !half {
                    self.close_up(j);
                }
                self.with_session(o, |s, cx, out| s.on_up_eof(cx, reset, out));
                return;
            } else {
                self.arm_recv(j);
                return;
            }
        }
    }

    /// Feeds received bytes to down `i`'s session (as downstream data, or
    /// as upstream data when `up`), then gives their buffer back.
    fn feed(&mut self, i: usize, rx: Rx, up: bool) {
        let mut out = self.core.take_out();
        if let Some(Slot::Down(d)) = self.slab.get_mut(i) {
            let (input, src) = match &rx {
                Rx::Ring(bid, len) => (self.bufs.data(*bid, *len), Src::Ring(*bid)),
                Rx::Owned(v) => (v.as_slice(), Src::Copy(v)),
            };
            if up {
                self.core.call(&mut d.session, &mut out, |s, cx, o| {
                    s.on_up_data(cx, input, o)
                });
            } else {
                self.core.call(&mut d.session, &mut out, |s, cx, o| {
                    s.on_down_data(cx, input, o)
                });
            }
            self.apply(i, &mut out, src);
        }
        if let Rx::Ring(bid, _) = rx {
            self.bufs.release(bid);
        }
        self.core.put_out(out);
    }

    /// Runs `f` on down `i`'s session without input, then applies its output.
    fn with_session(&mut self, i: usize, f: impl FnOnce(&mut Session, &mut Cx<'_>, &mut Out)) {
        let mut out = self.core.take_out();
        if let Some(Slot::Down(d)) = self.slab.get_mut(i) {
            self.core.call(&mut d.session, &mut out, f);
            self.apply(i, &mut out, Src::None);
        }
        self.core.put_out(out);
    }

    /// Carries out a session's actions for down `i`; input chunks refer to
    /// `src`.
    fn apply(&mut self, i: usize, out: &mut Out, src: Src<'_>) {
        if let Some(reuse) = out.release_up.take()
            && let Some(Slot::Down(d)) = self.slab.get_mut(i)
            && let Some(j) = d.up.take()
        {
            // A half-close that comes with the release (a tunnel's client
            // FIN after the upstream's) belongs to the released upstream.
            if std::mem::take(&mut out.shutdown_up)
                && let Some(Slot::Up(u)) = self.slab.get_mut(j)
            {
                u.io.shut_wr = true;
            }
            self.release_up(j, reuse);
        }
        let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
            return;
        };
        queue(&mut d.io, &mut self.bufs, &mut out.to_down, src);
        d.io.shut_wr |= out.shutdown_down;
        d.close |= out.close_down;
        self.core.record_all(out);
        if out.reset_down {
            // A client that stopped reading: close now, queue and all, with
            // a RST so the kernel frees its send buffer too.
            out.to_up.clear();
            out.connect = None;
            if let Some(Slot::Down(d)) = self.slab.get(i) {
                super::super::abort_on_close(&d.io.sock);
            }
            self.close_down(i);
            return;
        }
        // After the downstream bytes: a failed connect answers 503, and that
        // answer must follow what was already queued.
        if let Some(c) = out.connect.take() {
            self.attach_up(i, c);
        }
        let up = match self.slab.get(i) {
            Some(Slot::Down(d)) => d.up,
            _ => None,
        };
        if let Some(j) = up
            && let Some(Slot::Up(u)) = self.slab.get_mut(j)
        {
            queue(&mut u.io, &mut self.bufs, &mut out.to_up, src);
            u.io.shut_wr |= out.shutdown_up;
            self.core.todo.push(j);
        }
        out.to_up.clear();
        self.core.todo.push(i);
    }

    fn attach_up(&mut self, i: usize, c: Connect) {
        if let Some(j) = self.core.pool_take(&c)
            && let Some(Slot::Up(u)) = self.slab.get_mut(j)
        {
            u.owner = Some(i);
            if let Some(Slot::Down(d)) = self.slab.get_mut(i) {
                d.up = Some(j);
                d.session.on_up_ready(self.core.now, true);
            }
            return;
        }
        let sock = match super::super::upstream_socket(c.addr, self.core.shared.upstream_mark) {
            Ok(s) => s,
            Err(_) => {
                self.core.stats().driver(Driver::ConnectErrors, 1);
                self.with_session(i, |s, cx, out| s.on_up_failed(cx, false, out));
                return;
            }
        };
        let j = self.alloc();
        let mut io = Io::new(sock);
        io.addr = Some(socket2::SockAddr::from(c.addr));
        io.ts = Timespec::from(Duration::from_nanos(c.timeout_ns));
        io.inflight = 2;
        let mut up = Box::new(Up {
            io,
            owner: Some(i),
            addr: c.addr,
            connected: false,
            connecting: true,
            close_when_flushed: false,
            idle_ns: c.idle_ns,
        });
        let fd = Fd(up.io.sock.as_raw_fd());
        let (addr_ptr, addr_len) = match &up.io.addr {
            Some(a) => (a.as_ptr(), a.len()),
            None => return,
        };
        let connect = opcode::Connect::new(fd, addr_ptr.cast(), addr_len)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(ud(j, OP_CONNECT));
        let timeout = opcode::LinkTimeout::new(&raw const up.io.ts)
            .build()
            .user_data(ud(j, OP_LINK_TIMEOUT));
        up.connecting = true;
        self.slab[j] = Slot::Up(up);
        // Both entries must go in the same submission for the link.
        self.push_linked(&connect, &timeout);
        self.core.ups += 1;
        if let Some(Slot::Down(d)) = self.slab.get_mut(i) {
            d.up = Some(j);
        }
    }

    /// Detaches upstream `j`: pooled if reusable and idle, closed after its
    /// queue drains if reusable but busy, else closed now.
    fn release_up(&mut self, j: usize, reuse: bool) {
        let Some(Slot::Up(u)) = self.slab.get_mut(j) else {
            return;
        };
        u.owner = None;
        let idle = u.io.tx_idle() && u.io.rx.is_empty() && !u.io.eof && !u.io.err;
        if reuse && u.connected && idle && !u.io.shut_wr {
            if let PoolPut::Evicted(old) = self.core.pool_put(u.addr, j, u.idle_ns) {
                self.close_up(old);
            }
            return;
        }
        // Also a tunnel whose upstream already sent its FIN: what the client
        // sent after it must still reach the upstream before the close.
        if (reuse || u.io.eof) && !u.io.tx_idle() {
            u.close_when_flushed = true;
            return;
        }
        self.close_up(j);
    }

    /// Stops every operation on a socket; the slot is freed once the last
    /// completion arrives.
    fn begin_close(&mut self, i: usize, cancel_connect: bool) {
        let Some(io) = self.io_mut(i) else {
            return;
        };
        io.closing = true;
        let _ = io.sock.shutdown(Shutdown::Both);
        let recv = io.recv_armed && !io.recv_cancelling;
        let mut cancels = Vec::with_capacity(2);
        if recv {
            io.recv_cancelling = true;
            cancels.push(ud(i, OP_RECV));
        }
        if cancel_connect {
            cancels.push(ud(i, OP_CONNECT));
        }
        io.inflight += cancels.len() as u32;
        for target in cancels {
            let e = opcode::AsyncCancel::new(target)
                .build()
                .user_data(ud(i, OP_CANCEL));
            self.push(&e);
        }
        self.maybe_free(i);
    }

    fn close_up(&mut self, j: usize) {
        let Some(Slot::Up(u)) = self.slab.get_mut(j) else {
            return;
        };
        if u.io.closing {
            return;
        }
        let (addr, owner, connecting) = (u.addr, u.owner, u.connecting);
        self.core.pool_forget(addr, j);
        if let Some(o) = owner
            && let Some(Slot::Down(d)) = self.slab.get_mut(o)
            && d.up == Some(j)
        {
            d.up = None;
        }
        self.core.ups -= 1;
        self.begin_close(j, connecting);
    }

    fn close_down(&mut self, i: usize) {
        let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
            return;
        };
        if d.io.closing {
            return;
        }
        let up = d.up.take();
        let listener = d.session.listener();
        if let Some(j) = up {
            self.close_up(j);
        }
        self.core.down_closed(listener);
        self.begin_close(i, false);
    }

    /// The downstream failed: abort its session and close it.
    fn kill_down(&mut self, i: usize) {
        let mut out = self.core.take_out();
        if let Some(Slot::Down(d)) = self.slab.get_mut(i)
            && !d.io.closing
        {
            d.session.on_down_closed(self.core.now, &mut out);
        }
        self.core.record_all(&mut out);
        self.core.put_out(out);
        self.close_down(i);
    }

    /// Tells the session what its queues hold, then keeps the timer heap
    /// in step with its deadline.
    fn arm_timer(&mut self, i: usize) {
        let up_waits = match self.slab.get(i) {
            Some(Slot::Down(d)) => !self.has_room_idle(d.up),
            _ => return,
        };
        if let Some(Slot::Down(d)) = self.slab.get_mut(i)
            && !d.io.closing
        {
            let down_waits = !d.io.tx_idle();
            d.session.set_backlog(self.core.now, down_waits, up_waits);
            let dl = d.session.deadline();
            self.core.arm(i, d.serial, &mut d.armed, dl);
        }
    }

    /// Whether upstream `j` has nothing queued to send.
    fn has_room_idle(&self, j: Option<usize>) -> bool {
        match j.and_then(|j| self.slab.get(j)) {
            Some(Slot::Up(u)) => u.io.tx_idle(),
            _ => true,
        }
    }

    pub(super) fn fire_timers(&mut self) {
        while let Some((i, serial, t)) = self.core.pop_due() {
            let due = match self.slab.get_mut(i) {
                Some(Slot::Down(d))
                    if d.serial == serial && d.armed == Some(t) && !d.io.closing =>
                {
                    d.armed = None;
                    true
                }
                _ => false,
            };
            if due {
                self.with_session(i, |s, cx, out| s.on_timer(cx, out));
            }
        }
        for j in self.core.pool_expired() {
            self.close_up(j);
        }
        let slab = &self.slab;
        self.core.compact_timers(|i, serial, t| {
            matches!(slab.get(i), Some(Slot::Down(d)) if d.serial == serial && d.armed == Some(t))
        });
        if self.core.accept_resume_due() {
            self.resume_accepts();
        }
        self.run_todo();
    }

    /// Drain begins: cancel the accepts; the listeners close when their
    /// cancellation completes.
    pub(super) fn stop_accepting(&mut self) {
        for i in 0..self.slab.len() {
            if let Slot::Listener(l) = &mut self.slab[i]
                && !l.closing
            {
                l.closing = true;
                let _ = l.sock.shutdown(Shutdown::Both);
                if l.armed {
                    l.inflight += 1;
                    let e = opcode::AsyncCancel::new(ud(i, OP_ACCEPT))
                        .build()
                        .user_data(ud(i, OP_CANCEL));
                    self.push(&e);
                }
                self.maybe_free(i);
            }
        }
        let _ = self.ring.submit();
    }

    /// While draining, close downstream connections with nothing in flight.
    pub(super) fn close_idle(&mut self) {
        for i in 0..self.slab.len() {
            if let Slot::Down(d) = &self.slab[i]
                && !d.io.closing
                && d.session.is_idle()
                && d.io.tx_idle()
            {
                self.kill_down(i);
            }
        }
        self.run_todo();
    }

    /// Closes everything and waits (up to 1 s) for the kernel to finish
    /// with every socket and buffer before the ring is dropped.
    pub(super) fn shutdown_all(&mut self) {
        self.stop_accepting();
        for i in 0..self.slab.len() {
            match self.slab[i] {
                Slot::Down(_) => self.kill_down(i),
                Slot::Up(_) => self.close_up(i),
                _ => {}
            }
        }
        let until = ringlog::clock::mono_ns() + 1_000_000_000;
        while self.slab.iter().any(|s| !matches!(s, Slot::Free))
            && ringlog::clock::mono_ns() < until
        {
            if self.enter(Duration::from_millis(10)).is_err() {
                break;
            }
            self.reap();
            self.run_todo();
        }
    }
}
