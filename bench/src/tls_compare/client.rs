//! The TLS load client of `tls-compare`: blocking rustls connections on
//! threads (keep-alive requests, a new full or resumed handshake per
//! request, bulk downloads), TLS 1.3 with one cipher suite for every
//! target, a client certificate always.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// What the client presents and trusts.
#[derive(Debug, Clone)]
pub struct Creds {
    /// CA bundle (PEM file).
    pub ca: std::path::PathBuf,
    /// Client certificate (PEM file).
    pub cert: std::path::PathBuf,
    /// Its key (PEM file).
    pub key: std::path::PathBuf,
}

/// A client config: TLS 1.3, AES-128-GCM only, the client certificate,
/// session resumption on or off.
pub fn config(c: &Creds, resume: bool) -> Result<Arc<rustls::ClientConfig>> {
    let mut prov = rustls::crypto::ring::default_provider();
    prov.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&c.ca)? {
        roots.add(cert?)?;
    }
    let certs = CertificateDer::pem_file_iter(&c.cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&c.key)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(prov))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(cfg))
}

/// One TLS connection to 127.0.0.1:`port`, the mesh `header` sent first.
pub struct Conn {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(cfg: &Arc<rustls::ClientConfig>, port: u16, header: &[u8]) -> Result<Conn> {
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::try_from("localhost")?;
        let conn = rustls::ClientConnection::new(cfg.clone(), name)?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        if !header.is_empty() {
            tls.write_all(header)?;
        }
        Ok(Conn {
            tls,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends `GET path` and reads the whole response; returns body bytes.
    pub fn get(&mut self, path: &str) -> Result<u64> {
        write!(self.tls, "GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        self.buf.clear();
        let mut chunk = vec![0u8; 64 * 1024];
        let (head_end, len) = loop {
            let n = self.tls.read(&mut chunk)?;
            if n == 0 {
                bail!("closed before a response");
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .context("response without content-length")?;
                break (end + 4, len);
            }
        };
        let mut have = (self.buf.len() - head_end) as u64;
        while have < len {
            let n = self.tls.read(&mut chunk)?;
            if n == 0 {
                bail!("closed after {have} of {len} body bytes");
            }
            have += n as u64;
        }
        Ok(len)
    }
}

/// Runs `f` on `threads` threads until `dur` passes; sums their counts.
pub fn on_threads(
    threads: usize,
    dur: Duration,
    f: impl Fn(Instant) -> Result<u64> + Send + Sync + 'static,
) -> Result<u64> {
    let f = Arc::new(f);
    let until = Instant::now() + dur;
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let f = f.clone();
            std::thread::spawn(move || f(until))
        })
        .collect();
    let mut total = 0;
    for h in hs {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    Ok(total)
}
