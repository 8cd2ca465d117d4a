//! The decisions both drivers share, written once: how a session's
//! actions are carried out (and in what order), when an upstream goes back
//! to the pool, the half-close rule of tunnels, what a closing connection
//! takes with it, timer firing, drain and shutdown. A driver implements
//! [`Driver`]: the primitives that touch its sockets (queue bytes, open or
//! close a socket, read a few facts), and nothing that decides.

use std::collections::BinaryHeap;

use std::sync::Arc;

use super::{Core, PoolPut, group_of};
use crate::metrics::Driver as Counter;
use crate::policy::breaker::{Breaker, ConnSlot, slot_waiters};
use crate::proxy::{Chunk, Connect, Cx, Out, Session, UpOp};
use crate::tls::conn::TlsConn;

/// What the core needs to know about an upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpFacts {
    /// Endpoint address (the pool key).
    pub addr: std::net::SocketAddr,
    /// How long it may sit idle in the pool, ns.
    pub idle_ns: u64,
    /// Connected (or taken from the pool).
    pub connected: bool,
    /// Nothing queued to send, nothing received and unread, no EOF, no
    /// error: fit for the pool.
    pub clean: bool,
    /// Its write side is shut (or is to be).
    pub shut_wr: bool,
    /// The upstream closed its side.
    pub eof: bool,
    /// Bytes still wait to be sent to it.
    pub tx_pending: bool,
    /// The cluster limits it counts against ([`UpTarget::group`]).
    pub group: usize,
    /// Its TLS pool tag ([`Connect::tls`]).
    pub tls: u64,
}

/// A downstream connection's timer state, borrowed from the driver.
#[derive(Debug)]
pub struct TimerSlot<'a> {
    /// Its session.
    pub session: &'a mut Session,
    /// Connection serial (tells a reused slot from its predecessor).
    pub serial: u64,
    /// The deadline in the core's timer heap for it, if any.
    pub armed: &'a mut Option<u64>,
}

/// The I/O primitives of a driver. Slots are indices into the driver's
/// connection table: a downstream `i` owns at most one upstream `j`.
pub trait Driver {
    /// Where the input of a session call lives (chunks may refer to it).
    type Src<'a>: Copy;

