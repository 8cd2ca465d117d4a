//! The io_uring driver: one ring per worker (SINGLE_ISSUER | DEFER_TASKRUN
//! | COOP_TASKRUN where the kernel has them), multishot accept on the
//! worker's SO_REUSEPORT listeners, multishot recv into a provided-buffer
//! ring (an idle connection holds no buffer), sends straight from the
//! receive buffer the bytes arrived in (a rewritten head goes as a separate
//! small buffer in the same `sendmsg`), connects with a linked timeout, and
//! one `io_uring_enter` per loop turn that both submits and waits.
//!
//! Every operation's `user_data` is `slot << 8 | op`. A slot is freed only
//! when none of its operations is in flight, so a completion always finds
//! its slot, and memory handed to the kernel outlives the operation.
//! `-ENOBUFS`, CQ overflow and short sends are counted in the metrics;
//! the first two also write a `ring_full` event (`b` = 2 for an empty
//! buffer ring, 1 for CQ overflow).

mod bufs;
mod conns;
mod io;
mod ops;

use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};
use ringlog::record::{Event, EventKind};

use self::bufs::{Bufs, GROUP};
use self::io::{Io, Tx};
use super::core::Core;
use super::core::flow;
use super::{DriverError, Slab};
use crate::metrics::Driver;
use crate::proxy::{Chunk, Connect, Session};
use crate::worker::WorkerInit;

/// Submission queue entries per ring.
const ENTRIES: u32 = 1024;
/// Provided receive buffers per worker, and their size (4 MiB in all,
/// resident from the start). 32 KiB measured best for bulk transfer per
/// CPU among 16/32/64 KiB (docs/BENCHMARKS.md).
const BUF_COUNT: u16 = 128;
const BUF_SIZE: usize = 32 * 1024;
/// Provided buffers a bulk read never takes: kept for small reads
/// (request heads, small responses), see `Worker::arm_recv`.
const BULK_RESERVE: usize = 32;
/// Receive buffers a loop turn copies out of stalled connections at most
/// (see [`Worker::spill_stalled`]): 512 KiB, ~0.1 ms of copying.
const SPILL_PER_TURN: usize = 16;
/// Slots a loop turn looks at for stalled connections at most.
const SPILL_SCAN_PER_TURN: usize = 256;
/// Received buffers a connection may hold before its recv is paused.
const RX_CAP: usize = 4;

const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_CONNECT: u64 = 4;
const OP_LINK_TIMEOUT: u64 = 5;
const OP_CANCEL: u64 = 6;
const OP_POLL_OUT: u64 = 7;
const OP_WAKE: u64 = 8;

fn ud(slot: usize, op: u64) -> u64 {
    (slot as u64) << 8 | op
}

#[derive(Debug)]
struct Listener {
    sock: socket2::Socket,
    idx: usize,
    /// The address it is bound to.
    bind: std::net::SocketAddr,
    armed: bool,
    /// Not re-armed after an accept error until the core resumes it.
    paused: bool,
    inflight: u32,
    closing: bool,
}

#[derive(Debug)]
struct Down {
    io: Io,
    session: Session,
    up: Option<usize>,
    close: bool,
    serial: u64,
    armed: Option<u64>,
}

#[derive(Debug)]
struct Up {
    io: Io,
    owner: Option<usize>,
    connected: bool,
    connecting: bool,
    close_when_flushed: bool,
    /// Address, pool idle time and `max_connections` slot.
    target: crate::driver::core::flow::UpTarget,
}

#[derive(Debug, Default)]
enum Slot {
    #[default]
    Free,
    Listener(Listener),
    Down(Box<Down>),
    Up(Box<Up>),
}

