//! The two things a slot can hold, a request [`Record`] and an agent
//! [`Event`], and their encoding into the seven body words of a slot.
//!
//! Word 0 of a slot is the commit/sequence word (see `slot`); words 1..=7 are
//! the body encoded here. Byte offsets below are within the 64-byte slot.
//!
//! Record body:
//! ```text
//!  8 u64 start_ns        CLOCK_MONOTONIC at accept / request start
//! 16 u32 total           duration, ns (µs if flags.UNIT_US)
//! 20 u32 phase[6]        queue, connect, tls, first_byte, transfer, write
//! 44 u16 generation      config generation that served it (low 16 bits)
//! 46 u16 peer            peer identity name id (0 = none: plaintext or no certificate)
//! 48 u16 route  50 u16 cluster  52 u16 endpoint  54 u16 req_type
//! 56 u16 status          HTTP status, 0 for L4
//! 58 u16 sample_p        inclusion probability (v+1)/65536
//! 60 u8 reason  61 u8 flags  62 u8 retries (low 4 bits) | arm (high 4)  63 u8 keep
//! ```
//! Event body: `8 u64 time_ns, 16 u64 a, 24 u64 b, 32 u64 c, 44 u32
//! generation, 48..56 subject ids as above, 56 u16 kind, 61 u8 flags
//! (EVENT set), 62 u8 from, 63 u8 to`.

/// Number of latency phases in a record.
pub const PHASES: usize = 6;

/// Latency phases. They partition a request's total duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Accept or queueing until the request head was parsed.
    Queue = 0,
    /// Upstream pool wait and connect.
    Connect = 1,
    /// TLS handshake.
    Tls = 2,
    /// Request sent until the upstream's first response byte.
    FirstByte = 3,
    /// Upstream response transfer until done.
    Transfer = 4,
    /// Writing the tail of the response downstream.
    Write = 5,
}

impl Phase {
    /// All phases in record order.
    pub const ALL: [Phase; PHASES] = [
        Phase::Queue,
        Phase::Connect,
        Phase::Tls,
        Phase::FirstByte,
        Phase::Transfer,
        Phase::Write,
    ];
    /// Short display name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Queue => "queue",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::FirstByte => "first_byte",
            Phase::Transfer => "transfer",
            Phase::Write => "write",
        }
    }
}

/// Record flag bits (byte 61).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// The request failed (5xx, local error or reset).
    pub const ERROR: u8 = 1 << 0;
    /// A timeout fired.
    pub const TIMEOUT: u8 = 1 << 1;
    /// A connection was reset.
    pub const RESET: u8 = 1 << 2;
    /// A rate limit acted on it: rejected (reason `rate_limited`, 429) or,
    /// with no reason, delayed by smoothing (the wait is in its queue phase).
    pub const RATE_LIMITED: u8 = 1 << 3;
    /// Rejected by its cluster's breaker: open (reason `breaker_open`) or
    /// over a concurrency limit (reason `overflow`).
    pub const BREAKER_OPEN: u8 = 1 << 4;
    /// The record describes a whole L4 connection.
    pub const L4: u8 = 1 << 5;
    /// Durations are stored in µs instead of ns (set by the encoder).
    pub const UNIT_US: u8 = 1 << 6;
    /// The slot holds an [`Event`], not a record.
    pub const EVENT: u8 = 1 << 7;
    /// Names of the caller-settable bits, for display.
    pub const NAMES: [(u8, &'static str); 6] = [
        (Self::ERROR, "error"),
        (Self::TIMEOUT, "timeout"),
        (Self::RESET, "reset"),
        (Self::RATE_LIMITED, "rate_limited"),
        (Self::BREAKER_OPEN, "breaker_open"),
        (Self::L4, "l4"),
    ];
    /// Whether `bit` is set.
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

macro_rules! numbered {
    ($(#[$doc:meta])* $name:ident : $repr:ty { $($(#[$vdoc:meta])* $v:ident = $n:literal => $s:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* $v,)*
            /// A number this version does not know (written by a newer agent).
            Unknown($repr),
        }
        impl $name {
            /// The on-disk number.
            pub fn code(self) -> $repr {
                match self { $($name::$v => $n,)* $name::Unknown(n) => n }
            }
            /// Decodes an on-disk number; unknown numbers are kept, not rejected.
            pub fn from_code(n: $repr) -> Self {
                match n { $($n => $name::$v,)* other => $name::Unknown(other) }
            }
            /// Stable snake_case name.
            pub fn name(self) -> std::borrow::Cow<'static, str> {
                match self {
                    $($name::$v => std::borrow::Cow::Borrowed($s),)*
                    $name::Unknown(n) => std::borrow::Cow::Owned(format!("unknown_{n}")),
                }
            }
        }
    };
}

