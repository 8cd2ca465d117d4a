//! TLS on rustls: the node's mesh identity (SPIFFE certificate, key and
//! trust bundle, reloaded when its files change), the server configs of
//! mesh and TLS listeners, the client configs of mesh and `simple` TLS
//! clusters, and the sans-IO connection ([`conn::TlsConn`]) both drivers
//! drive from the shared core. Certificate files are read here, on the
//! control thread, never on a worker.

pub mod conn;
pub mod header;
pub mod spiffe;
pub mod verify;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use spiffe::{IdMatch, SpiffeId};

/// Why TLS material or a TLS connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The material does not fit together (key and certificate, SPIFFE ID
    /// and trust domain, ...).
    #[error("{0}")]
    Material(String),
    /// rustls refused to make a connection.
    #[error("tls setup: {0}")]
    Setup(rustls::Error),
    /// The handshake (or a later record) failed.
    #[error("tls: {1}")]
    Handshake(HandshakeFailure, String),
    /// Reading ciphertext failed.
    #[error("tls read: {0}")]
    Io(String),
    /// The mesh transport header is malformed.
    #[error(transparent)]
    Header(#[from] header::HeaderError),
}

/// Handshake failures as the metrics count them (`result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// The client sent no certificate where one is required.
    NoClientCert,
    /// The peer's certificate does not chain to the trust bundle.
    UnknownCa,
    /// The peer's certificate expired (or is not valid yet).
    Expired,
    /// The peer's SPIFFE ID is not the expected one (or not in the trust
    /// domain).
    IdentityMismatch,
    /// Another certificate problem.
    BadCertificate,
    /// The peer refused us with an alert.
    PeerAlert,
    /// Anything else (protocol errors, versions, ciphers).
    Protocol,
}

impl HandshakeFailure {
    /// Classifies a rustls error.
    pub fn of(e: &rustls::Error) -> HandshakeFailure {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::NoCertificatesPresented => HandshakeFailure::NoClientCert,
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer => HandshakeFailure::UnknownCa,
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => HandshakeFailure::Expired,
                C::Other(o) if o.0.downcast_ref::<verify::IdentityMismatch>().is_some() => {
                    HandshakeFailure::IdentityMismatch
                }
                _ => HandshakeFailure::BadCertificate,
            },
            rustls::Error::AlertReceived(_) => HandshakeFailure::PeerAlert,
            _ => HandshakeFailure::Protocol,
        }
    }
}

/// The crypto provider (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &str, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(Path::new(path)).map_err(|e| file_err(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(Path::new(path)).map_err(|e| file_err(path, e))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| file_err(path, format!("no private key: {e}")))
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| file_err(key, format!("unusable key: {e}")))?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match()
        .map_err(|e| TlsError::Material(format!("{key} does not belong to {cert}: {e}")))?;
    Ok(Arc::new(ck))
}

/// A root store from a PEM bundle (every certificate must be usable).
pub fn load_roots(path: &str) -> Result<Arc<RootCertStore>, TlsError> {
    roots_of(load_certs(path)?, path)
}

/// A root store of `certs`, read from `path` (every one must be usable).
fn roots_of(
    certs: Vec<CertificateDer<'static>>,
    path: &str,
) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| file_err(path, format!("bad trust anchor: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// The system's trust anchors.
pub fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::Material(
            "no system trust anchors found (give the cluster's tls.ca)".into(),
        ));
    }
    Ok(Arc::new(roots))
}

/// Where the node's identity comes from (the config's `identity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFiles {
    /// Certificate chain, PEM (leaf first; its URI SAN is the SPIFFE ID).
    pub cert: String,
    /// Private key, PEM.
    pub key: String,
    /// Trust bundle, PEM.
    pub trust_bundle: String,
    /// Trust domain the bundle speaks for.
    pub trust_domain: String,
}

/// A loaded identity: what mesh listeners present and mesh clusters dial
/// with.
#[derive(Debug)]
pub struct Identity {
    /// This node's SPIFFE ID.
    pub id: SpiffeId,
    /// When the certificate expires, Unix seconds.
    pub not_after: i64,
    /// When the certificate became valid, Unix seconds.
    pub not_before: i64,
    /// Mesh listeners' config: TLS 1.3, a client certificate in the trust
    /// domain required.
    pub server: Arc<ServerConfig>,
    key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    /// The bundle's certificates (to tell a changed bundle).
    bundle: Vec<CertificateDer<'static>>,
    /// Client configs by the identity they expect, made on first use (one
    /// per mesh cluster; each keeps its session tickets for resumption).
    clients: Mutex<HashMap<IdMatch, Arc<ClientConfig>>>,
}

