//! Resilience policies, sans-IO: rate limits per route and circuit breakers
//! with concurrency limits per cluster. Each takes `now` and returns a
//! decision; the state is shared by every worker through atomics (node-wide
//! limits), and the session applies the decisions (429, 503, a delay).
//!
//! - [`ratelimit`]: GCRA token and leaky buckets, keyed tables of bounded size.
//! - [`breaker`]: the breaker state machine and its shared form.
//! - [`retry`]: what a cluster retries, its backoff and its node-wide budget.
//! - [`RateLimiter`] and [`KeySpec`]: a route's limit as configured.
//! - [`FailureOn`]: which request endings count as a cluster's failures.

pub mod breaker;
pub mod ratelimit;
pub mod retry;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ringlog::Reason;

use crate::config::schema::RateLimit;
use crate::snapshot::RequestView;
use ratelimit::{Decision, Gcra, KeyTable};

/// Default bound of a keyed rate limit's table (`rate_limit.max_keys`).
pub const DEFAULT_MAX_KEYS: u32 = 65_536;

/// Default longest wait of a smoothed request (`rate_limit.max_delay`).
pub const DEFAULT_MAX_DELAY_NS: u64 = 1_000_000_000;

/// What a rate limit is counted per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// One bucket for the whole route.
    Route,
    /// A request header's value (absent: one shared "absent" bucket).
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// A query parameter's value.
    Query(String),
    /// The client's IP address.
    SourceIp,
}

impl KeySpec {
    /// Parses `header:NAME`, `cookie:NAME`, `query:NAME` or `source_ip`
    /// (None: the route). The error says what is wrong.
    pub fn parse(key: Option<&str>) -> Result<KeySpec, String> {
        let Some(key) = key else {
            return Ok(KeySpec::Route);
        };
        if key == "source_ip" {
            return Ok(KeySpec::SourceIp);
        }
        let (kind, name) = key.split_once(':').unwrap_or((key, ""));
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~!$&'*+^`|".contains(&b));
        if !valid {
            return Err(format!(
                "{key:?}: expected header:NAME, cookie:NAME, query:NAME or source_ip"
            ));
        }
        let name = name.to_string();
        match kind {
            "header" => Ok(KeySpec::Header(name.to_ascii_lowercase())),
            "cookie" => Ok(KeySpec::Cookie(name)),
            "query" => Ok(KeySpec::Query(name)),
            _ => Err(format!(
                "{key:?}: unknown key kind {kind:?} (header, cookie, query or source_ip)"
            )),
        }
    }

    /// The key of a request hashed, or None when the request has no value
    /// for it (no such header, cookie or parameter; and for [`KeySpec::Route`]).
    pub fn key_hash(&self, req: &RequestView<'_>, client: IpAddr) -> Option<u64> {
        let (present, h) = self.lookup(req, client);
        present.then_some(h)
    }

    /// The key of a request, hashed (never 0); requests without a value
    /// share one "absent" hash.
    pub fn hash(&self, req: &RequestView<'_>, client: IpAddr) -> u64 {
        self.lookup(req, client).1
    }

    /// Whether the request has a value for the key, and its hash (the
    /// value is looked up once).
    fn lookup(&self, req: &RequestView<'_>, client: IpAddr) -> (bool, u64) {
        let (tag, v): (&[u8], Option<&[u8]>) = match self {
            KeySpec::Route => return (false, 1),
            KeySpec::Header(n) => (b"h", (req.header)(n).map(<[u8]>::trim_ascii)),
            KeySpec::Cookie(n) => (b"c", (req.header)("cookie").and_then(|c| cookie(c, n))),
            KeySpec::Query(n) => (b"q", query(req.path, n)),
            KeySpec::SourceIp => {
                let h = match client {
                    IpAddr::V4(a) => hash(b"4", Some(&a.octets())),
                    IpAddr::V6(a) => hash(b"6", Some(&a.octets())),
                };
                return (true, h.max(1));
            }
        };
        (v.is_some(), hash(tag, v).max(1))
    }
}

