//! From etcd keys to a config, with no I/O: the key layout under the
//! prefix, the JSON value of each key, and how they merge with a base
//! config (`--config FILE`, or the schema's defaults) into one [`Config`]
//! that is then validated as a whole like a file.
//!
//! Layout (each value is the JSON of the same schema section):
//! - `listeners/<name>`, `clusters/<name>`, `routes/<name>`,
//!   `request_types/<name>`: one object each. Its `name` may be left out
//!   (the key gives it); if present it must equal the key's.
//! - `routes/<name>` may carry `"order": N` (default 0): routes match in
//!   (order, name) order, first match wins. Request types likewise.
//! - `sampling`: the sampling section.
//! - `endpoints/<cluster>/<addr>`: one endpoint (`{"weight": 5, "labels":
//!   {...}}`; `addr` from the key), merged into that cluster's list. These
//!   are what `node-agent register` writes with a lease.
//! - `breakers/<cluster>/<node>`: shared breaker hints, not config.
//!
//! A section present in etcd replaces the base's section as a whole; a
//! section etcd does not hold (`ring`, `node`, or listeners if no
//! `listeners/` key exists) comes from the base.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::schema::{Cluster, Config, Endpoint, Listener, RequestType, Route, Sampling};

/// Why a key set does not make a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key's value is not the JSON of its section.
    #[error("{key}: {reason}")]
    Value {
        /// The full etcd key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A key under the prefix that is not part of the layout.
    #[error(
        "{key}: unknown key (expected listeners/, clusters/, routes/, request_types/, endpoints/<cluster>/, breakers/<cluster>/ or sampling)"
    )]
    Unknown {
        /// The full etcd key.
        key: String,
    },
}

/// What a key set holds besides the config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assembled {
    /// The merged config (not validated yet).
    pub config: Config,
    /// `endpoints/` keys whose cluster does not exist (kept out of the
    /// config; shown in `/config` and logged).
    pub orphans: Vec<String>,
    /// Shared breaker hints: (cluster, node) pairs.
    pub hints: Vec<(String, String)>,
}

/// The key under `prefix` that holds a named object of `section`.
pub fn key_of(prefix: &str, section: &str, name: &str) -> String {
    format!("{prefix}{section}/{name}")
}

/// Builds a config from every key under `prefix` (full keys, raw values)
/// over `base`. Every key is checked; the first bad one is the error.
pub fn assemble(
    prefix: &str,
    kvs: &BTreeMap<String, Vec<u8>>,
    base: Option<&Config>,
) -> Result<Assembled, KeyError> {
    let mut out = Assembled {
        config: base.cloned().unwrap_or_else(|| Config {
            version: 1,
            ..Config::default()
        }),
        ..Assembled::default()
    };
    let mut listeners = Named::<Listener>::default();
    let mut clusters = Named::<Cluster>::default();
    let mut routes = Named::<Route>::default();
    let mut types = Named::<RequestType>::default();
    let mut endpoints: Vec<(String, String, Endpoint)> = Vec::new();
    for (key, raw) in kvs {
        let Some(rel) = key.strip_prefix(prefix) else {
            continue;
        };
        let bad = |reason: String| KeyError::Value {
            key: key.clone(),
            reason,
        };
        let (section, rest) = rel.split_once('/').unwrap_or((rel, ""));
        match (section, rest) {
            ("sampling", "") => out.config.sampling = parse::<Sampling>(raw).map_err(bad)?,
            ("listeners", name) if valid_name(name) => {
                listeners.add(name, raw, "name").map_err(bad)?;
            }
            ("clusters", name) if valid_name(name) => {
                clusters.add(name, raw, "name").map_err(bad)?;
            }
            ("routes", name) if valid_name(name) => {
                routes.add(name, raw, "name").map_err(bad)?;
            }
            ("request_types", name) if valid_name(name) => {
                types.add(name, raw, "name").map_err(bad)?;
            }
            ("endpoints", rest) => {
                let (cluster, addr) = rest
                    .split_once('/')
                    .filter(|(c, a)| valid_name(c) && valid_name(a))
                    .ok_or_else(|| KeyError::Unknown { key: key.clone() })?;
                let ep: Endpoint = with_name(raw, "addr", addr)
                    .and_then(from_value)
                    .map_err(bad)?;
                endpoints.push((cluster.to_string(), key.clone(), ep));
            }
            ("breakers", rest) => {
                let (cluster, node) = rest
                    .split_once('/')
                    .filter(|(c, n)| valid_name(c) && valid_name(n))
                    .ok_or_else(|| KeyError::Unknown { key: key.clone() })?;
                out.hints.push((cluster.to_string(), node.to_string()));
            }
            _ => return Err(KeyError::Unknown { key: key.clone() }),
        }
    }
    listeners.replace(&mut out.config.listeners);
    clusters.replace(&mut out.config.clusters);
    routes.replace(&mut out.config.routes);
    types.replace(&mut out.config.request_types);
    crate::config::fill_defaults(&mut out.config);
    for (cluster, key, ep) in endpoints {
        match out.config.clusters.iter_mut().find(|c| c.name == cluster) {
            Some(c) => c.endpoints.push(ep),
            None => out.orphans.push(key),
        }
    }
    Ok(out)
}

/// A key's last segment is a name: not empty, no further `/`.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('/')
}

/// Objects of one named section, with their `order`.
struct Named<T>(Vec<(i64, T)>);

impl<T> Default for Named<T> {
    fn default() -> Named<T> {
        Named(Vec::new())
    }
}

