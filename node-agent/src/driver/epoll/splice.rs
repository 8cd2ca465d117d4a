//! L4 passthrough with splice(2) on the epoll driver: once a session is a
//! plain two-way byte pipe ([`Session::is_raw_tunnel`]), bytes go socket →
//! pipe → socket inside the kernel and never reach user space. Measured on
//! this project's bench host, it cut CPU per GB by about a third against the
//! copy loop (docs/BENCHMARKS.md), so it is on by default; set
//! `TAILMESH_EPOLL_SPLICE=0` to copy instead.
//!
//! Pipes come from a small per-worker pool and go back as soon as they are
//! empty, so an idle tunnel holds no pipe and no extra descriptors. A
//! direction reads from its source only when its pipe is empty, which is
//! also the backpressure: a slow receiver stops the sender's reads.
//!
//! [`Session::is_raw_tunnel`]: crate::proxy::Session::is_raw_tunnel

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};

use rustix::pipe::{PipeFlags, SpliceFlags};

use super::{Down, Slot, Up, Worker};
use crate::driver::core::flow;
use crate::metrics::Driver;

/// Bytes asked of one splice call, and the pipe size asked for.
const CHUNK: usize = 256 * 1024;
/// Empty pipes kept per worker.
const POOL_MAX: usize = 32;

/// One pipe and the bytes sitting in it.
#[derive(Debug)]
pub(super) struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    pending: usize,
}

/// A worker's splice state: on or off, and its empty pipes.
#[derive(Debug)]
pub(super) struct Pipes {
    pub enabled: bool,
    free: Vec<Pipe>,
}

impl Pipes {
    /// On unless `TAILMESH_EPOLL_SPLICE=0`.
    pub fn from_env() -> Pipes {
        let off = std::env::var("TAILMESH_EPOLL_SPLICE").is_ok_and(|v| v.trim() == "0");
        Pipes {
            enabled: !off,
            free: Vec::new(),
        }
    }

    fn take(&mut self) -> io::Result<Pipe> {
        if let Some(p) = self.free.pop() {
            return Ok(p);
        }
        let (r, w) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // A bigger pipe moves more per call; the default 64 KiB also works.
        let _ = rustix::pipe::fcntl_setpipe_size(&w, CHUNK);
        Ok(Pipe { r, w, pending: 0 })
    }

    fn give(&mut self, p: Pipe) {
        if p.pending == 0 && self.free.len() < POOL_MAX {
            self.free.push(p);
        }
    }
}

/// A splicing tunnel's per-direction state (held by its downstream).
#[derive(Debug, Default)]
pub(super) struct Tunnel {
    to_up: Option<Pipe>,
    to_down: Option<Pipe>,
    down_eof: bool,
    up_eof: bool,
    down_shut: bool,
    up_shut: bool,
}

impl Tunnel {
    /// Bytes waiting in the pipe towards the downstream.
    pub fn pending_down(&self) -> bool {
        self.to_down.as_ref().is_some_and(|p| p.pending > 0)
    }

    /// Bytes waiting in the pipe towards the upstream.
    pub fn pending_up(&self) -> bool {
        self.to_up.as_ref().is_some_and(|p| p.pending > 0)
    }
}

/// What one step of one direction did.
enum Step {
    Moved(usize),
    Eof,
    Blocked,
    Failed,
}

fn step(r: rustix::io::Result<usize>) -> Step {
    match r {
        Ok(0) => Step::Eof,
        Ok(n) => Step::Moved(n),
        Err(e) if e == rustix::io::Errno::AGAIN => Step::Blocked,
        Err(e) if e == rustix::io::Errno::INTR => Step::Moved(0),
        Err(_) => Step::Failed,
    }
}

fn fill(src: impl AsFd, p: &mut Pipe) -> Step {
    let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
    let s = step(rustix::pipe::splice(src, None, &p.w, None, CHUNK, flags));
    if let Step::Moved(n) = s {
        p.pending += n;
    }
    s
}