    /// The source of a call without input.
    fn no_src<'a>() -> Self::Src<'a>;
    /// The shared per-worker state.
    fn core(&mut self) -> &mut Core;
    /// The shared state and down `i`'s session, borrowed together (None
    /// if `i` is not a live downstream connection).
    fn parts(&mut self, i: usize) -> (&mut Core, Option<&mut Session>);
    /// Runs `f` on down `i`'s session through [`Core::call`], filling
    /// `out`; false if `i` is not a live downstream connection.
    fn call(
        &mut self,
        i: usize,
        out: &mut Out,
        f: impl FnOnce(&mut Session, &mut Cx<'_>, &mut Out),
    ) -> bool {
        match self.parts(i) {
            (core, Some(s)) => {
                core.call(s, out, f);
                true
            }
            (_, None) => false,
        }
    }
    /// Down `i`'s session (None if `i` is not a live downstream).
    fn session(&mut self, i: usize) -> Option<&mut Session> {
        self.parts(i).1
    }
    /// Down `i`'s timer state.
    fn timer_slot(&mut self, i: usize) -> Option<TimerSlot<'_>>;
    /// Whether down `i` still waits to send (`.0`) and its upstream still
    /// waits to send (`.1`); None if `i` is not a live downstream.
    fn backlog(&self, i: usize) -> Option<(bool, bool)>;
    /// Nothing in flight on down `i`: closable while draining.
    fn down_idle(&self, i: usize) -> bool;
    /// The upstream attached to down `i`.
    fn up_of(&self, i: usize) -> Option<usize>;
    /// Attaches (or detaches) an upstream to down `i`.
    fn set_up_of(&mut self, i: usize, j: Option<usize>);
    /// The downstream upstream `j` serves.
    fn owner_of(&self, j: usize) -> Option<usize>;
    /// Sets the downstream upstream `j` serves.
    fn set_owner(&mut self, j: usize, owner: Option<usize>);
    /// Facts about upstream `j` (None if `j` is not a live upstream).
    fn up_facts(&self, j: usize) -> Option<UpFacts>;
    /// Queues (or sends) `chunks` to down `i`.
    fn send_down(&mut self, i: usize, chunks: &mut Vec<Chunk>, src: Self::Src<'_>);
    /// Queues (or sends) `chunks` to upstream `j`.
    fn send_up(&mut self, j: usize, chunks: &mut Vec<Chunk>, src: Self::Src<'_>);
    /// Marks down `i` to shut its write side (`shut_wr`) and/or close once
    /// its queue drains.
    fn mark_down(&mut self, i: usize, shut_wr: bool, close: bool);
    /// Down `i` was marked to close once drained.
    fn down_marked_close(&self, i: usize) -> bool;
    /// Shuts down `i`'s write side now if it was marked to (queue empty).
    fn shut_down_now(&mut self, i: usize);
    /// Marks upstream `j` to shut its write side once its queue drains.
    fn mark_up_shut(&mut self, j: usize);
    /// Makes closing down `i` send a RST and drop unsent bytes.
    fn abort_on_close(&mut self, i: usize);
    /// Opens a new upstream socket toward `c.addr` and starts connecting,
    /// owned by no downstream yet (the core attaches it). It holds what
    /// `target` holds (its place under the cluster's `max_connections`)
    /// until it is freed. Its slot, or None if the socket could not be
    /// made.
    fn open_up(&mut self, c: &Connect, target: UpTarget) -> Option<usize>;
    /// Closes down `i`'s socket and frees its slot (once the kernel is done
    /// with it); returns its listener index, None if it was not live.
    fn drop_down(&mut self, i: usize) -> Option<usize>;
    /// Closes upstream `j`'s socket; true if it was live.
    fn drop_up(&mut self, j: usize) -> bool;
    /// What upstream `j` was opened for (None if `j` is not a live
    /// upstream).
    fn up_target(&self, j: usize) -> Option<&UpTarget>;
    /// Upstream `j` is closed once its queued bytes are sent.
    fn close_up_when_flushed(&mut self, j: usize);
    /// Schedules slot `i` to be pumped before the next wait.
    fn wake(&mut self, i: usize);
    /// Timer entry `(serial, t)` is the one armed for down `i`: disarm it
    /// and return true.
    fn take_due(&mut self, i: usize, serial: u64, t: u64) -> bool;
    /// Timer entry `(serial, t)` is still armed for down `i`.
    fn timer_live(&self, i: usize, serial: u64, t: u64) -> bool;
    /// Every live downstream slot.
    fn downs(&self) -> Vec<usize>;
    /// Every live upstream slot.
    fn ups(&self) -> Vec<usize>;
    /// Re-arms the listeners an accept error paused.
    fn resume_accepts(&mut self);
    /// Stops accepting (drain began): the listeners close.
    fn stop_accepting(&mut self);
    /// The open listeners: (snapshot listener index, bound address).
    fn listeners(&self) -> Vec<(usize, std::net::SocketAddr)>;
    /// Starts accepting on `sock` for snapshot listener `idx`.
    fn add_listener(&mut self, idx: usize, sock: std::net::TcpListener) -> std::io::Result<()>;
    /// Stops accepting for snapshot listener `idx` and closes its socket.
    fn close_listener(&mut self, idx: usize);
    /// Plaintext bytes as the source of a session call.
    fn copy_src(bytes: &[u8]) -> Self::Src<'_>;
    /// The TLS state of slot `k` (None: plaintext, or not live).
    fn tls(&mut self, k: usize) -> Option<&mut TlsConn>;
    /// Gives upstream `j` its TLS state (before any byte is sent).
    fn set_tls(&mut self, j: usize, t: Box<TlsConn>);
    /// Queues ciphertext on slot `k` as is (handshake messages, alerts).
    fn push_raw(&mut self, k: usize, bytes: Vec<u8>);
    /// The local address of down `i`'s socket.
    fn local_addr(&self, i: usize) -> Option<std::net::SocketAddr>;
}

/// The end of a loop turn: the drain sequence (stop accepting, close idle
/// connections, finish when nothing is left or the drain timeout passed)
/// and the gauges. True when the worker is done.
pub fn end_turn<D: Driver>(d: &mut D) -> bool {
    if let Some(began) = d.core().drain_state() {
        if began {
            d.stop_accepting();
        }
        close_idle(d);
        if d.core().drained() {
            return true;
        }
    }
    if d.core().listeners_gen != d.core().snap.generation && !d.core().shared.draining() {
        reconcile_listeners(d);
    }
    // A scan of every connection: at most every RETIRED_SWEEP_NS, not
    // every turn, while a removed listener still has connections.
    let core = d.core();
    if core.now >= core.retired_sweep && core.snap.has_retired_listeners() {
        core.retired_sweep = core.now.saturating_add(RETIRED_SWEEP_NS);
        close_retired(d);
    }
    d.core().tick_clusters();
    if !d.core().mirrors.is_empty() {
        super::mirror::expire(d);
    }
    serve_waiters(d);
    if slot_waiters() > 0 {
        release_starved(d);
    }
    d.core().publish_gauges();
    false
}

/// A new generation: binds the listeners this worker lacks (new, or moved
/// to another address) and closes those the snapshot retired or moved.
/// A bind that fails here (the control thread bound it a moment ago) is
/// counted and logged; the other workers still accept on it.
fn reconcile_listeners<D: Driver>(d: &mut D) {
    let snap = d.core().snap.clone();
    d.core().listeners_gen = snap.generation;
    let want: Vec<(usize, std::net::SocketAddr)> = snap
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.retired.is_none())
        .map(|(i, l)| (i, l.bind))
        .collect();
    let have = d.listeners();
    for &(i, addr) in &have {
        if !want.contains(&(i, addr)) {
            d.close_listener(i);
        }
    }
    for &(i, addr) in &want {
        if have.contains(&(i, addr)) {
            continue;
        }
        let bound = crate::driver::bind_listener(addr).and_then(|s| d.add_listener(i, s));
        if let Err(e) = bound {
            d.core().stats().driver(Counter::AcceptErrors, 1);
            eprintln!(
                "node-agent: worker {}: listener {} on {addr}: {e}",
                d.core().id,
                snap.listeners[i].name
            );
        }
    }
}

/// How often the idle connections of retired listeners are closed.
const RETIRED_SWEEP_NS: u64 = 100_000_000;

/// Closes the idle downstream connections of retired listeners (a
/// removed listener drains: requests in flight finish, then the
/// connection closes).
fn close_retired<D: Driver>(d: &mut D) {
    let snap = d.core().snap.clone();
    let retired = |k: usize| snap.listeners.get(k).is_some_and(|l| l.retired.is_some());
    for i in d.downs() {
        let retired = d
            .session(i)
            .is_some_and(|s| s.is_idle() && retired(s.listener()));
        if retired && d.down_idle(i) {
            kill_down(d, i);
        }
    }
}

/// Wakes the exchanges queued for a connection slot whose cluster has one
/// free now (or whose connect an idle pooled connection serves), oldest
/// first per cluster: the first of a cluster that finds none stops the
/// rest of that cluster. Entries of closed connections, or of exchanges
/// no longer waiting, are dropped.
pub fn serve_waiters<D: Driver>(d: &mut D) {
    if d.core().waiters.is_empty() {
        return;
    }
    let mut blocked: Vec<usize> = Vec::new();
    let mut keep = std::collections::VecDeque::new();
    while let Some((i, serial)) = d.core().waiters.pop_front() {
        let Some(slot) = d.timer_slot(i).filter(|t| t.serial == serial) else {
            continue;
        };
        let Some((addr, b)) = slot.session.awaited_slot() else {
            continue;
        };
        let group = group_of(b);
        let room = b.has_room();
        if blocked.contains(&group) || !(room || d.core().pool_serves(addr, group)) {
            blocked.push(group);
            keep.push_back((i, serial));
            continue;
        }
        with_session(d, i, |s, cx, out| {
            s.on_slot_free(cx, out);
        });
    }
    // Sessions queued during the calls above were appended meanwhile.
    let core = d.core();
    keep.append(&mut core.waiters);
    core.waiters = keep;
}

/// Closes this worker's idle pooled connections to clusters where
/// requests wait for a connection slot (in any worker): an idle connection
/// must not hold a slot a waiting request needs.
fn release_starved<D: Driver>(d: &mut D) {
    for j in d.core().pooled_slots() {
        let starved = d
            .up_target(j)
            .and_then(UpTarget::breaker)
            .is_some_and(|b| b.waiting() > 0 && !b.has_room());
        if starved {
            d.core().stats().driver(Counter::PoolEvicted, 1);
            close_up(d, j);
        }
    }
}

/// Runs `f` on down `i`'s session with input `src` (the bytes `f` is
/// fed; chunks may refer to them), then carries out what it asked for.
pub fn with_input<D: Driver>(
    d: &mut D,
    i: usize,
    src: D::Src<'_>,
    f: impl FnOnce(&mut Session, &mut Cx<'_>, &mut Out),
) {
    let mut out = d.core().take_out();
    if d.call(i, &mut out, f) {
        apply(d, i, &mut out, src);
    }
    d.core().put_out(out);
}

/// Runs `f` on down `i`'s session without input, then carries out what it
/// asked for.
pub fn with_session<D: Driver>(
    d: &mut D,
    i: usize,
    f: impl FnOnce(&mut Session, &mut Cx<'_>, &mut Out),
) {
    with_input(d, i, D::no_src(), f);
}

/// Carries out a session's actions for down `i` (input chunks refer to
/// `src`), in this order: the downstream bytes and flags, the records, the
/// upstream operations in the order the session produced them, then the
/// upstream bytes to the upstream attached after them.
pub fn apply<D: Driver>(d: &mut D, i: usize, out: &mut Out, src: D::Src<'_>) {
    let bytes = |c: &[Chunk]| c.iter().map(Chunk::len).sum::<usize>() as u64;
    let (down, up) = (bytes(&out.to_down), bytes(&out.to_up));
    d.core().stats().bytes(down, up);
    if !out.to_down.is_empty() {
        d.send_down(i, &mut out.to_down, src);
    }
    if (out.shutdown_down || out.close_down)
        && let Some(t) = d.tls(i)
    {
        // The TLS end of the stream before the TCP one.
        t.close_notify();
        super::secure::flush(d, i);
    }
    d.mark_down(i, out.shutdown_down, out.close_down);
    if out.idle_closed {
        d.core().stats().driver(Counter::IdleClosed, 1);
    }
    d.core().record_all(out);
    for m in out.mirrors.drain(..) {
        super::mirror::start(d, m);
    }
    if out.reset_down {
        // A client that stopped reading: close now, queue and all.
        out.to_up.clear();
        out.up.clear();
        d.abort_on_close(i);
        close_down(d, i);
        return;
    }
    // The downstream bytes went first: a connect that fails at once
    // answers 503, and that answer must follow what was already queued.
    for k in 0..out.up.len() {
        match out.up[k] {
            UpOp::Release { reuse } => {
                if let Some(j) = d.up_of(i) {
                    d.set_up_of(i, None);
                    release_up(d, j, reuse);
                }
            }
            UpOp::Shutdown => {
                if let Some(j) = d.up_of(i) {
                    d.mark_up_shut(j);
                    d.wake(j);
                }
            }
            UpOp::AwaitSlot => {
                let serial = d.timer_slot(i).map(|t| t.serial);
                if let Some(serial) = serial {
                    d.core().waiters.push_back((i, serial));
                }
            }
            UpOp::Connect(c) => {
                if !attach_up(d, i, &c) {
                    // The exchange these bytes belong to was just answered
                    // 503; the next one (if any) sent its own bytes.
                    out.to_up.clear();
                }
            }
        }
    }
    out.up.clear();
    if let Some(j) = d.up_of(i) {
        if !out.to_up.is_empty() {
            d.send_up(j, &mut out.to_up, src);
        }
        d.wake(j);
    }
    out.to_up.clear();
    d.wake(i);
}

/// What every driver's upstream connection keeps of the [`Connect`] that
/// opened it: its pool key, how long it may idle in the pool, and its
/// place under the cluster's `max_connections` (given back when the
/// connection is dropped).
#[derive(Debug)]
pub struct UpTarget {
    /// Endpoint address (the pool key).
    pub addr: std::net::SocketAddr,
    /// Longest idle time in the pool, ns (its cluster's `timeouts.idle`).
    pub idle_ns: u64,
    /// TLS pool tag ([`Connect::tls`]).
    pub tls: u64,
    slot: Option<ConnSlot>,
    /// A request copy's deadline (0: a proxied connection).
    mirror_until: u64,
}

impl UpTarget {
    /// The target of a connection opened for `c`, holding `slot`.
    pub fn new(c: &Connect, slot: Option<ConnSlot>) -> UpTarget {
        UpTarget {
            addr: c.addr,
            idle_ns: c.idle_ns,
            tls: c.tls,
            slot,
            mirror_until: 0,
        }
    }

    /// The cluster limits it counts against.
    pub fn breaker(&self) -> Option<&Arc<Breaker>> {
        self.slot.as_ref().map(ConnSlot::breaker)
    }

    /// The same, as a request copy's connection closed at `until`.
    pub fn mirror(self, until: u64) -> UpTarget {
        UpTarget {
            mirror_until: until,
            ..self
        }
    }

    /// When this request copy's connection is closed (0: not a copy).
    pub fn mirror_until(&self) -> u64 {
        self.mirror_until
    }

    /// Gives its place under `max_connections` back (it is being
    /// closed).
    pub fn release_slot(&mut self) {
        self.slot = None;
    }

    /// Their identity for the pool (0: none).
    pub fn group(&self) -> usize {
        self.breaker().map_or(0, |b| group_of(b))
    }
}

/// Gives down `i` an upstream for `c`: the most recently pooled one for its
/// address, or a new connection. False if connecting failed at once (the
/// session was told, and answered).
fn attach_up<D: Driver>(d: &mut D, i: usize, c: &Connect) -> bool {
    if let Some(j) = d.core().pool_take(c)
        && d.up_facts(j).is_some()
    {
        d.set_owner(j, Some(i));
        d.set_up_of(i, Some(j));
        let now = d.core().now;
        let peer = d.tls(j).map_or(0, |t| t.peer_name());
        if let Some(s) = d.session(i) {
            s.on_up_ready(now, true);
            if peer != 0 {
                s.on_up_tls(0, peer);
            }
        }
        return true;
    }
    let breaker = c
        .cluster
        .and_then(|k| d.core().snap.clusters.get(k))
        .map(|cl| cl.breaker.clone());
    let slot = match breaker {
        Some(b) => match open_slot(d, &b) {
            Some(slot) => Some(slot),
            None => {
                // At the cluster's max_connections (another worker took the
                // place the session saw free): a fast 503 overflow.
                with_session(d, i, |s, cx, out| s.on_up_refused(cx, out));
                return false;
            }
        },
        None => None,
    };
    let (dial, tls) = match super::secure::client_for(d.core(), c) {
        Ok(x) => x,
        Err(result) => {
            // The slot taken above is given back as `slot` drops.
            d.core().stats().tls(true, result);
            with_session(d, i, |s, cx, out| s.on_up_tls_failed(cx, out));
            return false;
        }
    };
    if let Some(j) = d.open_up(&Connect { addr: dial, ..*c }, UpTarget::new(c, slot)) {
        d.set_owner(j, Some(i));
        d.set_up_of(i, Some(j));
        d.core().ups += 1;
        if let Some(t) = tls {
            super::secure::attach(d, j, t);
        }
        return true;
    }
    d.core().stats().driver(Counter::ConnectErrors, 1);
    with_session(d, i, |s, cx, out| s.on_up_failed(cx, false, out));
    false
}

/// A place under `b`'s `max_connections` for a new connection, closing
/// this worker's least recently pooled idle connection to the cluster if
/// that is what holds the last one.
fn open_slot<D: Driver>(d: &mut D, b: &Arc<Breaker>) -> Option<ConnSlot> {
    if let Some(slot) = b.open_connection() {
        return Some(slot);
    }
    let slot = match d.core().pool_take_group(group_of(b)) {
        Some(idle) => {
            close_up(d, idle);
            b.open_connection()
        }
        None => None,
    };
    if slot.is_none() {
        b.stats
            .overflow_connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    slot
}

/// Detaches upstream `j`: pooled if reusable and clean, closed after its
/// queue drains if bytes still wait (a reusable one, or a tunnel upstream
/// whose FIN came first: what the client sent after it must still
/// arrive), else closed now.
pub fn release_up<D: Driver>(d: &mut D, j: usize, reuse: bool) {
    d.set_owner(j, None);
    let Some(f) = d.up_facts(j) else {
        return;
    };
    if reuse && f.connected && f.clean && !f.shut_wr {
        if let PoolPut::Evicted(old) = d.core().pool_put(&f, j) {
            close_up(d, old);
        }
        return;
    }
    if (reuse || f.eof) && f.tx_pending {
        d.close_up_when_flushed(j);
        return;
    }
    close_up(d, j);
}

/// Closes upstream `j`: out of the pool, detached from its downstream.
pub fn close_up<D: Driver>(d: &mut D, j: usize) {
    let Some(f) = d.up_facts(j) else {
        return;
    };
    d.core().pool_forget(f.addr, j);
    if let Some(o) = d.owner_of(j)
        && d.up_of(o) == Some(j)
    {
        d.set_up_of(o, None);
    }
    if d.drop_up(j) {
        let core = d.core();
        core.ups = core.ups.saturating_sub(1);
    }
}

/// Closes down `i` and the upstream it holds.
pub fn close_down<D: Driver>(d: &mut D, i: usize) {
    if let Some(j) = d.up_of(i) {
        d.set_up_of(i, None);
        close_up(d, j);
    }
    if let Some(listener) = d.drop_down(i) {
        d.core().down_closed(listener);
    }
}

/// The downstream failed or is torn down: abort its session (its records
/// are written) and close it.
pub fn kill_down<D: Driver>(d: &mut D, i: usize) {
    let mut out = d.core().take_out();
    let now = d.core().now;
    if let Some(s) = d.session(i) {
        s.on_down_closed(now, &mut out);
    }
    d.core().record_all(&mut out);
    d.core().put_out(out);
    close_down(d, i);
}

/// Down `i`'s send queue is empty: its finished exchanges get their write
/// phase and are recorded; a connection marked to close is closed, a
/// marked write side is shut. False once `i` is closed.
pub fn down_flushed<D: Driver>(d: &mut D, i: usize) -> bool {
    let mut out = d.core().take_out();
    let now = d.core().now;
    let closed = match d.session(i) {
        Some(s) => {
            s.on_down_flushed(now, &mut out);
            s.is_closed()
        }
        None => return false,
    };
    d.core().record_all(&mut out);
    d.core().put_out(out);
    if closed || d.down_marked_close(i) {
        close_down(d, i);
        return false;
    }
    d.shut_down_now(i);
    true
}

/// Upstream `j` of down `o` reached its end (`reset`: with an error). A
/// tunnel's upstream that closed cleanly stays open for what the client
/// still sends (the session releases it when both sides are done); any
/// other is closed now. Then the session hears of it.
pub fn up_eof<D: Driver>(d: &mut D, j: usize, o: usize, reset: bool) {
    let half = !reset && d.session(o).is_some_and(|s| s.is_tunnel());
    if !half {
        close_up(d, j);
    }
    with_session(d, o, |s, cx, out| s.on_up_eof(cx, reset, out));
}

/// An idle pooled upstream became readable: bytes no request asked for, or
/// its close. Either way it is done.
pub fn idle_up_event<D: Driver>(d: &mut D, j: usize) {
    close_up(d, j);
}

/// Tells down `i`'s session what its queues hold, then keeps the timer
/// heap in step with its deadline.
pub fn arm<D: Driver>(d: &mut D, i: usize) {
    let Some((down_waits, up_waits)) = d.backlog(i) else {
        return;
    };
    let now = d.core().now;
    let Some(t) = d.timer_slot(i) else {
        return;
    };
    t.session.set_backlog(now, down_waits, up_waits);
    let deadline = t.session.deadline();
    let (serial, mut armed) = (t.serial, *t.armed);
    d.core().arm(i, serial, &mut armed, deadline);
    if let Some(t) = d.timer_slot(i) {
        *t.armed = armed;
    }
}

/// Session timers one loop turn fires at most. A thousand header
/// timeouts can fall due together (slowloris connections opened in one
/// burst), and so can the write timeouts of 200 stalled downloads, each
/// close freeing a socket's megabyte of buffers: firing all of them in one
/// turn held every other connection on the worker for 10-15 ms. The rest
/// fire in the next turns, in deadline order (the wait does not sleep
/// while a timer is due).
pub const TIMERS_PER_TURN: usize = 8;

/// Fires the due timers (at most [`TIMERS_PER_TURN`]), closes pooled
/// connections idle too long, keeps the timer heap small, and resumes a
/// paused accept when it is time.
pub fn fire_timers<D: Driver>(d: &mut D) {
    let mut fired = 0;
    while let Some((i, serial, t)) = d.core().pop_due() {
        if d.take_due(i, serial, t) {
            with_session(d, i, |s, cx, out| s.on_timer(cx, out));
            fired += 1;
            if fired == TIMERS_PER_TURN {
                if d.core().timer_due() {
                    d.core().stats().driver(Counter::TimersDeferred, 1);
                }
                break;
            }
        }
    }
    for j in d.core().pool_expired() {
        close_up(d, j);
    }
    if d.core().timers_overgrown() {
        let heap = d.core().take_timers();
        let kept: BinaryHeap<_> = heap
            .into_iter()
            .filter(|std::cmp::Reverse((t, i, serial))| d.timer_live(*i, *serial, *t))
            .collect();
        d.core().put_timers(kept);
    }
    if d.core().accept_resume_due() {
        d.resume_accepts();
    }
}

/// While draining: closes the downstream connections with nothing in
/// flight.
pub fn close_idle<D: Driver>(d: &mut D) {
    for i in d.downs() {
        if d.session(i).is_some_and(|s| s.is_idle()) && d.down_idle(i) {
            kill_down(d, i);
        }
    }
}

/// At exit: aborts every downstream and closes every upstream.
pub fn close_all<D: Driver>(d: &mut D) {
    for i in d.downs() {
        kill_down(d, i);
    }
    for j in d.ups() {
        close_up(d, j);
    }
}

/// Upstream `j`'s connect completed: its downstream's exchange goes on
/// (a request copy's bytes go out).
pub fn connected<D: Driver>(d: &mut D, j: usize) {
    let Some(o) = d.owner_of(j) else {
        // A request copy's connection: its queued bytes go out now.
        d.wake(j);
        return;
    };
    if d.tls(j).is_some_and(|t| t.handshaking()) {
        // TLS: the exchange goes on once the handshake is done (the
        // connect timeout covers both; see secure::up_input).
        d.wake(j);
        return;
    }
    let now = d.core().now;
    if let Some(s) = d.session(o) {
        s.on_up_ready(now, false);
    }
    d.wake(o);
    d.wake(j);
}

/// Upstream `j`'s connect failed (`timeout`: its connect timeout fired):
/// it is closed and its downstream's session answers.
pub fn connect_failed<D: Driver>(d: &mut D, j: usize, timeout: bool) {
    let owner = d.owner_of(j);
    d.core().stats().driver(Counter::ConnectErrors, 1);
    close_up(d, j);
    if let Some(o) = owner {
        with_session(d, o, |s, cx, out| s.on_up_failed(cx, timeout, out));
    }
}
