//! What a route or request type matches, compiled once per config
//! generation: host (exact, or `*.suffix`), path (exact, prefix, regex),
//! method, headers (exact, regex, present, absent) and query parameters
//! (exact, present). Every condition given must hold. Regexes use the
//! `regex` crate (linear time, no backtracking) with a compiled-size cap,
//! and must match the whole value; a bad one is a config error naming the
//! field, never a runtime panic.

use regex::{Regex, RegexBuilder};

use super::RequestView;
use crate::config::schema::Match;

/// Largest compiled regex, bytes (the `regex` crate's own default is 10 MiB).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Host part of a compiled match.
#[derive(Debug, Clone)]
enum Host {
    /// Exact, lower case, without port.
    Exact(String),
    /// `*.suffix`: the suffix with its dot (`.svc.local`), lower case.
    Suffix(String),
}

/// How a match constrains the host, for the route index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKey {
    /// No host condition.
    Any,
    /// This host, lower case.
    Exact(String),
    /// Hosts ending with this (`.svc.local`), lower case.
    Suffix(String),
}

/// A compiled [`Match`].
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    host: Option<Host>,
    path: Option<String>,
    path_prefix: Option<String>,
    path_regex: Option<Regex>,
    /// Upper case.
    methods: Vec<String>,
    headers: Vec<(String, String)>,
    headers_regex: Vec<(String, Regex)>,
    headers_present: Vec<String>,
    headers_absent: Vec<String>,
    query: Vec<(String, String)>,
    query_present: Vec<String>,
}

/// Compiles `re` to match a whole value. The error names the problem.
pub fn whole(re: &str) -> Result<Regex, String> {
    RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("{re:?} is not a usable regex: {e}"))
}

impl Matcher {
    /// Its host condition, for the route index.
    pub fn host_key(&self) -> HostKey {
        match &self.host {
            None => HostKey::Any,
            Some(Host::Exact(h)) => HostKey::Exact(h.clone()),
            Some(Host::Suffix(s)) => HostKey::Suffix(s.clone()),
        }
    }

    /// Compiles `m`; the error is (field, reason).
    pub fn compile(m: &Match) -> Result<Matcher, (String, String)> {
        let re = |field: &str, v: &str| whole(v).map_err(|e| (field.to_string(), e));
        let host = m.host.as_deref().map(|h| {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('*') {
                Some(suffix) => Host::Suffix(suffix.to_string()),
                None => Host::Exact(h),
            }
        });
        let lower = |v: &[String]| v.iter().map(|n| n.to_ascii_lowercase()).collect();
        let mut headers_regex = Vec::new();
        for (k, v) in &m.headers_regex {
            headers_regex.push((
                k.to_ascii_lowercase(),
                re(&format!("headers_regex.{k}"), v)?,
            ));
        }
        Ok(Matcher {
            host,
            path: m.path.clone(),
            path_prefix: m.path_prefix.clone(),
            path_regex: m
                .path_regex
                .as_deref()
                .map(|v| re("path_regex", v))
                .transpose()?,
            methods: m.methods.iter().map(|x| x.to_ascii_uppercase()).collect(),
            headers: m
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            headers_regex,
            headers_present: lower(&m.headers_present),
            headers_absent: lower(&m.headers_absent),
            query: m
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            query_present: m.query_present.clone(),
        })
    }

    /// Whether `req` meets every condition.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(h) = &self.host {
            let Some(got) = req.host.map(|v| host_without_port(v.trim_ascii())) else {
                return false;
            };
            let ok = match h {
                Host::Exact(h) => got.eq_ignore_ascii_case(h.as_bytes()),
                Host::Suffix(s) => {
                    got.len() > s.len()
                        && got[got.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
                }
            };
            if !ok {
                return false;
            }
        }
        let path = req.path.split_once('?').map_or(req.path, |(p, _)| p);
        if self.path.as_deref().is_some_and(|p| p != path)
            || self
                .path_prefix
                .as_deref()
                .is_some_and(|p| !path.starts_with(p))
            || self.path_regex.as_ref().is_some_and(|r| !r.is_match(path))
        {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == req.method) {
            return false;
        }
        let header = |k: &str| (req.header)(k).map(<[u8]>::trim_ascii);
        let headers_ok = self
            .headers
            .iter()
            .all(|(k, v)| header(k) == Some(v.as_bytes()))
            && self.headers_regex.iter().all(|(k, r)| {
                header(k)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .is_some_and(|v| r.is_match(v))
            })
            && self.headers_present.iter().all(|k| header(k).is_some())
            && self.headers_absent.iter().all(|k| header(k).is_none());
        if !headers_ok {
            return false;
        }
        let query = |k: &str| crate::policy::query(req.path, k);
        self.query
            .iter()
            .all(|(k, v)| query(k) == Some(v.as_bytes()))
            && self.query_present.iter().all(|k| query(k).is_some())
    }
}