fn drain(p: &mut Pipe, dst: impl AsFd) -> Step {
    let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
    match step(rustix::pipe::splice(
        &p.r, None, dst, None, p.pending, flags,
    )) {
        Step::Moved(n) => {
            p.pending -= n.min(p.pending);
            Step::Moved(n)
        }
        // Writing to a socket never returns 0 for a non-empty pipe; treat it
        // as a failure rather than loop.
        Step::Eof => Step::Failed,
        s => s,
    }
}

/// A session event found while splicing, handled once the slots are free.
enum Event {
    DownEof,
    DownFailed,
    UpEof,
    UpFailed,
}

/// Both ends of down `i`'s tunnel, borrowed together.
fn ends(slab: &mut [Slot], i: usize, j: usize) -> Option<(&mut Down, &mut Up)> {
    if i == j || i.max(j) >= slab.len() {
        return None;
    }
    let (a, b) = if i < j {
        let (l, r) = slab.split_at_mut(j);
        (&mut l[i], &mut r[0])
    } else {
        let (l, r) = slab.split_at_mut(i);
        (&mut r[0], &mut l[j])
    };
    match (a, b) {
        (Slot::Down(d), Slot::Up(u)) => Some((d, u)),
        _ => None,
    }
}

/// Moves one direction as far as it goes: drain the pipe into `dst`, then
/// refill it from `src` while it empties. Returns whether bytes moved and
/// the event that ended it, if any.
#[allow(clippy::too_many_arguments)]
fn pump_dir(
    pipes: &mut Pipes,
    slot: &mut Option<Pipe>,
    src: &impl AsFd,
    src_readable: &mut bool,
    src_eof: &mut bool,
    dst: &impl AsFd,
    dst_writable: &mut bool,
    moved: &mut u64,
) -> (bool, Option<bool>) {
    // Some(true): the source ended; Some(false): a socket failed (the
    // caller knows which side by the direction).
    let mut progress = false;
    loop {
        if let Some(p) = slot.as_mut().filter(|p| p.pending > 0) {
            if !*dst_writable {
                return (progress, None);
            }
            match drain(p, dst) {
                Step::Moved(n) => {
                    *moved += n as u64;
                    progress |= n > 0;
                }
                Step::Blocked => {
                    *dst_writable = false;
                    return (progress, None);
                }
                Step::Eof | Step::Failed => return (progress, Some(false)),
            }
            continue;
        }
        if let Some(p) = slot.take() {
            pipes.give(p);
        }
        if !*src_readable || *src_eof {
            return (progress, None);
        }
        let mut p = match pipes.take() {
            Ok(p) => p,
            Err(_) => return (progress, Some(false)),
        };
        let s = fill(src, &mut p);
        *slot = Some(p);
        match s {
            Step::Moved(n) => progress |= n > 0,
            Step::Eof => {
                *src_eof = true;
                return (progress, Some(true));
            }
            Step::Blocked => {
                *src_readable = false;
                return (progress, None);
            }
            Step::Failed => return (progress, Some(false)),
        }
    }
}

impl Worker {
    /// Starts splicing down `i`'s tunnel if it can: splice is on, the
    /// session is a raw tunnel, and nothing waits in either user-space queue
    /// (so byte order is kept). Returns whether it did.
    pub(super) fn try_start_splice(&mut self, i: usize) -> bool {
        if !self.pipes.enabled {
            return false;
        }
        let Some(Slot::Down(d)) = self.slab.get(i) else {
            return false;
        };
        let Some(j) = d.up else {
            return false;
        };
        if d.tunnel.is_some()
            || d.tls.is_some()
            || !d.q.is_empty()
            || d.shut_wr
            || !d.session.is_raw_tunnel()
        {
            return false;
        }
        match self.slab.get(j) {
            Some(Slot::Up(u)) if u.connected && u.q.is_empty() && !u.shut_wr && u.tls.is_none() => {
            }
            _ => return false,
        }
        // One pipe now proves pipes can be made; it goes back to the pool.
        match self.pipes.take() {
            Ok(p) => self.pipes.give(p),
            Err(_) => {
                self.core.stats().driver(Driver::SpliceFallbacks, 1);
                self.pipes.enabled = false;
                return false;
            }
        }
        if let Some(Slot::Down(d)) = self.slab.get_mut(i) {
            d.tunnel = Some(Box::default());
        }
        true
    }

