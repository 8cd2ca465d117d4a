//! One load-generator thread: a mio loop over its share of connections.
//!
//! Open loop (`rate` set): connection `g` of `n` sends its k-th request at
//! `start + (g/n + k) * n/rate`. A request that cannot leave on time (its
//! connection is still busy) leaves as soon as it can, and its latency is
//! still measured from the intended time, so a stall shows up in every
//! request scheduled during it (coordinated-omission correction, as wrk2).
//! Closed loop: each connection sends as soon as the previous response ends.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::http1::{self, BodyReader, ResponseHead};
use crate::load::report::Stats;
use crate::rng::Rng;

/// What one thread is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Target.
    pub addr: SocketAddr,
    /// Prebuilt request bytes per type.
    pub requests: Vec<Vec<u8>>,
    /// Cumulative weights per type.
    pub cumulative: Vec<u64>,
    /// Index of this thread's first connection among all connections.
    pub first_conn: usize,
    /// This thread's connections.
    pub conns: usize,
    /// All connections over all threads.
    pub total_conns: usize,
    /// Total requests per second over all threads (open loop), or None.
    pub rate: Option<f64>,
    /// When sending starts.
    pub start: Instant,
    /// When sending stops.
    pub end: Instant,
    /// Most requests this thread sends.
    pub max_requests: u64,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Width of a timeline bucket.
    pub step: Duration,
    /// Requests are HEAD (no response bodies).
    pub head: bool,
    /// RNG seed.
    pub seed: u64,
}

const CONNECT: usize = 0;
const RESET: usize = 1;
const TIMEOUT: usize = 2;
const PROTOCOL: usize = 3;
const CLOSED: usize = 4;
const STATUS_5XX: usize = 5;
const STATUS_4XX: usize = 6;

#[derive(Debug)]
struct InFlight {
    ty: usize,
    intended: Instant,
    sent: Instant,
    wpos: usize,
    head: Option<ResponseHead>,
    body: Option<BodyReader>,
}

#[derive(Debug)]
enum Phase {
    Down { retry_at: Instant },
    Connecting { since: Instant },
    Idle,
    Busy(InFlight),
}

#[derive(Debug)]
struct Conn {
    stream: Option<TcpStream>,
    phase: Phase,
    rbuf: Vec<u8>,
    rlen: usize,
    next_intended: Instant,
}

/// Runs the plan; returns what was measured.
pub fn run(plan: &Plan) -> io::Result<Stats> {
    // Wake-ups end within ~1 µs of their deadline instead of the default
    // 50 µs timer slack, which would otherwise add to open-loop latencies.
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
    let mut poll = Poll::new()?;
    let mut waker = Waker::new(&poll)?;
    let mut events = Events::with_capacity(1024);
    let mut stats = Stats::new(plan.requests.len(), plan.step);
    let mut rng = Rng::new(plan.seed);
    let interval = plan
        .rate
        .map(|r| Duration::from_secs_f64(plan.total_conns as f64 / r.max(1e-9)));
    let mut conns: Vec<Conn> = (0..plan.conns)
        .map(|i| {
            let g = (plan.first_conn + i) as f64 / plan.total_conns.max(1) as f64;
            Conn {
                stream: None,
                phase: Phase::Down {
                    retry_at: plan.start,
                },
                rbuf: vec![0; 16 * 1024],
                rlen: 0,
                next_intended: plan.start + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(g)),
            }
        })
        .collect();
    let total_weight = plan.cumulative.last().copied().unwrap_or(1).max(1);
    let mut sent = 0u64;
    let drain_until = plan.end + plan.timeout.min(Duration::from_secs(5));
    loop {
        let now = Instant::now();
        let sending = now < plan.end && sent < plan.max_requests;
        let mut wake = now + Duration::from_millis(100);
        let mut busy = 0;
        for (i, c) in conns.iter_mut().enumerate() {
            match &c.phase {
                Phase::Down { retry_at } if sending => {
                    if now >= *retry_at {
                        connect(&poll, c, i, plan, now, &mut stats);
                    } else {
                        wake = wake.min(*retry_at);
                    }
                }
                Phase::Connecting { since } if now.duration_since(*since) > plan.timeout => {
                    stats.error(CONNECT, bucket(plan, now));
                    drop_conn(&poll, c, now + Duration::from_millis(10));
                }
                Phase::Idle if sending && sent < plan.max_requests => {
                    let intended = if interval.is_some() {
                        c.next_intended
                    } else {
                        now
                    };
                    if intended > now {
                        wake = wake.min(intended);
                        continue;
                    }
                    let r = rng.next_u64() % total_weight;
                    let ty = plan.cumulative.iter().position(|&w| r < w).unwrap_or(0);
                    if let Some(iv) = interval {
                        c.next_intended += iv;
                        let _ = stats
                            .send_lag
                            .record(now.duration_since(intended).as_nanos().max(1) as u64);
                    }
                    sent += 1;
                    c.phase = Phase::Busy(InFlight {
                        ty,
                        intended,
                        sent: now,
                        wpos: 0,
                        head: None,
                        body: None,
                    });
                    if !write_request(c, &plan.requests[ty]) {
                        stats.error(RESET, bucket(plan, intended));
                        drop_conn(&poll, c, now);
                    }
                }
                Phase::Busy(f) => {
                    busy += 1;
                    let deadline = f.sent + plan.timeout;
                    if now >= deadline {
                        stats.error(TIMEOUT, bucket(plan, f.intended));
                        drop_conn(&poll, c, now);
                    } else {
                        wake = wake.min(deadline);
                    }
                }
                _ => {}
            }
        }
        if !sending && (busy == 0 || now >= drain_until) {
            // Whatever is still in flight at the drain deadline timed out.
            for c in &conns {
                if let Phase::Busy(f) = &c.phase {
                    stats.error(TIMEOUT, bucket(plan, f.intended));
                }
            }
            return Ok(stats);
        }
        if !sending {
            wake = wake.min(drain_until);
        }
        waker.wait(&mut poll, &mut events, wake)?;
        for ev in events.iter() {
            if ev.token() == Token(TIMER) {
                waker.fired();
                continue;
            }
            let Some(c) = conns.get_mut(ev.token().0) else {
                continue;
            };
            on_event(&poll, c, plan, &mut stats)?;
        }
    }
}

