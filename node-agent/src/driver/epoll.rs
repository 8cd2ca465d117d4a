//! The epoll driver (on mio, edge-triggered): one loop per worker thread
//! with its own SO_REUSEPORT listeners, connection slab, upstream pool and
//! timer heap. It only moves bytes and reports events to the sessions;
//! every decision is in [`crate::proxy`].

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::core::{Core, QUEUE_CAP};
use super::{DriverError, SendQueue, send_chunks};
use crate::metrics::Driver;
use crate::proxy::{Cx, Out, Session};
use crate::worker::WorkerInit;

mod splice;
mod upstream;
use splice::{Pipes, Tunnel};

/// Read buffer size (one per worker).
const READ_BUF: usize = 64 * 1024;

#[derive(Debug)]
struct Down {
    sock: TcpStream,
    session: Session,
    q: SendQueue,
    up: Option<usize>,
    readable: bool,
    /// The peer's FIN or an error was reported: read until 0 / error.
    rdhup: bool,
    writable: bool,
    /// Registered for writability (only while bytes wait; see `sync_interest`).
    w_interest: bool,
    shut_wr: bool,
    close: bool,
    serial: u64,
    armed: Option<u64>,
    /// Set once the tunnel is spliced (bytes bypass user space).
    tunnel: Option<Box<Tunnel>>,
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
    addr: SocketAddr,
    connected: bool,
    readable: bool,
    /// The peer's FIN or an error was reported: read until 0 / error.
    rdhup: bool,
    writable: bool,
    /// Registered for writability (while connecting or bytes wait).
    w_interest: bool,
    shut_wr: bool,
    /// Detached with bytes still queued: close once they are sent.
    close_when_flushed: bool,
    /// Read 0 (FIN): read no more (a tunnel may still write).
    eof: bool,
    /// Longest idle time in the pool, ns (its cluster's `timeouts.idle`).
    idle_ns: u64,
}

