//! The epoll driver (on mio, edge-triggered): one loop per worker thread
//! with its own SO_REUSEPORT listeners, connection slab, upstream pool and
//! timer heap. It only moves bytes and reports events to the sessions;
//! every decision is in [`crate::proxy`].

use std::io::{self, Read};
use std::sync::atomic::Ordering;

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::core::budget::Pace;
use super::core::flow;
use super::core::secure;
use super::core::{Core, queue_has_room};
use super::{DriverError, SendQueue, Slab};
use crate::proxy::Session;
use crate::tls::conn::TlsConn;
use crate::worker::WorkerInit;

mod ops;
mod splice;
mod upstream;
use splice::{Pipes, Tunnel};

/// Read buffer size (one per worker).
const READ_BUF: usize = 64 * 1024;
/// The token of the wake-up socket (no slot index reaches it).
const WAKE: Token = Token(usize::MAX);

#[derive(Debug)]
struct Down {
    sock: TcpStream,
    session: Session,
    q: SendQueue,
    up: Option<usize>,
    readable: bool,
    /// The peer's FIN or an error was reported: read until 0 / error.
    rdhup: bool,
    /// How the next read is sized and budgeted (`core::budget`).
    pace: Pace,
    writable: bool,
    /// Registered for writability (only while bytes wait; see `sync_interest`).
    w_interest: bool,
    shut_wr: bool,
    close: bool,
    serial: u64,
    armed: Option<u64>,
    /// Set once the tunnel is spliced (bytes bypass user space).
    tunnel: Option<Box<Tunnel>>,
    /// TLS (a TLS or mesh listener's connection).
    tls: Option<Box<TlsConn>>,
}

impl Down {
    /// Bytes still owed to the client: queued, or sitting in a pipe.
    fn owes_bytes(&self) -> bool {
        !self.q.is_empty() || self.tunnel.as_ref().is_some_and(|t| t.pending_down())
    }
}

#[derive(Debug)]
struct Up {
    sock: TcpStream,
    q: SendQueue,
    owner: Option<usize>,
    connected: bool,
    readable: bool,
    /// The peer's FIN or an error was reported: read until 0 / error.
    rdhup: bool,
    /// How the next read is sized and budgeted (`core::budget`).
    pace: Pace,
    writable: bool,
    /// Registered for writability (while connecting or bytes wait).
    w_interest: bool,
    shut_wr: bool,
    /// Detached with bytes still queued: close once they are sent.
    close_when_flushed: bool,
    /// Read 0 (FIN): read no more (a tunnel may still write).
    eof: bool,
    /// Address, pool idle time and `max_connections` slot.
    target: crate::driver::core::flow::UpTarget,
    /// TLS (a TLS or mesh cluster's connection).
    tls: Option<Box<TlsConn>>,
}

#[derive(Debug, Default)]
enum Slot {
    #[default]
    Free,
    Listener(TcpListener, usize),
    Down(Box<Down>),
    Up(Box<Up>),
}

/// One worker's epoll loop.
#[derive(Debug)]
pub struct Worker {
    core: Core,
    poll: Poll,
    slab: Slab<Slot>,
    buf: Vec<u8>,
    pipes: Pipes,
    /// Listeners that still had connections when the turn's allowance ran
    /// out (see `core::accepts`): accepted from again next turn, as the
    /// edge-triggered listener will not report them again.
    accept_next: Vec<usize>,
}

fn setup(what: &str) -> impl FnOnce(io::Error) -> DriverError + '_ {
    move |source| DriverError::Setup {
        what: what.to_string(),
        source,
    }
}

impl Worker {
    /// A worker serving `listeners` (listener index, bound socket).
    pub fn new(
        init: WorkerInit,
        listeners: Vec<(usize, std::net::TcpListener)>,
    ) -> Result<Worker, DriverError> {
        let poll = Poll::new().map_err(setup("creating the epoll instance"))?;
        let mut w = Worker {
            core: Core::new(init),
            poll,
            slab: Slab::new(),
            buf: vec![0; READ_BUF],
            pipes: Pipes::from_env(),
            accept_next: Vec::new(),
        };
        for (idx, l) in listeners {
            w.add_listener(idx, l)
                .map_err(setup("registering a listener"))?;
        }
        let wake = w.core.wake.fd();
        w.poll
            .registry()
            .register(&mut SourceFd(&wake), WAKE, Interest::READABLE)
            .map_err(setup("registering the wake-up socket"))?;
        Ok(w)
    }