    /// Moves down `i`'s spliced tunnel both ways until nothing can move,
    /// then passes EOFs and failures to the session and shuts write sides
    /// once their pipes are empty.
    pub(super) fn splice_pump(&mut self, i: usize) {
        let Some(Slot::Down(d)) = self.slab.get(i) else {
            return;
        };
        let Some(j) = d.up else {
            return;
        };
        let mut events = Vec::new();
        let mut moved = 0u64;
        let mut first_up = false;
        {
            let Some((d, u)) = ends(&mut self.slab, i, j) else {
                return;
            };
            let Some(t) = d.tunnel.as_deref_mut() else {
                return;
            };
            loop {
                let (a, end_a) = pump_dir(
                    &mut self.pipes,
                    &mut t.to_up,
                    &d.sock,
                    &mut d.readable,
                    &mut t.down_eof,
                    &u.sock,
                    &mut u.writable,
                    &mut moved,
                );
                let before = moved;
                let (b, end_b) = pump_dir(
                    &mut self.pipes,
                    &mut t.to_down,
                    &u.sock,
                    &mut u.readable,
                    &mut t.up_eof,
                    &d.sock,
                    &mut d.writable,
                    &mut moved,
                );
                first_up |= moved > before || t.pending_down();
                match end_a {
                    Some(true) => events.push(Event::DownEof),
                    Some(false) => events.push(Event::DownFailed),
                    None => {}
                }
                match end_b {
                    Some(true) => events.push(Event::UpEof),
                    Some(false) => events.push(Event::UpFailed),
                    None => {}
                }
                if !events.is_empty() || !(a || b) {
                    break;
                }
            }
        }
        self.core.stats().driver(Driver::SplicedBytes, moved);
        if (moved > 0 || first_up)
            && let Some(Slot::Down(d)) = self.slab.get_mut(i)
        {
            d.session.on_tunnel_bytes(self.core.now, first_up);
        }
        for ev in events {
            match ev {
                Event::DownEof => flow::with_session(self, i, |s, cx, out| s.on_down_eof(cx, out)),
                Event::UpEof => {
                    flow::with_session(self, i, |s, cx, out| s.on_up_eof(cx, false, out))
                }
                Event::DownFailed => {
                    flow::kill_down(self, i);
                    return;
                }
                Event::UpFailed => {
                    flow::up_eof(self, j, i, true);
                }
            }
        }
        self.splice_shutdowns(i);
        self.sync_interest(i);
        if let Some(Slot::Down(d)) = self.slab.get(i)
            && let Some(j) = d.up
        {
            self.sync_interest(j);
        }
    }

    /// Shuts a write side the session asked to shut once its pipe is empty.
    fn splice_shutdowns(&mut self, i: usize) {
        let Some(Slot::Down(d)) = self.slab.get(i) else {
            return;
        };
        let j = d.up;
        let Some((d, u)) = j.and_then(|j| ends(&mut self.slab, i, j)) else {
            // The upstream is gone: only the downstream side is left.
            if let Some(Slot::Down(d)) = self.slab.get_mut(i)
                && let Some(t) = d.tunnel.as_deref_mut()
                && d.shut_wr
                && !t.down_shut
                && !t.pending_down()
            {
                let _ = d.sock.shutdown(Shutdown::Write);
                t.down_shut = true;
            }
            return;
        };
        let Some(t) = d.tunnel.as_deref_mut() else {
            return;
        };
        if d.shut_wr && !t.down_shut && !t.pending_down() {
            let _ = d.sock.shutdown(Shutdown::Write);
            t.down_shut = true;
        }
        if u.shut_wr && !t.up_shut && !t.pending_up() {
            let _ = u.sock.shutdown(Shutdown::Write);
            t.up_shut = true;
        }
    }
}