/// Token of the wake-up timer.
const TIMER: usize = usize::MAX;

/// A timerfd in the poll set: epoll's own timeout has 1 ms granularity,
/// which would add up to 1 ms of schedule error to open-loop latencies, and
/// sleeping instead would delay the handling of responses.
///
/// Each call costs a syscall (~9 µs on a nested VM), and the generator
/// shares the host with what it measures: the timer is armed only when
/// its deadline changes, and drained only when it fired (it was 2.6 of
/// the ~7 syscalls per request at 8k requests/s).
struct Waker {
    fd: std::os::fd::OwnedFd,
    /// The deadline the timer is armed for and has not fired at yet.
    armed: Option<Instant>,
}

impl Waker {
    fn new(poll: &Poll) -> io::Result<Waker> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        use std::os::fd::AsRawFd;
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            Token(TIMER),
            Interest::READABLE,
        )?;
        Ok(Waker { fd, armed: None })
    }

    /// Waits for socket events or `wake`, whichever comes first.
    fn wait(&mut self, poll: &mut Poll, events: &mut Events, wake: Instant) -> io::Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        let left = wake.saturating_duration_since(Instant::now());
        let timeout = if left.is_zero() {
            Duration::ZERO
        } else {
            if self.armed != Some(wake) {
                let spec = Itimerspec {
                    it_interval: Timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    },
                    it_value: Timespec {
                        tv_sec: left.as_secs() as i64,
                        tv_nsec: i64::from(left.subsec_nanos()),
                    },
                };
                timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec)?;
                self.armed = Some(wake);
            }
            left + Duration::from_millis(5) // the timerfd fires first; this is a backstop
        };
        match poll.poll(events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The timer's event came: drain it, so that the next arming produces
    /// a fresh edge (the poll is edge-triggered), and arm it again next.
    fn fired(&mut self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut buf);
        self.armed = None;
    }
}

/// The timeline bucket of `t`.
fn bucket(plan: &Plan, t: Instant) -> usize {
    let since = t.saturating_duration_since(plan.start).as_nanos();
    usize::try_from(since / plan.step.as_nanos().max(1)).unwrap_or(usize::MAX)
}

fn connect(poll: &Poll, c: &mut Conn, i: usize, plan: &Plan, now: Instant, stats: &mut Stats) {
    match TcpStream::connect(plan.addr) {
        Ok(mut s) => {
            let _ = s.set_nodelay(true);
            if poll
                .registry()
                .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)
                .is_ok()
            {
                c.stream = Some(s);
                c.rlen = 0;
                c.phase = Phase::Connecting { since: now };
                return;
            }
            stats.error(CONNECT, bucket(plan, now));
        }
        Err(_) => stats.error(CONNECT, bucket(plan, now)),
    }
    c.phase = Phase::Down {
        retry_at: now + Duration::from_millis(10),
    };
}

