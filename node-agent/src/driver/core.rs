//! What both drivers' worker loops keep beside their sockets: the config
//! snapshot for the turn, the recorder, routing counters, request ids, the
//! reusable action buffer, the timer heap and the connection gauges.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasherDefault;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use ringlog::analyze::FastHash;
use ringlog::clock::mono_ns;
use ringlog::record::{Event, EventKind};

use crate::config::schema::Mode;
use crate::metrics::{Driver, WorkerStats};
use crate::proxy::{Connect, Cx, IdGen, Out, Session};
use crate::snapshot::Snapshot;
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
    /// Idle upstream connections (slots) by endpoint.
    /// Keyed by config endpoint addresses, never by client input, so the
    /// unkeyed multiply-rotate hasher is safe and a few cycles per lookup.
    pool: HashMap<SocketAddr, Vec<Pooled>, BuildHasherDefault<FastHash>>,
    /// When the pool is next swept for idle connections.
    next_sweep: u64,
}

/// Idle upstream connections kept per endpoint.
const POOL_MAX: usize = 256;

/// How often the pool is swept for connections idle past their timeout:
/// a pooled connection closes between `timeouts.idle` and this much later.
pub const POOL_SWEEP_NS: u64 = 250_000_000;

/// One idle upstream connection in the pool.
#[derive(Debug, Clone, Copy)]
struct Pooled {
    slot: usize,
    /// When it has been idle too long (monotonic ns).
    expires: u64,
}

impl Core {
    /// Core state for a worker.
    pub fn new(init: WorkerInit) -> Core {
        let snap = init.shared.snapshot.load_full();
        Core {
            id: init.id,
            recorder: init.recorder,
            rr: Vec::new(),
            ids: IdGen::new(init.id as u32, ringlog::clock::realtime_ns()),
            out: Out::default(),
            snap,
            now: mono_ns(),
            timers: BinaryHeap::new(),
            todo: Vec::new(),
            serial: 0,
            downs: 0,
            ups: 0,
            drain_timeout_ns: init.drain_timeout_ns,
            drain_deadline: None,
            pool: HashMap::default(),
            next_sweep: 0,
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
        self.snap = self.shared.snapshot.load_full();
        self.recorder.follow(&self.snap, self.now);
        self.stats().driver(Driver::LoopTurns, 1);
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
        let mut cx = Cx {
            now: self.now,
            snap: &self.snap,
            rr: &mut self.rr,
            ids: &mut self.ids,
        };
        f(session, &mut cx, out);
    }

    /// A session for a connection from `peer` accepted on listener `idx`
    /// (None if the listener is gone from the snapshot). On a transparent
    /// listener the original destination is read from the socket.
    pub fn accept_session(
        &mut self,
        idx: usize,
        peer: IpAddr,
        sock: &impl AsFd,
    ) -> Option<Session> {
        self.stats().driver(Driver::Accepted, 1);
        let l = self.snap.listeners.get(idx)?;
        let orig = match l.mode {
            Mode::Transparent => super::original_dst(sock, l.bind).filter(|a| *a != l.bind),
            Mode::Normal => None,
        };
        Some(Session::new(
            self.now,
            idx,
            l.protocol,
            peer,
            orig,
            self.shared.limits,
        ))
    }

    /// The upstream slot for connect `c`: an idle pooled one for its
    /// address (the most recently used, counted as a reuse), or None when
    /// the driver must open a new connection (counted as a connect, and as
    /// a stale retry when `c.fresh` skipped the pool).
    pub fn pool_take(&mut self, c: &Connect) -> Option<usize> {
        if !c.fresh
            && let Some(p) = self.pool.get_mut(&c.addr).and_then(Vec::pop)
        {
            self.stats().driver(Driver::PoolReuse, 1);
            return Some(p.slot);
        }
        if c.fresh {
            self.stats().driver(Driver::StaleRetries, 1);
        }
        self.stats().driver(Driver::Connects, 1);
        None
    }

    /// Pools upstream slot `j` for at most `idle_ns`; false if the
    /// endpoint's pool is full.
    pub fn pool_put(&mut self, addr: SocketAddr, j: usize, idle_ns: u64) -> bool {
        let list = self.pool.entry(addr).or_default();
        if list.len() >= POOL_MAX {
            return false;
        }
        list.push(Pooled {
            slot: j,
            expires: self.now.saturating_add(idle_ns),
        });
        true
    }

    /// Forgets slot `j` (being closed) if it is pooled.
    pub fn pool_forget(&mut self, addr: SocketAddr, j: usize) {
        if let Some(list) = self.pool.get_mut(&addr) {
            list.retain(|p| p.slot != j);
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
        if !out.is_empty() {
            self.stats().driver(Driver::PoolExpired, out.len() as u64);
        }
        out
    }

    /// Samples and writes the finished requests in `out`.
    pub fn record_all(&mut self, out: &mut Out) {
        for f in out.records.drain(..) {
            self.recorder
                .record(&f, self.now, self.shared.stats_of(self.id));
        }
    }

    /// How long the next wait may last.
    pub fn wait_timeout(&self) -> Duration {
        let cap = if self.drain_deadline.is_some() {
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
    /// deadline already in the heap for this connection.
    pub fn arm(
        &mut self,
        slot: usize,
        serial: u64,
        armed: &mut Option<u64>,
        deadline: Option<u64>,
    ) {
        if deadline != *armed {
            *armed = deadline;
            if let Some(t) = deadline {
                self.timers.push(Reverse((t, slot, serial)));
            }
        }
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

    /// Publishes the connection gauges.
    pub fn publish_gauges(&self) {
        self.stats().set_active(self.downs, self.ups);
    }
}
