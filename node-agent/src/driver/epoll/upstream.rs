//! The epoll driver's upstream side: attaching a pooled or new connection
//! to a session, finishing connects, pumping upstream bytes, and releasing
//! connections back to the pool or closing them.

use std::io::{self, Read};
use std::net::Shutdown;

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::{Pace, READ_BUF, Slot, Up, Worker};
use crate::driver::SendQueue;
use crate::driver::core::flow::{self, UpTarget};
use crate::driver::core::queue_has_room;
use crate::driver::core::secure;
use crate::proxy::Connect;

impl Worker {
    /// [`flow::Driver::open_up`] on epoll: a non-blocking connect, registered
    /// for readiness.
    pub(super) fn open_upstream(&mut self, c: &Connect, target: UpTarget) -> Option<usize> {
        let sock = crate::driver::connect_upstream(c.addr, self.core.shared.upstream_mark);
        let j = self.alloc();
        let registered = sock.and_then(|s| {
            let mut s = TcpStream::from_std(s);
            self.poll
                .registry()
                .register(&mut s, Token(j), Interest::READABLE | Interest::WRITABLE)
                .map(|()| s)
        });
        let Ok(sock) = registered else {
            self.slab.release(j);
            return None;
        };
        self.slab[j] = Slot::Up(Box::new(Up {
            sock,
            q: SendQueue::default(),
            owner: None,
            connected: false,
            readable: false,
            rdhup: false,
            // Its first response may be small or large: a small first
            // read tells (`core::budget`).
            pace: Pace::Fresh,
            writable: false,
            w_interest: true,
            shut_wr: false,
            close_when_flushed: false,
            eof: false,
            target,
            tls: None,
        }));
        Some(j)
    }

    /// Closes upstream `j`'s socket and frees its slot; true if it was live.
    pub(super) fn drop_upstream(&mut self, j: usize) -> bool {
        match self
            .slab
            .get_mut(j)
            .map(|s| std::mem::replace(s, Slot::Free))
        {
            Some(Slot::Up(mut u)) => {
                let _ = self.poll.registry().deregister(&mut u.sock);
                self.slab.release(j);
                true
            }
            Some(other) => {
                self.slab[j] = other;
                false
            }
            None => false,
        }
    }

    /// Readiness on an upstream: finish a connect, then pump.
    pub(super) fn up_event(&mut self, j: usize) {
        let Some(Slot::Up(u)) = self.slab.get_mut(j) else {
            return;
        };
        if !u.connected && (u.writable || u.readable) {
            let failed = match u.sock.take_error() {
                Ok(Some(_)) | Err(_) => true,
                Ok(None) => match u.sock.peer_addr() {
                    Ok(_) => false,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(_) => true,
                },
            };
            if failed {
                flow::connect_failed(self, j, false);
                return;
            }
            u.connected = true;
            flow::connected(self, j);
        }
        self.core.todo.push(j);
    }

    /// Whether the owner's send queue can take more ([`queue_has_room`], as on
    /// io_uring; the queue holds only bytes the socket refused).
    pub(super) fn owner_has_room(&self, owner: Option<usize>) -> bool {
        match owner.and_then(|o| self.slab.get(o)) {
            Some(Slot::Down(d)) => queue_has_room(d.q.len(), !d.q.is_empty()),
            _ => true,
        }
    }

    /// Moves bytes on upstream `j`: flush its queue, read while the
    /// downstream can take more.
    pub(super) fn pump_up(&mut self, j: usize) {
        if let Some(Slot::Up(u)) = self.slab.get(j)
            && let Some(o) = u.owner
            && let Some(Slot::Down(d)) = self.slab.get(o)
            && d.tunnel.is_some()
        {
            self.core.todo.push(o); // a spliced tunnel is pumped from its downstream
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(Slot::Up(u)) = self.slab.get_mut(j) {
            if !u.connected {
                break;
            }
            if u.writable && !u.q.is_empty() {
                match u.q.flush(&mut u.sock) {
                    Ok(true) => {
                        if let Some(o) = u.owner {
                            self.core.todo.push(o); // downstream reads may resume
                        }
                    }
                    Ok(false) => u.writable = false,
                    Err(_) => {
                        u.q = SendQueue::default();
                        u.readable = true;
                    }
                }
            }
            let Some(Slot::Up(u)) = self.slab.get_mut(j) else {
                break;
            };
            if u.q.is_empty() {
                if u.shut_wr {
                    let _ = u.sock.shutdown(Shutdown::Write);
                }
                if u.close_when_flushed {
                    flow::close_up(self, j);
                    break;
                }
            }
            let Some(Slot::Up(u)) = self.slab.get_mut(j) else {
                break;
            };
            let owner = u.owner;
            if !u.readable || u.eof {
                break;
            }
            if owner.is_some() && !self.owner_has_room(owner) {
                break; // backpressure: the downstream is slower
            }
            let Some(Slot::Up(u)) = self.slab.get_mut(j) else {
                break;
            };
            if u.pace.budgeted() && !self.core.allow_bulk(j, READ_BUF) {
                break; // the turn's bulk budget is spent: next turn
            }
            let asked = u.pace.read_len(buf.len());
            match u.sock.read(&mut buf[..asked]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    u.readable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A TLS connection idle in the pool may be sent a session
                // ticket: the core tells it from bytes nobody asked for.
                Ok(n) if n > 0 && owner.is_none() && u.tls.is_some() => {
                    secure::up_input(self, j, &buf[..n]);
                }
                Ok(_) | Err(_) if owner.is_none() => {
                    flow::idle_up_event(self, j);
                    break;
                }
                Ok(0) => {
                    u.readable = false;
                    u.eof = true;
                    flow::up_eof(self, j, owner.unwrap_or(usize::MAX), false);
                    break;
                }
                Ok(n) => {
                    u.pace = self.core.took_input(u.pace.budgeted(), n, asked);
                    // A short read drained the socket; new bytes bring a
                    // new edge (saves the read that would see EAGAIN).
                    // Not once a FIN was seen: read on until 0.
                    if n < asked && !u.rdhup {
                        u.readable = false;
                    }
                    let o = owner.unwrap_or(usize::MAX);
                    if u.tls.is_some() {
                        secure::up_input(self, j, &buf[..n]);
                    } else {
                        flow::with_input(self, o, &buf[..n], |s, cx, out| {
                            s.on_up_data(cx, &buf[..n], out)
                        });
                    }
                }
                Err(_) => {
                    flow::up_eof(self, j, owner.unwrap_or(usize::MAX), true);
                    break;
                }
            }
        }
        self.buf = buf;
        self.sync_interest(j);
    }
}
