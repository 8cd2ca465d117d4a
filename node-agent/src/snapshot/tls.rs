//! The TLS and authz parts of a snapshot: listener server configs, cluster
//! origination (mesh or simple) and compiled authz rules. Files named by
//! the config are read here, on the control thread; a file that cannot be
//! used rejects the config with its key and field.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::SnapshotError;
use crate::authz;
use crate::config::Problem;
use crate::config::schema::{AuthzAction, Cluster, ClusterTls, ClusterTlsMode, Listener, Route};
use crate::tls::spiffe::IdMatch;

/// The default mesh port.
pub const MESH_PORT: u16 = 15008;

/// How a cluster's connections are secured.
#[derive(Debug)]
pub enum ClusterTlsRt {
    /// Mesh mTLS through the endpoint node's mesh port.
    Mesh {
        /// The identity the server must present.
        expect: IdMatch,
        /// The mesh port dialled on the endpoint's address.
        port: u16,
    },
    /// TLS origination verified by name.
    Simple {
        /// Client config (roots, client certificate, ALPN).
        config: Arc<rustls::ClientConfig>,
        /// SNI and verified name (None: the endpoint's IP address).
        sni: Option<ServerName<'static>>,
    },
}

impl ClusterTlsRt {
    /// The address dialled for endpoint `addr`.
    pub fn dial(&self, addr: SocketAddr) -> SocketAddr {
        match self {
            ClusterTlsRt::Mesh { port, .. } => SocketAddr::new(addr.ip(), *port),
            ClusterTlsRt::Simple { .. } => addr,
        }
    }
}

fn problem(key: String, field: &str, reason: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Invalid(vec![Problem {
        key,
        field: field.to_string(),
        reason: reason.to_string(),
    }])
}

/// A cluster's TLS, and its pool tag (0: plaintext; connections are only
/// reused for the same tag, so a plaintext connection never serves a TLS
/// cluster to the same address, nor the other way round).
pub fn cluster(c: &Cluster) -> Result<(Option<Arc<ClusterTlsRt>>, u64), SnapshotError> {
    let Some(t) = &c.tls else {
        return Ok((None, 0));
    };
    let key = format!("clusters[{}]", c.name);
    let rt = match t.mode {
        ClusterTlsMode::Mesh => {
            let text = t.identity.as_deref().unwrap_or_default();
            let expect =
                IdMatch::parse(text).map_err(|e| problem(key.clone(), "tls.identity", e))?;
            ClusterTlsRt::Mesh {
                expect,
                port: t.mesh_port.unwrap_or(MESH_PORT),
            }
        }
        ClusterTlsMode::Simple => {
            let client = match (&t.cert, &t.key) {
                (Some(c), Some(k)) => Some((c.as_str(), k.as_str())),
                _ => None,
            };
            let config = crate::tls::origination_config(t.ca.as_deref(), client)
                .map_err(|e| problem(key.clone(), "tls", e))?;
            let sni = match &t.sni {
                Some(s) => Some(
                    ServerName::try_from(s.clone())
                        .map_err(|e| problem(key.clone(), "tls.sni", e))?,
                ),
                None => None,
            };
            ClusterTlsRt::Simple { config, sni }
        }
    };
    Ok((Some(Arc::new(rt)), tag(t)))
}

/// A nonzero fingerprint of a cluster's TLS settings.
fn tag(t: &ClusterTls) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut h);
    h.finish() | 1
}

/// A TLS listener's server config (mesh listeners use the node identity,
/// taken at accept time).
pub fn listener(l: &Listener) -> Result<Option<Arc<rustls::ServerConfig>>, SnapshotError> {
    let Some(t) = &l.tls else {
        return Ok(None);
    };
    let sni: Vec<(String, String)> = t
        .sni
        .iter()
        .map(|s| (s.cert.clone(), s.key.clone()))
        .collect();
    crate::tls::listener_config(
        &t.cert,
        &t.key,
        &sni,
        t.client_ca.as_deref(),
        t.require_client_cert,
    )
    .map(Some)
    .map_err(|e| problem(format!("listeners[{}]", l.name), "tls", e))
}

/// A listener's compiled authz rules: its own, then every route's
/// (limited to that route). Validation checked the names.
pub fn authz(l: &Listener, routes: &[Route]) -> authz::Policy {
    let own = l.authz.iter().map(|r| (r, None));
    let by_route = routes
        .iter()
        .enumerate()
        .flat_map(|(k, route)| route.authz.iter().map(move |r| (r, Some(k))));
    let rules = own
        .chain(by_route)
        .map(|(r, route_ix)| authz::Rule {
            action: match r.action {
                AuthzAction::Allow => authz::Action::Allow,
                AuthzAction::Deny => authz::Action::Deny,
            },
            from: r
                .from
                .iter()
                .filter_map(|f| IdMatch::parse(f).ok())
                .collect(),
            route: route_ix.or_else(|| {
                let name = r.to.as_ref().and_then(|t| t.route.as_ref())?;
                // A rule for a route that is gone applies to nothing.
                Some(
                    routes
                        .iter()
                        .position(|x| &x.name == name)
                        .unwrap_or(usize::MAX),
                )
            }),
            port: r.to.as_ref().and_then(|t| t.port),
        })
        .collect();
    authz::Policy::new(rules)
}

#[cfg(test)]
mod tests {
    use crate::tls::spiffe::SpiffeId;

    #[test]
    fn route_rules_join_every_listeners_policy_limited_to_their_route() {
        let cfg = crate::config::parse(
            r#"
version: 1
listeners:
  - name: web
    bind: "127.0.0.1:1"
    protocol: http
    tls: { cert: c, key: k, client_ca: ca }
    authz:
      - { action: deny, from: ["spiffe://td/ns/x/sa/bot"] }
clusters:
  - { name: c, endpoints: [ { addr: "127.0.0.1:2" } ] }
routes:
  - name: admin
    match: { path_prefix: /admin }
    to: [ { cluster: c } ]
    authz:
      - { action: allow, from: ["spiffe://td/ns/ops/sa/admin"] }
  - { name: rest, to: [ { cluster: c } ] }
"#,
            false,
        )
        .unwrap();
        let l = &cfg.listeners[0];
        let p = super::authz(l, &cfg.routes);
        let id = |s: &str| SpiffeId::parse(s).unwrap();
        let (ops, web, bot) = (
            id("spiffe://td/ns/ops/sa/admin"),
            id("spiffe://td/ns/shop/sa/web"),
            id("spiffe://td/ns/x/sa/bot"),
        );
        assert!(p.allows(Some(&ops), Some(0), 1));
        assert!(!p.allows(Some(&web), Some(0), 1), "admin: only ops");
        assert!(p.allows(Some(&web), Some(1), 1), "rest: anyone not denied");
        assert!(!p.allows(Some(&bot), Some(1), 1), "the listener's deny");
        // A route's rule may not name another route.
        let bad = crate::config::parse(
            r#"
version: 1
routes:
  - { name: r, to: [], authz: [ { action: allow, from: ["*"], to: { route: x } } ] }
"#,
            false,
        );
        let text = format!("{bad:?}");
        assert!(
            text.contains("a route's rules apply to the route itself"),
            "{text}"
        );
    }
}
