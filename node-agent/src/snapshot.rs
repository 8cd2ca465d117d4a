//! The typed runtime snapshot workers route with, built once per config
//! generation from a validated [`Config`] and shared behind `arc-swap`.
//!
//! Building interns every route, cluster, endpoint, request type and
//! listener name in the ring's name table (through a caller-supplied
//! function, so this module stays free of I/O) and resolves every name to an
//! index, so the request path never looks a name up in a map.
//!
//! Routing is the minimal first cut: routes are tried in order (Host without
//! port, path prefix, exact header values); a listener's `default_route`
//! catches the rest. A route splits across its arms by weight on a per-request
//! hash (the `hash_on` key when the request has one, so a user sticks to one
//! arm), by weighted rendezvous hashing: a weight change moves only the
//! share of keys it must;
//! each arm chooses among the cluster endpoints its subset selects by the
//! cluster's `lb` (see [`lb`]).

mod index;
mod listeners;
pub use listeners::MAX_LISTENERS;
mod lb;
pub mod live;
pub mod locality;
pub mod matcher;
mod pick;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use ringlog::NameKind;

use crate::config::schema::DEFAULT_LIMIT;
use crate::config::schema::{Match, Mode, Protocol};
use crate::config::{Config, Problem};
use crate::http1::Limits;
use crate::http1::edit::RouteEdits;
use crate::policy::breaker::{Breaker, Params as BreakerParams};
use crate::policy::retry::RetryPolicy;
use crate::policy::{FailureOn, KeySpec, RateLimiter};
use crate::proxy::SessionLimits;
use live::{ClusterLive, OutlierParams};

