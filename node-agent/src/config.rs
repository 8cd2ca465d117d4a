//! Config loading and validation: YAML or JSON text into one typed
//! [`Config`] snapshot, checked as a whole. Bad config never takes effect:
//! every problem is reported with the key (which listener, cluster, route
//! ...), the field and the reason, all at once.

pub mod schema;
mod tls;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

pub use schema::Config;
use schema::{Cluster, Match, Route};

/// One thing wrong with a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Which object: `listeners[api]`, `clusters[orders]`, `sampling`, ...
    pub key: String,
    /// Which field inside it: `endpoints[1].addr`, `to[0].cluster`, ...
    pub field: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.key, self.field, self.reason)
    }
}

/// Why a config was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The text is not valid YAML/JSON, or does not fit the schema (unknown
    /// field, wrong type, bad duration); the message has the location.
    #[error("config {format} error: {message}")]
    Syntax {
        /// `yaml` or `json`.
        format: &'static str,
        /// Parser message with the location.
        message: String,
    },
    /// The config parsed but is not consistent.
    #[error("config invalid ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" },
            .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// Reads and validates a config file (`.json` is JSON, anything else YAML).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let json = path.extension().is_some_and(|e| e == "json");
    parse(&text, json)
}

/// Parses and validates config text.
pub fn parse(text: &str, json: bool) -> Result<Config, ConfigError> {
    let cfg = parse_unvalidated(text, json)?;
    let problems = validate(&cfg);
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Parses config text into the schema without the consistency rules: the
/// base under etcd's sections (`--etcd` with `--config`), which may name
/// routes that only etcd holds. The merged config is validated.
pub fn parse_unvalidated(text: &str, json: bool) -> Result<Config, ConfigError> {
    let cfg: Config = if json {
        serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            format: "json",
            message: e.to_string(),
        })?
    } else {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
            format: "yaml",
            message: e.to_string(),
        })?
    };
    let mut cfg = cfg;
    fill_defaults(&mut cfg);
    Ok(cfg)
}

/// Defaults that depend on another field: a `mesh` listener without
/// `bind` binds the mesh port on every address, `0.0.0.0:15008`.
pub fn fill_defaults(cfg: &mut Config) {
    for l in &mut cfg.listeners {
        if l.bind.is_empty() && l.mode == schema::Mode::Mesh {
            l.bind = format!("0.0.0.0:{}", crate::snapshot::tls::MESH_PORT);
        }
    }
}

struct Report(Vec<Problem>);

impl Report {
    fn add(&mut self, key: impl Into<String>, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            field: field.into(),
            reason: reason.into(),
        });
    }
}

fn duplicates<'a>(r: &mut Report, kind: &str, names: impl Iterator<Item = &'a str>) {
    let mut seen = HashSet::new();
    for n in names {
        if n.is_empty() {
            r.add(format!("{kind}[]"), "name", "must not be empty");
        } else if !seen.insert(n) {
            r.add(format!("{kind}[{n}]"), "name", "duplicate name");
        }
    }
}

fn fraction(r: &mut Report, key: &str, field: &str, v: f64) {
    if !(0.0..=1.0).contains(&v) {
        r.add(key, field, format!("{v} is not between 0 and 1"));
    }
}

