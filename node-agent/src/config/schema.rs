//! The typed config schema (DESIGN.md "Config"): one snapshot type for
//! file and etcd configs. Field names are the user-facing contract.

use std::collections::BTreeMap;

mod recording;
mod tls;
pub use recording::{RequestType, Ring, Sampling};
pub use tls::{
    AuthzAction, AuthzRule, AuthzTo, ClusterTls, ClusterTlsMode, Identity, ListenerTls, SniCert,
};

use serde::{Deserialize, Serialize};

/// A duration written `500ms`, `5s`, `1m` (parsed by `ringlog::units`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Dur(pub u64);

impl TryFrom<String> for Dur {
    type Error = String;
    fn try_from(s: String) -> Result<Dur, String> {
        ringlog::units::parse_duration_ns(&s)
            .map(Dur)
            .map_err(|e| e.to_string())
    }
}

impl From<Dur> for String {
    fn from(d: Dur) -> String {
        ringlog::units::format_ns(d.0)
    }
}

/// A size written `64MiB`, `4096`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SizeRepr", into = "String")]
pub struct Size(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Text(String),
    Bytes(u64),
}

impl TryFrom<SizeRepr> for Size {
    type Error = String;
    fn try_from(s: SizeRepr) -> Result<Size, String> {
        match s {
            SizeRepr::Bytes(n) => Ok(Size(n)),
            SizeRepr::Text(t) => ringlog::units::parse_size(&t)
                .map(Size)
                .map_err(|e| e.to_string()),
        }
    }
}

impl From<Size> for String {
    fn from(s: Size) -> String {
        ringlog::units::format_size(s.0)
    }
}

/// The whole config.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Schema version; must be 1.
    pub version: u32,
    /// Listeners.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Upstream clusters.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// Routes, first match wins.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Request types (sampling and attribution).
    #[serde(default)]
    pub request_types: Vec<RequestType>,
    /// Sampling of trace records.
    #[serde(default)]
    pub sampling: Sampling,
    /// The flight recorder file.
    #[serde(default)]
    pub ring: Ring,
    /// This node's locality (`--zone` / `--region` and `NODE_ZONE` /
    /// `NODE_REGION` override it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeLocality>,
    /// The node's mesh identity (needed by `mesh` listeners and clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

/// Where the node runs, for clusters with a `locality` preference.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLocality {
    /// Zone (matched against endpoint label `zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Region (matched against endpoint label `region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Listener mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// An ordinary listener.
    #[default]
    Normal,
    /// iptables REDIRECT target: the original destination is the upstream.
    Transparent,
    /// The node's mesh port: mTLS with the node identity; each
    /// connection's transport header names its destination, which is
    /// the upstream (as on a transparent listener).
    Mesh,
}

/// Listener protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1.
    Http,
    /// L4 TCP.
    Tcp,
    /// Sniff: an HTTP/1.x request line means HTTP, else TCP.
    #[default]
    Auto,
}

/// A listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name.
    pub name: String,
    /// `IP:PORT` (a `mesh` listener's default: `0.0.0.0:15008`; see
    /// [`crate::config::fill_defaults`]).
    #[serde(default)]
    pub bind: String,
    /// Mode.
    #[serde(default)]
    pub mode: Mode,
    /// Protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// Route for requests no route matches (HTTP) or all traffic (TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route: Option<String>,
    /// Most open client connections on this listener per agent (each
    /// worker gets its share); excess connections are accepted and closed
    /// at once. None: only the agent-wide `--max-connections` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Client-side timeouts.
    #[serde(default)]
    pub timeouts: ListenerTimeouts,
    /// TLS termination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// Authorization rules over client identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authz: Vec<AuthzRule>,
}

/// Client-side timeouts of a listener (every wait on a client ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTimeouts {
    /// A request head must be complete this long after its first byte (408).
    #[serde(default = "header_read_default")]
    pub header_read: Dur,
    /// Longest gap between two reads of a request body (408, or a cut).
    #[serde(default = "body_read_default")]
    pub body_read: Dur,
    /// Longest time queued response bytes may wait for a client that does
    /// not read; then the connection is closed.
    #[serde(default = "write_default")]
    pub write: Dur,
    /// An idle keep-alive client connection is closed after this.
    #[serde(default = "idle_default")]
    pub idle: Dur,
    /// A tunnel (L4, Upgrade, CONNECT) that moves no byte either way for
    /// this long is closed.
    #[serde(default = "tunnel_idle_default")]
    pub tunnel_idle: Dur,
}