/// Why a snapshot could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The config failed validation.
    #[error("{} problem(s), first: {}", .0.len(), .0.first().map(|p| p.to_string()).unwrap_or_default())]
    Invalid(Vec<Problem>),
    /// A name could not be interned in the ring's name table.
    #[error("naming {kind} {name:?} in the ring: {reason}")]
    Intern {
        /// Kind of name.
        kind: &'static str,
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// A listener as workers use it.
#[derive(Debug, Clone)]
pub struct ListenerRt {
    /// Name.
    pub name: String,
    /// Ring name id.
    pub id: u16,
    /// Bound address.
    pub bind: SocketAddr,
    /// Normal or transparent.
    pub mode: Mode,
    /// HTTP, TCP or sniffed.
    pub protocol: Protocol,
    /// Index of the default route.
    pub default_route: Option<usize>,
    /// Client-side timeouts for its sessions.
    pub limits: SessionLimits,
    /// Most open connections on this listener, agent-wide (0: no limit).
    pub max_connections: u32,
    /// Removed from the config in this generation: workers no longer
    /// accept on it and close its connections once idle (None: active).
    pub retired: Option<u32>,
    /// TLS termination (mesh listeners take the node identity instead).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Authorization rules over client identities.
    pub authz: Arc<crate::authz::Policy>,
}

/// One weighted arm of a route.
#[derive(Debug, Clone)]
pub struct ArmRt {
    /// Index into [`Snapshot::clusters`].
    pub cluster: usize,
    /// Indices into that cluster's endpoints selected by the subset.
    pub endpoints: Vec<usize>,
    /// Weight.
    pub weight: u32,
    /// Index of this arm's counter ([`Snapshot::arm_count`]).
    pub slot: usize,
    /// How it chooses among `endpoints` (the cluster's `lb`).
    pub chooser: lb::Chooser,
    /// Its endpoints by locality tier (None: no locality preference, or
    /// the node's locality is unknown).
    pub tiers: Option<locality::Tiers>,
}

/// A route.
#[derive(Debug, Clone)]
pub struct RouteRt {
    /// Name.
    pub name: String,
    /// Ring name id.
    pub id: u16,
    /// What it matches.
    pub matcher: matcher::Matcher,
    /// Arms.
    pub arms: Vec<ArmRt>,
    /// Sum of arm weights.
    pub total_weight: u64,
    /// What makes a request sticky to an arm and to a `ring_hash` endpoint
    /// (`hash_on`: a header, cookie, query parameter or the client IP).
    pub hash_key: Option<KeySpec>,
    /// CONNECT requests may use this route.
    pub allow_connect: bool,
    /// The route's rate limit, shared by every worker.
    pub limit: Option<Arc<RateLimiter>>,
    /// Its overrides of the clusters' timeouts.
    pub timeouts: Option<crate::config::schema::RouteTimeouts>,
    /// Retries may resend any method (bodyless) on this route.
    pub retry_any_method: bool,
    /// Header edits and path rewrite (None: nothing to do).
    pub edits: Option<Arc<RouteEdits>>,
    /// Its mirror to a shadow cluster.
    pub mirror: Option<Arc<MirrorRt>>,
}

/// A route's mirror: which requests are copied, where, up to what body.
#[derive(Debug)]
pub struct MirrorRt {
    /// Index of the shadow cluster.
    pub cluster: usize,
    /// A request is copied when its remixed hash is below this.
    pub below: u64,
    /// Largest body copied, bytes.
    pub max_body: u64,
    /// Requests not copied because their body was larger.
    pub skipped: std::sync::atomic::AtomicU64,
}

impl MirrorRt {
    /// Whether the request with sampling hash `hash` is copied.
    pub fn takes(&self, hash: u64) -> bool {
        ringlog::synth::mix(hash ^ MIRROR_SALT) < self.below
    }
}

/// Decorrelates the mirror decision from sampling and balancing.
const MIRROR_SALT: u64 = 0x31c7_0a55_e7b0_5eed;

/// An upstream endpoint.
#[derive(Debug, Clone)]
pub struct EndpointRt {
    /// Address.
    pub addr: SocketAddr,
    /// Ring name id.
    pub id: u16,
}

/// A cluster.
#[derive(Debug, Clone)]
pub struct ClusterRt {
    /// Name.
    pub name: String,
    /// Ring name id.
    pub id: u16,
    /// Endpoints.
    pub endpoints: Vec<EndpointRt>,
    /// Connect timeout, ns.
    pub connect_timeout_ns: u64,
    /// Whole-exchange timeout, ns (0: none).
    pub request_timeout_ns: u64,
    /// Upstream read-idle timeout, ns.
    pub read_timeout_ns: u64,
    /// How long an upstream connection may sit idle in a worker's pool, ns.
    pub idle_timeout_ns: u64,
    /// The cluster's breaker and concurrency limits, shared by every worker
    /// (limits only, at their defaults, without a `breaker` section).
    pub breaker: Arc<Breaker>,
    /// The cluster's retry policy and budget, shared by every worker.
    pub retry: Option<Arc<RetryPolicy>>,
    /// Its endpoints' live state (load, latency, ejection), shared by
    /// every worker.
    pub live: Arc<ClusterLive>,
    /// TLS origination (None: plaintext).
    pub tls: Option<Arc<tls::ClusterTlsRt>>,
    /// Pool tag of its TLS settings (0: plaintext; see [`tls::cluster`]).
    pub tls_tag: u64,
}

/// A request type (drives sampling and attribution).
#[derive(Debug, Clone)]
pub struct TypeRt {
    /// Ring name id (also the sampler's type index).
    pub id: u16,
    /// What it matches.
    pub matcher: matcher::Matcher,
    /// Sampling probability.
    pub sample: f64,
}

/// What a request looks like to the matcher.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    /// Host header (may include a port).
    pub host: Option<&'a [u8]>,
    /// Request target.
    pub path: &'a str,
    /// Method (as sent; `""` for L4).
    pub method: &'a str,
    /// Header lookup (first value, case-insensitive name).
    pub header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
}

impl std::fmt::Debug for RequestView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestView")
            .field("host", &self.host.map(String::from_utf8_lossy))
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Route index.
    pub route: usize,
    /// Cluster index.
    pub cluster: usize,
    /// Endpoint index within the cluster.
    pub endpoint: usize,
    /// Canary arm: 1-based index of the route's `to` entry taken, 0 when
    /// the route has a single target (at most 15, as the record holds).
    pub arm: u8,
    /// Locality tier of the endpoint (0: preferred, or no preference).
    pub locality: u8,
}

/// Where a pick sends a request, with the ids its record needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Endpoint address.
    pub addr: SocketAddr,
    /// Cluster name id (0: none, e.g. an original destination).
    pub cluster: u16,
    /// Index into [`Snapshot::clusters`] (None: a passthrough target).
    pub cluster_ix: Option<usize>,
    /// Endpoint name id (0: none).
    pub endpoint: u16,
    /// Canary arm (see [`Pick::arm`]).
    pub arm: u8,
    /// Locality tier (see [`Pick::locality`]).
    pub locality: u8,
    /// Connect timeout, ns.
    pub connect_timeout_ns: u64,
    /// Whole-exchange timeout, ns (0: none).
    pub request_timeout_ns: u64,
    /// Upstream read-idle timeout, ns.
    pub read_timeout_ns: u64,
    /// How long its connection may sit idle in the pool, ns.
    pub idle_timeout_ns: u64,
    /// The cluster's TLS pool tag (0: plaintext).
    pub tls: u64,
}

