//! What both drivers' worker loops keep beside their sockets: the config
//! snapshot for the turn, the recorder, routing counters, request ids, the
//! reusable action buffer, the timer heap and the connection gauges.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasherDefault;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ringlog::analyze::FastHash;
use ringlog::clock::mono_ns;
use ringlog::record::{Event, EventKind};

pub mod accepts;
pub mod budget;
pub mod flow;
pub mod mirror;
pub mod secure;

use crate::config::schema::Mode;
use crate::metrics::{Driver, TlsResult, WorkerStats};
use crate::policy::breaker::Breaker;
use crate::proxy::{Connect, Cx, IdGen, Out, Session};
use crate::snapshot::Snapshot;
use crate::tls::conn::TlsConn;
use crate::worker::{Recorder, Shared, WorkerInit};

/// Per-worker state shared by the drivers.
#[derive(Debug)]
pub struct Core {
    /// Worker index.
    pub id: usize,
    /// Shared state.
    pub shared: Arc<Shared>,
    recorder: Recorder,
    rr: Vec<u32>,
    ids: IdGen,
    /// The one action buffer, reused across calls (see [`Core::take_out`]).
    out: Out,
    /// The snapshot loaded for this loop turn.
    pub snap: Arc<Snapshot>,
    /// Clock reading for the current event.
    pub now: u64,
    /// When this loop turn woke (`now` moves on during the turn).
    turn_began: u64,
    timers: BinaryHeap<Reverse<(u64, usize, u64)>>,
    /// Slots to pump before the next wait.
    pub todo: Vec<usize>,
    serial: u64,
    /// Open downstream connections.
    pub downs: u64,
    /// Open upstream connections.
    pub ups: u64,
    drain_timeout_ns: u64,
    drain_deadline: Option<u64>,
    /// Idle upstream connections (slots) by endpoint. Keyed by endpoint
    /// addresses; on transparent listeners a client picks the destination,
    /// but the pool never holds more than [`POOL_TOTAL`] entries, which
    /// bounds what colliding keys can cost the unkeyed multiply-rotate
    /// hasher (a few cycles per lookup otherwise).
    pool: HashMap<SocketAddr, Vec<Pooled>, BuildHasherDefault<FastHash>>,
    /// When the pool is next swept for idle connections.
    next_sweep: u64,
    /// Connections in `pool`, all lists.
    pooled: usize,
    /// Accepting is paused until then (descriptors ran out).
    accept_resume: Option<u64>,
    /// The generation whose listeners this worker has bound.
    pub listeners_gen: u32,
    /// When the idle connections of retired listeners are next looked
    /// for (see [`flow::end_turn`]).
    pub retired_sweep: u64,
    /// Downstream connections whose exchange is queued for a connection
    /// slot, (slot, serial), oldest first (see [`flow::serve_waiters`]).
    /// At most one entry per live downstream that asked; stale ones are
    /// dropped when met.
    pub waiters: std::collections::VecDeque<(usize, u64)>,
    /// Request copies in flight: (upstream slot, deadline).
    pub mirrors: Vec<(usize, u64)>,
    /// Ring name ids of TLS peer identities seen by this worker (at most
    /// [`PEER_NAMES`]; later new ones record no peer).
    peer_names: HashMap<String, u16>,
    /// Plaintext of the TLS record being handled (reused).
    plain: Vec<u8>,
    /// Rung by the control plane after a config swap or when the drain
    /// begins; the driver waits on it beside its sockets.
    pub wake: crate::worker::wake::Wake,
    /// The bulk budget of the loop turn (see [`budget`]).
    budget: budget::Budget,
    /// New connections the loop turn may still set up (see [`accepts`]).
    accepts: accepts::Accepts,
}

/// Most distinct peer identities a worker names in the ring.
pub const PEER_NAMES: usize = 4096;