/// A Host value without its port (`[v6]:port` kept bracketed).
pub fn host_without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(yaml: &str) -> Matcher {
        let m: Match = serde_saphyr::from_str(yaml).unwrap();
        Matcher::compile(&m).unwrap()
    }

    fn req<'a>(
        method: &'a str,
        host: Option<&'a [u8]>,
        path: &'a str,
        header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
    ) -> RequestView<'a> {
        RequestView {
            host,
            path,
            method,
            header,
        }
    }

    #[test]
    fn every_condition_kind() {
        let none = |_: &str| None;
        let canary = |n: &str| match n {
            "x-canary" => Some(&b" yes "[..]),
            "x-user" => Some(&b"u-42"[..]),
            _ => None,
        };
        let wild = m("{ host: \"*.svc.local\" }");
        assert!(wild.matches(&req("GET", Some(b"Orders.SVC.local:80"), "/", &none)));
        assert!(!wild.matches(&req("GET", Some(b"svc.local"), "/", &none)));
        assert!(!wild.matches(&req("GET", None, "/", &none)));
        let exact = m("{ path: /api/v1 }");
        assert!(exact.matches(&req("GET", None, "/api/v1?x=1", &none)));
        assert!(!exact.matches(&req("GET", None, "/api/v1/x", &none)));
        let re = m("{ path_regex: \"/users/[0-9]+\" }");
        assert!(re.matches(&req("GET", None, "/users/42", &none)));
        assert!(
            !re.matches(&req("GET", None, "/users/42/x", &none)),
            "whole path"
        );
        let methods = m("{ methods: [get, HEAD] }");
        assert!(methods.matches(&req("HEAD", None, "/", &none)));
        assert!(!methods.matches(&req("POST", None, "/", &none)));
        let headers = m(
            "{ headers_regex: { x-user: \"u-[0-9]+\" }, headers_present: [x-canary], headers_absent: [x-debug] }",
        );
        assert!(headers.matches(&req("GET", None, "/", &canary)));
        assert!(!headers.matches(&req("GET", None, "/", &none)));
        let debug =
            |n: &str| (n == "x-debug" || n == "x-canary" || n == "x-user").then_some(&b"u-1"[..]);
        assert!(!headers.matches(&req("GET", None, "/", &debug)), "absent");
        let q = m("{ query: { v: \"2\" }, query_present: [trace] }");
        assert!(q.matches(&req("GET", None, "/p?trace&v=2", &none)));
        assert!(!q.matches(&req("GET", None, "/p?v=2", &none)));
        assert!(!q.matches(&req("GET", None, "/p?trace&v=3", &none)));
    }

    #[test]
    fn a_bad_or_huge_regex_is_an_error_not_a_panic() {
        let bad: Match = serde_saphyr::from_str("{ path_regex: \"(unclosed\" }").unwrap();
        let (field, why) = Matcher::compile(&bad).unwrap_err();
        assert_eq!(field, "path_regex");
        assert!(why.contains("not a usable regex"), "{why}");
        let huge: Match =
            serde_saphyr::from_str("{ headers_regex: { x: \"[a-z]{1000}{1000}\" } }").unwrap();
        let (field, why) = Matcher::compile(&huge).unwrap_err();
        assert_eq!(field, "headers_regex.x");
        assert!(
            why.contains("size limit") || why.contains("exceeds"),
            "{why}"
        );
    }
}