fn header_read_default() -> Dur {
    Dur(10_000_000_000)
}
fn body_read_default() -> Dur {
    Dur(60_000_000_000)
}
fn write_default() -> Dur {
    Dur(30_000_000_000)
}
fn tunnel_idle_default() -> Dur {
    Dur(3_600_000_000_000)
}

impl Default for ListenerTimeouts {
    fn default() -> ListenerTimeouts {
        ListenerTimeouts {
            header_read: header_read_default(),
            body_read: body_read_default(),
            write: write_default(),
            idle: idle_default(),
            tunnel_idle: tunnel_idle_default(),
        }
    }
}

/// Load-balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lb {
    /// Round robin.
    #[default]
    RoundRobin,
    /// Weighted random.
    WeightedRandom,
    /// Power of two choices on EWMA latency.
    P2cEwma,
    /// Consistent hashing (with a route's `hash_on`).
    RingHash,
    /// Weighted random on a live health score: weight × success rate ×
    /// e^(−latency / `score_tau`), recomputed every second.
    ScoreWeighted,
}

/// An upstream endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `IP:PORT`.
    pub addr: String,
    /// Relative weight (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Labels for subsets and locality (`version`, `region`, `zone`, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// Locality preference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    /// Prefer endpoints sharing this label with the node (`zone` or `region`).
    pub prefer: String,
    /// Fail over to other localities when none is healthy.
    #[serde(default = "yes")]
    pub failover: bool,
}

fn yes() -> bool {
    true
}

/// Active health checking: an HTTP GET of `http_path` (healthy when the
/// status is within `expected_status`) or, with `tcp: true`, a TCP
/// connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Path for HTTP checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
    /// A TCP connect is the check (instead of HTTP).
    #[serde(default)]
    pub tcp: bool,
    /// Statuses an HTTP check accepts, inclusive.
    #[serde(default = "ok_statuses")]
    pub expected_status: (u16, u16),
    /// Check interval (each check is jittered by up to a tenth of it).
    #[serde(default = "five_s")]
    pub interval: Dur,
    /// Check timeout (less than the interval).
    #[serde(default = "one_s")]
    pub timeout: Dur,
    /// Successes in a row to become healthy.
    #[serde(default = "three")]
    pub rise: u32,
    /// Failures in a row to become unhealthy.
    #[serde(default = "three")]
    pub fall: u32,
}

fn hundred_ms() -> Dur {
    Dur(100_000_000)
}

fn ok_statuses() -> (u16, u16) {
    (200, 399)
}

fn five_s() -> Dur {
    Dur(5_000_000_000)
}

fn one_s() -> Dur {
    Dur(1_000_000_000)
}

/// Passive outlier ejection of a cluster's endpoints (Envoy's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    /// Consecutive 5xx (gateway failures included) that eject an
    /// endpoint (0: off).
    #[serde(default = "five")]
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures (connect failure, reset, timeout) that
    /// eject an endpoint (0: off, the default, as Envoy enforces it).
    #[serde(default)]
    pub consecutive_gateway_failure: u32,
    /// Success-rate detection period; also how often an endpoint's
    /// ejection multiplier decays.
    #[serde(default = "ten_s")]
    pub interval: Dur,
    /// First ejection length (the n-th lasts n times as long).
    #[serde(default = "thirty_s")]
    pub base_ejection: Dur,
    /// Longest ejection.
    #[serde(default = "three_hundred_s")]
    pub max_ejection: Dur,
    /// Most of the cluster that may be ejected at once, percent (one
    /// endpoint always may be).
    #[serde(default = "ten")]
    pub max_ejection_percent: u32,
    /// Endpoints with enough requests the success-rate detector needs
    /// (0: off).
    #[serde(default = "five")]
    pub success_rate_minimum_hosts: u32,
    /// Requests an endpoint needs in an interval to count.
    #[serde(default = "hundred")]
    pub success_rate_request_volume: u32,
    /// Ejects below mean − factor × standard deviation.
    #[serde(default = "one_point_nine")]
    pub success_rate_stdev_factor: f64,
}

