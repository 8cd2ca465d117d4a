//! Certificate verifiers for the mesh hop. SPIFFE certificates name their
//! workload in a URI SAN and carry no DNS name, so the server side of a
//! mesh connection is checked by chain (against the trust bundle) and by
//! SPIFFE ID, never by host name; the client side by chain and trust
//! domain.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore};

use super::spiffe::{self, IdMatch};

/// The rustls error for a peer whose certificate names the wrong identity.
fn identity_error(what: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        IdentityMismatch(what),
    ))))
}

/// A certificate that chains to the bundle but names another identity.
#[derive(Debug)]
pub struct IdentityMismatch(pub String);

impl std::fmt::Display for IdentityMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdentityMismatch {}

/// Checks a mesh server: chain to the trust bundle, then its SPIFFE ID
/// against what the cluster expects.
#[derive(Debug)]
pub struct MeshServerVerifier {
    roots: Arc<RootCertStore>,
    expect: IdMatch,
    algs: WebPkiSupportedAlgorithms,
}

impl MeshServerVerifier {
    /// A verifier trusting `roots` and accepting `expect`.
    pub fn new(roots: Arc<RootCertStore>, expect: IdMatch, provider: &CryptoProvider) -> Self {
        MeshServerVerifier {
            roots,
            expect,
            algs: provider.signature_verification_algorithms,
        }
    }
}

/// The peer's SPIFFE ID must satisfy `expect`.
fn check_id(der: &[u8], expect: &IdMatch) -> Result<(), Error> {
    let id = spiffe::id_of_cert(der).map_err(|e| identity_error(e.to_string()))?;
    if expect.matches(Some(&id)) {
        Ok(())
    } else {
        Err(identity_error(format!(
            "peer identity {id} is not the expected {}",
            match expect {
                IdMatch::Exact(x) => x.to_string(),
                IdMatch::TrustDomain(td) => format!("trust domain {td}"),
                IdMatch::Any => "*".into(),
            }
        )))
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        check_id(end_entity, &self.expect)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Checks a mesh client: a certificate is required, chains to the trust
/// bundle, and names an ID in the trust domain.
#[derive(Debug)]
pub struct MeshClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: IdMatch,
}

impl MeshClientVerifier {
    /// A verifier over webpki's client verifier for `roots`.
    pub fn new(
        roots: Arc<RootCertStore>,
        trust_domain: &str,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, rustls::server::VerifierBuilderError> {
        let inner =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider).build()?;
        Ok(MeshClientVerifier {
            inner,
            trust_domain: IdMatch::TrustDomain(trust_domain.to_string()),
        })
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_id(end_entity, &self.trust_domain)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