impl Target {
    /// An original destination (transparent capture): no cluster, the
    /// default timeouts (1 s connect, 60 s read-idle, no total, 60 s idle).
    pub fn passthrough(addr: SocketAddr) -> Target {
        Target {
            addr,
            cluster: 0,
            cluster_ix: None,
            endpoint: 0,
            arm: 0,
            locality: 0,
            connect_timeout_ns: 1_000_000_000,
            request_timeout_ns: 0,
            read_timeout_ns: 60_000_000_000,
            idle_timeout_ns: 60_000_000_000,
            tls: 0,
        }
    }
}

/// One immutable config generation.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Config generation (1 for the first).
    pub generation: u32,
    /// The config it was built from (served on `/config`).
    pub config: Config,
    /// Listeners, in config order.
    pub listeners: Vec<ListenerRt>,
    /// Routes, in match order.
    pub routes: Vec<RouteRt>,
    /// Clusters.
    pub clusters: Vec<ClusterRt>,
    /// Request types, in match order.
    pub types: Vec<TypeRt>,
    /// Number of per-arm counters a worker needs (round robin, weighted random).
    pub arm_count: usize,
    /// Request head limits.
    pub limits: Limits,
    /// Routes by host.
    route_index: index::RouteIndex,
    /// Clusters whose live state needs a worker's tick (outlier
    /// detection, health checks, scores): the rest are never visited.
    pub watched: Vec<usize>,
}

/// A problem validation should have caught (kept as an error, not a panic).
fn invalid(name: &str, reason: String) -> SnapshotError {
    SnapshotError::Invalid(vec![Problem {
        key: name.to_string(),
        field: "policy".into(),
        reason,
    }])
}

/// Compiles a match; a problem validation should have caught is an error.
fn compile(key: &str, m: &Match) -> Result<matcher::Matcher, SnapshotError> {
    matcher::Matcher::compile(m).map_err(|(field, reason)| {
        SnapshotError::Invalid(vec![Problem {
            key: key.to_string(),
            field: format!("match.{field}"),
            reason,
        }])
    })
}