impl<T: DeserializeOwned> Named<T> {
    fn add(&mut self, name: &str, raw: &[u8], field: &str) -> Result<(), String> {
        let mut v = with_name(raw, field, name)?;
        let order = match v.as_object_mut().and_then(|o| o.remove("order")) {
            None => 0,
            Some(Value::Number(n)) if n.is_i64() => n.as_i64().unwrap_or(0),
            Some(other) => return Err(format!("order: {other} is not an integer")),
        };
        self.0.push((order, from_value(v)?));
        Ok(())
    }

    /// Puts the section in `into` (sorted by order, then key), if etcd
    /// holds any of it.
    fn replace(mut self, into: &mut Vec<T>) {
        if self.0.is_empty() {
            return;
        }
        // Keys arrive sorted by name; a stable sort keeps that within an order.
        self.0.sort_by_key(|(order, _)| *order);
        *into = self.0.into_iter().map(|(_, t)| t).collect();
    }
}

/// The value as a JSON object whose `field` is `name` (filled in if
/// missing; an error if it says otherwise).
fn with_name(raw: &[u8], field: &str, name: &str) -> Result<Value, String> {
    let mut v: Value = serde_json::from_slice(raw).map_err(|e| format!("invalid JSON: {e}"))?;
    let Some(obj) = v.as_object_mut() else {
        return Err("the value must be a JSON object".into());
    };
    match obj.get(field) {
        None => {
            obj.insert(field.into(), Value::String(name.into()));
        }
        Some(Value::String(s)) if s == name => {}
        Some(other) => {
            return Err(format!(
                "{field}: {other} does not match the key's {name:?}"
            ));
        }
    }
    Ok(v)
}

fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| e.to_string())
}

fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, String> {
    serde_json::from_slice(raw).map_err(|e| e.to_string())
}

/// Rewrites a validation problem's key (`routes[r]`) as the etcd key that
/// holds it (`/tailmesh/v1/routes/r`), so an operator knows what to fix.
pub fn etcd_key_of_problem(prefix: &str, problem_key: &str) -> String {
    for section in ["listeners", "clusters", "routes", "request_types"] {
        if let Some(rest) = problem_key
            .strip_prefix(section)
            .and_then(|r| r.strip_prefix('['))
            && let Some((name, tail)) = rest.split_once(']')
        {
            return format!("{}{tail}", key_of(prefix, section, name));
        }
    }
    if problem_key.starts_with("sampling") {
        return format!("{prefix}{problem_key}");
    }
    problem_key.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/t/";

    fn kvs(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{P}{k}"), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn sections_merge_over_the_base_and_endpoints_join_their_cluster() {
        let base = crate::config::parse(
            r#"
version: 1
listeners: [ { name: api, bind: "127.0.0.1:18000", protocol: http, default_route: r } ]
clusters: [ { name: old, endpoints: [ { addr: "127.0.0.1:1" } ] } ]
routes: [ { name: r, to: [ { cluster: old } ] } ]
"#,
            false,
        )
        .unwrap();
        let set = kvs(&[
            ("clusters/c", r#"{"endpoints":[{"addr":"127.0.0.1:2"}]}"#),
            ("routes/r", r#"{"to":[{"cluster":"c"}]}"#),
            ("routes/a", r#"{"order":5,"to":[{"cluster":"c"}]}"#),
            ("endpoints/c/127.0.0.1:3", r#"{"weight":7}"#),
            ("endpoints/gone/127.0.0.1:4", "{}"),
            ("breakers/c/node-1", "{}"),
        ]);
        let a = assemble(P, &set, Some(&base)).unwrap();
        assert_eq!(a.config.listeners.len(), 1, "listeners come from the base");
        let names: Vec<_> = a.config.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["c"], "the etcd section replaces the base's");
        let addrs: Vec<_> = a.config.clusters[0]
            .endpoints
            .iter()
            .map(|e| (e.addr.as_str(), e.weight))
            .collect();
        assert_eq!(addrs, [("127.0.0.1:2", 1), ("127.0.0.1:3", 7)]);
        let order: Vec<_> = a.config.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(order, ["r", "a"], "order 0 before order 5");
        assert_eq!(a.orphans, ["/t/endpoints/gone/127.0.0.1:4"]);
        assert_eq!(a.hints, [("c".to_string(), "node-1".to_string())]);
        assert!(crate::config::validate(&a.config).is_empty());
    }

    #[test]
    fn a_bad_value_names_its_key() {
        for (k, v, want) in [
            ("routes/r", "{not json", "invalid JSON"),
            ("routes/r", r#"{"name":"x","to":[]}"#, "does not match"),
            ("clusters/c", r#"{"endpoints": 3}"#, "invalid type"),
            ("routes/r", r#"{"order":"high","to":[]}"#, "order"),
            ("sampling", r#"{"defualt":0.5}"#, "unknown field"),
            ("routes/r", "[1]", "JSON object"),
        ] {
            let e = assemble(P, &kvs(&[(k, v)]), None).unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with(&format!("/t/{k}: ")), "{text}");
            assert!(text.contains(want), "{text}");
        }
        let e = assemble(P, &kvs(&[("routez/r", "{}")]), None).unwrap_err();
        assert!(matches!(e, KeyError::Unknown { .. }), "{e}");
        let e = assemble(P, &kvs(&[("endpoints/c", "{}")]), None).unwrap_err();
        assert!(matches!(e, KeyError::Unknown { .. }), "{e}");
    }

    #[test]
    fn problems_point_at_etcd_keys() {
        assert_eq!(
            etcd_key_of_problem(P, "routes[r].to[0]"),
            "/t/routes/r.to[0]"
        );
        assert_eq!(etcd_key_of_problem(P, "sampling"), "/t/sampling");
        assert_eq!(etcd_key_of_problem(P, "ring"), "ring");
    }
}
