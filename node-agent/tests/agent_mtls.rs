//! Mesh mTLS between two real agents on loopback (node A's outbound
//! cluster, node B's mesh listener), the handshake failures B refuses
//! (each counted, none leaking a connection), authz, and the mesh
//! transport header checks, with certificates made by rcgen at test time
//! and a raw rustls client for the cases an agent would never produce.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/pki.rs"]
mod pki;
#[path = "support/agent.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pki::{Ca, Files};
use support::{Agent, Upstream, request};

const TD: &str = "td.test";
const A_ID: &str = "spiffe://td.test/ns/shop/sa/web";
const B_ID: &str = "spiffe://td.test/node/b";

/// Node B: a mesh listener on the agent's port, identity `B_ID`.
fn node_b(dir: &Path, ca: &Ca, authz: &str) -> Agent {
    let bundle = ca.write(dir, "bundle-b");
    let me = ca.spiffe_files(dir, "b", B_ID, false);
    let identity = me.identity(&bundle, TD);
    let authz = authz.to_string();
    Agent::start(
        move |port, ring| {
            format!(
                r#"version: 1
{identity}listeners:
  - name: mesh
    bind: "127.0.0.1:{port}"
    mode: mesh
{authz}sampling: {{ default: 1.0, keep_errors: true, max_records_per_sec: 0 }}
ring: {{ path: "{}", size: 4MiB }}
"#,
                ring.display()
            )
        },
        &[],
    )
}

/// Node A: an HTTP listener routing to `upstream` through B's mesh port,
/// expecting `expect`.
fn node_a(dir: &Path, ca: &Ca, mesh_port: u16, upstream: u16, expect: &str) -> Agent {
    node_a_with(dir, ca, mesh_port, upstream, expect, "{ connect: 1s }")
}

/// [`node_a`] with a `tcp` listener: each connection is one L4 stream
/// through the mesh.
fn node_a_tcp(dir: &Path, ca: &Ca, mesh_port: u16, upstream: u16) -> Agent {
    node_a_full(dir, ca, mesh_port, upstream, B_ID, "{ connect: 1s }", "tcp")
}

/// [`node_a`] with the cluster's `timeouts`.
fn node_a_with(
    dir: &Path,
    ca: &Ca,
    mesh_port: u16,
    upstream: u16,
    expect: &str,
    timeouts: &str,
) -> Agent {
    node_a_full(dir, ca, mesh_port, upstream, expect, timeouts, "http")
}

fn node_a_full(
    dir: &Path,
    ca: &Ca,
    mesh_port: u16,
    upstream: u16,
    expect: &str,
    timeouts: &str,
    protocol: &str,
) -> Agent {
    let (timeouts, protocol) = (timeouts.to_string(), protocol.to_string());
    let bundle = ca.write(dir, "bundle-a");
    let me = ca.spiffe_files(dir, "a", A_ID, false);
    let identity = me.identity(&bundle, TD);
    let expect = expect.to_string();
    Agent::start(
        move |port, ring| {
            format!(
                r#"version: 1
{identity}listeners:
  - {{ name: api, bind: "127.0.0.1:{port}", protocol: {protocol}, default_route: r }}
clusters:
  - name: c
    endpoints: [ {{ addr: "127.0.0.1:{upstream}" }} ]
    tls: {{ mode: mesh, identity: "{expect}", mesh_port: {mesh_port} }}
    timeouts: {timeouts}
routes:
  - {{ name: r, to: [ {{ cluster: c }} ] }}
sampling: {{ default: 1.0, keep_errors: true, max_records_per_sec: 0 }}
ring: {{ path: "{}", size: 4MiB }}
"#,
                ring.display()
            )
        },
        &[],
    )
}