numbered! {
    /// Why the agent answered or ended a request itself (byte 60). Also sent
    /// as `x-tailmesh-reason`.
    #[derive(Default)]
    Reason: u8 {
        /// Nothing local happened.
        #[default]
        None = 0 => "none",
        /// Malformed or ambiguous request framing.
        BadRequest = 1 => "bad_request",
        /// Request head too large.
        HeaderTooLarge = 2 => "header_too_large",
        /// Request line too long.
        UriTooLong = 3 => "uri_too_long",
        /// Body over the configured limit.
        PayloadTooLarge = 4 => "payload_too_large",
        /// No route matched.
        NoRoute = 5 => "no_route",
        /// The cluster had no healthy endpoint.
        NoHealthyEndpoint = 6 => "no_healthy_endpoint",
        /// Upstream connect failed or was refused.
        UpstreamConnect = 7 => "upstream_connect",
        /// Upstream timed out.
        UpstreamTimeout = 8 => "upstream_timeout",
        /// Upstream reset the connection.
        UpstreamReset = 9 => "upstream_reset",
        /// Upstream sent a malformed response.
        UpstreamProtocol = 10 => "upstream_protocol",
        /// Rate limited.
        RateLimited = 11 => "rate_limited",
        /// Circuit breaker open.
        BreakerOpen = 12 => "breaker_open",
        /// Downstream reset or went away.
        DownstreamReset = 13 => "downstream_reset",
        /// Refused while draining.
        Draining = 14 => "draining",
        /// The client was too slow: a request head or body not received in time.
        RequestTimeout = 15 => "request_timeout",
        /// `Connection` named a field that frames the message or names its
        /// target (Content-Length, Transfer-Encoding, Host).
        BadConnectionHeader = 16 => "bad_connection_header",
        /// The method is not allowed here (CONNECT on a route without `allow_connect`).
        MethodNotAllowed = 17 => "method_not_allowed",
        /// The client stopped reading: queued response bytes not taken in time.
        WriteTimeout = 18 => "write_timeout",
        /// A tunnel (L4 or upgraded) moved no byte for its idle timeout.
        IdleTimeout = 19 => "idle_timeout",
        /// A cluster's concurrency limit was reached (`max_concurrent` or
        /// `max_pending`).
        Overflow = 20 => "overflow",
        /// An authz rule refused the peer identity (403, or an L4 close).
        AuthzDenied = 21 => "authz_denied",
        /// The upstream TLS handshake failed (untrusted, expired, or the
        /// wrong identity).
        TlsHandshake = 22 => "tls_handshake",
    }
}

numbered! {
    /// Why the sampler kept a record (byte 63).
    #[derive(Default)]
    KeepReason: u8 {
        /// Not a sampler decision (events).
        #[default]
        None = 0 => "none",
        /// Kept by the probabilistic rate; weight 1/p.
        Sampled = 1 => "sampled",
        /// Kept because it failed.
        Error = 2 => "error",
        /// Kept because slower than the static threshold.
        Slow = 3 => "slow",
        /// Kept because above the rolling quantile estimate.
        AboveQuantile = 4 => "above_quantile",
        /// Kept because the caller forced it.
        Forced = 5 => "forced",
    }
}