fn hash(tag: &[u8], v: Option<&[u8]>) -> u64 {
    let mut h = ringlog::sampler::hash_bytes(tag);
    if let Some(v) = v {
        // Present (even empty) differs from absent.
        h ^= ringlog::sampler::hash_bytes(v).rotate_left(1) ^ 1;
    }
    // FNV's low bits are weak; the table indexes by them.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The value of cookie `name` in a `Cookie` header value.
fn cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
    })
}

/// The raw value of query parameter `name` in a request target.
pub fn query<'a>(target: &'a str, name: &str) -> Option<&'a [u8]> {
    let q = target.split_once('?')?.1;
    let q = q.split_once('#').map_or(q, |(q, _)| q);
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

/// Counters of one route's limit, for `/metrics`.
#[derive(Debug, Default)]
pub struct LimitStats {
    /// Requests rejected (429).
    pub rejected: AtomicU64,
    /// Requests delayed (smoothing) and then sent.
    pub delayed: AtomicU64,
}

/// A route's rate limit: its buckets, shared by every worker.
#[derive(Debug)]
pub struct RateLimiter {
    gcra: Gcra,
    key: KeySpec,
    /// Buckets per key (None: one for the route).
    table: Option<KeyTable>,
    route: AtomicU64,
    /// Counters for `/metrics`.
    pub stats: LimitStats,
}

impl RateLimiter {
    /// The limiter for a validated `rate_limit` section.
    pub fn new(rl: &RateLimit) -> Result<RateLimiter, String> {
        let key = KeySpec::parse(rl.key.as_deref())?;
        let max_delay = rl.max_delay.map_or(DEFAULT_MAX_DELAY_NS, |d| d.0);
        let table = (key != KeySpec::Route)
            .then(|| KeyTable::new(rl.max_keys.unwrap_or(DEFAULT_MAX_KEYS) as usize));
        Ok(RateLimiter {
            gcra: Gcra::new(rl.rps, rl.burst, rl.smooth, max_delay),
            key,
            table,
            route: AtomicU64::new(0),
            stats: LimitStats::default(),
        })
    }

    /// Decides a request at `now` and counts a rejection or a delay.
    pub fn check(&self, req: &RequestView<'_>, client: IpAddr, now: u64) -> Decision {
        let bucket = match &self.table {
            Some(t) => t.bucket(self.key.hash(req, client), now),
            None => &self.route,
        };
        let d = self.gcra.check(bucket, now);
        match d {
            Decision::Allow => {}
            Decision::Delay(_) => {
                self.stats.delayed.fetch_add(1, Ordering::Relaxed);
            }
            Decision::Reject { .. } => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
        d
    }
}

/// Which request endings count as failures for a cluster's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureOn {
    connect: bool,
    reset: bool,
    timeout: bool,
    any_5xx: bool,
    statuses: Vec<u16>,
}

impl Default for FailureOn {
    /// Connect failure, reset, timeout and every 5xx.
    fn default() -> FailureOn {
        FailureOn {
            connect: true,
            reset: true,
            timeout: true,
            any_5xx: true,
            statuses: Vec::new(),
        }
    }
}

impl FailureOn {
    /// Parses a list of `connect_failure`, `reset`, `timeout`, `5xx` and
    /// status codes (`"503"`).
    pub fn parse(list: &[String]) -> Result<FailureOn, String> {
        let mut f = FailureOn {
            connect: false,
            reset: false,
            timeout: false,
            any_5xx: false,
            statuses: Vec::new(),
        };
        for item in list {
            match item.as_str() {
                "connect_failure" => f.connect = true,
                "reset" => f.reset = true,
                "timeout" => f.timeout = true,
                "5xx" => f.any_5xx = true,
                s => match s.parse::<u16>() {
                    Ok(code) if (100..=599).contains(&code) => f.statuses.push(code),
                    _ => {
                        return Err(format!(
                            "{s:?}: expected connect_failure, reset, timeout, 5xx or a status code"
                        ));
                    }
                },
            }
        }
        Ok(f)
    }

