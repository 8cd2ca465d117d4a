//! Per-worker counters and their Prometheus text rendering.
//!
//! Each worker owns one [`WorkerStats`] and is its only writer, so a bump
//! is a relaxed load and store (no locked instruction on the hot path). The
//! admin server reads every worker's counters and sums them at scrape time:
//! a scrape never takes a lock a worker could wait on.

pub mod expo;
pub mod keyed;
pub mod policy;
pub mod process;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use ringlog::Reason;

pub use expo::Expo;

/// Upper bounds (seconds) of the request duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Number of reason codes tracked.
const REASONS: usize = 23;

/// Driver counters, indexed by [`Driver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Driver {
    /// Event-loop turns.
    LoopTurns = 0,
    /// Provided-buffer ring ran empty (`-ENOBUFS`).
    NoBufs = 1,
    /// Completion-queue overflow.
    CqOverflow = 2,
    /// Sends that wrote less than asked.
    ShortSends = 3,
    /// Bytes that had to be copied into a send queue.
    QueuedBytes = 4,
    /// Upstream connections reused from the pool.
    PoolReuse = 5,
    /// Upstream connects started.
    Connects = 6,
    /// Upstream connects that failed.
    ConnectErrors = 7,
    /// Connections accepted.
    Accepted = 8,
    /// L4 bytes moved with splice(2) (epoll driver), never seen by user space.
    SplicedBytes = 9,
    /// L4 tunnels that could not get a pipe and copied instead.
    SpliceFallbacks = 10,
    /// Requests sent again on a new connection because their pooled
    /// connection closed before any response byte.
    StaleRetries = 11,
    /// Pooled upstream connections closed after `timeouts.idle` unused.
    PoolExpired = 12,
    /// Connections accepted over `max_connections` (listener or agent) and
    /// closed at once.
    ConnLimit = 13,
    /// accept(2) failed for lack of descriptors (EMFILE, ENFILE) or memory;
    /// accepting pauses for 100 ms.
    AcceptErrors = 14,
    /// Idle pooled upstream connections closed to make room (LRU).
    PoolEvicted = 15,
    /// io_uring submissions that found the SQ full even after submitting
    /// (the entries wait for the next loop turn).
    SqFull = 16,
    /// Client connections closed after sitting idle past
    /// `listeners[].timeouts.idle`.
    IdleClosed = 17,
    /// Request copies sent to a shadow cluster.
    MirrorSent = 18,
    /// Request copies dropped (too many in flight, the shadow cluster at
    /// its `max_connections`, no socket).
    MirrorDropped = 19,
    /// Bulk reads put off to the next loop turn: the turn's bulk budget
    /// (`driver::core::budget`) was spent.
    BulkDeferred = 20,
    /// Due timers left for the next loop turn: the turn fired
    /// `driver::core::flow::TIMERS_PER_TURN` already.
    TimersDeferred = 21,
    /// Loop turns that left accepted connections for the next turn: the
    /// turn set up `driver::core::accepts::PER_TURN` already.
    AcceptsDeferred = 22,
}

const DRIVER_NAMES: [&str; 23] = [
    "loop_turns",
    "enobufs",
    "cq_overflow",
    "short_sends",
    "queued_bytes",
    "pool_reuse",
    "connects",
    "connect_errors",
    "accepted",
    "spliced_bytes",
    "splice_fallbacks",
    "stale_retries",
    "pool_expired",
    "conn_limit",
    "accept_errors",
    "pool_evicted",
    "sq_full",
    "idle_closed",
    "mirror_sent",
    "mirror_dropped",
    "bulk_deferred",
    "timers_deferred",
    "accepts_deferred",
];

/// The `result` label values of `tailmesh_tls_handshakes_total`, by
/// [`TlsResult`] code.
pub const TLS_RESULTS: [&str; 12] = [
    "ok",
    "resumed",
    "no_client_cert",
    "unknown_ca",
    "expired",
    "identity_mismatch",
    "bad_certificate",
    "peer_alert",
    "protocol",
    "bad_header",
    "no_identity",
    "target_refused",
];