/// Every consistency rule; an empty result means valid.
pub fn validate(cfg: &Config) -> Vec<Problem> {
    let mut r = Report(Vec::new());
    if cfg.version != 1 {
        r.add(
            "(top)",
            "version",
            format!("{} is not supported (only 1)", cfg.version),
        );
    }
    duplicates(
        &mut r,
        "listeners",
        cfg.listeners.iter().map(|l| l.name.as_str()),
    );
    duplicates(
        &mut r,
        "clusters",
        cfg.clusters.iter().map(|c| c.name.as_str()),
    );
    duplicates(&mut r, "routes", cfg.routes.iter().map(|c| c.name.as_str()));
    duplicates(
        &mut r,
        "request_types",
        cfg.request_types.iter().map(|c| c.name.as_str()),
    );
    let clusters: BTreeMap<&str, &Cluster> =
        cfg.clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    let routes: HashSet<&str> = cfg.routes.iter().map(|r| r.name.as_str()).collect();
    let mut binds = HashSet::new();
    for l in &cfg.listeners {
        let key = format!("listeners[{}]", l.name);
        match l.bind.parse::<SocketAddr>() {
            Err(_) if l.bind.is_empty() => r.add(&key, "bind", "required: IP:PORT"),
            Err(_) => r.add(&key, "bind", format!("{:?} is not IP:PORT", l.bind)),
            Ok(a) if !binds.insert(a) => {
                r.add(&key, "bind", format!("{a} is used by another listener"))
            }
            Ok(_) => {}
        }
        if let Some(d) = l.default_route.as_deref().filter(|d| !routes.contains(d)) {
            let hint = did_you_mean(d, routes.iter().copied());
            r.add(&key, "default_route", format!("no route named {d:?}{hint}"));
        }
        if l.max_connections == Some(0) {
            r.add(&key, "max_connections", "must be at least 1");
        }
        let t = &l.timeouts;
        for (field, d) in [
            ("timeouts.header_read", t.header_read),
            ("timeouts.body_read", t.body_read),
            ("timeouts.write", t.write),
            ("timeouts.idle", t.idle),
            ("timeouts.tunnel_idle", t.tunnel_idle),
        ] {
            if d.0 == 0 {
                r.add(&key, field, "must be positive");
            }
        }
    }
    for c in &cfg.clusters {
        check_cluster(&mut r, c);
    }
    tls::check(&mut r, cfg, &routes);
    for route in &cfg.routes {
        check_route(&mut r, route, &clusters);
    }
    for t in &cfg.request_types {
        let key = format!("request_types[{}]", t.name);
        fraction(&mut r, &key, "sample", t.sample);
        check_match(&mut r, &key, &t.matches);
    }
    let s = &cfg.sampling;
    fraction(&mut r, "sampling", "default", s.default);
    if let Some(q) = s.keep_above_quantile.filter(|q| !(*q > 0.0 && *q < 1.0)) {
        r.add(
            "sampling",
            "keep_above_quantile",
            format!("{q} is not strictly between 0 and 1"),
        );
    }
    if cfg.ring.size.0 < 1 << 20 {
        r.add(
            "ring",
            "size",
            format!("{} bytes is below the 1MiB minimum", cfg.ring.size.0),
        );
    }
    if cfg.ring.path.as_os_str().is_empty() {
        r.add("ring", "path", "must not be empty");
    }
    r.0
}