/// One worker's io_uring loop.
pub struct Worker {
    /// Closed before the buffers it points into (see the `Drop` impl).
    ring: std::mem::ManuallyDrop<IoUring>,
    bufs: std::mem::ManuallyDrop<Bufs>,
    core: Core,
    slab: Slab<Slot>,
    cqes: Vec<(u64, i32, u32)>,
    /// Sockets whose recv stopped on an empty buffer ring: re-armed once
    /// per loop turn, after the turn's buffers went back.
    starved: Vec<usize>,
    /// Sends of at least this many bytes use SendMsgZc (0: never). Off by
    /// default: it measured slower here (docs/BENCHMARKS.md); set
    /// `TAILMESH_URING_SENDZC_MIN=BYTES` to measure it again.
    zc_min: usize,
    /// Entries waiting for room in the SQ (see [`Worker::push`]).
    pending: std::collections::VecDeque<Pending>,
    /// Ciphertext of a TLS socket's receive, copied out so its buffer
    /// goes back before the core opens it (reused).
    cipher: Vec<u8>,
    /// Buffers this turn may still copy out of stalled connections.
    spill_left: usize,
    /// Where the next turn's scan for stalled connections starts.
    spill_next: usize,
    /// Connections the multishot accept took that wait to be set up
    /// (listener index, socket), oldest first: see `core::accepts`.
    accepted: std::collections::VecDeque<(usize, socket2::Socket)>,
}

impl Drop for Worker {
    /// Closes the ring, then frees the receive buffers and the slots whose
    /// memory (msghdr, iovecs, sockaddrs) operations point into, but only
    /// if every operation completed (`shutdown_all` waits up to 1 s). If
    /// one did not, the kernel may still write into that memory after the
    /// ring fd closes (its teardown runs asynchronously), so both are
    /// leaked on purpose: a few MiB once, at exit, against a use after free.
    fn drop(&mut self) {
        let clean = self.slab.iter().all(|s| matches!(s, Slot::Free));
        // SAFETY: `ring` is dropped exactly once, here, and not used after.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.ring) };
        if clean {
            // SAFETY: dropped exactly once; the ring that registered the
            // buffers is closed and no operation is in flight.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.bufs) };
        } else {
            std::mem::forget(std::mem::take(&mut self.slab));
        }
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("uring::Worker")
            .field("worker", &self.core.id)
            .field("slots", &self.slab.len())
            .finish_non_exhaustive()
    }
}

fn setup(what: &str) -> impl FnOnce(std::io::Error) -> DriverError + '_ {
    move |source| DriverError::Setup {
        what: what.to_string(),
        source,
    }
}

/// Submission entries that did not fit in the SQ: sent at the next
/// `enter`, in order. A linked pair (connect + its timeout) stays together.
#[derive(Debug)]
enum Pending {
    One(squeue::Entry),
    Linked(squeue::Entry, squeue::Entry),
}

/// Puts `entries` on the SQ if they all fit; false (nothing pushed) if not.
fn try_push(ring: &mut IoUring, entries: &[&squeue::Entry]) -> bool {
    let mut sq = ring.submission();
    if sq.capacity() - sq.len() < entries.len() {
        return false;
    }
    for e in entries {
        // SAFETY: every pointer in an entry built by this driver (msghdr and
        // iovecs, sockaddr, timespec, the buffer ring) lives in a slot or in
        // `Bufs`, and neither is freed while the operation is in flight
        // (slots are freed only when their in-flight count is 0; the ring is
        // dropped before the buffers, and leaked if operations never end).
        if unsafe { sq.push(e) }.is_err() {
            return false; // unreachable: the room was checked above
        }
    }
    true
}

fn build_ring() -> std::io::Result<IoUring> {
    let fast = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_cqsize(ENTRIES * 4)
        .build(ENTRIES);
    match fast {
        Ok(r) => Ok(r),
        // Older kernels lack DEFER_TASKRUN (6.1) or SINGLE_ISSUER (6.0).
        Err(_) => IoUring::builder().setup_cqsize(ENTRIES * 4).build(ENTRIES),
    }
}