impl Identity {
    /// Reads and checks the files: the key matches the certificate, the
    /// certificate names exactly one SPIFFE ID, in the trust domain, and
    /// chains to the bundle.
    pub fn load(f: &IdentityFiles) -> Result<Identity, TlsError> {
        let key = certified_key(&f.cert, &f.key)?;
        let bundle = load_certs(&f.trust_bundle)?;
        let roots = roots_of(bundle.clone(), &f.trust_bundle)?;
        let leaf = key
            .cert
            .first()
            .ok_or_else(|| file_err(&f.cert, "no certificate"))?;
        let id = spiffe::id_of_cert(leaf).map_err(|e| file_err(&f.cert, e))?;
        if id.trust_domain() != f.trust_domain {
            return Err(TlsError::Material(format!(
                "{}: identity {id} is not in trust domain {}",
                f.cert, f.trust_domain
            )));
        }
        let (not_before, not_after) = spiffe::validity(leaf).map_err(|e| file_err(&f.cert, e))?;
        let prov = provider();
        let parsed =
            rustls::server::ParsedCertificate::try_from(leaf).map_err(|e| file_err(&f.cert, e))?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            key.cert.get(1..).unwrap_or_default(),
            rustls::pki_types::UnixTime::now(),
            prov.signature_verification_algorithms.all,
        )
        .map_err(|e| {
            TlsError::Material(format!(
                "{}: does not verify against {}: {e}",
                f.cert, f.trust_bundle
            ))
        })?;
        let verifier =
            verify::MeshClientVerifier::new(roots.clone(), &f.trust_domain, prov.clone())
                .map_err(|e| TlsError::Material(format!("{}: {e}", f.trust_bundle)))?;
        let mut server = ServerConfig::builder_with_provider(prov)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Setup)?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key.clone())));
        server.send_half_rtt_data = false;
        Ok(Identity {
            id,
            not_after,
            not_before,
            server: Arc::new(server),
            key,
            roots,
            bundle,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `other` was loaded from the same certificates, key and
    /// bundle.
    pub fn same_material(&self, other: &Identity) -> bool {
        self.key.cert == other.key.cert
            && self.key.key.public_key() == other.key.key.public_key()
            && self.bundle == other.bundle
    }

    /// The client config for mesh connections that expect `expect`.
    pub fn client(&self, expect: &IdMatch) -> Result<Arc<ClientConfig>, TlsError> {
        let mut map = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = map.get(expect) {
            return Ok(c.clone());
        }
        let prov = provider();
        let verifier = verify::MeshServerVerifier::new(self.roots.clone(), expect.clone(), &prov);
        let cfg = ClientConfig::builder_with_provider(prov)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Setup)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                self.key.clone(),
            )));
        let cfg = Arc::new(cfg);
        // Bounded by the number of distinct expectations in the config.
        if map.len() < 4096 {
            map.insert(expect.clone(), cfg.clone());
        }
        Ok(cfg)
    }
}

/// A TLS listener's server config: `cert`/`key`, optionally requiring (or
/// asking for) client certificates under `client_ca`; ALPN `http/1.1`.
/// `sni`: more certificates, chosen by the name the client asks for.
pub fn listener_config(
    cert: &str,
    key: &str,
    sni: &[(String, String)],
    client_ca: Option<&str>,
    require_client_cert: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let prov = provider();
    let builder = ServerConfig::builder_with_provider(prov.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = load_roots(ca)?;
            let b = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, prov);
            let b = if require_client_cert {
                b
            } else {
                b.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                b.build()
                    .map_err(|e| TlsError::Material(format!("{ca}: {e}")))?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let default = certified_key(cert, key)?;
    let mut cfg = if sni.is_empty() {
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(default)))
    } else {
        builder.with_cert_resolver(Arc::new(SniResolver::new(default, sni)?))
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Picks a certificate by SNI: one whose DNS names include the name
/// asked for, else the default.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    fn new(default: Arc<CertifiedKey>, sni: &[(String, String)]) -> Result<Self, TlsError> {
        let mut by_name = HashMap::new();
        for (cert, key) in sni {
            let ck = certified_key(cert, key)?;
            let leaf = ck
                .cert
                .first()
                .ok_or_else(|| file_err(cert, "no certificate"))?;
            let names = spiffe::dns_sans(leaf).map_err(|e| file_err(cert, e))?;
            if names.is_empty() {
                return Err(file_err(cert, "names no DNS SAN to choose it by"));
            }
            for n in names {
                by_name.insert(n.to_ascii_lowercase(), ck.clone());
            }
        }
        Ok(SniResolver { default, by_name })
    }
}

impl rustls::server::ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello
            .server_name()
            .and_then(|n| self.by_name.get(&n.to_ascii_lowercase()));
        Some(chosen.unwrap_or(&self.default).clone())
    }
}

/// A `simple` TLS cluster's client config: verify the upstream against
/// `ca` (or the system roots) by name, optionally presenting a client
/// certificate; ALPN `http/1.1`.
pub fn origination_config(
    ca: Option<&str>,
    client: Option<(&str, &str)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca {
        Some(ca) => load_roots(ca)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some((cert, key)) => {
            let ck = certified_key(cert, key)?;
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(ck)))
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
