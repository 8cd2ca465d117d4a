//! What workers share (config snapshot, ring, drain flag, counters) and
//! what each owns beside its driver: the [`Recorder`] that samples finished
//! requests into the worker's ring shard.

pub mod wake;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use ringlog::record::{Event, EventKind, Flags};
use ringlog::sampler::{Sampler, SamplerConfig, TypeRule};
use ringlog::writer::{RingWriter, ShardWriter};

use crate::config::schema::Sampling;
use crate::metrics::WorkerStats;
use crate::proxy::Finished;
use crate::snapshot::Snapshot;

/// The I/O backend in use (numbering as in the ring's `io_fallback` event).
pub const BACKEND_URING: u32 = 1;
/// The epoll backend.
pub const BACKEND_EPOLL: u32 = 2;

/// State shared by all workers and the control plane.
#[derive(Debug)]
pub struct Shared {
    /// The config snapshot (loaded once per connection / event batch).
    pub snapshot: ArcSwap<Snapshot>,
    /// The flight recorder.
    pub ring: RingWriter,
    /// Set by SIGTERM / SIGINT: stop accepting, finish in-flight requests.
    pub draining: AtomicBool,
    /// Workers that bound their listeners and are serving.
    pub ready_workers: AtomicUsize,
    /// Workers that have exited.
    pub exited_workers: AtomicUsize,
    /// One counter block per worker.
    pub stats: Vec<WorkerStats>,
    /// [`BACKEND_URING`] or [`BACKEND_EPOLL`].
    pub backend: AtomicU32,
    /// `--io auto` fell back to epoll.
    pub fell_back: AtomicBool,
    /// Configs rejected.
    pub config_rejected: AtomicU64,
    /// SO_MARK for upstream sockets (0 = none).
    pub upstream_mark: u32,
    /// Most open client connections on the agent (`--max-connections`).
    pub max_connections: u64,
    /// Open client connections, all workers.
    pub open_connections: AtomicU64,
    /// Open client connections per listener index, all workers.
    pub listener_open: Vec<AtomicU64>,
    /// Config reloads applied.
    pub config_applied: AtomicU64,
    /// The config source's revision of the running snapshot (etcd's
    /// revision; 0 for a file).
    pub source_revision: AtomicU64,
    /// The config source is reachable (always true for a file; for etcd,
    /// whether a watch is established).
    pub source_connected: AtomicBool,
    /// Events of the control thread (config applied or rejected) for the
    /// next worker that ends a loop turn to put on its ring shard (a shard
    /// has one writer).
    pub control_events: std::sync::Mutex<Vec<ringlog::record::Event>>,
    /// `control_events` holds something.
    pub control_pending: AtomicBool,
    /// The node's mesh identity (None: not configured, or none loaded
    /// yet). Swapped by the identity watcher; a handshake takes the one
    /// current when it starts.
    pub identity: arc_swap::ArcSwapOption<crate::tls::Identity>,
    /// Identity file reloads: [applied, rejected].
    pub identity_reloads: [AtomicU64; 2],
    /// One per worker: wakes it to take a new snapshot or the drain now.
    pub bells: Vec<wake::Bell>,
}

impl Shared {
    /// Queues a control-thread event for the ring.
    pub fn control_event(&self, ev: ringlog::record::Event) {
        // A poisoned lock holds a complete list: use it.
        self.control_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(ev);
        self.control_pending.store(true, Ordering::Release);
    }

    /// Takes the queued control-thread events (cheap when there are none).
    pub fn take_control_events(&self) -> Vec<ringlog::record::Event> {
        if !self.control_pending.load(Ordering::Relaxed)
            || !self.control_pending.swap(false, Ordering::AcqRel)
        {
            return Vec::new();
        }
        std::mem::take(
            &mut *self
                .control_events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Wakes every worker (a new snapshot, the drain).
    pub fn wake_workers(&self) {
        for b in &self.bells {
            b.ring();
        }
    }

    /// True while draining.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Name of the active backend.
    pub fn backend_name(&self) -> &'static str {
        if self.backend.load(Ordering::Relaxed) == BACKEND_URING {
            "uring"
        } else {
            "epoll"
        }
    }

    /// A worker's stats (worker ids come from the agent, always in range;
    /// falls back to the first block defensively).
    pub fn stats_of(&self, worker: usize) -> &WorkerStats {
        self.stats.get(worker).unwrap_or(&self.stats[0])
    }
}

/// Sampler rules for a snapshot: index = request-type name id.
pub fn sampler_config(snap: &Snapshot) -> SamplerConfig {
    let s: &Sampling = &snap.config.sampling;
    let rule = |p: f64| TypeRule {
        p,
        keep_errors: s.keep_errors,
        keep_slower_than_ns: s.keep_slower_than.map(|d| d.0),
        keep_above_quantile: s.keep_above_quantile,
    };
    let max_id = snap.types.iter().map(|t| t.id).max().unwrap_or(0);
    let mut types = vec![rule(s.default); usize::from(max_id) + 1];
    for t in &snap.types {
        types[usize::from(t.id)] = rule(t.sample);
    }
    SamplerConfig {
        default: rule(s.default),
        types,
        max_records_per_sec: s.max_records_per_sec,
        max_forced_per_sec: s.max_records_per_sec,
    }
}

/// Samples finished requests into one ring shard and counts them.
#[derive(Debug)]
pub struct Recorder {
    shard: ShardWriter,
    sampler: Sampler,
    generation: u32,
    level: u32,
}

impl Recorder {
    /// A recorder on `shard`, configured from `snap`.
    pub fn new(shard: ShardWriter, snap: &Snapshot, now: u64) -> Recorder {
        let mut shard = shard;
        let mut ev = Event::new(EventKind::WriterStarted, ringlog::clock::mono_ns());
        ev.generation = snap.generation;
        shard.write_event(&ev);
        Recorder {
            shard,
            sampler: Sampler::new(&sampler_config(snap), now),
            generation: snap.generation,
            level: 0,
        }
    }

    /// Follows a new config generation (sampler rules are rebuilt).
    pub fn follow(&mut self, snap: &Snapshot, now: u64) {
        if snap.generation != self.generation {
            self.sampler = Sampler::new(&sampler_config(snap), now);
            self.generation = snap.generation;
        }
    }

    /// Samples one finished request; writes it if kept. Returns whether kept.
    pub fn record(&mut self, f: &Finished, now: u64, stats: &WorkerStats) -> bool {
        let mut r = f.record;
        let is_error = r.flags.has(Flags::ERROR) || r.status >= 500;
        let d = self
            .sampler
            .decide(now, r.req_type, f.hash, r.total_ns, is_error);
        self.shard.count(r.req_type, &d);
        if d.keep {
            r.sample_p = d.sample_p;
            r.keep = d.reason;
            self.shard.write(&r);
            stats.set_ring_overwritten(self.shard.overwritten());
        }
        let level = self.sampler.level();
        if level != self.level {
            self.level = level;
            self.shard.set_sampler_level(level);
            stats.set_sampler_level(level);
        }
        stats.request(&r, d.keep);
        d.keep
    }

    /// Writes an agent event on this shard's timeline.
    pub fn event(&mut self, ev: &Event) {
        self.shard.write_event(ev);
    }
}

/// Everything a worker thread starts with.
#[derive(Debug)]
pub struct WorkerInit {
    /// Worker index (also its ring shard).
    pub id: usize,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// This worker's recorder.
    pub recorder: Recorder,
    /// Drain deadline after the drain starts, ns.
    pub drain_timeout_ns: u64,
    /// Rung by the control plane (see [`wake`]).
    pub wake: wake::Wake,
}