#[derive(Debug)]
enum Slot {
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
    slab: Vec<Slot>,
    free: Vec<usize>,
    buf: Vec<u8>,
    pipes: Pipes,
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
            slab: Vec::new(),
            free: Vec::new(),
            buf: vec![0; READ_BUF],
            pipes: Pipes::from_env(),
        };
        for (idx, l) in listeners {
            let mut l = TcpListener::from_std(l);
            let slot = w.alloc();
            w.poll
                .registry()
                .register(&mut l, Token(slot), Interest::READABLE)
                .map_err(setup("registering a listener"))?;
            w.slab[slot] = Slot::Listener(l, idx);
        }
        Ok(w)
    }

    fn alloc(&mut self) -> usize {
        match self.free.pop() {
            Some(i) => i,
            None => {
                self.slab.push(Slot::Free);
                self.slab.len() - 1
            }
        }
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
            for ev in events.iter() {
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
            self.run_todo();
            self.fire_timers();
            if let Some(began) = self.core.drain_state() {
                if began {
                    self.stop_accepting();
                }
                self.close_idle();
                if self.core.drained() {
                    break;
                }
            }
            self.core.publish_gauges();
        }
        self.shutdown_all();
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
            super::tune_downstream(&sock);
            // None: over a connection limit; dropping the socket closes it.
            let Some(session) = self.core.accept_session(idx, peer.ip(), &sock) else {
                continue;
            };
            let i = self.alloc();
            if self
                .poll
                .registry()
                .register(&mut sock, Token(i), Interest::READABLE)
                .is_err()
            {
                self.free.push(i);
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
                writable: true, // a fresh connection can take bytes
                w_interest: false,
                shut_wr: false,
                close: false,
                serial,
                armed: None,
                tunnel: None,
            }));
            self.with_session(i, &[], |s, cx, out| s.start(cx, out));
            self.core.todo.push(i);
        }
    }

    /// Runs `f` on down `i`'s session, then applies its output (`input` is
    /// the buffer `f` was fed).
    fn with_session(
        &mut self,
        i: usize,
        input: &[u8],
        f: impl FnOnce(&mut Session, &mut Cx<'_>, &mut Out),
    ) {
        let mut out = self.core.take_out();
        let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
            return;
        };
        self.core.call(&mut d.session, &mut out, f);
        self.apply(i, &mut out, input);
        self.core.put_out(out);
    }

    /// Carries out a session's actions for down `i`.
    fn apply(&mut self, i: usize, out: &mut Out, input: &[u8]) {
        if let Some(reuse) = out.release_up.take()
            && let Some(Slot::Down(d)) = self.slab.get_mut(i)
            && let Some(j) = d.up.take()
        {
            // A half-close that comes with the release (a tunnel's client
            // FIN after the upstream's) belongs to the released upstream.
            if std::mem::take(&mut out.shutdown_up)
                && let Some(Slot::Up(u)) = self.slab.get_mut(j)
            {
                u.shut_wr = true;
            }
            self.release_up(j, reuse);
        }
        let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
            return;
        };
        if !out.to_down.is_empty() {
            let w: Option<&mut dyn io::Write> = d.writable.then_some(&mut d.sock);
            match send_chunks(w, &mut d.q, &mut out.to_down, input) {
                Ok((queued, short)) => {
                    if queued > 0 {
                        d.writable = false;
                    }
                    let st = self.core.stats();
                    st.driver(Driver::QueuedBytes, queued as u64);
                    st.driver(Driver::ShortSends, u64::from(short));
                }
                Err(_) => d.close = true,
            }
        }
        d.shut_wr |= out.shutdown_down;
        d.close |= out.close_down;
        self.core.record_all(out);
        if out.reset_down {
            // A client that stopped reading: close now, queue and all, with
            // a RST so the kernel frees its send buffer too.
            out.to_up.clear();
            out.connect = None;
            if let Some(Slot::Down(d)) = self.slab.get(i) {
                super::abort_on_close(&d.sock);
            }
            self.close_down(i);
            return;
        }
        // After the downstream bytes: a synchronous connect failure answers
        // 503 and that answer must follow what was already queued.
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
            if !out.to_up.is_empty() {
                let w: Option<&mut dyn io::Write> =
                    (u.connected && u.writable).then_some(&mut u.sock);
                match send_chunks(w, &mut u.q, &mut out.to_up, input) {
                    Ok((queued, short)) => {
                        if queued > 0 && u.connected {
                            u.writable = false;
                        }
                        let st = self.core.stats();
                        st.driver(Driver::QueuedBytes, queued as u64);
                        st.driver(Driver::ShortSends, u64::from(short));
                    }
                    Err(_) => {
                        u.readable = true;
                    }
                }
                self.core.todo.push(j);
            }
            u.shut_wr |= out.shutdown_up;
            if out.shutdown_up {
                self.core.todo.push(j);
            }
        }
        out.to_up.clear();
        self.core.todo.push(i);
        self.sync_interest(i);
        if let Some(j) = up {
            self.sync_interest(j);
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
    /// rule shared with io_uring: [`QUEUE_CAP`] bytes).
    fn up_has_room(&self, up: Option<usize>) -> bool {
        match up.and_then(|j| self.slab.get(j)) {
            Some(Slot::Up(u)) => u.q.len() < QUEUE_CAP,
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
                        self.kill_down(i);
                        break;
                    }
                }
            }
            let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
                break;
            };
            if !d.owes_bytes() {
                let mut out = self.core.take_out();
                d.session.on_down_flushed(self.core.now, &mut out);
                self.core.record_all(&mut out);
                self.core.put_out(out);
                let Some(Slot::Down(d)) = self.slab.get_mut(i) else {
                    break;
                };
                if d.close || d.session.is_closed() {
                    self.close_down(i);
                    break;
                }
                if d.shut_wr {
                    let _ = d.sock.shutdown(Shutdown::Write);
                }
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
            match d.sock.read(&mut buf) {
                Ok(0) => {
                    d.readable = false;
                    self.with_session(i, &[], |s, cx, out| s.on_down_eof(cx, out));
                }
                Ok(n) => {
                    if n < buf.len() && !d.rdhup {
                        d.readable = false; // drained, as for upstreams
                    }
                    self.with_session(i, &buf[..n], |s, cx, out| {
                        s.on_down_data(cx, &buf[..n], out)
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    d.readable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.kill_down(i);
                    break;
                }
            }
        }
        self.buf = buf;
        self.sync_interest(i);
        self.arm(i);
    }

    /// Tells the session what its queues hold, then keeps the timer heap
    /// in step with its deadline.
    fn arm(&mut self, i: usize) {
        let up_waits = match self.slab.get(i) {
            Some(Slot::Down(d)) => !self.up_queue_empty(d.up),
            _ => return,
        };
        if let Some(Slot::Down(d)) = self.slab.get_mut(i) {
            let down_waits = d.owes_bytes();
            d.session.set_backlog(self.core.now, down_waits, up_waits);
            let dl = d.session.deadline();
            self.core.arm(i, d.serial, &mut d.armed, dl);
        }
    }

    fn fire_timers(&mut self) {
        while let Some((i, serial, t)) = self.core.pop_due() {
            let due = match self.slab.get_mut(i) {
                Some(Slot::Down(d)) if d.serial == serial && d.armed == Some(t) => {
                    d.armed = None;
                    true
                }
                _ => false,
            };
            if due {
                self.with_session(i, &[], |s, cx, out| s.on_timer(cx, out));
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
            let listeners: Vec<usize> = (0..self.slab.len())
                .filter(|&i| matches!(self.slab[i], Slot::Listener(..)))
                .collect();
            for li in listeners {
                self.accept(li);
            }
        }
        self.run_todo();
    }

    /// The downstream failed: abort its session and close it.
    fn kill_down(&mut self, i: usize) {
        let mut out = Out::default();
        if let Some(Slot::Down(d)) = self.slab.get_mut(i) {
            d.session.on_down_closed(self.core.now, &mut out);
        }
        self.core.record_all(&mut out);
        self.close_down(i);
    }

    fn close_down(&mut self, i: usize) {
        if let Some(Slot::Down(mut d)) = self
            .slab
            .get_mut(i)
            .map(|s| std::mem::replace(s, Slot::Free))
        {
            let _ = self.poll.registry().deregister(&mut d.sock);
            if let Some(j) = d.up {
                self.close_up(j);
            }
            self.free.push(i);
            self.core.down_closed(d.session.listener());
        }
    }

    /// Drain begins: close the listeners.
    fn stop_accepting(&mut self) {
        for i in 0..self.slab.len() {
            if let Slot::Listener(..) = self.slab[i]
                && let Slot::Listener(mut l, _) = std::mem::replace(&mut self.slab[i], Slot::Free)
            {
                let _ = self.poll.registry().deregister(&mut l);
                self.free.push(i);
            }
        }
    }

    /// While draining, close downstream connections with nothing in flight.
    fn close_idle(&mut self) {
        for i in 0..self.slab.len() {
            if let Slot::Down(d) = &self.slab[i]
                && d.session.is_idle()
                && d.q.is_empty()
            {
                self.kill_down(i);
            }
        }
    }

    fn shutdown_all(&mut self) {
        for i in 0..self.slab.len() {
            match self.slab[i] {
                Slot::Down(_) => self.kill_down(i),
                Slot::Up(_) => self.close_up(i),
                _ => {}
            }
        }
    }
}