fn check_cluster(r: &mut Report, c: &Cluster) {
    let key = format!("clusters[{}]", c.name);
    let mut addrs = HashSet::new();
    for (i, e) in c.endpoints.iter().enumerate() {
        match e.addr.parse::<SocketAddr>() {
            Err(_) => r.add(
                &key,
                format!("endpoints[{i}].addr"),
                format!("{:?} is not IP:PORT", e.addr),
            ),
            Ok(a) if !addrs.insert(a) => r.add(
                &key,
                format!("endpoints[{i}].addr"),
                format!("{a} is listed twice"),
            ),
            Ok(_) => {}
        }
        if e.weight == 0 {
            r.add(&key, format!("endpoints[{i}].weight"), "must be at least 1");
        }
    }
    if let Some(l) = &c.locality
        && l.prefer != "zone"
        && l.prefer != "region"
    {
        r.add(
            &key,
            "locality.prefer",
            format!("{:?} is not zone or region", l.prefer),
        );
    }
    if let Some(h) = &c.health_check {
        match (&h.http_path, h.tcp) {
            (Some(p), false) if !p.starts_with('/') || p.bytes().any(|b| b <= b' ') => {
                r.add(
                    &key,
                    "health_check.http_path",
                    "must start with / and hold no space or control byte",
                );
            }
            (Some(_), true) => r.add(
                &key,
                "health_check",
                "http_path and tcp: true are two kinds of check; give one",
            ),
            (None, false) => r.add(
                &key,
                "health_check",
                "needs http_path (an HTTP check) or tcp: true (a connect check)",
            ),
            _ => {}
        }
        let (lo, hi) = h.expected_status;
        if !(100..=599).contains(&lo) || !(lo..=599).contains(&hi) {
            r.add(
                &key,
                "health_check.expected_status",
                "must be [min, max] statuses within 100..=599, min <= max",
            );
        }
        if h.interval.0 == 0 {
            r.add(&key, "health_check.interval", "must be positive");
        }
        if h.timeout >= h.interval {
            r.add(
                &key,
                "health_check.timeout",
                "must be shorter than the interval",
            );
        }
        if h.rise == 0 || h.fall == 0 {
            r.add(&key, "health_check.rise/fall", "must be at least 1");
        }
    }
    if let Some(o) = &c.outlier {
        if o.max_ejection_percent > 100 {
            r.add(&key, "outlier.max_ejection_percent", "must be at most 100");
        }
        for (field, d) in [
            ("interval", o.interval),
            ("base_ejection", o.base_ejection),
            ("max_ejection", o.max_ejection),
        ] {
            if d.0 == 0 {
                r.add(&key, format!("outlier.{field}"), "must be positive");
            }
        }
        if !(o.success_rate_stdev_factor > 0.0 && o.success_rate_stdev_factor.is_finite()) {
            r.add(
                &key,
                "outlier.success_rate_stdev_factor",
                "must be a positive number",
            );
        }
        if o.consecutive_5xx == 0
            && o.consecutive_gateway_failure == 0
            && o.success_rate_minimum_hosts == 0
        {
            r.add(
                &key,
                "outlier",
                "every detector is off (consecutive_5xx, consecutive_gateway_failure and success_rate_minimum_hosts are 0)",
            );
        }
    }
    if c.score_tau.0 == 0 {
        r.add(&key, "score_tau", "must be positive");
    }
    if c.ewma_decay.0 == 0 {
        r.add(&key, "ewma_decay", "must be positive");
    }
    if let Some(b) = &c.breaker {
        if !(b.error_rate > 0.0 && b.error_rate <= 1.0) {
            r.add(
                &key,
                "breaker.error_rate",
                format!("{} is not in (0, 1]", b.error_rate),
            );
        }
        if b.window.0 < 10_000_000 {
            r.add(&key, "breaker.window", "must be at least 10ms");
        }
        if b.open_for.0 == 0 {
            r.add(&key, "breaker.open_for", "must be positive");
        }
        for (field, v) in [
            ("half_open_probes", b.half_open_probes),
            ("max_concurrent", b.max_concurrent),
            ("max_pending", b.max_pending),
            ("max_connections", b.max_connections),
        ] {
            if v == 0 {
                r.add(&key, format!("breaker.{field}"), "must be at least 1");
            }
        }
        if let Some(list) = &b.failure_on
            && let Err(e) = crate::policy::FailureOn::parse(list)
        {
            r.add(&key, "breaker.failure_on", e);
        }
    }
    let t = &c.timeouts;
    if t.connect.0 == 0 || t.read.0 == 0 || t.request.is_some_and(|d| d.0 == 0) {
        r.add(
            &key,
            "timeouts",
            "connect, read and request must be positive",
        );
    }
    if let Some(rt) = &c.retry {
        if rt.attempts > 10 {
            r.add(
                &key,
                "retry.attempts",
                format!("{} is more than 10", rt.attempts),
            );
        }
        if rt.budget_percent > 100 {
            r.add(&key, "retry.budget_percent", "must be at most 100");
        }
        for (i, on) in rt.on.iter().enumerate() {
            let status = on.len() == 3 && on.parse::<u16>().is_ok_and(|s| (500..=599).contains(&s));
            if !(status || ["connect_failure", "reset", "timeout", "5xx"].contains(&on.as_str())) {
                r.add(
                    &key,
                    format!("retry.on[{i}]"),
                    format!("{on:?} is not connect_failure, reset, timeout, 5xx or a 5xx status"),
                );
            }
        }
        if rt.on.is_empty() {
            r.add(&key, "retry.on", "names nothing to retry");
        }
        if rt.per_try_timeout.is_some_and(|d| d.0 == 0) {
            r.add(&key, "retry.per_try_timeout", "must be positive");
        }
        if rt.backoff.0 == 0 || rt.backoff.0 > 1_000_000_000 {
            r.add(&key, "retry.backoff", "must be between 1ns and 1s");
        }
    }
}

