//! Connections on the io_uring driver: completions turned into session
//! events, session actions turned into operations, and closing.

use super::*;
use crate::driver::core::flow;
use crate::driver::core::queue_has_room;
use crate::driver::core::secure;
use crate::driver::uring::io::{Pace, RecvOp, Rx};

/// Where the input of a session call came from.
#[derive(Debug, Clone, Copy)]
pub enum Src<'a> {
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
pub(super) fn queue(io: &mut Io, bufs: &mut Bufs, chunks: &mut Vec<Chunk>, src: Src<'_>) {
    if let Some(t) = &mut io.tls {
        // TLS: the plaintext is sealed into one owned chunk of ciphertext.
        let bytes = match src {
            Src::None => &[][..],
            Src::Copy(b) => b,
            Src::Ring(b) => {
                let end = chunks
                    .iter()
                    .map(|c| match c {
                        Chunk::Input(r) => r.end,
                        Chunk::Owned(_) => 0,
                    })
                    .max()
                    .unwrap_or(0);
                bufs.data(b, end)
            }
        };
        secure::seal(t, chunks, bytes);
    }
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
                self.accepted.push_back((idx, sock));
                self.set_up_accepted();
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

    /// Sets up accepted connections, oldest first, while the turn allows
    /// (see `core::accepts`); the rest wait for the next turn.
    pub(super) fn set_up_accepted(&mut self) {
        while !self.accepted.is_empty() && self.core.accept_allowed(self.accepted.len() - 1) {
            if let Some((idx, sock)) = self.accepted.pop_front() {
                self.new_down(idx, sock);
            }
        }
    }

    fn new_down(&mut self, idx: usize, sock: socket2::Socket) {
        let Some(peer) = sock.peer_addr().ok().and_then(|a| a.as_socket()) else {
            return;
        };
        // None: over a connection limit; dropping the socket closes it.
        let Some((session, tls)) = self.core.accept_session(idx, peer.ip(), &sock) else {
            return;
        };
        let i = self.alloc();
        let serial = self.core.next_serial();
        let mut io = Io::new(sock);
        io.tls = tls;
        self.slab[i] = Slot::Down(Box::new(Down {
            io,
            session,
            up: None,
            close: false,
            serial,
            armed: None,
        }));
        self.arm_recv(i);
        flow::with_session(self, i, |s, cx, out| s.start(cx, out));
        self.core.todo.push(i);
    }

    pub(super) fn arm_recv(&mut self, i: usize) {
        let Some(io) = self.io_mut(i) else {
            return;
        };
        if io.recv != RecvOp::Idle
            || io.starved
            || io.closing
            || io.eof
            || io.err
            || io.rx.len() >= RX_CAP
        {
            return;
        }
        let (fd, pace) = (Fd(io.sock.as_raw_fd()), io.pace);
        // Bulk leaves the ring's last buffers to small reads: 200 starting
        // downloads otherwise took every buffer, and request heads met an
        // empty ring. It is re-armed with the starved reads, once buffers
        // come back (a send completing brings the turn that does it).
        if pace == Pace::Bulk && self.bufs.in_use() + BULK_RESERVE >= usize::from(BUF_COUNT) {
            if let Some(io) = self.io_mut(i) {
                io.starved = true;
            }
            self.starved.push(i);
            self.core.stats().driver(Driver::BulkDeferred, 1);
            return;
        }
        // Bulk: one buffer at a time, within the turn's budget.
        if pace == Pace::Bulk && !self.core.allow_bulk(i, BUF_SIZE) {
            return;
        }
        let (op, e) = if pace == Pace::Small {
            (RecvOp::Multi, opcode::RecvMulti::new(fd, GROUP).build())
        } else {
            let len = pace.recv_len(BUF_SIZE);
            let once = opcode::Recv::new(fd, std::ptr::null_mut(), len as u32)
                .buf_group(GROUP)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT);
            (RecvOp::Once, once)
        };
        if let Some(io) = self.io_mut(i) {
            io.recv = op;
            io.inflight += 1;
        }
        self.push(&e.user_data(ud(i, OP_RECV)));
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
        let (was, charged) = (io.recv, io.recv == RecvOp::Once && io.pace == Pace::Bulk);
        if !cqueue::more(flags) {
            io.recv = RecvOp::Idle;
            io.inflight = io.inflight.saturating_sub(1);
        }
        if res > 0 {
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.bufs.take(bid);
                io.rx.push_back(Rx::Ring(bid, res as usize));
            }
            let asked = io.pace.recv_len(BUF_SIZE);
            io.pace = self.core.took_input(charged, res as usize, asked).into();
        } else if res == 0 {
            io.eof = true;
        } else if res != -libc::ECANCELED && res != -libc::EAGAIN && res != -libc::EINTR && !nobufs
        {
            // EAGAIN/EINTR end a multishot recv without failing the socket
            // (it is re-armed by its pump), as cancel and ENOBUFS do.
            io.err = true;
        }
        // The consumer is behind, or bulk bytes arrive on a multishot recv
        // (which would go on taking buffers): stop it.
        let pause = io.rx.len() >= RX_CAP || (io.pace == Pace::Bulk && was == RecvOp::Multi);
        if nobufs {
            // Bytes wait and the ring is empty: a multishot recv re-armed
            // now would take a buffer per 32 KiB waiting, up to 33 in one
            // go, so the next recv is single-shot.
            io.starved = true;
            if io.pace == Pace::Small {
                io.pace = Pace::Starved;
            }
        }
        if pause {
            self.pause_recv(i);
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

    /// Stops slot `i`'s multishot recv (if armed), so that it takes no
    /// more provided buffers while its bytes cannot move on: the kernel's
    /// socket buffer holds them, and TCP flow control the sender.
    fn pause_recv(&mut self, i: usize) {
        let Some(io) = self.io_mut(i) else {
            return;
        };
        if !io.recv.armed() {
            return;
        }
        io.recv = RecvOp::Cancelling;
        io.inflight += 1;
        let e = opcode::AsyncCancel::new(ud(i, OP_RECV))
            .build()
            .user_data(ud(i, OP_CANCEL));
        self.push(&e);
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
        // A full socket answers EAGAIN (the send is MSG_DONTWAIT): nothing
        // was sent, a short send of 0 bytes.
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
        if short && !io.closing {
            // The peer's socket buffer is full: wait for POLLOUT before the
            // next send; meanwhile the queue (and the receive buffers it
            // forwards from) is only held, and can be copied out.
            io.blocked = true;
            io.inflight += 1;
            let e = opcode::PollAdd::new(Fd(io.sock.as_raw_fd()), libc::POLLOUT as u32)
                .build()
                .user_data(ud(i, OP_POLL_OUT));
            self.push(&e);
            self.core.stats().driver(Driver::ShortSends, 1);
            self.stall(i);
        }
        if res < 0 && is_down {
            flow::kill_down(self, i);
            return;
        }
        self.core.todo.push(i);
        if let Some(p) = peer {
            self.core.todo.push(p);
        }
    }

    /// The POLLOUT poll of a blocked socket completed (writable, or an
    /// error or hang-up the next send will report): send again.
    pub(super) fn on_writable(&mut self, i: usize) {
        if let Some(io) = self.io_mut(i) {
            io.inflight = io.inflight.saturating_sub(1);
            io.blocked = false;
        }
        self.core.todo.push(i);
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
        if res == 0 {
            u.connected = true;
            // Its first response may be small or large: a small first
            // receive tells (`core::budget`).
            u.io.pace = Pace::Fresh;
            self.arm_recv(j);
            flow::connected(self, j);
            return;
        }
        // -ECANCELED: the linked timeout fired first.
        flow::connect_failed(self, j, res == -libc::ECANCELED);
    }

    /// Starts a send on slot `i` if one is due and none is in flight.
    fn kick_send(&mut self, i: usize) {
        let io = match self.slab.get_mut(i) {
            Some(Slot::Down(d)) => &mut d.io,
            Some(Slot::Up(u)) if u.connected => &mut u.io,
            _ => return,
        };
        if io.closing || io.blocked {
            return;
        }
        let Some(msg) = io.prepare_send(&self.bufs) else {
            return;
        };
        io.inflight += 1;
        let fd = Fd(io.sock.as_raw_fd());
        // MSG_DONTWAIT: a full socket answers EAGAIN at once instead of the
        // send waiting in the kernel (holding its buffers) for the peer to
        // read; the driver then polls for POLLOUT (see `Io::blocked`).
        let flags = (libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) as u32;
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
    /// shared with epoll, [`queue_has_room`]).
    fn has_room(&self, i: Option<usize>) -> bool {
        match i.and_then(|i| self.slab.get(i)) {
            Some(Slot::Down(d)) => queue_has_room(d.io.tx_bytes(), d.io.blocked),
            Some(Slot::Up(u)) => queue_has_room(u.io.tx_bytes(), u.io.blocked),
            _ => true,
        }
    }

    /// Slot `i` holds provided buffers while its peer is slow (it stopped
    /// being read, or its socket is full). Ordinary backpressure costs
    /// nothing: the buffers stay where they are. Only once the worker's
    /// buffer ring runs low are they copied out and given back (now, or at
    /// the end of the loop turn, see [`Worker::spill_stalled`]), so a few
    /// clients that never read cannot starve everyone else.
    pub(super) fn stall(&mut self, i: usize) {
        if self.buffers_scarce() {
            self.spill(i);
        }
    }

    /// The buffer ring ran empty this turn (a recv is starved), or seven
    /// eighths of it are held by connections. (Bulk transfers hold many
    /// buffers in ordinary flow control; copying them out then would only
    /// cost CPU.)
    pub(super) fn buffers_scarce(&self) -> bool {
        !self.starved.is_empty() || self.bufs.in_use() * 8 >= usize::from(BUF_COUNT) * 7
    }

    /// Copies slot `i`'s held receive buffers (unread, and queued but not in
    /// flight) into owned memory and gives them back, within the turn's
    /// spill budget.
    fn spill(&mut self, i: usize) {
        let io = match self.slab.get_mut(i) {
            Some(Slot::Down(d)) => &mut d.io,
            Some(Slot::Up(u)) => &mut u.io,
            _ => return,
        };
        io.spill_rx(&mut self.bufs, &mut self.spill_left);
        io.spill_tx(&mut self.bufs, &mut self.spill_left);
    }

    /// End of a loop turn: if buffers run low, connections still holding
    /// some while stalled give them back: one whose socket is full (queued
    /// bytes), or whose received bytes are still unread after the turn's
    /// pumping (its consumer waits on a slow peer). A turn copies at most
    /// [`SPILL_PER_TURN`] buffers and looks at most [`SPILL_SCAN_PER_TURN`]
    /// slots, round-robin from where the last turn stopped: copying a whole
    /// ring at once (4 MiB into fresh pages) held the worker 1-1.7 ms, and
    /// scanning all 2,500 slots of an attack every turn took a fifth of the
    /// worker. Meanwhile the ring's reserve keeps serving small reads.
    pub(super) fn spill_stalled(&mut self) {
        let n = self.slab.len();
        if !self.buffers_scarce() || n == 0 {
            return;
        }
        let mut i = self.spill_next;
        for _ in 0..n.min(SPILL_SCAN_PER_TURN) {
            if self.spill_left == 0 {
                break;
            }
            if i >= n {
                i = 0;
            }
            let stalled = self.io_mut(i).is_some_and(|io| {
                !io.closing && (io.blocked || io.rx.iter().any(|r| matches!(r, Rx::Ring(..))))
            });
            if stalled {
                self.spill(i);
            }
            i += 1;
        }
        self.spill_next = i;
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
            if d.io.tx_idle() && !flow::down_flushed(self, i) {
                return;
            }
            let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
                return;
            };
            let up = d.up;
            if !d.session.wants_down_data() {
                break;
            }
            if !self.has_room(up) {
                self.pause_recv(i);
                self.stall(i);
                break;
            }
            let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
                return;
            };
            if let Some(rx) = d.io.rx.pop_front() {
                if d.io.tls.is_some() {
                    self.feed_tls(i, rx, false);
                } else {
                    self.feed(i, rx, false);
                }
            } else if (d.io.eof || d.io.err) && !d.io.reported {
                d.io.reported = true;
                if d.io.err {
                    flow::kill_down(self, i);
                    return;
                }
                flow::with_session(self, i, |s, cx, out| s.on_down_eof(cx, out));
            } else {
                self.arm_recv(i);
                break;
            }
        }
        flow::arm(self, i);
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
                    flow::close_up(self, j);
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
                        flow::close_up(self, j);
                    }
                    return;
                }
                // Idle in the pool: anything arriving means it is done
                // (TLS: the core tells a session ticket from bytes).
                if u.io.tls.is_some() && !u.io.eof && !u.io.err {
                    if let Some(rx) = u.io.rx.pop_front() {
                        self.feed_tls(j, rx, true);
                        continue;
                    }
                    self.arm_recv(j);
                } else if !u.io.rx.is_empty() || u.io.eof || u.io.err {
                    flow::idle_up_event(self, j);
                } else {
                    self.arm_recv(j);
                }
                return;
            };
            if !self.has_room(Some(o)) {
                self.pause_recv(j);
                self.stall(j);
                return; // backpressure: the downstream is slower
            }
            let Some(Slot::Up(u)) = self.slab.get_mut(j) else {
                return;
            };
            if let Some(rx) = u.io.rx.pop_front() {
                if u.io.tls.is_some() {
                    self.feed_tls(j, rx, true);
                } else {
                    self.feed(o, rx, true);
                }
            } else if (u.io.eof || u.io.err) && !u.io.reported {
                u.io.reported = true;
                let reset = u.io.err;
                flow::up_eof(self, j, o, reset);
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
            flow::apply(self, i, &mut out, src);
        }
        if let Rx::Ring(bid, _) = rx {
            self.bufs.release(bid);
        }
        self.core.put_out(out);
    }

    /// Hands received ciphertext of TLS slot `k` (an upstream when `up`)
    /// to the core, after giving its buffer back.
    fn feed_tls(&mut self, k: usize, rx: Rx, up: bool) {
        let mut cipher = std::mem::take(&mut self.cipher);
        cipher.clear();
        match rx {
            Rx::Ring(bid, len) => {
                cipher.extend_from_slice(self.bufs.data(bid, len));
                self.bufs.release(bid);
            }
            Rx::Owned(v) => cipher.extend_from_slice(&v),
        }
        if up {
            secure::up_input(self, k, &cipher);
        } else {
            secure::down_input(self, k, &cipher);
        }
        self.cipher = cipher;
    }

    /// Stops every operation on a socket; the slot is freed once the last
    /// completion arrives.
    pub(super) fn begin_close(&mut self, i: usize, cancel_connect: bool) {
        let Some(io) = self.io_mut(i) else {
            return;
        };
        io.closing = true;
        let _ = io.sock.shutdown(Shutdown::Both);
        let recv = io.recv.armed();
        let mut cancels = Vec::with_capacity(2);
        if recv {
            io.recv = RecvOp::Cancelling;
            cancels.push(ud(i, OP_RECV));
        }
        if cancel_connect {
            cancels.push(ud(i, OP_CONNECT));
        }
        if io.blocked {
            cancels.push(ud(i, OP_POLL_OUT));
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

    /// Drain begins: cancel the accepts; the listeners close when their
    /// cancellation completes.
    pub(super) fn stop_accepting(&mut self) {
        for i in 0..self.slab.len() {
            self.close_listener_slot(i);
        }
        let _ = self.ring.submit();
    }

    /// Starts accepting on `l` for snapshot listener `idx`.
    pub(super) fn add_listener(
        &mut self,
        idx: usize,
        l: std::net::TcpListener,
    ) -> std::io::Result<()> {
        let bind = l.local_addr()?;
        let slot = self.alloc();
        self.slab[slot] = Slot::Listener(Listener {
            sock: socket2::Socket::from(l),
            idx,
            bind,
            armed: false,
            paused: false,
            inflight: 0,
            closing: false,
        });
        self.arm_accept(slot);
        Ok(())
    }

    /// The open listeners: (snapshot listener, bound address).
    pub(super) fn bound_listeners(&self) -> Vec<(usize, std::net::SocketAddr)> {
        self.slab
            .iter()
            .filter_map(|s| match s {
                Slot::Listener(l) if !l.closing => Some((l.idx, l.bind)),
                _ => None,
            })
            .collect()
    }

    /// Stops accepting for snapshot listener `idx` and closes its socket
    /// (once its accept is cancelled).
    pub(super) fn close_listener(&mut self, idx: usize) {
        for i in 0..self.slab.len() {
            if matches!(&self.slab[i], Slot::Listener(l) if l.idx == idx) {
                self.close_listener_slot(i);
            }
        }
    }

    fn close_listener_slot(&mut self, i: usize) {
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

    /// Closes everything and waits (up to 1 s) for the kernel to finish
    /// with every socket and buffer before the ring is dropped.
    pub(super) fn shutdown_all(&mut self) {
        self.stop_accepting();
        flow::close_all(self);
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
