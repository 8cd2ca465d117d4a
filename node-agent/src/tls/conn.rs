//! One TLS connection, sans-IO: ciphertext in, plaintext out (and the
//! other way round), over a rustls connection. Both drivers hold one per
//! TLS socket and call it from the shared core, so the handshake, the
//! mesh transport header and the peer identity are handled once.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::header::Header;
use super::spiffe::{self, SpiffeId};
use super::{HandshakeFailure, TlsError};

/// What one call to [`TlsConn::input`] produced besides plaintext.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Input {
    /// The handshake completed during this call: `(handshake ns, peer)`.
    pub established: Option<(u64, Option<SpiffeId>)>,
    /// A mesh listener's connection named its destination.
    pub header: Option<Header>,
}

/// Where a connection's handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Handshaking,
    Established,
    /// An input failed: the connection is closing, and what the peer
    /// sends after that is dropped (a client that sends its next flight
    /// before it reads the alert must not be counted or answered twice).
    Failed,
}

/// A TLS connection's state.
#[derive(Debug)]
pub struct TlsConn {
    conn: rustls::Connection,
    /// When the handshake began, ns.
    began: u64,
    stage: Stage,
    /// A mesh listener's connection still awaiting its transport header:
    /// the header's bytes so far (never more than a header: the parser
    /// decides within [`super::header::MAX_LEN`] bytes).
    header: Option<Vec<u8>>,
    /// The peer's ring name id, once known (records of every exchange on
    /// the connection carry it).
    peer_name: u16,
}

impl TlsConn {
    /// The server side of a connection accepted at `now`; `mesh`: a mesh
    /// listener's (its plaintext starts with a transport header).
    pub fn server(
        cfg: Arc<rustls::ServerConfig>,
        now: u64,
        mesh: bool,
    ) -> Result<TlsConn, TlsError> {
        let mut conn = rustls::ServerConnection::new(cfg).map_err(TlsError::Setup)?;
        // rustls' own buffers are unbounded: every sealed byte is moved to
        // the driver's queue at once (see `seal`), whose QUEUE_CAP is the
        // backpressure bound.
        conn.set_buffer_limit(None);
        Ok(TlsConn {
            conn: conn.into(),
            began: now,
            stage: Stage::Handshaking,
            peer_name: 0,
            header: mesh.then(Vec::new),
        })
    }

    /// The client side of a connection opened at `now` to `name`;
    /// `header`: the mesh transport header to send first.
    pub fn client(
        cfg: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        now: u64,
        header: Option<Header>,
    ) -> Result<TlsConn, TlsError> {
        let mut conn = rustls::ClientConnection::new(cfg, name).map_err(TlsError::Setup)?;
        // Bytes sent before the handshake completes wait inside rustls
        // (the session's backpressure counts the socket queue only; the
        // handshake is bounded by the connect timeout).
        conn.set_buffer_limit(None);
        let mut t = TlsConn {
            conn: conn.into(),
            began: now,
            stage: Stage::Handshaking,
            header: None,
            peer_name: 0,
        };
        if let Some(h) = header {
            t.seal(&h.encode());
        }
        Ok(t)
    }

    /// True until the handshake completed (or failed).
    pub fn handshaking(&self) -> bool {
        self.stage == Stage::Handshaking
    }