/// How a TLS handshake (and, on mesh listeners, its transport header)
/// ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsResult {
    /// Completed with a full handshake.
    Ok,
    /// Completed by resuming a session.
    Resumed,
    /// Failed (see [`crate::tls::HandshakeFailure`]).
    Failed(crate::tls::HandshakeFailure),
    /// A mesh connection's transport header was malformed.
    BadHeader,
    /// A mesh connection was wanted but no identity is loaded.
    NoIdentity,
    /// A mesh connection named a destination not on the address it dialled.
    TargetRefused,
}

impl TlsResult {
    fn code(self) -> usize {
        use crate::tls::HandshakeFailure as F;
        match self {
            TlsResult::Ok => 0,
            TlsResult::Resumed => 1,
            TlsResult::Failed(f) => match f {
                F::NoClientCert => 2,
                F::UnknownCa => 3,
                F::Expired => 4,
                F::IdentityMismatch => 5,
                F::BadCertificate => 6,
                F::PeerAlert => 7,
                _ => 8,
            },
            TlsResult::BadHeader => 9,
            TlsResult::NoIdentity => 10,
            TlsResult::TargetRefused => 11,
        }
    }
}

/// One worker's counters (single writer).
#[derive(Debug, Default)]
pub struct WorkerStats {
    by_class: [AtomicU64; 6],
    by_reason: [AtomicU64; REASONS],
    /// Whole request time.
    duration: Hist,
    /// Upstream first byte phase (requests that reached an upstream).
    first_byte: Hist,
    /// Queue phase (accept or keep-alive wait until the head was parsed).
    queue: Hist,
    /// How long each event-loop turn worked (from its wake-up to its next
    /// wait): a long one delays every connection of the worker.
    turn: Hist,
    driver: [AtomicU64; DRIVER_NAMES.len()],
    /// Bytes handed to the client side / the upstream side (user space).
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    sampler_level: AtomicU64,
    ring_overwritten: AtomicU64,
    /// The config generation the worker serves (taken at its loop turn).
    generation: AtomicU64,
    active_down: AtomicU64,
    active_up: AtomicU64,
    bufs_in_use: AtomicU64,
    timer_entries: AtomicU64,
    pooled: AtomicU64,
    /// TLS handshakes by side (0 server, 1 client) and [`TlsResult`].
    tls: [[AtomicU64; TLS_RESULTS.len()]; 2],
    /// Requests by route name id and status class.
    pub routes: keyed::Keyed,
    /// Requests by cluster name id and status class.
    pub clusters: keyed::Keyed,
    /// Requests by request type name id: class 0 kept, 1 sampled out
    /// (summed over the types, also the kept and sampled-out totals).
    pub types: keyed::Keyed,
}

/// The `types` key of requests of no listed request type.
const UNTYPED: u16 = u16::MAX;