    /// Whether a request that ended with this status and reason failed;
    /// None when the ending says nothing about the upstream (the client
    /// left, the request was malformed).
    pub fn classify(&self, status: u16, reason: Reason) -> Option<breaker::Outcome> {
        use breaker::Outcome::{Failure, Success};
        let hit = match reason {
            Reason::UpstreamConnect => self.connect,
            Reason::UpstreamReset | Reason::UpstreamProtocol => self.reset,
            Reason::UpstreamTimeout => self.timeout,
            Reason::None if status > 0 => {
                (self.any_5xx && (500..600).contains(&status)) || self.statuses.contains(&status)
            }
            _ => return None,
        };
        Some(if hit { Failure } else { Success })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(path: &'a str, header: &'a dyn Fn(&str) -> Option<&'a [u8]>) -> RequestView<'a> {
        RequestView {
            host: None,
            path,
            method: "GET",
            header,
        }
    }

    #[test]
    fn keys_parse_and_bad_ones_say_why() {
        assert_eq!(
            KeySpec::parse(Some("header:X-Region")),
            Ok(KeySpec::Header("x-region".into()))
        );
        assert_eq!(KeySpec::parse(Some("source_ip")), Ok(KeySpec::SourceIp));
        assert_eq!(KeySpec::parse(None), Ok(KeySpec::Route));
        for bad in ["header:", "ip", "body:x", "cookie:a b"] {
            let e = KeySpec::parse(Some(bad)).unwrap_err();
            assert!(
                e.contains("header:NAME") || e.contains("unknown key kind"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn keys_read_headers_cookies_queries_and_the_client() {
        let h = |n: &str| match n {
            "x-user" => Some(&b" alice "[..]),
            "cookie" => Some(&b"a=1; session=s42; b=2"[..]),
            _ => None,
        };
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let r = view("/p?x=1&user=bob&y", &h);
        let key = |s: &str| KeySpec::parse(Some(s)).unwrap();
        let user = key("header:x-user");
        let alice = |n: &str| (n == "x-user").then_some(&b"alice"[..]);
        let carol = |n: &str| (n == "x-user").then_some(&b"carol"[..]);
        // Trimmed: " alice " is alice.
        assert_eq!(user.hash(&view("/", &alice), ip), user.hash(&r, ip));
        assert_ne!(user.hash(&view("/", &carol), ip), user.hash(&r, ip));
        let bob = key("query:user");
        assert_eq!(
            bob.hash(&view("/?user=bob", &alice), other),
            bob.hash(&r, ip)
        );
        let session = key("cookie:session");
        assert_ne!(session.hash(&r, ip), session.hash(&view("/", &alice), ip));
        assert_eq!(
            cookie(b"a=1; session=s42; b=2", "session"),
            Some(&b"s42"[..])
        );
        assert_eq!(cookie(b"a=1", "session"), None);
        assert_eq!(query("/p?x=1&user=bob&y#f", "user"), Some(&b"bob"[..]));
        assert_eq!(query("/p?x=1&user=bob&y", "y"), Some(&b""[..]));
        assert_eq!(query("/p", "user"), None);
        assert_ne!(
            key("source_ip").hash(&r, ip),
            key("source_ip").hash(&r, other)
        );
        // An absent value is its own key, not a collision with an empty one.
        let none = |_: &str| None;
        let empty = |n: &str| (n == "x-user").then_some(&b""[..]);
        assert_ne!(
            key("header:x-user").hash(&view("/", &none), ip),
            key("header:x-user").hash(&view("/", &empty), ip)
        );
    }

    #[test]
    fn failures_follow_the_list() {
        let d = FailureOn::default();
        use breaker::Outcome::{Failure, Success};
        assert_eq!(d.classify(502, Reason::UpstreamConnect), Some(Failure));
        assert_eq!(d.classify(503, Reason::None), Some(Failure));
        assert_eq!(d.classify(404, Reason::None), Some(Success));
        assert_eq!(d.classify(0, Reason::DownstreamReset), None);
        let only = FailureOn::parse(&["503".into(), "timeout".into()]).unwrap();
        assert_eq!(only.classify(500, Reason::None), Some(Success));
        assert_eq!(only.classify(503, Reason::None), Some(Failure));
        assert_eq!(only.classify(502, Reason::UpstreamConnect), Some(Success));
        assert_eq!(only.classify(504, Reason::UpstreamTimeout), Some(Failure));
        assert!(FailureOn::parse(&["6xx".into()]).is_err());
    }
}