    fn alloc(&mut self) -> usize {
        self.slab.alloc()
    }

    /// Serves until drained. Returns when every connection is done or the
    /// drain timeout passed.
    pub fn run(mut self) -> Result<(), DriverError> {
        let mut events = Events::with_capacity(1024);
        self.core
            .shared
            .ready_workers
            .fetch_add(1, Ordering::SeqCst);
        loop {
            let timeout = self.core.wait_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(setup("waiting for events")(e));
            }
            self.core.begin_turn();
            for li in std::mem::take(&mut self.accept_next) {
                self.accept(li);
            }
            for ev in events.iter() {
                if ev.token() == WAKE {
                    // The turn that just began took the new snapshot.
                    self.core.wake.drain();
                    continue;
                }
                let i = ev.token().0;
                let hup = ev.is_read_closed() || ev.is_error();
                let (r, w) = (
                    ev.is_readable() || hup,
                    ev.is_writable() || ev.is_write_closed() || ev.is_error(),
                );
                match self.slab.get_mut(i) {
                    Some(Slot::Listener(..)) => self.accept(i),
                    Some(Slot::Down(d)) => {
                        d.readable |= r;
                        d.rdhup |= hup;
                        d.writable |= w;
                        self.core.todo.push(i);
                    }
                    Some(Slot::Up(u)) => {
                        u.readable |= r;
                        u.rdhup |= hup;
                        u.writable |= w;
                        self.up_event(i);
                    }
                    _ => {}
                }
            }
            self.core.resume_waiting();
            self.run_todo();
            flow::fire_timers(&mut self);
            self.run_todo();
            if flow::end_turn(&mut self) {
                break;
            }
        }
        flow::close_all(&mut self);
        self.core.stats().set_active(0, 0);
        Ok(())
    }

    fn run_todo(&mut self) {
        while let Some(i) = self.core.todo.pop() {
            match self.slab.get(i) {
                Some(Slot::Down(_)) => self.pump_down(i),
                Some(Slot::Up(_)) => self.pump_up(i),
                _ => {}
            }
        }
    }

    fn accept(&mut self, li: usize) {
        loop {
            let Some(Slot::Listener(l, idx)) = self.slab.get(li) else {
                return;
            };
            if !self.core.accept_allowed(0) {
                if !self.accept_next.contains(&li) {
                    self.accept_next.push(li);
                }
                return;
            }
            let idx = *idx;
            let (mut sock, peer) = match l.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors: the core pauses accepting (the
                // edge-triggered listener is retried when it resumes).
                Err(e) => {
                    self.core.accept_failed(e.raw_os_error().unwrap_or(0));
                    return;
                }
            };
            // None: over a connection limit; dropping the socket closes it.
            let Some((session, tls)) = self.core.accept_session(idx, peer.ip(), &sock) else {
                continue;
            };
            let i = self.alloc();
            if self
                .poll
                .registry()
                .register(&mut sock, Token(i), Interest::READABLE)
                .is_err()
            {
                self.slab.release(i);
                self.core.down_closed(idx);
                continue;
            }
            let serial = self.core.next_serial();
            self.slab[i] = Slot::Down(Box::new(Down {
                sock,
                session,
                q: SendQueue::default(),
                up: None,
                readable: false,
                rdhup: false,
                pace: Pace::Small,
                writable: true, // a fresh connection can take bytes
                w_interest: false,
                shut_wr: false,
                close: false,
                serial,
                armed: None,
                tunnel: None,
                tls,
            }));
            flow::with_session(self, i, |s, cx, out| s.start(cx, out));
            self.core.todo.push(i);
        }
    }

    /// Registers slot `i` for writability only while it needs it: bytes
    /// queued, or a connect in progress. An idle socket is writable, and
    /// edge-triggered EPOLLOUT would otherwise wake the loop for ACKs.
    fn sync_interest(&mut self, i: usize) {
        let spliced_up = match self.slab.get(i) {
            Some(Slot::Up(u)) => match u.owner.and_then(|o| self.slab.get(o)) {
                Some(Slot::Down(d)) => d.tunnel.as_ref().is_some_and(|t| t.pending_up()),
                _ => false,
            },
            _ => false,
        };
        let (sock, i_have, want) = match self.slab.get_mut(i) {
            Some(Slot::Down(d)) => {
                let want = d.owes_bytes();
                (&mut d.sock, &mut d.w_interest, want)
            }
            Some(Slot::Up(u)) => (
                &mut u.sock,
                &mut u.w_interest,
                !u.q.is_empty() || !u.connected || spliced_up,
            ),
            _ => return,
        };
        if want == *i_have {
            return;
        }
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if self
            .poll
            .registry()
            .reregister(sock, Token(i), interest)
            .is_ok()
        {
            *i_have = want;
        }
    }

    fn up_queue_empty(&self, up: Option<usize>) -> bool {
        match up.and_then(|j| self.slab.get(j)) {
            Some(Slot::Up(u)) => u.q.is_empty(),
            _ => true,
        }
    }

    /// Whether upstream `up`'s send queue can take more (the backpressure
    /// rule shared with io_uring, [`queue_has_room`]: the queue holds only
    /// bytes the socket refused, so it is a blocked one).
    fn up_has_room(&self, up: Option<usize>) -> bool {
        match up.and_then(|j| self.slab.get(j)) {
            Some(Slot::Up(u)) => queue_has_room(u.q.len(), !u.q.is_empty()),
            _ => true,
        }
    }

    /// Moves bytes on downstream `i`: flush, finish records, read while the
    /// session and the upstream can take more.
    fn pump_down(&mut self, i: usize) {
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(Slot::Down(d)) = self.slab.get_mut(i) {
            if d.writable && !d.q.is_empty() {
                match d.q.flush(&mut d.sock) {
                    Ok(true) => {
                        if let Some(j) = d.up {
                            self.core.todo.push(j); // upstream reads may resume
                        }
                    }
                    Ok(false) => d.writable = false,
                    Err(_) => {
                        flow::kill_down(self, i);
                        break;
                    }
                }
            }
            let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
                break;
            };
            if !d.owes_bytes() && !flow::down_flushed(self, i) {
                break;
            }
            let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
                break;
            };
            if d.tunnel.is_some() {
                self.splice_pump(i);
                break;
            }
            if self.try_start_splice(i) {
                continue;
            }
            let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
                break;
            };
            let up = d.up;
            if !d.readable || !d.session.wants_down_data() {
                break;
            }
            if !self.up_has_room(up) {
                break; // backpressure: the upstream is slower
            }
            let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
                break;
            };
            if d.pace.budgeted() && !self.core.allow_bulk(i, READ_BUF) {
                break; // the turn's bulk budget is spent: next turn
            }
            match d.sock.read(&mut buf) {
                Ok(0) => {
                    d.readable = false;
                    flow::with_session(self, i, |s, cx, out| s.on_down_eof(cx, out));
                }
                Ok(n) => {
                    d.pace = self.core.took_input(d.pace.budgeted(), n, buf.len());
                    if n < buf.len() && !d.rdhup {
                        d.readable = false; // drained, as for upstreams
                    }
                    if d.tls.is_some() {
                        secure::down_input(self, i, &buf[..n]);
                    } else {
                        flow::with_input(self, i, &buf[..n], |s, cx, out| {
                            s.on_down_data(cx, &buf[..n], out)
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    d.readable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    flow::kill_down(self, i);
                    break;
                }
            }
        }
        self.buf = buf;
        self.sync_interest(i);
        flow::arm(self, i);
    }

    /// Drain begins: close the listeners.
    fn stop_accepting(&mut self) {
        for i in 0..self.slab.len() {
            self.close_listener_slot(i);
        }
    }

    /// Starts accepting on `l` for snapshot listener `idx`.
    fn add_listener(&mut self, idx: usize, l: std::net::TcpListener) -> io::Result<()> {
        let mut l = TcpListener::from_std(l);
        let slot = self.alloc();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut l, Token(slot), Interest::READABLE)
        {
            self.slab.release(slot);
            return Err(e);
        }
        self.slab[slot] = Slot::Listener(l, idx);
        // Edge-triggered: connections queued before registration are
        // taken now.
        self.accept(slot);
        Ok(())
    }

    fn close_listener_slot(&mut self, i: usize) {
        if let Slot::Listener(..) = self.slab[i]
            && let Slot::Listener(mut l, _) = std::mem::replace(&mut self.slab[i], Slot::Free)
        {
            let _ = self.poll.registry().deregister(&mut l);
            self.slab.release(i);
        }
    }
}