fn three_hundred_s() -> Dur {
    Dur(300_000_000_000)
}

fn hundred() -> u32 {
    100
}

fn one_point_nine() -> f64 {
    1.9
}

/// Circuit breaker and concurrency limits of a cluster (every field has
/// a default, so `breaker: {}` turns it on with Envoy-like limits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    /// Failures in a row that open it (0: off).
    #[serde(default = "five")]
    pub consecutive_failures: u32,
    /// Failure share over `window` that opens it.
    #[serde(default = "half")]
    pub error_rate: f64,
    /// Requests in the window before the rate counts.
    #[serde(default = "twenty")]
    pub min_requests: u32,
    /// Rate window.
    #[serde(default = "ten_s")]
    pub window: Dur,
    /// How long it first stays open (doubled after each failed probe).
    #[serde(default = "thirty_s")]
    pub open_for: Dur,
    /// Probes allowed half-open.
    #[serde(default = "three")]
    pub half_open_probes: u32,
    /// Concurrent requests allowed.
    #[serde(default = "k1024")]
    pub max_concurrent: u32,
    /// Requests allowed to wait for an upstream connection at once.
    #[serde(default = "k1024")]
    pub max_pending: u32,
    /// Upstream connections open to the cluster (pooled ones included),
    /// node-wide.
    #[serde(default = "k1024")]
    pub max_connections: u32,
    /// What counts as a failure: `connect_failure`, `reset`, `timeout`,
    /// `5xx` or a status like `"503"` (default: the first four).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_on: Option<Vec<String>>,
    /// Publish this node's openings to etcd and take other nodes' as a
    /// hint to probe half-open (needs `--etcd`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

fn five() -> u32 {
    5
}
fn half() -> f64 {
    0.5
}
fn ten_s() -> Dur {
    Dur(10_000_000_000)
}
fn thirty_s() -> Dur {
    Dur(30_000_000_000)
}
fn three() -> u32 {
    3
}
/// Envoy's default for each concurrency limit (`max_concurrent`,
/// `max_pending`, `max_connections`), also applied to a cluster without a
/// `breaker` section.
pub const DEFAULT_LIMIT: u32 = 1024;

fn k1024() -> u32 {
    DEFAULT_LIMIT
}

/// Timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Upstream connect.
    #[serde(default = "connect_default")]
    pub connect: Dur,
    /// Whole exchange, from the request head to the last response byte.
    /// None (the default): no total limit; `read` bounds every wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Dur>,
    /// Upstream read-idle: the longest wait for the first response byte,
    /// and between two reads of the response (nginx `proxy_read_timeout`).
    #[serde(default = "read_default")]
    pub read: Dur,
    /// Idle keep-alive connection.
    #[serde(default = "idle_default")]
    pub idle: Dur,
}

fn connect_default() -> Dur {
    Dur(1_000_000_000)
}
fn read_default() -> Dur {
    Dur(60_000_000_000)
}
fn idle_default() -> Dur {
    Dur(60_000_000_000)
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: connect_default(),
            request: None,
            read: read_default(),
            idle: idle_default(),
        }
    }
}

/// Retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts after the first.
    pub attempts: u32,
    /// Conditions: `connect_failure`, `reset`, `timeout`, `5xx` or a status like `"503"`.
    pub on: Vec<String>,
    /// Retries as a share of requests, at most.
    #[serde(default = "twenty")]
    pub budget_percent: u32,
    /// Limit on each attempt's wait for the response head (default: none
    /// beyond `timeouts.read`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Dur>,
    /// Wait before the first retry, doubled for each next one (jittered,
    /// at most 1 s).
    #[serde(default = "backoff_default")]
    pub backoff: Dur,
    /// Retries per second allowed whatever the budget says (the floor for
    /// quiet clusters).
    #[serde(default = "ten")]
    pub min_retries_per_sec: u32,
}

fn backoff_default() -> Dur {
    Dur(25_000_000)
}
fn ten() -> u32 {
    10
}

fn twenty() -> u32 {
    20
}