/// Idle upstream connections kept per endpoint, per worker.
pub const POOL_MAX: usize = 256;
/// Idle upstream connections kept in all, per worker.
pub const POOL_TOTAL: usize = 1024;
/// Backpressure, the same rule on both drivers: a side is not read while
/// the other side's send queue holds this many bytes (epoll: copied bytes
/// the socket did not take; io_uring: bytes queued or in flight).
pub const QUEUE_CAP: usize = 128 * 1024;
/// Backpressure once a side's socket is full (it refused bytes): its peer
/// is not read while the queue holds this many. Bytes queued then only
/// wait (the kernel's send buffer holds plenty for when the socket drains),
/// so a client that stops reading holds this much of the worker's memory,
/// not [`QUEUE_CAP`].
pub const BLOCKED_QUEUE_CAP: usize = 32 * 1024;

/// Whether a send queue holding `queued` bytes can take more, its socket
/// being `blocked` (full) or not: the one backpressure rule both drivers
/// apply.
pub fn queue_has_room(queued: usize, blocked: bool) -> bool {
    queued
        < if blocked {
            BLOCKED_QUEUE_CAP
        } else {
            QUEUE_CAP
        }
}
/// How long accepting pauses after accept(2) ran out of descriptors.
pub const ACCEPT_BACKOFF_NS: u64 = 100_000_000;

/// What [`Core::pool_put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolPut {
    /// Pooled.
    Pooled,
    /// Pooled, and this older idle slot was taken out to make room: the
    /// driver closes it.
    Evicted(usize),
}

/// How often a worker looks for a free connection slot while requests
/// wait for one (a slot another worker frees wakes nobody).
pub const WAITER_POLL_NS: u64 = 1_000_000;

/// The identity of cluster limits, as pool entries carry it (0: none).
pub fn group_of(b: &Breaker) -> usize {
    std::ptr::from_ref(b) as usize
}

/// An idle connection in `pool` could serve a connect to `addr` under the
/// cluster limits `group`: one to the address itself, or one of the
/// cluster's that can be closed to make room.
fn serves(
    pool: &HashMap<SocketAddr, Vec<Pooled>, BuildHasherDefault<FastHash>>,
    addr: SocketAddr,
    group: usize,
) -> bool {
    pool.contains_key(&addr) || (group != 0 && pool.values().flatten().any(|p| p.group == group))
}

/// How often the pool is swept for connections idle past their timeout:
/// a pooled connection closes between `timeouts.idle` and this much later.
pub const POOL_SWEEP_NS: u64 = 250_000_000;

/// One idle upstream connection in the pool.
#[derive(Debug, Clone, Copy)]
struct Pooled {
    slot: usize,
    /// When it went idle (monotonic ns): the LRU order.
    since: u64,
    /// When it has been idle too long (monotonic ns).
    expires: u64,
    /// Identity of the cluster limits it counts against (0: none), see
    /// [`flow::UpTarget::group`].
    group: usize,
    /// TLS pool tag ([`Connect::tls`]): only a connect with the same tag
    /// takes it.
    tls: u64,
}

impl Core {
    /// Core state for a worker.
    pub fn new(init: WorkerInit) -> Core {
        let snap = init.shared.snapshot.load_full();
        let now = mono_ns();
        Core {
            id: init.id,
            recorder: init.recorder,
            rr: Vec::new(),
            ids: IdGen::new(init.id as u32, ringlog::clock::realtime_ns()),
            out: Out::default(),
            snap,
            now,
            turn_began: now,
            timers: BinaryHeap::new(),
            todo: Vec::new(),
            serial: 0,
            downs: 0,
            ups: 0,
            drain_timeout_ns: init.drain_timeout_ns,
            drain_deadline: None,
            pool: HashMap::default(),
            next_sweep: 0,
            pooled: 0,
            accept_resume: None,
            // Checked on the first turn: a reload may have come between
            // binding at start and now.
            listeners_gen: 0,
            retired_sweep: 0,
            waiters: std::collections::VecDeque::new(),
            mirrors: Vec::new(),
            peer_names: HashMap::new(),
            plain: Vec::new(),
            wake: init.wake,
            budget: budget::Budget::new(),
            accepts: accepts::Accepts::new(),
            shared: init.shared,
        }
    }