fn check_match(r: &mut Report, key: &str, m: &Match) {
    for (field, p) in [("path_prefix", &m.path_prefix), ("path", &m.path)] {
        if let Some(p) = p.as_deref().filter(|p| !p.starts_with('/')) {
            r.add(
                key,
                format!("match.{field}"),
                format!("{p:?} must start with /"),
            );
        }
    }
    if let Some(h) = m.host.as_deref()
        && h.contains('*')
        && !(h.starts_with("*.") && h[1..].len() > 1 && !h[1..].contains('*'))
    {
        r.add(
            key,
            "match.host",
            format!("{h:?}: a wildcard is only `*.suffix`"),
        );
    }
    let token = |v: &str| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let names = m
        .headers
        .keys()
        .chain(m.headers_regex.keys())
        .chain(&m.headers_present)
        .chain(&m.headers_absent);
    for name in names {
        if !token(name) {
            r.add(
                key,
                format!("match.headers.{name}"),
                "is not a valid header name",
            );
        }
    }
    for method in m.methods.iter().filter(|v| !token(v)) {
        r.add(key, "match.methods", format!("{method:?} is not a method"));
    }
    let regexes = m
        .path_regex
        .iter()
        .map(|v| ("path_regex".to_string(), v))
        .chain(
            m.headers_regex
                .iter()
                .map(|(k, v)| (format!("headers_regex.{k}"), v)),
        );
    for (field, v) in regexes {
        if let Err(e) = crate::snapshot::matcher::whole(v) {
            r.add(key, format!("match.{field}"), e);
        }
    }
}

fn check_hash_key(r: &mut Report, key: &str, field: &str, v: &str) {
    if let Err(e) = crate::policy::KeySpec::parse(Some(v)) {
        r.add(key, field, e);
    }
}

/// ` (did you mean "NAME"?)` for the known name nearest to `name` (at
/// most a third of its letters off, by edit distance), or nothing.
fn did_you_mean<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let limit = (name.chars().count() / 3).max(1);
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|&(d, _)| d <= limit)
        .min()
        .map_or(String::new(), |(_, k)| format!(" (did you mean {k:?}?)"))
}

/// Levenshtein distance (insertions, deletions, substitutions).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A route's header edits and prefix rewrite: field names and values an
/// HTTP head can carry, never a framing or hop-by-hop field, never the
/// request's Host removed; a rewrite needs a matched prefix to replace.
fn check_route_edits(r: &mut Report, key: &str, route: &Route) {
    use crate::http1::edit::{check_field_name, check_field_value};
    if let Some(h) = &route.headers {
        let maps = [
            ("request_add", &h.request_add),
            ("request_set", &h.request_set),
            ("response_add", &h.response_add),
            ("response_set", &h.response_set),
        ];
        for (field, map) in maps {
            for (n, v) in map {
                if let Err(e) = check_field_name(n).and_then(|()| check_field_value(v)) {
                    r.add(key, format!("headers.{field}.{n}"), e);
                }
            }
        }
        for (field, list) in [
            ("request_remove", &h.request_remove),
            ("response_remove", &h.response_remove),
        ] {
            for n in list {
                if let Err(e) = check_field_name(n) {
                    r.add(key, format!("headers.{field}"), e);
                } else if field == "request_remove" && n.eq_ignore_ascii_case("host") {
                    r.add(
                        key,
                        format!("headers.{field}"),
                        "an HTTP/1.1 request needs its Host: use request_set to change it",
                    );
                }
            }
        }
    }
    if let Some(p) = &route.prefix_rewrite {
        if route.matches.path_prefix.is_none() {
            r.add(
                key,
                "prefix_rewrite",
                "needs match.path_prefix (the part it replaces)",
            );
        }
        if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
            r.add(
                key,
                "prefix_rewrite",
                format!("{p:?} must start with / and hold no space or control byte"),
            );
        }
    }
}

