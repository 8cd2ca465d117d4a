//! The io_uring driver's primitives for the shared decisions in
//! [`crate::driver::core::flow`]: reading a few facts off its slots and
//! turning "send", "open", "close" into queued operations. Nothing here
//! decides.

use super::conns::{Src, queue};
use super::*;
use crate::driver::core::flow::{Driver, TimerSlot, UpFacts, UpTarget};

impl Driver for Worker {
    type Src<'a> = Src<'a>;

    fn no_src<'a>() -> Src<'a> {
        Src::None
    }

    crate::driver::slot_links!();

    fn parts(&mut self, i: usize) -> (&mut Core, Option<&mut Session>) {
        let session = match self.slab.get_mut(i) {
            Some(Slot::Down(d)) if !d.io.closing => Some(&mut d.session),
            _ => None,
        };
        (&mut self.core, session)
    }

    fn timer_slot(&mut self, i: usize) -> Option<TimerSlot<'_>> {
        match self.slab.get_mut(i) {
            Some(Slot::Down(d)) if !d.io.closing => Some(TimerSlot {
                session: &mut d.session,
                serial: d.serial,
                armed: &mut d.armed,
            }),
            _ => None,
        }
    }

    fn backlog(&self, i: usize) -> Option<(bool, bool)> {
        let Some(Slot::Down(d)) = self.slab.get(i) else {
            return None;
        };
        let up_waits = match d.up.and_then(|j| self.slab.get(j)) {
            Some(Slot::Up(u)) => !u.io.tx_idle(),
            _ => false,
        };
        Some((!d.io.tx_idle(), up_waits))
    }

    fn down_idle(&self, i: usize) -> bool {
        matches!(self.slab.get(i), Some(Slot::Down(d)) if !d.io.closing && d.io.tx_idle())
    }

    fn up_target(&self, j: usize) -> Option<&UpTarget> {
        match self.slab.get(j) {
            Some(Slot::Up(u)) if !u.io.closing => Some(&u.target),
            _ => None,
        }
    }

    fn up_facts(&self, j: usize) -> Option<UpFacts> {
        match self.slab.get(j) {
            Some(Slot::Up(u)) if !u.io.closing => Some(UpFacts {
                addr: u.target.addr,
                idle_ns: u.target.idle_ns,
                connected: u.connected,
                clean: u.io.tx_idle() && u.io.rx.is_empty() && !u.io.eof && !u.io.err,
                shut_wr: u.io.shut_wr,
                eof: u.io.eof,
                tx_pending: !u.io.tx_idle(),
                group: u.target.group(),
                tls: u.target.tls,
            }),
            _ => None,
        }
    }

    fn send_down(&mut self, i: usize, chunks: &mut Vec<Chunk>, src: Src<'_>) {
        let blocked = match self.slab.get_mut(i) {
            Some(Slot::Down(d)) => {
                queue(&mut d.io, &mut self.bufs, chunks, src);
                d.io.blocked
            }
            _ => {
                chunks.clear();
                false
            }
        };
        // Bytes queued behind a full socket hold their receive buffers
        // until it drains: a stalled connection's, to copy out if they run
        // short.
        if blocked {
            self.stall(i);
        }
    }

    fn send_up(&mut self, j: usize, chunks: &mut Vec<Chunk>, src: Src<'_>) {
        let blocked = match self.slab.get_mut(j) {
            Some(Slot::Up(u)) => {
                queue(&mut u.io, &mut self.bufs, chunks, src);
                u.io.blocked
            }
            _ => {
                chunks.clear();
                false
            }
        };
        if blocked {
            self.stall(j);
        }
    }

    fn mark_down(&mut self, i: usize, shut_wr: bool, close: bool) {
        if let Some(Slot::Down(d)) = self.slab.get_mut(i) {
            d.io.shut_wr |= shut_wr;
            d.close |= close;
        }
    }

    fn down_marked_close(&self, i: usize) -> bool {
        matches!(self.slab.get(i), Some(Slot::Down(d)) if d.close)
    }

    fn shut_down_now(&mut self, i: usize) {
        if let Some(Slot::Down(d)) = self.slab.get_mut(i)
            && std::mem::take(&mut d.io.shut_wr)
        {
            let _ = d.io.sock.shutdown(Shutdown::Write);
        }
    }

    fn mark_up_shut(&mut self, j: usize) {
        if let Some(Slot::Up(u)) = self.slab.get_mut(j) {
            u.io.shut_wr = true;
        }
    }

    fn abort_on_close(&mut self, i: usize) {
        if let Some(Slot::Down(d)) = self.slab.get(i) {
            crate::driver::abort_on_close(&d.io.sock);
        }
    }

    fn open_up(&mut self, c: &Connect, target: UpTarget) -> Option<usize> {
        self.open_upstream(c, target)
    }

    fn drop_down(&mut self, i: usize) -> Option<usize> {
        match self.slab.get(i) {
            Some(Slot::Down(d)) if !d.io.closing => {
                let listener = d.session.listener();
                self.begin_close(i, false);
                Some(listener)
            }
            _ => None,
        }
    }

    fn drop_up(&mut self, j: usize) -> bool {
        match self.slab.get_mut(j) {
            Some(Slot::Up(u)) if !u.io.closing => {
                // Its place under max_connections is free now, not when
                // the kernel is done with the socket.
                u.target.release_slot();
                let connecting = u.connecting;
                self.begin_close(j, connecting);
                true
            }
            _ => false,
        }
    }

    fn take_due(&mut self, i: usize, serial: u64, t: u64) -> bool {
        match self.slab.get_mut(i) {
            Some(Slot::Down(d)) if d.serial == serial && d.armed == Some(t) && !d.io.closing => {
                d.armed = None;
                true
            }
            _ => false,
        }
    }

    fn timer_live(&self, i: usize, serial: u64, t: u64) -> bool {
        matches!(self.slab.get(i),
            Some(Slot::Down(d)) if d.serial == serial && d.armed == Some(t) && !d.io.closing)
    }

    fn downs(&self) -> Vec<usize> {
        (0..self.slab.len())
            .filter(|&i| matches!(&self.slab[i], Slot::Down(d) if !d.io.closing))
            .collect()
    }

    fn ups(&self) -> Vec<usize> {
        (0..self.slab.len())
            .filter(|&i| matches!(&self.slab[i], Slot::Up(u) if !u.io.closing))
            .collect()
    }

    fn stop_accepting(&mut self) {
        Worker::stop_accepting(self);
    }

    fn resume_accepts(&mut self) {
        Worker::resume_accepts(self);
    }

    fn listeners(&self) -> Vec<(usize, std::net::SocketAddr)> {
        self.bound_listeners()
    }

    fn add_listener(&mut self, idx: usize, sock: std::net::TcpListener) -> std::io::Result<()> {
        Worker::add_listener(self, idx, sock)
    }

    fn close_listener(&mut self, idx: usize) {
        Worker::close_listener(self, idx);
    }

    fn copy_src(bytes: &[u8]) -> Src<'_> {
        Src::Copy(bytes)
    }

    fn tls(&mut self, k: usize) -> Option<&mut crate::tls::conn::TlsConn> {
        self.io_mut(k).and_then(|io| io.tls.as_deref_mut())
    }

    fn set_tls(&mut self, j: usize, t: Box<crate::tls::conn::TlsConn>) {
        if let Some(Slot::Up(u)) = self.slab.get_mut(j) {
            u.io.tls = Some(t);
        }
    }

    fn push_raw(&mut self, k: usize, bytes: Vec<u8>) {
        if let Some(io) = self.io_mut(k)
            && !bytes.is_empty()
        {
            io.tx
                .push_back(crate::driver::uring::io::Tx::Owned(bytes, 0));
        }
    }

    fn local_addr(&self, i: usize) -> Option<std::net::SocketAddr> {
        match self.slab.get(i) {
            Some(Slot::Down(d)) => d.io.sock.local_addr().ok().and_then(|a| a.as_socket()),
            _ => None,
        }
    }
}