    /// This worker's counters.
    pub fn stats(&self) -> &WorkerStats {
        self.shared.stats_of(self.id)
    }

    /// Start of a loop turn: clock, snapshot, sampler rules.
    pub fn begin_turn(&mut self) {
        self.now = mono_ns();
        self.turn_began = self.now;
        self.snap = self.shared.snapshot.load_full();
        self.recorder.follow(&self.snap, self.now);
        self.stats().driver(Driver::LoopTurns, 1);
        self.accepts.begin();
        if self.stats().generation() != u64::from(self.snap.generation) {
            self.stats().set_generation(self.snap.generation);
        }
    }

    /// The ring name id of peer identity `id` (0: none, or too many).
    pub fn peer_name(&mut self, id: Option<&crate::tls::spiffe::SpiffeId>) -> u16 {
        let Some(id) = id else {
            return 0;
        };
        let text = id.to_string();
        if let Some(&n) = self.peer_names.get(&text) {
            return n;
        }
        if self.peer_names.len() >= PEER_NAMES {
            return 0;
        }
        let generation = u64::from(self.snap.generation);
        let n = self
            .shared
            .ring
            .intern(ringlog::NameKind::Peer, &text, generation)
            .unwrap_or(0);
        self.peer_names.insert(text, n);
        n
    }