/// One histogram over [`DURATION_BUCKETS`] (single writer).
#[derive(Debug, Default)]
pub struct Hist {
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Hist {
    fn observe(&self, ns: u64) {
        let secs = ns as f64 / 1e9;
        let b = DURATION_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(DURATION_BUCKETS.len());
        bump(&self.buckets[b], 1);
        bump(&self.sum_ns, ns);
    }
}

/// Adds the histogram `pick` picks, summed over the workers.
fn render_hist(o: &mut Expo, stats: &[&WorkerStats], pick: fn(&WorkerStats) -> &Hist) {
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(DURATION_BUCKETS.len());
    for (i, le) in DURATION_BUCKETS.iter().enumerate() {
        cumulative += sum(stats, |s| &pick(s).buckets[i]);
        buckets.push((*le, cumulative));
    }
    cumulative += sum(stats, |s| &pick(s).buckets[DURATION_BUCKETS.len()]);
    let total_ns = sum(stats, |s| &pick(s).sum_ns);
    o.histogram(&[], &buckets, total_ns as f64 / 1e9, cumulative);
}

#[inline]
fn bump(c: &AtomicU64, by: u64) {
    c.store(
        c.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl WorkerStats {
    /// Counts a TLS handshake outcome; `client`: this agent dialled.
    pub fn tls(&self, client: bool, result: TlsResult) {
        if let Some(c) = self.tls[usize::from(client)].get(result.code()) {
            bump(c, 1);
        }
    }

    /// Counts the finished request (or L4 connection when its status is
    /// 0) of record `r`, which the sampler `kept` or not.
    pub fn request(&self, r: &ringlog::Record, kept: bool) {
        let class = usize::from(r.status / 100).min(5);
        bump(&self.by_class[class], 1);
        self.routes.add(r.route, class);
        self.clusters.add(r.cluster, class);
        // Requests of no listed type count under UNTYPED.
        let req_type = if r.req_type == 0 { UNTYPED } else { r.req_type };
        self.types.add(req_type, usize::from(!kept));
        if r.reason != Reason::None {
            bump(
                &self.by_reason[usize::from(r.reason.code()).min(REASONS - 1)],
                1,
            );
        }
        self.duration.observe(r.total_ns);
        let first_byte = r.phase(ringlog::Phase::FirstByte);
        if first_byte > 0 {
            self.first_byte.observe(first_byte);
        }
        self.queue.observe(r.phase(ringlog::Phase::Queue));
    }

    /// One event-loop turn worked `ns` (wake-up to the next wait).
    #[inline]
    pub fn turn(&self, ns: u64) {
        self.turn.observe(ns);
    }

    /// Bytes the core handed to the client (`down`) and upstream (`up`)
    /// sides in one step.
    #[inline]
    pub fn bytes(&self, down: u64, up: u64) {
        if down > 0 {
            bump(&self.bytes_down, down);
        }
        if up > 0 {
            bump(&self.bytes_up, up);
        }
    }

    /// The config generation the worker took at its latest loop turn.
    #[inline]
    pub fn set_generation(&self, generation: u32) {
        self.generation
            .store(u64::from(generation), Ordering::Relaxed);
    }

    /// The config generation the worker serves.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Entries the worker's ring shard has overwritten so far.
    pub fn set_ring_overwritten(&self, n: u64) {
        self.ring_overwritten.store(n, Ordering::Relaxed);
    }

    /// The sampler's shedding level (0: none).
    pub fn set_sampler_level(&self, level: u32) {
        self.sampler_level
            .store(u64::from(level), Ordering::Relaxed);
    }

    /// Adds to a driver counter.
    pub fn driver(&self, which: Driver, by: u64) {
        bump(&self.driver[which as usize], by);
    }

    /// Sets the gauges of open downstream and upstream connections.
    pub fn set_active(&self, down: u64, up: u64) {
        self.active_down.store(down, Ordering::Relaxed);
        self.active_up.store(up, Ordering::Relaxed);
    }

    /// Entries in the worker's timer heap, and idle upstream connections
    /// in its pool.
    pub fn set_tables(&self, timers: u64, pooled: u64) {
        self.timer_entries.store(timers, Ordering::Relaxed);
        self.pooled.store(pooled, Ordering::Relaxed);
    }

    /// io_uring provided receive buffers out of the kernel's ring (held by
    /// connections).
    pub fn set_bufs_in_use(&self, n: u64) {
        self.bufs_in_use.store(n, Ordering::Relaxed);
    }
}

/// Agent-wide facts rendered with the counters.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// `uring` or `epoll`.
    pub backend: &'a str,
    /// Whether `auto` fell back from io_uring.
    pub fell_back: bool,
    /// Current config generation.
    pub generation: u32,
    /// Configs rejected so far.
    pub config_rejected: u64,
    /// Config reloads applied so far.
    pub config_applied: u64,
    /// Draining.
    pub draining: bool,
    /// The config source's revision of the running snapshot (0: a file).
    pub source_revision: u64,
    /// The config source is reachable (etcd watch established; a file: 1).
    pub source_connected: bool,
    /// Seconds until the mesh identity expires (None: no identity).
    pub identity_expiry: Option<i64>,
    /// Identity file reloads [applied, rejected].
    pub identity_reloads: [u64; 2],
}

impl<'a> Facts<'a> {
    /// The facts of the running agent.
    pub fn of(sh: &'a crate::worker::Shared, generation: u32) -> Facts<'a> {
        Facts {
            backend: sh.backend_name(),
            fell_back: sh.fell_back.load(Ordering::Relaxed),
            generation,
            config_rejected: sh.config_rejected.load(Ordering::Relaxed),
            config_applied: sh.config_applied.load(Ordering::Relaxed),
            draining: sh.draining(),
            source_revision: sh.source_revision.load(Ordering::Relaxed),
            source_connected: sh.source_connected.load(Ordering::Relaxed),
            identity_expiry: sh.identity.load().as_ref().map(|id| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                id.not_after - now
            }),
            identity_reloads: [
                sh.identity_reloads[0].load(Ordering::Relaxed),
                sh.identity_reloads[1].load(Ordering::Relaxed),
            ],
        }
    }
}

fn sum(stats: &[&WorkerStats], f: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
    stats
        .iter()
        .map(|s| f(s).load(Ordering::Relaxed))
        .fold(0, u64::wrapping_add)
}

/// Renders `tailmesh_route_requests_total` and
/// `tailmesh_cluster_requests_total` by status class, names from `snap`
/// (ids it no longer names are left out; the overflow row is `_other`).
pub fn render_traffic(stats: &[&WorkerStats], snap: &crate::snapshot::Snapshot, o: &mut Expo) {
    let classes = ["l4", "1xx", "2xx", "3xx", "4xx", "5xx"];
    // Name ids to names, for thousands of routes per scrape.
    let routes: HashMap<u16, &str> = snap
        .routes
        .iter()
        .map(|r| (r.id, r.name.as_str()))
        .collect();
    let clusters: HashMap<u16, &str> = snap
        .clusters
        .iter()
        .map(|c| (c.id, c.name.as_str()))
        .collect();
    for (dim, names, pick) in [
        (
            "route",
            routes,
            (|s: &WorkerStats| &s.routes) as fn(&WorkerStats) -> &keyed::Keyed,
        ),
        ("cluster", clusters, |s: &WorkerStats| &s.clusters),
    ] {
        o.family(
            &format!("{dim}_requests_total"),
            "counter",
            &format!("Finished requests by {dim} and status class (l4: L4 connections)."),
        );
        for (id, counts) in keyed::sum(stats.iter().map(|s| pick(s))) {
            let name = match id {
                Some(id) => match names.get(&id) {
                    Some(n) => *n,
                    None => continue,
                },
                None if counts.iter().all(|&c| c == 0) => continue,
                None => "_other",
            };
            for (class, v) in classes.iter().zip(counts) {
                if v > 0 {
                    o.value(&[(dim, name), ("class", class)], v as f64);
                }
            }
        }
    }
    o.family(
        "records_total",
        "counter",
        "Finished requests by request type and what the sampler did: kept (written to the ring) or sampled_out.",
    );
    for (id, counts) in keyed::sum(stats.iter().map(|s| &s.types)) {
        let name = match id {
            Some(UNTYPED) => "_untyped",
            Some(id) => match snap
                .types
                .iter()
                .zip(&snap.config.request_types)
                .find(|(t, _)| t.id == id)
            {
                Some((_, t)) => t.name.as_str(),
                None => continue,
            },
            None if counts.iter().all(|&c| c == 0) => continue,
            None => "_other",
        };
        o.value(&[("type", name), ("outcome", "kept")], counts[0] as f64);
        o.value(
            &[("type", name), ("outcome", "sampled_out")],
            counts[1] as f64,
        );
    }
}

/// Adds the families of all workers' counters and the agent's facts.
pub fn render(stats: &[&WorkerStats], facts: &Facts<'_>, o: &mut Expo) {
    // A family with one unlabelled value, summed over the workers.
    let single = |o: &mut Expo, name: &str, kind: &str, help: &str, v: u64| {
        o.family(name, kind, help);
        o.value(&[], v as f64);
    };
    o.family(
        "requests_total",
        "counter",
        "Finished requests (L4 connections: class=\"l4\") by status class.",
    );
    for (i, class) in ["l4", "1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        let v = sum(stats, |s| &s.by_class[i]);
        o.value(&[("class", class)], v as f64);
    }
    o.family(
        "local_responses_total",
        "counter",
        "Requests the agent answered or ended itself, by reason (x-tailmesh-reason).",
    );
    for code in 1..REASONS as u8 {
        let name = Reason::from_code(code).name();
        if name.starts_with("unknown") {
            continue;
        }
        let v = sum(stats, |s| &s.by_reason[usize::from(code)]);
        o.value(&[("reason", &name)], v as f64);
    }
    o.family(
        "tls_handshakes_total",
        "counter",
        "TLS handshakes by side (server: a TLS or mesh listener; client: a TLS or mesh cluster) and result (ok, resumed, or why it failed).",
    );
    for (side, name) in ["server", "client"].iter().enumerate() {
        for (k, result) in TLS_RESULTS.iter().enumerate() {
            let v = sum(stats, |s| &s.tls[side][k]);
            o.value(&[("side", name), ("result", result)], v as f64);
        }
    }
    if let Some(t) = facts.identity_expiry {
        o.family(
            "identity_expiry_seconds",
            "gauge",
            "Seconds until the node's mesh identity certificate expires (negative: expired).",
        );
        o.value(&[], t as f64);
        o.family(
            "identity_reloads_total",
            "counter",
            "Mesh identity file changes applied, or rejected (the running identity kept serving).",
        );
        o.value(&[("result", "applied")], facts.identity_reloads[0] as f64);
        o.value(&[("result", "rejected")], facts.identity_reloads[1] as f64);
    }
    o.family(
        "request_duration_seconds",
        "histogram",
        "Request duration from accept or first byte to the last byte written downstream.",
    );
    render_hist(o, stats, |s| &s.duration);
    o.family(
        "upstream_first_byte_seconds",
        "histogram",
        "Time from the request sent upstream to the upstream's first response byte (requests that reached an upstream).",
    );
    render_hist(o, stats, |s| &s.first_byte);
    o.family(
        "request_queue_seconds",
        "histogram",
        "Time from accept (or the end of the previous request on a kept-alive connection) until the request head was parsed.",
    );
    render_hist(o, stats, |s| &s.queue);
    o.family(
        "loop_turn_seconds",
        "histogram",
        "How long each worker event-loop turn worked, from its wake-up to its next wait; every connection of the worker waits out a long one.",
    );
    render_hist(o, stats, |s| &s.turn);
    let (kept, sampled_out) = keyed::sum(stats.iter().map(|s| &s.types))
        .values()
        .fold((0u64, 0u64), |(k, d), c| {
            (k.wrapping_add(c[0]), d.wrapping_add(c[1]))
        });
    single(
        o,
        "records_kept_total",
        "counter",
        "Trace records the sampler kept and wrote to the ring.",
        kept,
    );
    single(
        o,
        "records_sampled_out_total",
        "counter",
        "Finished requests the sampler did not keep (by rate, or shed over max_records_per_sec).",
        sampled_out,
    );
    let level = stats
        .iter()
        .map(|s| s.sampler_level.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    single(
        o,
        "ring_overwritten_total",
        "counter",
        "Ring entries overwritten by newer ones (the flight recorder's window moving; size the ring so it spans the history you need, docs/OPERATIONS.md).",
        sum(stats, |s| &s.ring_overwritten),
    );
    single(
        o,
        "sampler_level",
        "gauge",
        "Highest shedding level of the workers' samplers (0: rates as configured; each level halves them to stay under max_records_per_sec).",
        level,
    );
    o.family(
        "bytes_total",
        "counter",
        "Bytes proxied, by where they went: downstream (to clients) or upstream; L4 bytes spliced in the kernel are in tailmesh_driver_events_total{event=\"spliced_bytes\"}.",
    );
    o.value(
        &[("direction", "downstream")],
        sum(stats, |s| &s.bytes_down) as f64,
    );
    o.value(
        &[("direction", "upstream")],
        sum(stats, |s| &s.bytes_up) as f64,
    );
    o.family("active_connections", "gauge", "Open connections by side.");
    o.value(
        &[("side", "downstream")],
        sum(stats, |s| &s.active_down) as f64,
    );
    o.value(&[("side", "upstream")], sum(stats, |s| &s.active_up) as f64);
    single(
        o,
        "timer_entries",
        "gauge",
        "Entries in the workers' timer heaps (stays proportional to open connections).",
        sum(stats, |s| &s.timer_entries),
    );
    single(
        o,
        "pooled_upstream_connections",
        "gauge",
        "Idle upstream connections in the workers' pools (at most 256 per endpoint and 1024 per worker).",
        sum(stats, |s| &s.pooled),
    );
    single(
        o,
        "uring_buffers_in_use",
        "gauge",
        "io_uring provided receive buffers held by connections (out of 128 per worker); 0 on epoll.",
        sum(stats, |s| &s.bufs_in_use),
    );
    o.family("driver_events_total", "counter", "I/O driver counters.");
    for (i, name) in DRIVER_NAMES.iter().enumerate() {
        let v = sum(stats, |s| &s.driver[i]);
        o.value(&[("event", name)], v as f64);
    }
    o.family(
        "io_backend",
        "gauge",
        "The I/O driver in use (1 for the active one).",
    );
    for b in ["uring", "epoll"] {
        let v = u8::from(facts.backend == b);
        o.value(&[("backend", b)], f64::from(v));
    }
    o.family(
        "io_fallback",
        "gauge",
        "1 if --io auto fell back from io_uring to epoll.",
    );
    o.value(&[], f64::from(u8::from(facts.fell_back)));
    o.family(
        "config_generation",
        "gauge",
        "Generation of the config snapshot being served.",
    );
    o.value(&[], f64::from(facts.generation));
    o.family(
        "config_rejected_total",
        "counter",
        "Configs rejected (the last good one kept serving).",
    );
    o.value(&[], facts.config_rejected as f64);
    o.family(
        "config_reloads_total",
        "counter",
        "Config reloads applied (SIGHUP or a change of the file).",
    );
    o.value(&[], facts.config_applied as f64);
    o.family(
        "config_reload_total",
        "counter",
        "Config changes by result: applied, or rejected (the last good one kept serving).",
    );
    o.value(&[("result", "applied")], facts.config_applied as f64);
    o.value(&[("result", "rejected")], facts.config_rejected as f64);
    o.family(
        "config_source_connected",
        "gauge",
        "1 while the config source is reachable (etcd: a watch is established; a file: always).",
    );
    o.value(&[], f64::from(u8::from(facts.source_connected)));
    o.family(
        "config_source_revision",
        "gauge",
        "etcd revision of the config being served (0 for a file).",
    );
    o.value(&[], facts.source_revision as f64);
    o.family(
        "worker_config_generation",
        "gauge",
        "The config generation each worker serves (it takes a new one at its next loop turn).",
    );
    for (i, s) in stats.iter().enumerate() {
        o.value(&[("worker", &i.to_string())], s.generation() as f64);
    }
    o.family("workers", "gauge", "Worker threads.");
    o.value(&[], stats.len() as f64);
    o.family(
        "draining",
        "gauge",
        "1 while draining after SIGTERM/SIGINT.",
    );
    o.value(&[], f64::from(u8::from(facts.draining)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_summed_and_buckets_cumulative() {
        let a = WorkerStats::default();
        let b = WorkerStats::default();
        let rec = |status, reason, total_ns, (route, cluster)| ringlog::Record {
            status,
            reason,
            total_ns,
            route,
            cluster,
            ..ringlog::Record::default()
        };
        a.request(&rec(200, Reason::None, 50_000, (3, 4)), true);
        b.request(&rec(503, Reason::UpstreamConnect, 2_000_000, (3, 4)), false);
        b.request(&rec(0, Reason::None, 7_000_000_000, (0, 0)), false);
        a.driver(Driver::Accepted, 3);
        a.turn(40_000);
        b.turn(30_000_000);
        let facts = Facts {
            backend: "epoll",
            fell_back: true,
            generation: 2,
            config_rejected: 0,
            config_applied: 0,
            source_revision: 0,
            source_connected: true,
            draining: false,
            identity_expiry: None,
            identity_reloads: [0, 0],
        };
        let mut o = Expo::default();
        render(&[&a, &b], &facts, &mut o);
        let text = expo::encode(&o.into_families());
        for line in [
            "tailmesh_requests_total{class=\"2xx\"} 1",
            "tailmesh_requests_total{class=\"5xx\"} 1",
            "tailmesh_requests_total{class=\"l4\"} 1",
            "tailmesh_local_responses_total{reason=\"upstream_connect\"} 1",
            "tailmesh_request_duration_seconds_bucket{le=\"0.0001\"} 1",
            "tailmesh_request_duration_seconds_bucket{le=\"0.0025\"} 2",
            "tailmesh_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "tailmesh_request_duration_seconds_count 3",
            "tailmesh_driver_events_total{event=\"accepted\"} 3",
            "tailmesh_io_backend{backend=\"epoll\"} 1",
            "tailmesh_io_fallback 1",
            "tailmesh_records_kept_total 1",
            "tailmesh_loop_turn_seconds_bucket{le=\"0.0001\"} 1",
            "tailmesh_loop_turn_seconds_bucket{le=\"0.025\"} 1",
            "tailmesh_loop_turn_seconds_bucket{le=\"0.05\"} 2",
            "tailmesh_loop_turn_seconds_count 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(
            text.lines()
                .all(|l| l.starts_with('#') || l.starts_with("tailmesh_"))
        );
    }
}