impl Worker {
    /// [`Driver::open_up`] on io_uring: a connect with a linked timeout,
    /// submitted together.
    pub(super) fn open_upstream(&mut self, c: &Connect, target: UpTarget) -> Option<usize> {
        let Ok(sock) = crate::driver::upstream_socket(c.addr, self.core.shared.upstream_mark)
        else {
            return None;
        };
        let j = self.alloc();
        let mut io = Io::new(sock);
        io.addr = Some(socket2::SockAddr::from(c.addr));
        io.ts = Timespec::from(Duration::from_nanos(c.timeout_ns));
        io.inflight = 2;
        let up = Box::new(Up {
            io,
            owner: None,
            connected: false,
            connecting: true,
            close_when_flushed: false,
            target,
        });
        let fd = Fd(up.io.sock.as_raw_fd());
        // The sockaddr and timespec live in the boxed slot, which is freed
        // only when both operations have completed.
        let Some((addr_ptr, addr_len)) = up.io.addr.as_ref().map(|a| (a.as_ptr(), a.len())) else {
            self.slab.release(j);
            return None;
        };
        let connect = opcode::Connect::new(fd, addr_ptr.cast(), addr_len)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(ud(j, OP_CONNECT));
        let timeout = opcode::LinkTimeout::new(&raw const up.io.ts)
            .build()
            .user_data(ud(j, OP_LINK_TIMEOUT));
        self.slab[j] = Slot::Up(up);
        self.push_linked(&connect, &timeout);
        Some(j)
    }

    /// Fires due timers (the shared rules), then pumps what they woke.
    pub(super) fn fire_timers(&mut self) {
        flow::fire_timers(self);
        self.run_todo();
    }
}