/// An upstream cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Unique name.
    pub name: String,
    /// LB policy.
    #[serde(default)]
    pub lb: Lb,
    /// Static endpoints (etcd adds leased ones).
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Locality preference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    /// Active health checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Outlier ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<Outlier>,
    /// How fast `p2c_ewma`'s latency estimate forgets (linkerd: 10 s).
    #[serde(default = "ten_s")]
    pub ewma_decay: Dur,
    /// The latency scale τ of `score_weighted`: an endpoint τ slower
    /// scores 1/e as much.
    #[serde(default = "hundred_ms")]
    pub score_tau: Dur,
    /// Circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<Breaker>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// TLS origination (mesh mTLS or simple TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClusterTls>,
}

/// What a route or request type matches.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Host (without port): exact, or `*.suffix` for any subdomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Headers that must be present with exactly these values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Exact path (without the query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Regex the whole path (without the query) must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// Methods, any of them (empty: any method).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Headers whose whole (trimmed) value must match these regexes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers_regex: BTreeMap<String, String>,
    /// Headers that must be present, with any value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_present: Vec<String>,
    /// Headers that must be absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_absent: Vec<String>,
    /// Query parameters with exactly these (raw) values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Query parameters that must be present, with any value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_present: Vec<String>,
}

/// One arm of a route's split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    /// Target cluster.
    pub cluster: String,
    /// Only endpoints with these labels.
    #[serde(default)]
    pub subset: BTreeMap<String, String>,
    /// Relative weight (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

/// A rate limit (GCRA): a token bucket, or with `smooth` a leaky bucket
/// that delays requests over the rate instead of rejecting them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub rps: f64,
    /// Token bucket: requests that may pass at once. Smooth: requests that
    /// may wait at once.
    pub burst: u64,
    /// Delay requests over the rate (spaced at 1/rps) instead of
    /// rejecting them, up to `burst` waiting and `max_delay` each.
    #[serde(default)]
    pub smooth: bool,
    /// Longest wait of a smoothed request (default 1 s; only with `smooth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<Dur>,
    /// Separate buckets per value of this key: `header:NAME`,
    /// `cookie:NAME`, `query:NAME` or `source_ip` (default: the route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Keys tracked at once (default 65536, 16 bytes each); idle keys
    /// make room, and keys past the bound share one overflow bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<u32>,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name.
    pub name: String,
    /// What it matches.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// Where it sends traffic.
    pub to: Vec<Arm>,
    /// Sticky split / ring-hash key: `header:NAME`, `cookie:NAME` or `source_ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    /// Rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Accept `CONNECT` requests on this route (tunnelled to the route's
    /// cluster). Off by default: elsewhere CONNECT is answered 405.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_connect: bool,
    /// Overrides of the target cluster's `timeouts` for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeouts>,
    /// The cluster's `retry` may resend requests of any method on this
    /// route (still only without a body), not only idempotent ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_any_method: bool,
    /// Header fields added, set or removed on the request and response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderActions>,
    /// Replaces the matched `match.path_prefix` of the request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    /// A copy of a share of the requests to a shadow cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// Authorization rules for requests that take this route (on every
    /// listener; `to.route` is implied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authz: Vec<AuthzRule>,
}

/// Request mirroring: fire-and-forget copies to a shadow cluster, their
/// responses discarded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The shadow cluster.
    pub cluster: String,
    /// Share of the route's requests copied, in percent.
    #[serde(default = "hundred_percent")]
    pub percent: f64,
    /// Requests with a larger body are not copied.
    #[serde(default = "sixty_four_kib")]
    pub max_body: Size,
}

fn hundred_percent() -> f64 {
    100.0
}

fn sixty_four_kib() -> Size {
    Size(64 << 10)
}

/// A route's header edits. `*_add` appends a field (an existing one with
/// the name stays), `*_set` replaces every field of the name, `*_remove`
/// drops them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderActions {
    /// Appended to the request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub request_add: BTreeMap<String, String>,
    /// Set on the request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub request_set: BTreeMap<String, String>,
    /// Removed from the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_remove: Vec<String>,
    /// Appended to the response.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub response_add: BTreeMap<String, String>,
    /// Set on the response.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub response_set: BTreeMap<String, String>,
    /// Removed from the response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_remove: Vec<String>,
}

/// A route's overrides of its clusters' timeouts (each optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeouts {
    /// Upstream connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Dur>,
    /// Whole exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Dur>,
    /// Upstream read-idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Dur>,
}