numbered! {
    /// Numbered agent event kinds (bytes 56..58 of an event).
    EventKind: u16 {
        /// A config snapshot took effect. `generation` is the new one, `a` the old,
        /// `b` the source revision (etcd's; 0 for a file).
        ConfigApplied = 1 => "config_applied",
        /// A config was rejected; the last good one keeps serving.
        ConfigRejected = 2 => "config_rejected",
        /// A circuit breaker changed state (`from` -> `to`: 0 closed, 1 open, 2 half-open).
        BreakerTransition = 3 => "breaker_transition",
        /// An endpoint was ejected (`a` = ejection in ms, `b` = cause: 1
        /// consecutive 5xx, 2 consecutive gateway failures, 3 success rate).
        EndpointEjected = 4 => "endpoint_ejected",
        /// An ejected endpoint returned.
        EndpointRestored = 5 => "endpoint_restored",
        /// The io backend fell back (`from` -> `to`: 1 uring, 2 epoll; `a` = errno).
        IoFallback = 6 => "io_fallback",
        /// An io_uring queue was full or overflowed (`a` = count).
        RingFull = 7 => "ring_full",
        /// A worker started writing this shard.
        WriterStarted = 8 => "writer_started",
        /// The agent began draining.
        Drain = 9 => "drain",
        /// An attempt of a request failed and the request is sent again:
        /// `route` / `cluster` / `endpoint` are the failed attempt's, `a` its
        /// duration in ns (connect to failure), `b` the retry's number (1
        /// for the first), `c` the status (0 when none) << 8 | the reason code.
        Retry = 10 => "retry",
        /// Active health checks flipped an endpoint (`to`: 1 healthy, 0
        /// unhealthy; `a` = the checks in a row that decided it).
        EndpointHealth = 11 => "endpoint_health",
    }
}

/// One kept request (or one L4 connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    /// CLOCK_MONOTONIC ns when the request started.
    pub start_ns: u64,
    /// Total duration in ns.
    pub total_ns: u64,
    /// Per-phase durations in ns, indexed by [`Phase`].
    pub phases_ns: [u64; PHASES],
    /// Config generation. The ring keeps its low 16 bits: a generation
    /// reads back modulo 65,536.
    pub generation: u32,
    /// Peer identity name id (0 = none): the SPIFFE ID (or certificate
    /// subject) of the mutually authenticated TLS peer that sent it.
    pub peer: u16,
    /// Route name id (0 = none).
    pub route: u16,
    /// Cluster name id (0 = none).
    pub cluster: u16,
    /// Endpoint name id (0 = none).
    pub endpoint: u16,
    /// Request type id (0 = default).
    pub req_type: u16,
    /// HTTP status, 0 for L4.
    pub status: u16,
    /// Inclusion probability code: p = (sample_p + 1) / 65536.
    pub sample_p: u16,
    /// Local reason code.
    pub reason: Reason,
    /// Flag bits; [`Flags::UNIT_US`] and [`Flags::EVENT`] are managed by the encoder.
    pub flags: Flags,
    /// Retries attempted (the record holds 0..=15; more saturate).
    pub retries: u8,
    /// Canary arm: 1-based index of the route target taken, 0 when the
    /// route has one target (0..=15; shares the retries byte).
    pub arm: u8,
    /// Why the sampler kept it.
    pub keep: KeepReason,
    /// Locality tier of the endpoint that served it: 0 the preferred one
    /// (or no locality preference), 1 the next (same region, other zone),
    /// 2 further (0..=3; shares the keep byte).
    pub locality: u8,
}

/// Probability code meaning p = 1.
pub const P_ONE: u16 = u16::MAX;

/// Converts a probability code to p.
pub fn p_of(code: u16) -> f64 {
    (f64::from(code) + 1.0) / 65536.0
}

impl Record {
    /// Inclusion probability of this record.
    pub fn p(&self) -> f64 {
        p_of(self.sample_p)
    }
    /// Weight (1/p): how many requests this record stands for.
    pub fn weight(&self) -> f64 {
        65536.0 / (f64::from(self.sample_p) + 1.0)
    }
    /// End time (start + total), the merge key of the reader.
    pub fn end_ns(&self) -> u64 {
        self.start_ns.saturating_add(self.total_ns)
    }
    /// Duration of one phase.
    pub fn phase(&self, p: Phase) -> u64 {
        self.phases_ns[p as usize]
    }

    /// Encodes into body words 1..=7. Durations above u32::MAX ns switch the
    /// whole record to µs (set [`Flags::UNIT_US`]), saturating at u32::MAX µs.
    pub fn encode(&self) -> [u64; 7] {
        let max = self.phases_ns.iter().copied().fold(self.total_ns, u64::max);
        let us = max > u64::from(u32::MAX);
        let d = |ns: u64| -> u64 {
            let v = if us { ns / 1000 } else { ns };
            v.min(u64::from(u32::MAX))
        };
        let p = &self.phases_ns;
        let mut flags = self.flags.0 & !(Flags::EVENT | Flags::UNIT_US);
        if us {
            flags |= Flags::UNIT_US;
        }
        [
            self.start_ns,
            d(self.total_ns) | d(p[0]) << 32,
            d(p[1]) | d(p[2]) << 32,
            d(p[3]) | d(p[4]) << 32,
            d(p[5]) | u64::from(self.generation & 0xffff) << 32 | u64::from(self.peer) << 48,
            ids(self.route, self.cluster, self.endpoint, self.req_type),
            u64::from(self.status)
                | u64::from(self.sample_p) << 16
                | u64::from(self.reason.code()) << 32
                | u64::from(flags) << 40
                | u64::from(self.retries.min(15) | self.arm.min(15) << 4) << 48
                | u64::from(self.keep.code() & 0x3f | self.locality.min(3) << 6) << 56,
        ]
    }