impl Snapshot {
    /// Validates `config` and builds generation `generation`, naming things
    /// through `intern(kind, name)`.
    pub fn build(
        config: Config,
        generation: u32,
        mut intern: impl FnMut(NameKind, &str) -> Result<u16, String>,
    ) -> Result<Snapshot, SnapshotError> {
        let problems = crate::config::validate(&config);
        if !problems.is_empty() {
            return Err(SnapshotError::Invalid(problems));
        }
        let mut name = |kind: NameKind, n: &str| {
            intern(kind, n).map_err(|reason| SnapshotError::Intern {
                kind: kind.name(),
                name: n.to_string(),
                reason,
            })
        };
        let mut clusters = Vec::new();
        for c in &config.clusters {
            let mut endpoints = Vec::new();
            for e in &c.endpoints {
                // Validation guarantees the address parses; skip defensively.
                let Ok(addr) = e.addr.parse::<SocketAddr>() else {
                    continue;
                };
                endpoints.push(EndpointRt {
                    addr,
                    id: name(NameKind::Endpoint, &e.addr)?,
                });
            }
            let outlier = c.outlier.as_ref().map(OutlierParams::from_config);
            let mut live = ClusterLive::new(endpoints.len(), outlier, c.ewma_decay.0);
            if let Some(h) = &c.health_check {
                live = live.with_health(h.rise, h.fall);
            }
            if c.lb == crate::config::schema::Lb::ScoreWeighted {
                let weights = c.endpoints.iter().map(|e| e.weight).collect();
                live = live.with_scores(weights, c.score_tau.0);
            }
            let live = Arc::new(live);
            let (cluster_tls, tls_tag) = tls::cluster(c)?;
            clusters.push(ClusterRt {
                name: c.name.clone(),
                id: name(NameKind::Cluster, &c.name)?,
                endpoints,
                connect_timeout_ns: c.timeouts.connect.0,
                request_timeout_ns: c.timeouts.request.map_or(0, |d| d.0),
                read_timeout_ns: c.timeouts.read.0,
                idle_timeout_ns: c.timeouts.idle.0,
                breaker: match &c.breaker {
                    Some(b) => {
                        let p = BreakerParams {
                            consecutive_failures: b.consecutive_failures,
                            error_rate: b.error_rate,
                            min_requests: b.min_requests,
                            window_ns: b.window.0,
                            open_for_ns: b.open_for.0,
                            half_open_probes: b.half_open_probes,
                        };
                        let failure_on = match &b.failure_on {
                            Some(list) => {
                                FailureOn::parse(list).map_err(|why| invalid(&c.name, why))?
                            }
                            None => FailureOn::default(),
                        };
                        let (mc, mp) = (b.max_concurrent, b.max_pending);
                        let breaker = Breaker::new(p, mc, mp, failure_on)
                            .with_max_connections(b.max_connections);
                        Arc::new(breaker)
                    }
                    // Envoy's defaults hold without a breaker section.
                    None => Arc::new(Breaker::limits_only(
                        DEFAULT_LIMIT,
                        DEFAULT_LIMIT,
                        DEFAULT_LIMIT,
                    )),
                },
                retry: match &c.retry {
                    Some(rt) => {
                        let on = FailureOn::parse(&rt.on).map_err(|why| invalid(&c.name, why))?;
                        Some(Arc::new(RetryPolicy::new(
                            rt.attempts,
                            on,
                            rt.per_try_timeout.map(|d| d.0),
                            rt.backoff.0,
                            rt.budget_percent,
                            rt.min_retries_per_sec,
                        )))
                    }
                    None => None,
                },
                live,
                tls: cluster_tls,
                tls_tag,
            });
        }
        let mut routes = Vec::new();
        let mut arm_count = 0;
        for r in &config.routes {
            let mut arms = Vec::new();
            for a in &r.to {
                let Some(ci) = config.clusters.iter().position(|c| c.name == a.cluster) else {
                    continue;
                };
                let cluster = &config.clusters[ci];
                let chosen: Vec<(usize, &crate::config::schema::Endpoint)> = cluster
                    .endpoints
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| a.subset.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
                    .collect();
                let weights: Vec<u32> = chosen.iter().map(|(_, e)| e.weight).collect();
                let keys: Vec<String> = chosen.iter().map(|(_, e)| e.addr.clone()).collect();
                let node = config.node.clone().unwrap_or_default();
                let tiers = cluster.locality.as_ref().and_then(|l| {
                    let eps: Vec<_> = chosen.iter().map(|(_, e)| *e).collect();
                    locality::Tiers::build(&cluster.lb, &eps, &node, &l.prefer, l.failover)
                });
                arms.push(ArmRt {
                    cluster: ci,
                    endpoints: chosen.iter().map(|(i, _)| *i).collect(),
                    weight: a.weight,
                    slot: arm_count,
                    chooser: lb::Chooser::build(&cluster.lb, &weights, &keys),
                    tiers,
                });
                arm_count += 1;
            }
            routes.push(RouteRt {
                name: r.name.clone(),
                id: name(NameKind::Route, &r.name)?,
                matcher: compile(&format!("routes[{}]", r.name), &r.matches)?,
                total_weight: arms.iter().map(|a| u64::from(a.weight)).sum(),
                arms,
                hash_key: match &r.hash_on {
                    Some(h) => Some(KeySpec::parse(Some(h)).map_err(|why| invalid(&r.name, why))?),
                    None => None,
                },
                allow_connect: r.allow_connect,
                timeouts: r.timeouts,
                retry_any_method: r.retry_any_method,
                mirror: match &r.mirror {
                    Some(m) => {
                        let Some(ci) = config.clusters.iter().position(|c| c.name == m.cluster)
                        else {
                            return Err(invalid(&r.name, format!("no cluster {:?}", m.cluster)));
                        };
                        Some(Arc::new(MirrorRt {
                            cluster: ci,
                            below: (m.percent / 100.0 * u64::MAX as f64) as u64,
                            max_body: m.max_body.0,
                            skipped: std::sync::atomic::AtomicU64::new(0),
                        }))
                    }
                    None => None,
                },
                edits: RouteEdits::build(
                    r.headers.as_ref(),
                    r.matches.path_prefix.as_deref(),
                    r.prefix_rewrite.as_deref(),
                )
                .map(Arc::new),
                limit: match &r.rate_limit {
                    Some(rl) => Some(Arc::new(
                        RateLimiter::new(rl).map_err(|reason| invalid(&r.name, reason))?,
                    )),
                    None => None,
                },
            });
        }
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let Ok(bind) = l.bind.parse::<SocketAddr>() else {
                continue;
            };
            listeners.push(ListenerRt {
                name: l.name.clone(),
                id: name(NameKind::Listener, &l.name)?,
                bind,
                mode: l.mode,
                protocol: l.protocol,
                default_route: l
                    .default_route
                    .as_ref()
                    .and_then(|d| routes.iter().position(|r| &r.name == d)),
                limits: SessionLimits::from(&l.timeouts),
                max_connections: l.max_connections.unwrap_or(0),
                retired: None,
                tls: tls::listener(l)?,
                authz: Arc::new(tls::authz(l, &config.routes)),
            });
        }
        let mut types = Vec::new();
        for t in &config.request_types {
            types.push(TypeRt {
                id: name(NameKind::RequestType, &t.name)?,
                matcher: compile(&format!("request_types[{}]", t.name), &t.matches)?,
                sample: t.sample,
            });
        }
        let routes_keys: Vec<_> = routes.iter().map(|r| r.matcher.host_key()).collect();
        Ok(Snapshot {
            generation,
            config,
            listeners,
            routes,
            types,
            arm_count,
            limits: Limits::default(),
            route_index: index::RouteIndex::build(routes_keys),
            watched: clusters
                .iter()
                .enumerate()
                .filter(|(_, c)| c.live.watched())
                .map(|(i, _)| i)
                .collect(),
            clusters,
        })
    }

    /// Takes over `prev`'s live state where this generation's config of
    /// it is unchanged: a cluster's breaker (same `breaker` section) and
    /// retry budget (same `retry`), its endpoints' stats, ejections and
    /// health (same endpoints, `lb`, `outlier`, `health_check`,
    /// `ewma_decay` and `score_tau`), and a route's rate-limit buckets
    /// (same `rate_limit`). A changed part starts fresh.
    pub fn inherit(&mut self, prev: &Snapshot) {
        for c in &mut self.clusters {
            let (Some(new), Some(old), Some(old_rt)) = (
                self.config.clusters.iter().find(|k| k.name == c.name),
                prev.config.clusters.iter().find(|k| k.name == c.name),
                prev.clusters.iter().find(|k| k.name == c.name),
            ) else {
                continue;
            };
            if new.breaker == old.breaker {
                c.breaker = old_rt.breaker.clone();
            }
            if new.retry == old.retry {
                c.retry = old_rt.retry.clone();
            }
            let same_endpoints = new.endpoints == old.endpoints
                && new.lb == old.lb
                && new.outlier == old.outlier
                && new.health_check == old.health_check
                && new.ewma_decay == old.ewma_decay
                && new.score_tau == old.score_tau;
            if same_endpoints {
                c.live = old_rt.live.clone();
            }
        }
        for r in &mut self.routes {
            let (Some(new), Some(old), Some(old_rt)) = (
                self.config.routes.iter().find(|k| k.name == r.name),
                prev.config.routes.iter().find(|k| k.name == r.name),
                prev.routes.iter().find(|k| k.name == r.name),
            ) else {
                continue;
            };
            if new.rate_limit == old.rate_limit {
                r.limit = old_rt.limit.clone();
            }
        }
    }

    /// The request type id of a request (0 = default).
    pub fn request_type(&self, req: &RequestView<'_>) -> u16 {
        self.types
            .iter()
            .find(|t| t.matcher.matches(req))
            .map_or(0, |t| t.id)
    }

    /// The route for a request on listener `listener`: the first matching
    /// route, else the listener's default route.
    pub fn route(&self, listener: usize, req: &RequestView<'_>) -> Option<usize> {
        self.route_index
            .first(req.host, |i| {
                self.routes.get(i).is_some_and(|r| r.matcher.matches(req))
            })
            .or_else(|| self.listeners.get(listener).and_then(|l| l.default_route))
    }

    /// The address, ids and timeouts of a pick made on this snapshot.
    /// A route's `timeouts` override its cluster's.
    pub fn target(&self, p: Pick) -> Option<Target> {
        let c = self.clusters.get(p.cluster)?;
        let e = c.endpoints.get(p.endpoint)?;
        let o = self.routes.get(p.route).and_then(|r| r.timeouts);
        let pick = |own: Option<crate::config::schema::Dur>, base: u64| own.map_or(base, |d| d.0);
        Some(Target {
            addr: e.addr,
            cluster: c.id,
            cluster_ix: Some(p.cluster),
            endpoint: e.id,
            arm: p.arm,
            locality: p.locality,
            connect_timeout_ns: pick(o.and_then(|o| o.connect), c.connect_timeout_ns),
            request_timeout_ns: pick(o.and_then(|o| o.request), c.request_timeout_ns),
            read_timeout_ns: pick(o.and_then(|o| o.read), c.read_timeout_ns),
            idle_timeout_ns: c.idle_timeout_ns,
            tls: c.tls_tag,
        })
    }
}

#[cfg(test)]
mod tests;