impl Worker {
    /// A worker serving `listeners` (listener index, bound socket). Must be
    /// called on the thread that will run it (the ring is single-issuer).
    pub fn new(
        init: WorkerInit,
        listeners: Vec<(usize, std::net::TcpListener)>,
    ) -> Result<Worker, DriverError> {
        let ring = build_ring().map_err(setup("creating the io_uring instance"))?;
        let bufs = Bufs::new(BUF_COUNT, BUF_SIZE).map_err(|e| DriverError::Setup {
            what: e.to_string(),
            source: std::io::Error::other("buffer ring"),
        })?;
        let (addr, count) = bufs.ring_addr();
        // SAFETY: the ring memory belongs to `bufs`, which the worker keeps
        // until after the io_uring instance is dropped (field order).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(addr, count, GROUP, 0)
        }
        .map_err(setup(
            "registering the provided-buffer ring (needs Linux 5.19)",
        ))?;
        let mut w = Worker {
            ring: std::mem::ManuallyDrop::new(ring),
            bufs: std::mem::ManuallyDrop::new(bufs),
            core: Core::new(init),
            slab: Slab::new(),
            cqes: Vec::with_capacity(256),
            starved: Vec::new(),
            spill_left: SPILL_PER_TURN,
            spill_next: 0,
            accepted: std::collections::VecDeque::new(),
            zc_min: std::env::var("TAILMESH_URING_SENDZC_MIN")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            pending: std::collections::VecDeque::new(),
            cipher: Vec::new(),
        };
        for (idx, l) in listeners {
            w.add_listener(idx, l)
                .map_err(setup("reading a listener's address"))?;
        }
        Ok(w)
    }

    fn alloc(&mut self) -> usize {
        self.slab.alloc()
    }

    /// Serves until drained.
    pub fn run(mut self) -> Result<(), DriverError> {
        self.core
            .shared
            .ready_workers
            .fetch_add(1, Ordering::SeqCst);
        self.arm_wake();
        loop {
            self.enter(self.core.wait_timeout())?;
            self.core.begin_turn();
            self.spill_left = SPILL_PER_TURN;
            self.set_up_accepted();
            self.reap();
            self.core.resume_waiting();
            self.run_todo();
            self.fire_timers();
            self.spill_stalled();
            self.bufs.publish();
            // Re-arm recvs that found the buffer ring empty only once a
            // buffer is back: re-arming into an empty ring would complete
            // with ENOBUFS at once, every turn, a busy loop.
            if self.bufs.in_use() < usize::from(BUF_COUNT) {
                for i in std::mem::take(&mut self.starved) {
                    if let Some(io) = self.io_mut(i) {
                        io.starved = false;
                    }
                    self.arm_recv(i);
                }
            }
            if flow::end_turn(&mut self) {
                break;
            }
            self.core.stats().set_bufs_in_use(self.bufs.in_use() as u64);
        }
        self.shutdown_all();
        self.core.stats().set_active(0, 0);
        Ok(())
    }

    /// Queues one SQE. A full SQ is submitted once (without waiting); if
    /// the kernel still takes nothing (a CQ overflow makes it refuse with
    /// EBUSY), the entry waits in `pending` for the next loop turn, whose
    /// reaping makes room: submission never spins.
    fn push(&mut self, e: &squeue::Entry) {
        if self.pending.is_empty() && self.push_now(&[e]) {
            return;
        }
        self.pending.push_back(Pending::One(e.clone()));
    }

    /// Queues a linked pair in the same submission (see [`Worker::push`]).
    fn push_linked(&mut self, a: &squeue::Entry, b: &squeue::Entry) {
        if self.pending.is_empty() && self.push_now(&[a, b]) {
            return;
        }
        self.pending
            .push_back(Pending::Linked(a.clone(), b.clone()));
    }

    fn push_now(&mut self, entries: &[&squeue::Entry]) -> bool {
        if try_push(&mut self.ring, entries) {
            return true;
        }
        if self.ring.submit().is_err() {
            self.core.stats().driver(Driver::SqFull, 1);
            return false;
        }
        let ok = try_push(&mut self.ring, entries);
        if !ok {
            self.core.stats().driver(Driver::SqFull, 1);
        }
        ok
    }

    /// Moves waiting entries onto the SQ while they fit.
    fn flush_pending(&mut self) {
        while let Some(p) = self.pending.front() {
            let ok = match p {
                Pending::One(e) => try_push(&mut self.ring, &[e]),
                Pending::Linked(a, b) => try_push(&mut self.ring, &[a, b]),
            };
            if !ok {
                return;
            }
            self.pending.pop_front();
        }
    }

    /// Submits everything queued and waits for a completion or `timeout`:
    /// one `io_uring_enter`.
    fn enter(&mut self, timeout: Duration) -> Result<(), DriverError> {
        self.flush_pending();
        let timeout = if self.pending.is_empty() {
            timeout
        } else {
            Duration::ZERO // entries still wait: reap and come back at once
        };
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(setup("io_uring_enter")(e)),
        }
    }

    fn reap(&mut self) {
        if self.ring.submission().cq_overflow() {
            self.core.stats().driver(Driver::CqOverflow, 1);
            // CQ overflow: on the timeline as ring_full, b = 1.
            let mut ev = Event::new(EventKind::RingFull, self.core.now);
            ev.a = 1;
            ev.b = 1;
            self.core.event(&ev);
        }
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(user_data, res, flags) in &cqes {
            if user_data == ud(0, OP_WAKE) {
                // The turn that just began took the new snapshot.
                self.core.wake.drain();
                // A failed poll is not re-armed (that could spin): the
                // worker then sees changes at its next timeout.
                if res >= 0 && !cqueue::more(flags) {
                    self.arm_wake();
                }
                continue;
            }
            let slot = (user_data >> 8) as usize;
            match user_data & 0xff {
                OP_ACCEPT => self.on_accept(slot, res, flags),
                OP_RECV => self.on_recv(slot, res, flags),
                OP_SEND => self.on_send(slot, res, flags),
                OP_CONNECT => self.on_connect(slot, res),
                OP_POLL_OUT => self.on_writable(slot),
                _ => self.dec(slot), // link timeout or cancel
            }
            self.maybe_free(slot);
        }
        cqes.clear();
        self.cqes = cqes;
    }

    /// Waits for the wake-up socket (a multishot poll; no memory of ours
    /// is involved, so it may still be armed when the ring closes).
    fn arm_wake(&mut self) {
        let e = opcode::PollAdd::new(Fd(self.core.wake.fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(ud(0, OP_WAKE));
        self.push(&e);
    }

    fn io_mut(&mut self, i: usize) -> Option<&mut Io> {
        match self.slab.get_mut(i)? {
            Slot::Down(d) => Some(&mut d.io),
            Slot::Up(u) => Some(&mut u.io),
            _ => None,
        }
    }

    fn dec(&mut self, i: usize) {
        match self.slab.get_mut(i) {
            Some(Slot::Listener(l)) => l.inflight = l.inflight.saturating_sub(1),
            Some(Slot::Down(d)) => d.io.inflight = d.io.inflight.saturating_sub(1),
            Some(Slot::Up(u)) => u.io.inflight = u.io.inflight.saturating_sub(1),
            _ => {}
        }
    }

    /// Frees a closing slot once nothing of it is in flight.
    fn maybe_free(&mut self, i: usize) {
        let done = match self.slab.get_mut(i) {
            Some(Slot::Listener(l)) => l.closing && l.inflight == 0,
            Some(Slot::Down(d)) => d.io.closing && d.io.inflight == 0,
            Some(Slot::Up(u)) => u.io.closing && u.io.inflight == 0,
            _ => false,
        };
        if done {
            match std::mem::replace(&mut self.slab[i], Slot::Free) {
                Slot::Down(mut d) => d.io.release_all(&mut self.bufs),
                Slot::Up(mut u) => u.io.release_all(&mut self.bufs),
                _ => {}
            }
            self.slab.release(i);
        }
    }
}
