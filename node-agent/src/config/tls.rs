//! Validation of the TLS parts of a config: the node identity, listener
//! `tls` and `authz`, cluster `tls`. Only shapes and names are checked
//! here; the files are read when the snapshot is built (and a file that
//! cannot be used rejects the config there, naming the same key).

use std::collections::HashSet;

use super::Report;
use super::schema::{AuthzRule, ClusterTlsMode, Config, Mode};
use crate::tls::spiffe::{IdMatch, SpiffeId};

/// Checks every TLS rule of `cfg`; `routes` are the route names.
pub(super) fn check(r: &mut Report, cfg: &Config, routes: &HashSet<&str>) {
    if let Some(id) = &cfg.identity {
        if SpiffeId::parse(&format!("spiffe://{}", id.trust_domain))
            .map_or(true, |s| !s.path().is_empty())
        {
            r.add(
                "identity",
                "trust_domain",
                format!("{:?} is not a trust domain name", id.trust_domain),
            );
        }
        for (field, v) in [
            ("cert", &id.cert),
            ("key", &id.key),
            ("trust_bundle", &id.trust_bundle),
        ] {
            if v.is_empty() {
                r.add("identity", field, "must name a PEM file");
            }
        }
    }
    for l in &cfg.listeners {
        let key = format!("listeners[{}]", l.name);
        let mesh = l.mode == Mode::Mesh;
        if mesh && cfg.identity.is_none() {
            r.add(
                &key,
                "mode",
                "a mesh listener needs the top-level `identity`",
            );
        }
        if mesh && l.tls.is_some() {
            r.add(
                &key,
                "tls",
                "a mesh listener uses the node identity; remove `tls`",
            );
        }
        if let Some(t) = &l.tls
            && t.require_client_cert
            && t.client_ca.is_none()
        {
            r.add(&key, "tls.require_client_cert", "needs `client_ca`");
        }
        let verified = mesh || l.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        for (k, rule) in l.authz.iter().enumerate() {
            if !verified {
                r.add(
                    &key,
                    format!("authz[{k}]"),
                    "authz needs client identities: a mesh listener, or `tls.client_ca`",
                );
            }
            check_rule(r, &key, k, rule, RuleOf::Listener(routes));
        }
    }
    for route in &cfg.routes {
        let key = format!("routes[{}]", route.name);
        for (k, rule) in route.authz.iter().enumerate() {
            check_rule(r, &key, k, rule, RuleOf::Route);
        }
    }
    for c in &cfg.clusters {
        let Some(t) = &c.tls else {
            continue;
        };
        let key = format!("clusters[{}]", c.name);
        match t.mode {
            ClusterTlsMode::Mesh => {
                if cfg.identity.is_none() {
                    r.add(&key, "tls.mode", "mesh needs the top-level `identity`");
                }
                match t.identity.as_deref().map(IdMatch::parse) {
                    None => r.add(
                        &key,
                        "tls.identity",
                        "mesh needs the server identity to expect",
                    ),
                    Some(Err(e)) => r.add(&key, "tls.identity", e.to_string()),
                    Some(Ok(IdMatch::Any)) => r.add(
                        &key,
                        "tls.identity",
                        "`*` would accept any server; name an ID or a trust domain",
                    ),
                    Some(Ok(_)) => {}
                }
                if t.mesh_port == Some(0) {
                    r.add(&key, "tls.mesh_port", "must be 1-65535");
                }
                for (field, set) in [
                    ("tls.ca", t.ca.is_some()),
                    ("tls.sni", t.sni.is_some()),
                    ("tls.cert", t.cert.is_some()),
                    ("tls.key", t.key.is_some()),
                ] {
                    if set {
                        r.add(
                            &key,
                            field,
                            "only for mode simple (mesh uses the node identity)",
                        );
                    }
                }
            }
            ClusterTlsMode::Simple => {
                for (field, set) in [
                    ("tls.identity", t.identity.is_some()),
                    ("tls.mesh_port", t.mesh_port.is_some()),
                ] {
                    if set {
                        r.add(&key, field, "only for mode mesh");
                    }
                }
                if t.cert.is_some() != t.key.is_some() {
                    r.add(&key, "tls.cert", "`cert` and `key` go together");
                }
                if let Some(sni) = &t.sni
                    && rustls::pki_types::ServerName::try_from(sni.as_str()).is_err()
                {
                    r.add(
                        &key,
                        "tls.sni",
                        format!("{sni:?} is not a DNS name or IP address"),
                    );
                }
            }
        }
    }
}

/// Whose authz rule is checked.
enum RuleOf<'a> {
    /// A listener's: `to.route` must name one of these routes.
    Listener(&'a HashSet<&'a str>),
    /// A route's: `to.route` is implied and may not be given.
    Route,
}

/// Checks authz rule `k` of `key`.
fn check_rule(r: &mut Report, key: &str, k: usize, rule: &AuthzRule, of: RuleOf<'_>) {
    let field = format!("authz[{k}]");
    if rule.from.is_empty() {
        r.add(
            key,
            format!("{field}.from"),
            "must list at least one identity",
        );
    }
    for f in &rule.from {
        if let Err(e) = IdMatch::parse(f) {
            r.add(key, format!("{field}.from"), e.to_string());
        }
    }
    let Some(to) = &rule.to else {
        return;
    };
    match (of, to.route.as_deref()) {
        (RuleOf::Route, Some(_)) => r.add(
            key,
            format!("{field}.to.route"),
            "a route's rules apply to the route itself",
        ),
        (RuleOf::Listener(routes), Some(route)) if !routes.contains(route) => {
            let hint = super::did_you_mean(route, routes.iter().copied());
            r.add(
                key,
                format!("{field}.to.route"),
                format!("no route named {route:?}{hint}"),
            );
        }
        _ => {}
    }
    if to.port == Some(0) {
        r.add(key, format!("{field}.to.port"), "must be 1-65535");
    }
}