fn drop_conn(poll: &Poll, c: &mut Conn, retry_at: Instant) {
    if let Some(mut s) = c.stream.take() {
        let _ = poll.registry().deregister(&mut s);
    }
    c.rlen = 0;
    c.phase = Phase::Down { retry_at };
}

/// Writes as much of the request as the socket takes; false on error.
fn write_request(c: &mut Conn, req: &[u8]) -> bool {
    let (Some(s), Phase::Busy(f)) = (c.stream.as_mut(), &mut c.phase) else {
        return false;
    };
    while f.wpos < req.len() {
        match s.write(&req[f.wpos..]) {
            Ok(0) => return false,
            Ok(n) => f.wpos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

fn on_event(poll: &Poll, c: &mut Conn, plan: &Plan, stats: &mut Stats) -> io::Result<()> {
    let now = Instant::now();
    if let Phase::Connecting { .. } = c.phase {
        let (err, connected) = match &c.stream {
            Some(s) => (s.take_error().ok().flatten(), s.peer_addr().is_ok()),
            None => (None, false),
        };
        if err.is_some() {
            stats.error(CONNECT, bucket(plan, now));
            drop_conn(poll, c, now + Duration::from_millis(10));
            return Ok(());
        }
        if !connected {
            return Ok(()); // not yet: wait for the next event
        }
        c.phase = Phase::Idle;
    }
    if let Phase::Busy(f) = &c.phase {
        let ty = f.ty;
        if !write_request(c, &plan.requests[ty]) {
            let intended = if let Phase::Busy(f) = &c.phase {
                f.intended
            } else {
                now
            };
            stats.error(RESET, bucket(plan, intended));
            drop_conn(poll, c, now);
            return Ok(());
        }
    }
    // Read everything available; a full buffer is drained into the body
    // reader first, and grows only while the head is incomplete.
    let mut eof = false;
    let mut reset = false;
    loop {
        if c.rlen == c.rbuf.len() {
            progress(poll, c, plan, stats, now);
            if c.rlen == c.rbuf.len() {
                if c.rbuf.len() >= 1 << 20 {
                    stats.error(PROTOCOL, bucket(plan, now));
                    drop_conn(poll, c, now);
                    return Ok(());
                }
                c.rbuf.resize(c.rbuf.len() * 2, 0);
            }
        }
        let Some(s) = c.stream.as_mut() else { break };
        match s.read(&mut c.rbuf[c.rlen..]) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => c.rlen += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                reset = true;
                break;
            }
        }
    }
    progress(poll, c, plan, stats, now);
    if reset || eof {
        if let Phase::Busy(f) = &c.phase {
            stats.error(if reset { RESET } else { CLOSED }, bucket(plan, f.intended));
        }
        if c.stream.is_some() {
            drop_conn(poll, c, now);
        }
    }
    Ok(())
}

/// Advances the in-flight response with the bytes in the read buffer.
fn progress(poll: &Poll, c: &mut Conn, plan: &Plan, stats: &mut Stats, now: Instant) {
    let Phase::Busy(f) = &mut c.phase else {
        c.rlen = 0; // bytes nobody asked for: discard
        return;
    };
    if f.head.is_none() {
        match http1::parse_response(&c.rbuf[..c.rlen], plan.head) {
            Ok(Some(h)) => {
                c.rbuf.copy_within(h.len..c.rlen, 0);
                c.rlen -= h.len;
                f.body = Some(BodyReader::new(h.body));
                f.head = Some(h);
            }
            Ok(None) => return,
            Err(_) => {
                stats.error(PROTOCOL, bucket(plan, f.intended));
                drop_conn(poll, c, now);
                return;
            }
        }
    }
    let Some(body) = f.body.as_mut() else { return };
    match body.consume(&c.rbuf[..c.rlen]) {
        Ok(used) => {
            c.rbuf.copy_within(used..c.rlen, 0);
            c.rlen -= used;
        }
        Err(_) => {
            stats.error(PROTOCOL, bucket(plan, f.intended));
            drop_conn(poll, c, now);
            return;
        }
    }
    if !body.done() {
        return;
    }
    let done = Instant::now();
    let s = bucket(plan, f.intended);
    let corrected = done.duration_since(f.intended).as_nanos() as u64;
    let uncorrected = done.duration_since(f.sent).as_nanos() as u64;
    stats.record(f.ty, corrected, uncorrected, s);
    let (status, close) = f.head.map_or((0, true), |h| (h.status, h.close));
    if status >= 500 {
        stats.error(STATUS_5XX, s);
    } else if status >= 400 {
        stats.error(STATUS_4XX, s);
    }
    if close {
        drop_conn(poll, c, now);
    } else {
        c.phase = Phase::Idle;
    }
}
