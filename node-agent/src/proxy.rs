//! The sans-IO proxy core: one [`Session`] per downstream connection turns
//! bytes and events (with `now`) into actions in an [`Out`]. No socket, no
//! clock, no io_uring in here; the drivers (`driver::epoll`,
//! `driver::uring`) only move bytes and report completions.
//!
//! Actions may refer to the input just fed ([`Chunk::Input`]) instead of
//! copying it, so a driver forwards body bytes from the buffer they arrived
//! in; the rewritten head is a small owned buffer sent before them.
//!
//! Backpressure contract for drivers: stop reading downstream while the
//! upstream send queue is non-empty, stop reading upstream while the
//! downstream send queue is non-empty, and ask [`Session::wants_down_data`]
//! before reading downstream (false while a finished request waits for its
//! response, so pipelined requests queue in the socket, not in memory).

mod session;
pub mod sniff;

use std::net::SocketAddr;
use std::ops::Range;

pub use session::{Session, SessionLimits};

use crate::policy::breaker::Breaker;
use crate::snapshot::Snapshot;
use ringlog::record::{Event, PHASES, Record};

/// Bytes to send: an owned buffer, or a range of the input just fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Bytes the core made (a rewritten head, a local response).
    Owned(Vec<u8>),
    /// This range of the buffer passed to the call that produced the chunk.
    Input(Range<usize>),
}

impl Chunk {
    /// `range` of `buf` as a chunk: a reference when `buf` is the caller's
    /// input, else a copy (bytes the session held across calls).
    pub(crate) fn of(input: bool, buf: &[u8], range: Range<usize>) -> Chunk {
        if input {
            Chunk::Input(range)
        } else {
            Chunk::Owned(buf.get(range).unwrap_or_default().to_vec())
        }
    }

    /// How many bytes it holds.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Owned(v) => v.len(),
            Chunk::Input(r) => r.len(),
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, given the buffer the call was fed.
    pub fn bytes<'a>(&'a self, input: &'a [u8]) -> &'a [u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Input(r) => input.get(r.clone()).unwrap_or_default(),
        }
    }
}

/// Where to connect an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connect {
    /// Endpoint address (also the pool key).
    pub addr: SocketAddr,
    /// Index of its cluster in the snapshot, for the cluster's
    /// `max_connections` (None: a passthrough destination).
    pub cluster: Option<usize>,
    /// Connect timeout, ns.
    pub timeout_ns: u64,
    /// Open a new connection even if the pool holds one for `addr` (the
    /// retry after a pooled connection turned out closed).
    pub fresh: bool,
    /// How long the connection may then sit idle in the pool, ns.
    pub idle_ns: u64,
    /// The cluster's TLS pool tag (0: plaintext): part of the pool key,
    /// and checked against the cluster's TLS when connecting.
    pub tls: u64,
    /// For an L4 tunnel (never pooled; a mesh header says `tcp`).
    pub l4: bool,
}

/// Something to do with the session's upstream connection. A step may
/// produce several, in order (release one connection, then connect the
/// next pipelined request's): each is its own entry, none overwrites
/// another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpOp {
    /// Get an upstream connection (from the pool, or connect) and attach it.
    Connect(Connect),
    /// Detach the attached upstream: back to the pool (`reuse`) once its
    /// send queue is empty, or closed.
    Release {
        /// Pool it if it is clean; otherwise it is closed.
        reuse: bool,
    },
    /// Shut down the attached upstream's write side once its queue drains
    /// (a tunnel's client half-closed).
    Shutdown,
    /// The exchange is queued for a connection slot of its cluster (see
    /// [`Session::awaited_slot`]): call [`Session::on_slot_free`] when one
    /// may be free.
    AwaitSlot,
}

/// What the driver must do after a call, in this order: the upstream
/// operations in `up` (in order), the downstream bytes and flags, then the
/// upstream bytes in `to_up`, which go to the upstream attached after
/// `up`. Fields are consumed (taken) by the driver; [`Out::clear`] resets
/// it for reuse.
#[derive(Debug, Default)]
pub struct Out {
    /// Send these upstream, in order (queue them until connected).
    pub to_up: Vec<Chunk>,
    /// Send these downstream, in order.
    pub to_down: Vec<Chunk>,
    /// Upstream connection operations, in order.
    pub up: Vec<UpOp>,
    /// Shut down the downstream's write side once its queue drains (tunnel).
    pub shutdown_down: bool,
    /// Close the downstream once its queue drains.
    pub close_down: bool,
    /// Close the downstream now, dropping what its queue still holds (a
    /// client that stopped reading).
    pub reset_down: bool,
    /// Finished requests (the driver samples and records them).
    pub records: Vec<Finished>,
    /// The connection is closed for sitting idle past its keep-alive
    /// timeout (counted; no record, nothing was asked).
    pub idle_closed: bool,
    /// Agent events for the ring's timeline (a breaker changed state); the
    /// driver fills in the generation.
    pub events: Vec<Event>,
    /// Copies of requests for shadow clusters (fire-and-forget).
    pub mirrors: Vec<MirrorCopy>,
}

/// A whole request (head and body) to send to a shadow cluster on a
/// connection of its own, whose response is discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorCopy {
    /// Where.
    pub connect: Connect,
    /// The request bytes.
    pub bytes: Vec<u8>,
    /// How long the copy may take in all (its cluster's request timeout,
    /// else its read timeout), ns.
    pub timeout_ns: u64,
}

impl Out {
    /// Empties every field, keeping allocations.
    pub fn clear(&mut self) {
        self.to_up.clear();
        self.to_down.clear();
        self.up.clear();
        self.shutdown_down = false;
        self.close_down = false;
        self.reset_down = false;
        self.records.clear();
        self.idle_closed = false;
        self.events.clear();
        self.mirrors.clear();
    }