    /// Feeds ciphertext received at `now`; appends the plaintext it
    /// carried to `plain` (after the mesh header, which is taken out).
    /// An error ends the connection (an alert may be waiting in
    /// [`TlsConn::output`] for the peer); input after it is dropped and
    /// gives nothing.
    pub fn input(
        &mut self,
        now: u64,
        cipher: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<Input, TlsError> {
        if self.stage == Stage::Failed {
            return Ok(Input::default());
        }
        self.feed(now, cipher, plain)
            .inspect_err(|_| self.stage = Stage::Failed)
    }

    /// [`TlsConn::input`] on a connection that has not failed.
    fn feed(
        &mut self,
        now: u64,
        mut cipher: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<Input, TlsError> {
        let mut got = Input::default();
        let start = plain.len();
        while !cipher.is_empty() {
            match self.conn.read_tls(&mut cipher) {
                // close_notify came: nothing more is read.
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(TlsError::Io(e.to_string())),
            }
            let st = self
                .conn
                .process_new_packets()
                .map_err(|e| TlsError::Handshake(HandshakeFailure::of(&e), e.to_string()))?;
            if st.plaintext_bytes_to_read() > 0 {
                let k = plain.len();
                plain.resize(k + st.plaintext_bytes_to_read(), 0);
                let read = self.conn.reader().read(&mut plain[k..]).unwrap_or(0);
                plain.truncate(k + read);
            }
        }
        if self.stage == Stage::Handshaking && !self.conn.is_handshaking() {
            self.stage = Stage::Established;
            let peer = self
                .conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| spiffe::id_of_cert(c).ok());
            got.established = Some((now.saturating_sub(self.began), peer));
        }
        if let Some(buf) = &mut self.header
            && plain.len() > start
        {
            buf.extend_from_slice(&plain[start..]);
            plain.truncate(start);
            if let Some((h, used)) = Header::parse(buf)? {
                plain.extend_from_slice(&buf[used..]);
                self.header = None;
                got.header = Some(h);
            }
        }
        Ok(got)
    }

    /// The peer's ring name id (0: none or not known yet).
    pub fn peer_name(&self) -> u16 {
        self.peer_name
    }

    /// Remembers the peer's ring name id.
    pub fn set_peer_name(&mut self, name: u16) {
        self.peer_name = name;
    }

    /// Encrypts `plain` (buffered until the handshake completes). The
    /// connection's buffers have no limit (set at creation), so the
    /// writer takes every byte; the caller moves the ciphertext out with
    /// [`TlsConn::output`] right after.
    pub fn seal(&mut self, plain: &[u8]) {
        let mut rest = plain;
        while !rest.is_empty() {
            match self.conn.writer().write(rest) {
                Ok(0) | Err(_) => {
                    debug_assert!(false, "an unlimited rustls writer refused bytes");
                    return;
                }
                Ok(n) => rest = &rest[n..],
            }
        }
    }

    /// Sends close_notify (queued in [`TlsConn::output`]).
    pub fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    /// Whether ciphertext waits for the socket (see [`TlsConn::output`]).
    pub fn wants_output(&self) -> bool {
        self.conn.wants_write()
    }

    /// Ciphertext waiting for the socket (handshake messages, records,
    /// alerts), appended to `out`.
    pub fn output(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Whether this handshake resumed a session.
    pub fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server and a client [`TlsConn`] over a fresh CA, in memory.
    fn pair(dir: &std::path::Path) -> (TlsConn, TlsConn) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, "t");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap().pem();
        let p = |n: &str| dir.join(n).display().to_string();
        std::fs::write(p("ca.pem"), ca_pem).unwrap();
        std::fs::write(p("s.crt"), cert).unwrap();
        std::fs::write(p("s.key"), key.serialize_pem()).unwrap();
        let server_cfg =
            crate::tls::listener_config(&p("s.crt"), &p("s.key"), &[], None, false).unwrap();
        let client_cfg = crate::tls::origination_config(Some(&p("ca.pem")), None).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        (
            TlsConn::server(server_cfg, 0, false).unwrap(),
            TlsConn::client(client_cfg, name, 0, None).unwrap(),
        )
    }

    /// Moves what `from` owes to `to`; returns the plaintext `to` got.
    fn pass(from: &mut TlsConn, to: &mut TlsConn) -> Vec<u8> {
        let (mut wire, mut plain) = (Vec::new(), Vec::new());
        from.output(&mut wire);
        to.input(1, &wire, &mut plain).unwrap();
        plain
    }

    #[test]
    fn a_seal_of_any_size_arrives_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, mut c) = pair(dir.path());
        c.seal(b"GET / HTTP/1.1\r\n\r\n");
        for _ in 0..4 {
            let got = pass(&mut c, &mut s);
            if !got.is_empty() {
                assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
            }
            pass(&mut s, &mut c);
        }
        assert!(!s.handshaking() && !c.handshaking());
        // More than rustls' default 64 KiB buffer in one call: a limit
        // there once dropped the excess without a word.
        let big: Vec<u8> = (0..(1 << 20) + 77).map(|i| i as u8).collect();
        s.seal(&big);
        assert_eq!(pass(&mut s, &mut c), big);
    }

    #[test]
    fn input_after_a_failure_is_dropped_and_not_reported_again()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (mut s, _) = pair(dir.path());
        let mut plain = Vec::new();
        let junk = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
        assert!(s.input(1, junk, &mut plain).is_err());
        assert!(!s.handshaking());
        // The peer's next flight: nothing comes of it, no second error.
        assert_eq!(s.input(2, junk, &mut plain)?, Input::default());
        assert!(plain.is_empty());
        Ok(())
    }
}