fn get(port: u16, path: &str) -> support::Response {
    request(port, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"))
}

fn tls_count(a: &Agent, side: &str, result: &str) -> u64 {
    a.metric(&format!(
        "tailmesh_tls_handshakes_total{{side=\"{side}\",result=\"{result}\"}} "
    ))
}

/// Waits until `a` has no open client connection.
fn no_open_connections(a: &Agent) {
    let t0 = Instant::now();
    loop {
        let n = a.metric("tailmesh_active_connections{side=\"downstream\"} ");
        if n == 0 {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{n} connections left open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn records(a: &Agent, n: usize) -> Vec<serde_json::Value> {
    a.records_at_least(n)
        .into_iter()
        .filter(|r| r["kind"] == "record")
        .collect()
}

#[test]
fn a_request_crosses_two_agents_over_mesh_mtls_and_both_rings_name_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("mesh root");
    let up = Upstream::start(&[]);
    let b = node_b(dir.path(), &ca, "");
    let a = node_a(dir.path(), &ca, b.port, up.port, B_ID);
    let before = up.served();
    for k in 0..20 {
        let r = get(a.port, &format!("/x/{k}"));
        assert_eq!(
            r.status,
            200,
            "{:?} {}",
            r.header("x-tailmesh-reason"),
            a.log()
        );
    }
    // served() counts its own stats request.
    assert_eq!(
        up.served() - before - 1,
        20,
        "the upstream saw every request"
    );
    // Pooled like plaintext: one handshake for 20 keep-alive requests.
    assert_eq!(tls_count(&a, "client", "ok"), 1, "{}", a.metrics());
    assert_eq!(tls_count(&b, "server", "ok"), 1);
    let ra = records(&a, 20);
    let rb = records(&b, 20);
    assert_eq!(ra.len(), 20, "{ra:?}");
    assert_eq!(rb.len(), 20, "{rb:?}");
    for r in &ra {
        assert_eq!(r["peer"], B_ID, "A records B as the peer: {r}");
        assert_eq!(r["status"], 200);
    }
    for r in &rb {
        assert_eq!(r["peer"], A_ID, "B records A as the peer: {r}");
        assert_eq!(r["status"], 200);
    }
    // The handshake is in the tls phase of the request that paid for it.
    let tls_a: Vec<u64> = ra
        .iter()
        .map(|r| r["phases_ns"]["tls"].as_u64().unwrap())
        .collect();
    let tls_b: Vec<u64> = rb
        .iter()
        .map(|r| r["phases_ns"]["tls"].as_u64().unwrap())
        .collect();
    assert_eq!(tls_a.iter().filter(|t| **t > 0).count(), 1, "{tls_a:?}");
    assert_eq!(tls_b.iter().filter(|t| **t > 0).count(), 1, "{tls_b:?}");
    support::assert_phases_sum(&ra);
    support::assert_phases_sum(&rb);
    // A large body crosses both agents whole, in both directions.
    let big = request(
        a.port,
        "GET /_bench/bulk?bytes=8388608 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 8 << 20);
    let body = vec![b'x'; 4 << 20];
    let mut raw = format!(
        "POST /upload HTTP/1.1\r\nHost: t\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let mut s = support::connect(a.port);
    s.write_all(&raw).unwrap();
    let up_resp = support::read_response(&mut s, &mut Vec::new()).unwrap();
    assert_eq!(up_resp.status, 200, "{}", a.log());
    // ringlog groups by peer.
    let out = std::process::Command::new(support::sibling("ringlog"))
        .args(["hist", "--by", "peer", "--ring"])
        .arg(b.ring())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(A_ID),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_server_with_the_wrong_identity_is_refused_with_a_502() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("mesh root");
    let up = Upstream::start(&[]);
    let b = node_b(dir.path(), &ca, "");
    let a = node_a(
        dir.path(),
        &ca,
        b.port,
        up.port,
        "spiffe://td.test/node/not-b",
    );
    let before = up.served();
    let r = get(a.port, "/x");
    assert_eq!(r.status, 502);
    assert_eq!(
        r.header("x-tailmesh-reason").as_deref(),
        Some("tls_handshake")
    );
    assert_eq!(up.served() - before - 1, 0, "nothing reached the upstream");
    assert_eq!(
        tls_count(&a, "client", "identity_mismatch"),
        1,
        "{}",
        a.metrics()
    );
    no_open_connections(&b);
    let t0 = Instant::now();
    while a.metric("tailmesh_active_connections{side=\"upstream\"} ") != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "A kept the refused connection"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A whole trust domain is accepted.
    drop(a);
    let a = node_a(dir.path(), &ca, b.port, up.port, "spiffe://td.test");
    assert_eq!(get(a.port, "/y").status, 200);
}

/// Accepts any server certificate: these tests look at what the agent
/// does with the client's side.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Sends `header` + `payload` over mTLS to `port` with client cert
/// `files` (None: no certificate); returns what came back (Err: the
/// connection failed, e.g. an alert).
fn mesh_client(
    port: u16,
    files: Option<&Files>,
    header: &[u8],
    payload: &[u8],
) -> std::io::Result<Vec<u8>> {
    mesh_client_cert(port, files, header, payload).map(|(out, _)| out)
}

/// [`mesh_client`], also returning the certificate the server presented.
fn mesh_client_cert(
    port: u16,
    files: Option<&Files>,
    header: &[u8],
    payload: &[u8],
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let prov = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(prov.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(prov)));
    let cfg = match files {
        Some(f) => {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(&f.cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&f.key).unwrap();
            b.with_client_auth_cert(certs, key).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    let mut conn =
        rustls::ClientConnection::new(Arc::new(cfg), "127.0.0.1".try_into().unwrap()).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(header)?;
    tls.write_all(payload)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let res = loop {
        match tls.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // One response is enough for these tests.
                if response_complete(&out) {
                    break Ok(());
                }
            }
            Err(e) if out.is_empty() => break Err(e),
            Err(_) => break Ok(()),
        }
    };
    res?;
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok((out, cert))
}

/// A whole response head and its content-length body are in `out`.
fn response_complete(out: &[u8]) -> bool {
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    out.len() >= end + 4 + len
}

/// The transport header naming 127.0.0.1:`port` over HTTP.
fn header_to(port: u16) -> Vec<u8> {
    let mut h = b"TMX1\x00\x08\x01\x04\x7f\x00\x00\x01".to_vec();
    h.extend_from_slice(&port.to_be_bytes());
    h
}

#[test]
fn bad_clients_are_refused_each_counted_and_nothing_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("mesh root");
    let up = Upstream::start(&[]);
    let b = node_b(d, &ca, "");
    let get_req = b"GET /m HTTP/1.1\r\nHost: t\r\n\r\n";
    let before = up.served();
    // A good client gets through (the baseline the failures differ from).
    let good = ca.spiffe_files(d, "good", A_ID, false);
    let ok = mesh_client(b.port, Some(&good), &header_to(up.port), get_req).unwrap();
    assert!(
        ok.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&ok)
    );
    // No client certificate.
    assert!(mesh_client(b.port, None, &header_to(up.port), get_req).is_err());
    // Another trust domain, signed by the same CA.
    let other = ca.spiffe_files(d, "other", "spiffe://other.test/ns/x/sa/y", false);
    assert!(mesh_client(b.port, Some(&other), &header_to(up.port), get_req).is_err());
    // Expired.
    let old = ca.spiffe_files(d, "old", A_ID, true);
    assert!(mesh_client(b.port, Some(&old), &header_to(up.port), get_req).is_err());
    // Signed by a CA B does not trust.
    let rogue = Ca::new("rogue root").spiffe_files(d, "rogue", A_ID, false);
    assert!(mesh_client(b.port, Some(&rogue), &header_to(up.port), get_req).is_err());
    // A malformed transport header, and one naming a host B is not.
    let bad = mesh_client(b.port, Some(&good), b"TMX9\x00\x08", get_req);
    assert!(bad.is_err() || bad.unwrap().is_empty());
    let mut elsewhere = b"TMX1\x00\x08\x01\x04\x0a\x00\x00\x01".to_vec();
    elsewhere.extend_from_slice(&up.port.to_be_bytes());
    let far = mesh_client(b.port, Some(&good), &elsewhere, get_req);
    assert!(far.is_err() || far.unwrap().is_empty());
    assert_eq!(
        up.served() - before - 1,
        1,
        "only the good client reached the upstream"
    );
    for (result, n) in [
        ("ok", 3),
        ("no_client_cert", 1),
        ("identity_mismatch", 1),
        ("expired", 1),
        ("unknown_ca", 1),
        ("bad_header", 1),
        ("target_refused", 1),
    ] {
        assert_eq!(
            tls_count(&b, "server", result),
            n,
            "{result}: {}",
            b.metrics()
        );
    }
    no_open_connections(&b);
}

#[test]
fn authz_allows_denies_and_deny_wins_on_http_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("mesh root");
    let up = Upstream::start(&[]);
    // The trust-domain rule applies to another port only: on the
    // upstream's port the one applicable allow rule names web.
    let authz = format!(
        r#"    authz:
      - {{ action: allow, from: ["spiffe://td.test/*"], to: {{ port: 1 }} }}
      - {{ action: deny, from: ["spiffe://td.test/ns/shop/sa/bot"] }}
      - {{ action: allow, from: ["{A_ID}", "spiffe://td.test/ns/shop/sa/bot"], to: {{ port: {} }} }}
"#,
        up.port
    );
    let b = node_b(d, &ca, &authz);
    let get_req = b"GET /m HTTP/1.1\r\nHost: t\r\n\r\n";
    let web = ca.spiffe_files(d, "web", A_ID, false);
    let bot = ca.spiffe_files(d, "bot", "spiffe://td.test/ns/shop/sa/bot", false);
    let ops = ca.spiffe_files(d, "ops", "spiffe://td.test/ns/ops/sa/admin", false);
    let ok = mesh_client(b.port, Some(&web), &header_to(up.port), get_req).unwrap();
    assert!(
        ok.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&ok)
    );
    // The bot matches an applicable allow rule, but deny wins.
    let denied = mesh_client(b.port, Some(&bot), &header_to(up.port), get_req).unwrap();
    let text = String::from_utf8_lossy(&denied);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("x-tailmesh-reason: authz_denied"), "{text}");
    // ops is in the trust domain, but no allow rule for this port names it.
    let ops_r = mesh_client(b.port, Some(&ops), &header_to(up.port), get_req).unwrap();
    assert!(
        ops_r.starts_with(b"HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&ops_r)
    );
    // L4: the bot's tunnel is closed without a byte.
    let mut tcp_header = header_to(up.port);
    tcp_header[6] = 2;
    let closed = mesh_client(b.port, Some(&bot), &tcp_header, get_req);
    assert!(closed.is_err() || closed.unwrap().is_empty());
    let through = mesh_client(b.port, Some(&web), &tcp_header, get_req).unwrap();
    assert!(
        through.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&through)
    );
    let m = b.metrics();
    let denied_n = b.metric("tailmesh_local_responses_total{reason=\"authz_denied\"} ");
    assert_eq!(denied_n, 3, "two 403s and one closed tunnel: {m}");
    no_open_connections(&b);
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn rotating_the_identity_under_load_fails_no_request_and_new_handshakes_use_the_new_cert() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("mesh root");
    let up = Upstream::start(&[]);
    let b = node_b(d, &ca, "");
    let first = std::fs::read_to_string(d.join("b.crt")).unwrap();
    let client = ca.spiffe_files(d, "client", A_ID, false);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (port, up_port) = (b.port, up.port);
    // Load: a new mTLS connection per request, bounded to 20 s.
    let load = {
        let stop = stop.clone();
        let client = Files {
            cert: client.cert.clone(),
            key: client.key.clone(),
        };
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u64, Vec::new());
            let t0 = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && t0.elapsed() < Duration::from_secs(20)
            {
                let req = b"GET /r HTTP/1.1\r\nHost: t\r\n\r\n";
                match mesh_client(port, Some(&client), &header_to(up_port), req) {
                    Ok(r) if r.starts_with(b"HTTP/1.1 200") => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // A broken file is rejected; the running identity keeps serving.
    std::fs::write(d.join("b.crt"), "not a certificate").unwrap();
    let t0 = Instant::now();
    while b.metric("tailmesh_identity_reloads_total{result=\"rejected\"} ") == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "{}", b.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        b.log().contains("mesh identity files rejected"),
        "{}",
        b.log()
    );
    // The new key and certificate, each written by rename (as
    // cert-manager's atomic writer does).
    let (cert, key) = ca.leaf(&[pki::San::Uri(B_ID)], false);
    std::fs::write(d.join("b.key.new"), &key).unwrap();
    std::fs::rename(d.join("b.key.new"), d.join("b.key")).unwrap();
    std::fs::write(d.join("b.crt.new"), &cert).unwrap();
    std::fs::rename(d.join("b.crt.new"), d.join("b.crt")).unwrap();
    let new_der = pem_der(&cert);
    assert_ne!(new_der, pem_der(&first));
    let t0 = Instant::now();
    loop {
        let req = b"GET /n HTTP/1.1\r\nHost: t\r\n\r\n";
        let (r, presented) =
            mesh_client_cert(port, Some(&client), &header_to(up_port), req).unwrap();
        assert!(r.starts_with(b"HTTP/1.1 200"));
        if presented == new_der {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "still the old certificate ({} bytes presented, old {}, new {}): {}",
            presented.len(),
            presented == pem_der(&first),
            new_der.len(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    eprintln!(
        "rotation under load: {ok} requests, {} failed",
        failed.len()
    );
    assert!(ok > 20, "the load ran ({ok})");
    assert!(failed.is_empty(), "{failed:?}");
    assert!(b.metric("tailmesh_identity_reloads_total{result=\"applied\"} ") >= 1);
    assert!(b.metric("tailmesh_identity_expiry_seconds ") > 0);
}

#[test]
fn a_reconnect_resumes_the_mesh_session_and_still_knows_the_peers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("mesh root");
    let up = Upstream::start(&[]);
    let b = node_b(dir.path(), &ca, "");
    // Pooled connections close after 100 ms idle: each request below
    // needs a new connection.
    let a = node_a_with(
        dir.path(),
        &ca,
        b.port,
        up.port,
        B_ID,
        "{ connect: 1s, idle: 100ms }",
    );
    for k in 0..3 {
        assert_eq!(get(a.port, &format!("/r{k}")).status, 200, "{}", a.log());
        std::thread::sleep(Duration::from_millis(600));
    }
    assert_eq!(tls_count(&a, "client", "ok"), 1, "{}", a.metrics());
    assert_eq!(tls_count(&a, "client", "resumed"), 2, "{}", a.metrics());
    assert_eq!(tls_count(&b, "server", "resumed"), 2, "{}", b.metrics());
    // A resumed session still carries both identities into the records.
    for r in records(&a, 3) {
        assert_eq!(r["peer"], B_ID, "{r}");
    }
    for r in records(&b, 3) {
        assert_eq!(r["peer"], A_ID, "{r}");
    }
}

#[test]
fn an_l4_stream_crosses_the_mesh_as_one_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("mesh root");
    let up = Upstream::start(&[]);
    let b = node_b(dir.path(), &ca, "");
    let a = node_a_tcp(dir.path(), &ca, b.port, up.port);
    // Two requests on one client connection: one L4 stream, one mesh
    // connection, both answered by the upstream.
    let mut s = support::connect(a.port);
    let mut carry = Vec::new();
    for k in 0..2 {
        write!(s, "GET /l4/{k} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = support::read_response(&mut s, &mut carry).unwrap();
        assert_eq!(r.status, 200, "{}", a.log());
    }
    drop(s);
    let ra = records(&a, 1);
    let rb = records(&b, 1);
    assert!(
        ra.iter()
            .any(|r| r["flags"].to_string().contains("l4") && r["peer"] == B_ID),
        "{ra:?}"
    );
    assert!(
        rb.iter()
            .any(|r| r["flags"].to_string().contains("l4") && r["peer"] == A_ID),
        "{rb:?}"
    );
    assert_eq!(tls_count(&a, "client", "ok"), 1);
}

#[test]
fn an_identity_close_to_expiry_is_a_warning_and_a_metric() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("mesh root");
    let bundle = ca.write(d, "bundle");
    let me = ca.spiffe_files_expiring(d, "soon", B_ID);
    let identity = me.identity(&bundle, TD);
    let b = Agent::start(
        move |port, ring| {
            format!(
                "version: 1\n{identity}listeners:\n  - {{ name: mesh, bind: \"127.0.0.1:{port}\", mode: mesh }}\nring: {{ path: \"{}\", size: 4MiB }}\n",
                ring.display()
            )
        },
        &[],
    );
    let left = b.metric("tailmesh_identity_expiry_seconds ");
    assert!(left > 0 && left <= 2 * 86_400, "{left}");
    let t0 = Instant::now();
    while !b.log().contains("WARNING: mesh identity") {
        assert!(t0.elapsed() < Duration::from_secs(5), "{}", b.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // A long-lived identity warns of nothing.
    let a_dir = tempfile::tempdir().unwrap();
    let ok = node_b(a_dir.path(), &ca, "");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!ok.log().contains("WARNING"), "{}", ok.log());
}