    /// Decodes body words; the caller has checked the EVENT flag is clear.
    fn decode(w: &[u64; 7]) -> Record {
        let flags = byte(w[6], 5);
        let scale = if flags & Flags::UNIT_US != 0 { 1000 } else { 1 };
        let lo = |x: u64| (x & 0xffff_ffff) * scale;
        let hi = |x: u64| (x >> 32) * scale;
        let (route, cluster, endpoint, req_type) = split_ids(w[5]);
        Record {
            start_ns: w[0],
            total_ns: lo(w[1]),
            phases_ns: [hi(w[1]), lo(w[2]), hi(w[2]), lo(w[3]), hi(w[3]), lo(w[4])],
            generation: (w[4] >> 32) as u32 & 0xffff,
            peer: (w[4] >> 48) as u16,
            route,
            cluster,
            endpoint,
            req_type,
            status: w[6] as u16,
            sample_p: (w[6] >> 16) as u16,
            reason: Reason::from_code(byte(w[6], 4)),
            flags: Flags(flags),
            retries: byte(w[6], 6) & 0x0f,
            arm: byte(w[6], 6) >> 4,
            keep: KeepReason::from_code(byte(w[6], 7) & 0x3f),
            locality: byte(w[6], 7) >> 6,
        }
    }
}

/// One agent event on the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// CLOCK_MONOTONIC ns when it happened.
    pub time_ns: u64,
    /// What happened.
    pub kind: EventKind,
    /// Config generation in force (or applied).
    pub generation: u32,
    /// Subject route id, if any.
    pub route: u16,
    /// Subject cluster id, if any.
    pub cluster: u16,
    /// Subject endpoint id, if any.
    pub endpoint: u16,
    /// Subject request type id, if any.
    pub req_type: u16,
    /// Kind-specific arguments.
    pub a: u64,
    /// Kind-specific arguments.
    pub b: u64,
    /// Kind-specific arguments.
    pub c: u64,
    /// Kind-specific state before.
    pub from: u8,
    /// Kind-specific state after.
    pub to: u8,
}

impl Event {
    /// An event of `kind` at `time_ns` with every other field zero.
    pub fn new(kind: EventKind, time_ns: u64) -> Event {
        Event {
            time_ns,
            kind,
            generation: 0,
            route: 0,
            cluster: 0,
            endpoint: 0,
            req_type: 0,
            a: 0,
            b: 0,
            c: 0,
            from: 0,
            to: 0,
        }
    }

    /// Encodes into body words 1..=7.
    pub fn encode(&self) -> [u64; 7] {
        [
            self.time_ns,
            self.a,
            self.b,
            self.c,
            u64::from(self.generation) << 32,
            ids(self.route, self.cluster, self.endpoint, self.req_type),
            u64::from(self.kind.code())
                | u64::from(Flags::EVENT) << 40
                | u64::from(self.from) << 48
                | u64::from(self.to) << 56,
        ]
    }

    fn decode(w: &[u64; 7]) -> Event {
        let (route, cluster, endpoint, req_type) = split_ids(w[5]);
        Event {
            time_ns: w[0],
            kind: EventKind::from_code(w[6] as u16),
            generation: (w[4] >> 32) as u32,
            route,
            cluster,
            endpoint,
            req_type,
            a: w[1],
            b: w[2],
            c: w[3],
            from: byte(w[6], 6),
            to: byte(w[6], 7),
        }
    }
}

/// A decoded slot body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// A request record.
    Record(Record),
    /// An agent event.
    Event(Event),
}