    /// The plaintext buffer (empty), to give back with
    /// [`Core::put_plain`].
    pub fn take_plain(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.plain);
        v.clear();
        v
    }

    /// Returns the plaintext buffer (a large one is not kept).
    pub fn put_plain(&mut self, v: Vec<u8>) {
        if v.capacity() <= 1 << 20 {
            self.plain = v;
        }
    }

    /// A new connection serial (tells a reused slot from its predecessor).
    pub fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// The reusable action buffer (an empty one if already taken by an
    /// outer call); give it back with [`Core::put_out`].
    pub fn take_out(&mut self) -> Out {
        std::mem::take(&mut self.out)
    }

    /// Returns the action buffer, emptied, keeping its allocations.
    pub fn put_out(&mut self, mut out: Out) {
        out.clear();
        self.out = out;
    }

    /// Runs `f` on `session` with a fresh clock reading (vDSO, ~20 ns:
    /// phases must not collapse to loop-turn granularity).
    pub fn call(
        &mut self,
        session: &mut Session,
        out: &mut Out,
        f: impl FnOnce(&mut Session, &mut Cx<'_>, &mut Out),
    ) {
        self.now = mono_ns();
        let pool = &self.pool;
        let idle = |addr: SocketAddr, b: &Breaker| serves(pool, addr, group_of(b));
        let mut cx = Cx {
            now: self.now,
            snap: &self.snap,
            rr: &mut self.rr,
            ids: &mut self.ids,
            idle: &idle,
        };
        f(session, &mut cx, out);
    }

    /// A session for a connection from `peer` accepted on listener `idx`.
    /// None: the driver closes the socket at once (the listener is gone
    /// from the snapshot, or the listener's or the agent's
    /// `max_connections` is reached, counted as `conn_limit`). On a
    /// transparent listener the original destination is read from the
    /// socket. A session returned here is counted open until
    /// [`Core::down_closed`].
    pub fn accept_session(
        &mut self,
        idx: usize,
        peer: IpAddr,
        sock: &impl AsFd,
    ) -> Option<(Session, Option<Box<TlsConn>>)> {
        self.stats().driver(Driver::Accepted, 1);
        // A retired listener's socket may still take a connection before
        // this worker closes it.
        let l = self
            .snap
            .listeners
            .get(idx)
            .filter(|l| l.retired.is_none())?;
        let sh = &self.shared;
        let per_listener = sh.listener_open.get(idx);
        let listener_full = l.max_connections > 0
            && per_listener
                .is_some_and(|c| c.load(Ordering::Relaxed) >= u64::from(l.max_connections));
        if listener_full || sh.open_connections.load(Ordering::Relaxed) >= sh.max_connections {
            self.stats().driver(Driver::ConnLimit, 1);
            return None;
        }
        sh.open_connections.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = per_listener {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.downs += 1;
        let (orig, protocol) = match l.mode {
            Mode::Transparent => (
                super::original_dst(sock, l.bind).filter(|a| *a != l.bind),
                l.protocol,
            ),
            Mode::Normal => (None, l.protocol),
            // The transport header names the destination and protocol.
            Mode::Mesh => (None, crate::config::schema::Protocol::Auto),
        };
        let tls = match self.accept_tls(idx) {
            Ok(t) => t,
            Err(result) => {
                self.stats().tls(false, result);
                self.down_closed(idx);
                return None;
            }
        };
        let mut session = Session::new(self.now, idx, protocol, peer, orig, l.limits);
        if tls.is_some() {
            session.expect_tls(l.mode == Mode::Mesh);
        }
        Some((session, tls))
    }

    /// The TLS state of a connection accepted on listener `idx`: the node
    /// identity's on a mesh listener, the listener's own on a TLS one.
    fn accept_tls(&self, idx: usize) -> Result<Option<Box<TlsConn>>, TlsResult> {
        let Some(l) = self.snap.listeners.get(idx) else {
            return Ok(None);
        };
        let (cfg, mesh) = match (l.mode, &l.tls) {
            (Mode::Mesh, _) => match self.shared.identity.load().as_ref() {
                Some(id) => (id.server.clone(), true),
                None => return Err(TlsResult::NoIdentity),
            },
            (_, Some(cfg)) => (cfg.clone(), false),
            (_, None) => return Ok(None),
        };
        match TlsConn::server(cfg, self.now, mesh) {
            Ok(t) => Ok(Some(Box::new(t))),
            Err(_) => Err(TlsResult::Failed(crate::tls::HandshakeFailure::Protocol)),
        }
    }

    /// A downstream connection of listener `idx` (from an
    /// [`Core::accept_session`]) closed.
    pub fn down_closed(&mut self, idx: usize) {
        self.downs = self.downs.saturating_sub(1);
        let sh = &self.shared;
        let _ = sh
            .open_connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        if let Some(c) = sh.listener_open.get(idx) {
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        }
    }

    /// accept(2) failed with `errno`. Out of descriptors or memory, the
    /// listener is paused for [`ACCEPT_BACKOFF_NS`] (counted) instead of
    /// being retried in a spin; the driver resumes it when
    /// [`Core::accept_resume_due`] says so. Returns whether to pause.
    pub fn accept_failed(&mut self, errno: i32) -> bool {
        let scarce = matches!(
            errno,
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
        );
        if scarce {
            self.stats().driver(Driver::AcceptErrors, 1);
            self.accept_resume = Some(self.now.saturating_add(ACCEPT_BACKOFF_NS));
        }
        scarce
    }

    /// True once, when a paused accept may be tried again.
    pub fn accept_resume_due(&mut self) -> bool {
        match self.accept_resume {
            Some(t) if mono_ns() >= t => {
                self.accept_resume = None;
                true
            }
            _ => false,
        }
    }

    /// The upstream slot for connect `c`: an idle pooled one for its
    /// address (the most recently used, counted as a reuse), or None when
    /// the driver must open a new connection (counted as a connect, and as
    /// a stale retry when `c.fresh` skipped the pool).
    pub fn pool_take(&mut self, c: &Connect) -> Option<usize> {
        if !c.fresh
            && !c.l4
            && let Some(list) = self.pool.get_mut(&c.addr)
            && let Some(at) = list.iter().rposition(|p| p.tls == c.tls)
        {
            let p = list.remove(at);
            self.pooled -= 1;
            if list.is_empty() {
                self.pool.remove(&c.addr);
            }
            self.stats().driver(Driver::PoolReuse, 1);
            return Some(p.slot);
        }
        if c.fresh {
            self.stats().driver(Driver::StaleRetries, 1);
        }
        self.stats().driver(Driver::Connects, 1);
        None
    }

    /// Pools upstream slot `j` for at most `idle_ns`. The pool holds at
    /// most [`POOL_MAX`] idle connections per destination and
    /// [`POOL_TOTAL`] in all: when full, the least recently used one is
    /// evicted to make room (counted as `pool_evicted`).
    pub fn pool_put(&mut self, f: &flow::UpFacts, j: usize) -> PoolPut {
        let (addr, idle_ns, group, tls) = (f.addr, f.idle_ns, f.group, f.tls);
        let mut evicted = None;
        // Rare: the worker's pool is full and this endpoint's list has room
        // (a full list gives up its own oldest below).
        if self.pooled >= POOL_TOTAL && self.pool.get(&addr).is_none_or(|l| l.len() < POOL_MAX) {
            evicted = self.pool_evict_lru();
        }
        let list = self.pool.entry(addr).or_default();
        if evicted.is_none() && list.len() >= POOL_MAX {
            evicted = Some(list.remove(0).slot);
            self.pooled -= 1;
        }
        list.push(Pooled {
            slot: j,
            since: self.now,
            expires: self.now.saturating_add(idle_ns),
            group,
            tls,
        });
        self.pooled += 1;
        match evicted {
            Some(slot) => {
                self.stats().driver(Driver::PoolEvicted, 1);
                PoolPut::Evicted(slot)
            }
            None => PoolPut::Pooled,
        }
    }

    /// Takes the least recently pooled connection of all out of the pool.
    fn pool_evict_lru(&mut self) -> Option<usize> {
        // Each list is oldest first, so only the heads compete.
        let (&addr, _) = self
            .pool
            .iter()
            .filter_map(|(a, l)| l.first().map(|p| (a, p.since)))
            .min_by_key(|&(_, since)| since)?;
        let list = self.pool.get_mut(&addr)?;
        let slot = list.remove(0).slot;
        self.pooled -= 1;
        if list.is_empty() {
            self.pool.remove(&addr);
        }
        Some(slot)
    }

    /// Takes the least recently pooled connection counted against the
    /// cluster limits `group` out of the pool (for the driver to close, so
    /// a connection to another of the cluster's endpoints can open).
    pub fn pool_take_group(&mut self, group: usize) -> Option<usize> {
        let (&addr, _) = self
            .pool
            .iter()
            .filter_map(|(a, l)| l.iter().find(|p| p.group == group).map(|p| (a, p.since)))
            .min_by_key(|&(_, since)| since)?;
        let list = self.pool.get_mut(&addr)?;
        let at = list.iter().position(|p| p.group == group)?;
        let slot = list.remove(at).slot;
        self.pooled -= 1;
        if list.is_empty() {
            self.pool.remove(&addr);
        }
        self.stats().driver(Driver::PoolEvicted, 1);
        Some(slot)
    }

    /// Whether an idle pooled connection could serve a connect to `addr`
    /// under the cluster limits `group` (see [`Cx::idle`]).
    pub fn pool_serves(&self, addr: SocketAddr, group: usize) -> bool {
        serves(&self.pool, addr, group)
    }

    /// Every pooled slot, for a sweep.
    pub fn pooled_slots(&self) -> Vec<usize> {
        self.pool.values().flatten().map(|p| p.slot).collect()
    }

    /// Forgets slot `j` (being closed) if it is pooled.
    pub fn pool_forget(&mut self, addr: SocketAddr, j: usize) {
        if let Some(list) = self.pool.get_mut(&addr) {
            let before = list.len();
            list.retain(|p| p.slot != j);
            self.pooled -= before - list.len();
            if list.is_empty() {
                // Transparent destinations come and go: keep the map small.
                self.pool.remove(&addr);
            }
        }
    }

    /// Takes the pooled connections idle past their cluster's
    /// `timeouts.idle` out of the pool, for the driver to close. Sweeps at
    /// most every [`POOL_SWEEP_NS`] (and allocates only when one expired).
    pub fn pool_expired(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        if self.now < self.next_sweep {
            return out;
        }
        self.next_sweep = self.now.saturating_add(POOL_SWEEP_NS);
        let now = self.now;
        for list in self.pool.values_mut() {
            list.retain(|p| {
                let expired = p.expires <= now;
                if expired {
                    out.push(p.slot);
                }
                !expired
            });
        }
        self.pooled -= out.len();
        self.pool.retain(|_, l| !l.is_empty());
        if !out.is_empty() {
            self.stats().driver(Driver::PoolExpired, out.len() as u64);
        }
        out
    }

    /// Samples and writes the finished requests in `out`, and writes its
    /// events (policy state changes) on the timeline.
    pub fn record_all(&mut self, out: &mut Out) {
        for f in out.records.drain(..) {
            self.recorder
                .record(&f, self.now, self.shared.stats_of(self.id));
        }
        for mut ev in out.events.drain(..) {
            ev.generation = self.snap.generation;
            self.recorder.event(&ev);
        }
    }

    /// Start of the turn's pumping, after the events were taken in:
    /// connections that waited for the bulk budget go first.
    pub fn resume_waiting(&mut self) {
        self.budget.begin(&mut self.todo);
    }

    /// A read asked for `asked` bytes and took `n`; `planned`: the bulk
    /// budget allowed it. Unplanned input is charged (bulk counts against
    /// the next budget, a small chunk makes it the shared one, see
    /// [`budget`]). Returns the socket's next pace. The one rule both
    /// drivers apply.
    pub fn took_input(&mut self, planned: bool, n: usize, asked: usize) -> budget::Pace {
        if !planned {
            self.budget.charge(n);
        }
        budget::Pace::after(n, asked)
    }

    /// Whether slot `i` may read a bulk chunk of `n` bytes in this turn
    /// (see [`budget`]); if not, it is pumped first next turn.
    pub fn allow_bulk(&mut self, i: usize, n: usize) -> bool {
        let ok = self.budget.allow(i, n);
        if !ok {
            self.stats().driver(Driver::BulkDeferred, 1);
        }
        ok
    }

    /// Whether one more accepted connection may be set up in this turn,
    /// with `queued` already waiting in the driver (see [`accepts`]). No:
    /// it waits for the next turn (counted once a turn as
    /// `accepts_deferred`).
    pub fn accept_allowed(&mut self, queued: usize) -> bool {
        let was = self.accepts.waiting();
        let ok = self.accepts.take(queued);
        if !ok && !was {
            self.stats().driver(Driver::AcceptsDeferred, 1);
        }
        ok
    }

    /// How long the next wait may last.
    pub fn wait_timeout(&self) -> Duration {
        if self.budget.waiting() || self.accepts.waiting() {
            // Bulk input or new connections wait for the next turn: look,
            // don't sleep.
            return Duration::ZERO;
        }
        let cap = if !self.waiters.is_empty() {
            // A connection slot another worker frees is only seen by
            // looking: often, while requests wait for one.
            WAITER_POLL_NS
        } else if self.drain_deadline.is_some() || self.accept_resume.is_some() {
            10_000_000
        } else {
            100_000_000
        };
        let now = mono_ns();
        let next = self
            .timers
            .peek()
            .map_or(cap, |Reverse((t, _, _))| t.saturating_sub(now).min(cap));
        Duration::from_nanos(next)
    }

    /// Keeps the heap in step with a session's deadline; `armed` is the
    /// deadline already in the heap for this connection. A deadline that
    /// moved later (activity) pushes nothing: the earlier entry fires, the
    /// session finds nothing due, and the driver arms again. So the heap
    /// gets an entry per wait, not per byte or request; entries of closed
    /// connections are dropped by [`flow::fire_timers`].
    pub fn arm(
        &mut self,
        slot: usize,
        serial: u64,
        armed: &mut Option<u64>,
        deadline: Option<u64>,
    ) {
        match (deadline, *armed) {
            (None, _) => *armed = None,
            (Some(t), Some(a)) if a <= t => {}
            (Some(t), _) => {
                *armed = Some(t);
                self.timers.push(Reverse((t, slot, serial)));
            }
        }
    }

    /// The heap holds more than twice the live connections (and over
    /// 1024 entries): time to drop the entries that can no longer fire
    /// (their connection closed or re-armed), see [`flow::fire_timers`].
    /// So the heap stays proportional to the live connections.
    pub fn timers_overgrown(&self) -> bool {
        let conns = (self.downs as usize).saturating_mul(2);
        self.timers.len() > conns.max(1024)
    }

    /// Takes the timer heap out (for compaction).
    pub fn take_timers(&mut self) -> BinaryHeap<Reverse<(u64, usize, u64)>> {
        std::mem::take(&mut self.timers)
    }

    /// Puts a (compacted) timer heap back.
    pub fn put_timers(&mut self, heap: BinaryHeap<Reverse<(u64, usize, u64)>>) {
        self.timers = heap;
    }

    /// Whether a timer is due now (it fires next turn: the wait must not
    /// sleep).
    pub fn timer_due(&self) -> bool {
        self.timers
            .peek()
            .is_some_and(|Reverse((t, _, _))| *t <= self.now)
    }

    /// Pops the next due timer: (slot, serial, deadline). The caller checks
    /// the slot still has that serial and deadline (stale entries are
    /// skipped that way).
    pub fn pop_due(&mut self) -> Option<(usize, u64, u64)> {
        self.now = mono_ns();
        match self.timers.peek() {
            Some(&Reverse((t, slot, serial))) if t <= self.now => {
                self.timers.pop();
                Some((slot, serial, t))
            }
            _ => None,
        }
    }

    /// Checks the drain flag. Returns `Some(true)` when the drain just
    /// began (stop accepting now), `Some(false)` while draining, None when
    /// serving normally.
    pub fn drain_state(&mut self) -> Option<bool> {
        if !self.shared.draining() {
            return None;
        }
        if self.drain_deadline.is_some() {
            return Some(false);
        }
        self.drain_deadline = Some(self.now.saturating_add(self.drain_timeout_ns));
        let mut ev = Event::new(EventKind::Drain, self.now);
        ev.generation = self.snap.generation;
        self.recorder.event(&ev);
        Some(true)
    }

    /// Draining and nothing left, or the drain timeout passed.
    pub fn drained(&self) -> bool {
        self.drain_deadline
            .is_some_and(|d| self.downs == 0 || self.now >= d)
    }

    /// Writes an agent event on this worker's timeline.
    pub fn event(&mut self, ev: &Event) {
        self.recorder.event(ev);
    }

    /// The clusters' endpoint housekeeping (ejected endpoints returning
    /// on schedule, the success-rate detector, health flips), by whichever
    /// worker comes first; the changes go on the ring.
    pub fn tick_clusters(&mut self) {
        for ev in self.shared.take_control_events() {
            self.recorder.event(&ev);
        }
        let now = mono_ns();
        let mut changes = Vec::new();
        for c in self
            .snap
            .watched
            .iter()
            .filter_map(|&k| self.snap.clusters.get(k))
        {
            c.live.tick(now, &mut changes);
            for ch in changes.drain(..) {
                let ep = c.endpoints.get(ch.endpoint()).map_or(0, |e| e.id);
                let mut ev = ch.event(now, c.id, ep);
                ev.generation = self.snap.generation;
                self.recorder.event(&ev);
            }
        }
    }

    /// End of a turn: publishes the connection gauges and the turn's
    /// length (`tailmesh_loop_turn_seconds`).
    pub fn publish_gauges(&self) {
        // From the wake-up, not from `now`: every session call and timer
        // pop reads the clock again, and a turn measured from the last of
        // them reported nearly every turn under 100 µs.
        self.stats().turn(mono_ns().saturating_sub(self.turn_began));
        self.stats().set_active(self.downs, self.ups);
        self.stats()
            .set_tables(self.timers.len() as u64, self.pooled as u64);
    }
}
