//! The TLS parts of the schema: the node's mesh `identity`, listener
//! `tls` (termination), cluster `tls` (mesh or simple origination) and
//! listener `authz` rules.

use serde::{Deserialize, Serialize};

/// The node's mesh identity: PEM files, watched and reloaded on change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Certificate chain, leaf first; its one `spiffe://` URI SAN is the
    /// node's identity.
    pub cert: String,
    /// Private key of the leaf.
    pub key: String,
    /// CA certificates peers must chain to.
    pub trust_bundle: String,
    /// The trust domain peers must belong to.
    pub trust_domain: String,
}

/// One more certificate of a TLS listener, chosen by SNI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCert {
    /// Certificate chain; its DNS SANs are the names it serves.
    pub cert: String,
    /// Its key.
    pub key: String,
}

/// TLS termination on a listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificate chain (the default one).
    pub cert: String,
    /// Its key.
    pub key: String,
    /// More certificates, chosen by the SNI name the client sends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<SniCert>,
    /// CA bundle client certificates are verified against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<String>,
    /// Refuse clients without a certificate (needs `client_ca`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_client_cert: bool,
}

/// How a cluster's connections are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterTlsMode {
    /// Mesh mTLS to the destination node's mesh port, with the node's
    /// identity, and a transport header naming the endpoint.
    Mesh,
    /// Plain TLS origination to an external server, verified by name.
    Simple,
}

/// TLS origination on a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    /// `mesh` or `simple`.
    pub mode: ClusterTlsMode,
    /// mesh: the identity the server must present (`spiffe://td/...`
    /// exactly, or `spiffe://td` for any in the trust domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// mesh: the destination node's mesh port (default 15008).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_port: Option<u16>,
    /// simple: CA bundle (default: the system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// simple: the name sent as SNI and verified (default: the endpoint
    /// address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// simple: client certificate to present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// simple: its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What an authz rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthzAction {
    /// Allow matching peers.
    Allow,
    /// Deny matching peers.
    Deny,
}

/// What an authz rule is limited to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzTo {
    /// Route name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// One authz rule of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    /// `allow` or `deny`.
    pub action: AuthzAction,
    /// SPIFFE IDs, `spiffe://td/*` trust-domain wildcards, or `*`.
    pub from: Vec<String>,
    /// The targets it applies to (default: all of the listener's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<AuthzTo>,
}