impl Item {
    /// Decodes seven body words. Total: every bit pattern decodes to something.
    pub fn decode(w: &[u64; 7]) -> Item {
        if byte(w[6], 5) & Flags::EVENT != 0 {
            Item::Event(Event::decode(w))
        } else {
            Item::Record(Record::decode(w))
        }
    }
    /// Encodes into seven body words.
    pub fn encode(&self) -> [u64; 7] {
        match self {
            Item::Record(r) => r.encode(),
            Item::Event(e) => e.encode(),
        }
    }
    /// Timeline key: a record's end time, an event's time.
    pub fn time_key(&self) -> u64 {
        match self {
            Item::Record(r) => r.end_ns(),
            Item::Event(e) => e.time_ns,
        }
    }
}

fn ids(route: u16, cluster: u16, endpoint: u16, req_type: u16) -> u64 {
    u64::from(route)
        | u64::from(cluster) << 16
        | u64::from(endpoint) << 32
        | u64::from(req_type) << 48
}

fn split_ids(w: u64) -> (u16, u16, u16, u16) {
    (
        w as u16,
        (w >> 16) as u16,
        (w >> 32) as u16,
        (w >> 48) as u16,
    )
}

fn byte(w: u64, i: u32) -> u8 {
    (w >> (8 * i)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            any::<u64>(),
            prop_oneof![0u64..10_000_000, any::<u64>()],
            prop::array::uniform6(prop_oneof![0u64..10_000_000, 0u64..(1 << 40)]),
            any::<(u32, u16, u16, u16, u16, u16, u16)>(),
            any::<(u8, u8, u8, u8)>(),
            any::<u16>(),
        )
            .prop_map(
                |(start, total, phases, f, (reason, flags, retries, keep), peer)| Record {
                    peer,
                    locality: keep >> 6,
                    start_ns: start,
                    total_ns: total,
                    phases_ns: phases,
                    generation: f.0 & 0xffff,
                    route: f.1,
                    cluster: f.2,
                    endpoint: f.3,
                    req_type: f.4,
                    status: f.5,
                    sample_p: f.6,
                    reason: Reason::from_code(reason),
                    flags: Flags(flags & !(Flags::EVENT | Flags::UNIT_US)),
                    retries: retries & 0x0f,
                    arm: retries >> 4,
                    keep: KeepReason::from_code(keep & 0x3f),
                },
            )
    }

    /// What a round trip must give back: ns exact below 2^32 ns, else µs.
    fn canonical(r: &Record) -> Record {
        let max = r.phases_ns.iter().copied().fold(r.total_ns, u64::max);
        let mut c = *r;
        if max > u64::from(u32::MAX) {
            fn us(ns: u64) -> u64 {
                (ns / 1000).min(u64::from(u32::MAX)) * 1000
            }
            c.total_ns = us(r.total_ns);
            c.phases_ns = r.phases_ns.map(us);
            c.flags.0 |= Flags::UNIT_US;
        }
        c
    }

    proptest! {
        #[test]
        fn record_round_trip(r in arb_record()) {
            let back = Item::decode(&r.encode());
            prop_assert_eq!(back, Item::Record(canonical(&r)));
        }

        #[test]
        fn event_round_trip(t in any::<u64>(), k in any::<u16>(), g in any::<u32>(),
                            a in any::<u64>(), b in any::<u64>(), c in any::<u64>(),
                            ids in any::<(u16, u16, u16, u16)>(), from in any::<u8>(), to in any::<u8>()) {
            let e = Event { time_ns: t, kind: EventKind::from_code(k), generation: g,
                route: ids.0, cluster: ids.1, endpoint: ids.2, req_type: ids.3, a, b, c, from, to };
            prop_assert_eq!(Item::decode(&e.encode()), Item::Event(e));
        }

        #[test]
        fn any_words_decode_without_panic(w in any::<[u64; 7]>()) {
            let item = Item::decode(&w);
            // Re-encoding a decoded item is stable (decode is a function of the bits).
            prop_assert_eq!(Item::decode(&item.encode()), item);
        }
    }

    #[test]
    fn weights_are_exact_inverses() {
        let mut r = Record {
            sample_p: P_ONE,
            ..Record::default()
        };
        assert_eq!(r.weight(), 1.0);
        r.sample_p = 6553; // p = 6554/65536
        assert!((r.weight() * r.p() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn known_codes_round_trip() {
        for n in 0..=20u8 {
            assert_eq!(Reason::from_code(n).code(), n);
            assert_eq!(KeepReason::from_code(n).code(), n);
        }
        assert_eq!(EventKind::from_code(3), EventKind::BreakerTransition);
        assert_eq!(EventKind::from_code(999).name(), "unknown_999");
    }
}