    /// Detach the upstream: pooled if `reuse` and clean, else closed.
    pub(crate) fn release(&mut self, reuse: bool) {
        self.up.push(UpOp::Release { reuse });
    }
}

/// A finished request or L4 connection, ready for the sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// The record (sample fields are filled by the recorder).
    pub record: Record,
    /// Sampling key (trace id hash).
    pub hash: u64,
}

/// Per-call context: the clock reading and the worker's routing state.
pub struct Cx<'a> {
    /// CLOCK_MONOTONIC ns.
    pub now: u64,
    /// The config snapshot, loaded once for this call.
    pub snap: &'a Snapshot,
    /// The worker's round-robin counters (`snap.arm_count` long).
    pub rr: &'a mut Vec<u32>,
    /// The worker's request-id generator.
    pub ids: &'a mut IdGen,
    /// Whether the worker's pool holds an idle connection that could
    /// serve a connect to this address under these cluster limits: one to
    /// the address, or one to the cluster that can be closed to make room.
    pub idle: &'a dyn Fn(SocketAddr, &Breaker) -> bool,
}

impl std::fmt::Debug for Cx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cx")
            .field("now", &self.now)
            .field("generation", &self.snap.generation)
            .finish_non_exhaustive()
    }
}

/// A [`Cx::idle`] for a worker without a pool (tests, fuzzing).
pub fn no_idle(_: SocketAddr, _: &Breaker) -> bool {
    false
}

/// Makes request ids unique per agent run: worker, start time, counter.
#[derive(Debug, Clone)]
pub struct IdGen {
    prefix: u64,
    next: u64,
}

impl IdGen {
    /// A generator for `worker` whose ids differ from other runs by `seed`.
    pub fn new(worker: u32, seed: u64) -> IdGen {
        IdGen {
            prefix: seed ^ (u64::from(worker) << 56),
            next: 0,
        }
    }

    /// The next id: 32 lowercase hex digits, formatted without allocating.
    pub fn next_id(&mut self) -> [u8; 32] {
        self.next += 1;
        let mut id = [0u8; 32];
        crate::http1::hex16(self.prefix, &mut id[..16]);
        crate::http1::hex16(self.next, &mut id[16..]);
        id
    }
}

/// Timestamps of one exchange; 0 = not reached. Missing marks take the next
/// reached one, so time is charged to the phase that was in progress and the
/// phases always sum to the total exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Marks {
    pub start: u64,
    pub head: u64,
    pub upstream: u64,
    pub first_byte: u64,
    pub done: u64,
    /// The client's TLS handshake (ns) that preceded this, the first
    /// exchange of its connection: carved out of the queue phase.
    pub tls_down: u64,
    /// The upstream TLS handshake (ns) of the connection this exchange
    /// opened: carved out of the connect phase (which ends when the
    /// handshake does).
    pub tls_up: u64,
}

impl Marks {
    /// Phases `[queue, connect, tls, first_byte, transfer, write]` and the
    /// total, with the downstream write finishing at `flushed`.
    pub(crate) fn phases(&self, flushed: u64) -> ([u64; PHASES], u64) {
        let flushed = flushed.max(self.start);
        let done = if self.done == 0 { flushed } else { self.done };
        let done = done.clamp(self.start, flushed);
        let fill = |t: u64, next: u64| if t == 0 { next } else { t.min(next) };
        let fb = fill(self.first_byte, done);
        let up = fill(self.upstream, fb);
        let head = fill(self.head, up);
        let head = head.max(self.start);
        let up = up.max(head);
        let fb = fb.max(up);
        let tls_down = self.tls_down.min(head - self.start);
        let tls_up = self.tls_up.min(up - head);
        let p = [
            head - self.start - tls_down,
            up - head - tls_up,
            tls_down + tls_up,
            fb - up,
            done.max(fb) - fb,
            flushed - done.max(fb),
        ];
        (p, flushed - self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_sum_to_total_and_charge_the_phase_in_progress() {
        let m = Marks {
            start: 100,
            head: 110,
            upstream: 130,
            first_byte: 0,
            done: 500,
            ..Marks::default()
        };
        let (p, total) = m.phases(520);
        assert_eq!(p, [10, 20, 0, 370, 0, 20]);
        assert_eq!(p.iter().sum::<u64>(), total);
        // Handshakes are carved out of queue (the client's) and connect
        // (the upstream's), never more than those phases hold.
        let tls = Marks {
            tls_down: 6,
            tls_up: 1000,
            ..m
        };
        let (p, total) = tls.phases(520);
        assert_eq!(p, [4, 0, 26, 370, 0, 20]);
        assert_eq!(p.iter().sum::<u64>(), total);
        let reject = Marks {
            start: 5,
            head: 9,
            done: 9,
            ..Marks::default()
        };
        let (p, total) = reject.phases(12);
        assert_eq!(p, [4, 0, 0, 0, 0, 3]);
        assert_eq!(total, 7);
        // Out-of-order marks never underflow.
        let odd = Marks {
            start: 50,
            head: 40,
            upstream: 90,
            first_byte: 80,
            done: 70,
            tls_down: 7,
            tls_up: 9,
        };
        let (p, total) = odd.phases(60);
        assert_eq!(p.iter().sum::<u64>(), total);
    }

    #[test]
    fn ids_are_unique_and_hex() {
        let mut a = IdGen::new(0, 7);
        let mut b = IdGen::new(1, 7);
        let x = a.next_id();
        assert_eq!(x.len(), 32);
        assert_ne!(x, a.next_id());
        assert_ne!(x, b.next_id());
    }
}