fn check_route(r: &mut Report, route: &Route, clusters: &BTreeMap<&str, &Cluster>) {
    let key = format!("routes[{}]", route.name);
    check_match(r, &key, &route.matches);
    if route.to.is_empty() {
        r.add(&key, "to", "needs at least one cluster");
    }
    for (i, arm) in route.to.iter().enumerate() {
        if arm.weight == 0 {
            r.add(&key, format!("to[{i}].weight"), "must be at least 1");
        }
        match clusters.get(arm.cluster.as_str()) {
            None => r.add(
                &key,
                format!("to[{i}].cluster"),
                format!(
                    "no cluster named {:?}{}",
                    arm.cluster,
                    did_you_mean(&arm.cluster, clusters.keys().copied())
                ),
            ),
            Some(c) if !arm.subset.is_empty() && !c.endpoints.is_empty() => {
                let hit = c
                    .endpoints
                    .iter()
                    .any(|e| arm.subset.iter().all(|(k, v)| e.labels.get(k) == Some(v)));
                if !hit {
                    r.add(
                        &key,
                        format!("to[{i}].subset"),
                        format!("matches no endpoint of cluster {:?}", arm.cluster),
                    );
                }
            }
            Some(_) => {}
        }
    }
    check_route_edits(r, &key, route);
    if let Some(m) = &route.mirror {
        if !clusters.contains_key(m.cluster.as_str()) {
            r.add(
                &key,
                "mirror.cluster",
                format!(
                    "no cluster named {:?}{}",
                    m.cluster,
                    did_you_mean(&m.cluster, clusters.keys().copied())
                ),
            );
        }
        if !(m.percent > 0.0 && m.percent <= 100.0) {
            r.add(
                &key,
                "mirror.percent",
                format!("{} is not in (0, 100]", m.percent),
            );
        }
        if m.max_body.0 > 1 << 20 {
            r.add(&key, "mirror.max_body", "must be at most 1MiB");
        }
    }
    if let Some(h) = &route.hash_on {
        check_hash_key(r, &key, "hash_on", h);
    }
    if let Some(t) = &route.timeouts {
        for (field, v) in [
            ("connect", t.connect),
            ("request", t.request),
            ("read", t.read),
        ] {
            if v.is_some_and(|d| d.0 == 0) {
                r.add(&key, format!("timeouts.{field}"), "must be positive");
            }
        }
    }
    if let Some(rl) = &route.rate_limit {
        if !(rl.rps.is_finite() && rl.rps > 0.0 && rl.rps <= 1e9) {
            r.add(
                &key,
                "rate_limit.rps",
                format!("{} is not a number in (0, 1e9]", rl.rps),
            );
        }
        if rl.burst == 0 {
            r.add(&key, "rate_limit.burst", "must be at least 1");
        }
        if let Err(e) = crate::policy::KeySpec::parse(rl.key.as_deref()) {
            r.add(&key, "rate_limit.key", e);
        }
        if rl.max_keys.is_some_and(|n| n == 0 || n > 1 << 24) {
            r.add(&key, "rate_limit.max_keys", "must be 1 to 16777216");
        }
        if rl.max_keys.is_some() && rl.key.is_none() {
            r.add(
                &key,
                "rate_limit.max_keys",
                "applies to a keyed limit only: set rate_limit.key",
            );
        }
        match rl.max_delay {
            Some(_) if !rl.smooth => r.add(
                &key,
                "rate_limit.max_delay",
                "applies to smooth: true only (a token bucket rejects, it does not delay)",
            ),
            Some(d) if d.0 == 0 => r.add(&key, "rate_limit.max_delay", "must be positive"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
