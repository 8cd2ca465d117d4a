//! TLS termination and origination against tools we did not write: curl
//! and `openssl s_client` against a TLS listener (SNI certificate choice,
//! required client certificates), and TLS origination to a real nginx TLS
//! server verified by name. Certificates are made by rcgen at test time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/pki.rs"]
mod pki;
#[path = "support/agent.rs"]
mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pki::{Ca, Files, San};
use support::{Agent, Upstream, free_port, request};

fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl is installed by ./test.sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An agent whose listener `api` terminates TLS with `tls` (a YAML map)
/// and routes to `up`.
fn tls_agent(up: u16, tls: &str) -> Agent {
    let tls = tls.to_string();
    Agent::start(
        move |port, ring| {
            format!(
                r#"version: 1
listeners:
  - name: api
    bind: "127.0.0.1:{port}"
    protocol: http
    default_route: r
    tls: {tls}
clusters:
  - {{ name: c, endpoints: [ {{ addr: "127.0.0.1:{up}" }} ] }}
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

#[test]
fn curl_and_openssl_reach_a_tls_listener_which_picks_its_certificate_by_sni() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("web root");
    let ca_pem = ca.write(d, "ca");
    let (c, k) = ca.leaf(&[San::Dns("localhost")], false);
    let main = Files::write(d, "main", &c, &k);
    let (c, k) = ca.leaf(&[San::Dns("other.test")], false);
    let other = Files::write(d, "other", &c, &k);
    let up = Upstream::start(&[]);
    let tls = format!(
        "{{ cert: \"{}\", key: \"{}\", sni: [ {{ cert: \"{}\", key: \"{}\" }} ] }}",
        main.cert.display(),
        main.key.display(),
        other.cert.display(),
        other.key.display()
    );
    let a = tls_agent(up.port, &tls);
    let ca_arg = ca_pem.display().to_string();
    for name in ["localhost", "other.test"] {
        let url = format!("https://{name}:{}/hello", a.port);
        let resolve = format!("{name}:{}:127.0.0.1", a.port);
        let (ok, body, err) = curl(&[
            "--cacert",
            &ca_arg,
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            &url,
        ]);
        assert!(ok, "{name}: {err}");
        assert_eq!(body, "200 1.1", "{name}");
    }
    // Keep-alive over TLS: curl reuses one connection for three URLs.
    let urls: Vec<String> = (0..3)
        .map(|k| format!("https://localhost:{}/k{k}", a.port))
        .collect();
    let (ok, _, err) = curl(&[
        "-v",
        "--cacert",
        &ca_arg,
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        &urls[0],
        &urls[1],
        &urls[2],
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("Re-using existing connection") || err.contains("Reusing existing"),
        "{err}"
    );
    // openssl s_client: the SNI name picks the certificate, ALPN http/1.1.
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", a.port),
            "-servername",
            "other.test",
            "-verify_hostname",
            "other.test",
            "-alpn",
            "http/1.1",
            "-CAfile",
            &ca_arg,
            "-verify_return_error",
            "-quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /s HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.starts_with("HTTP/1.1 200"), "{stdout}{stderr}");
    // -verify_hostname: the certificate chosen is the one for other.test.
    assert!(stderr.contains("verify return:1"), "{stderr}");
    assert!(
        !stderr.contains("unexpected eof"),
        "close_notify was sent: {stderr}"
    );
    assert_eq!(
        a.metric("tailmesh_tls_handshakes_total{side=\"server\",result=\"ok\"} "),
        4
    );
    // A large body over TLS arrives whole (a rustls buffer limit once
    // dropped what did not fit in 64 KiB of ciphertext on epoll).
    let bulk = format!("https://localhost:{}/_bench/bulk?bytes=16777216", a.port);
    let (ok, size, err) = curl(&[
        "--cacert",
        &ca_arg,
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        &bulk,
    ]);
    assert!(ok, "{err}");
    assert_eq!(size, "16777216");
    // Plaintext to a TLS port is a handshake failure, not a request.
    let r = support::try_request(a.port, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(r.is_err() || r.unwrap().status == 0);
}

#[test]
fn a_listener_that_requires_client_certificates_refuses_curl_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("web root");
    let ca_pem = ca.write(d, "ca");
    let (c, k) = ca.leaf(&[San::Dns("localhost")], false);
    let srv = Files::write(d, "srv", &c, &k);
    let client = ca.spiffe_files(d, "client", "spiffe://corp.test/ns/ci/sa/runner", false);
    let up = Upstream::start(&[]);
    let tls = format!(
        "{{ cert: \"{}\", key: \"{}\", client_ca: \"{}\", require_client_cert: true }}",
        srv.cert.display(),
        srv.key.display(),
        ca_pem.display()
    );
    let a = tls_agent(up.port, &tls);
    let url = format!("https://localhost:{}/c", a.port);
    let ca_arg = ca_pem.display().to_string();
    let (ok, _, err) = curl(&["--cacert", &ca_arg, &url]);
    assert!(!ok, "no client certificate must fail: {err}");
    let (ok, body, err) = curl(&[
        "--cacert",
        &ca_arg,
        "--cert",
        &client.cert.display().to_string(),
        "--key",
        &client.key.display().to_string(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert!(ok, "{err}");
    assert_eq!(body, "200");
    let recs = a.records_at_least(1);
    let r = recs.iter().find(|r| r["kind"] == "record").unwrap();
    assert_eq!(r["peer"], "spiffe://corp.test/ns/ci/sa/runner", "{r}");
    assert!(r["phases_ns"]["tls"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(
        a.metric("tailmesh_tls_handshakes_total{side=\"server\",result=\"no_client_cert\"} "),
        1
    );
}

/// nginx terminating TLS with `cert` on a free port, answering 200 with
/// a body naming itself; killed on drop.
struct NginxTls {
    child: Child,
    port: u16,
}

impl Drop for NginxTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_tls(dir: &Path, cert: &Files) -> NginxTls {
    let port = free_port();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx.err error;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 "nginx-tls $ssl_server_name $ssl_protocol\n"; }}
    }}
}}
"#,
        dir = dir.display(),
        cert = cert.cert.display(),
        key = cert.key.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .arg("-e")
        .arg(dir.join("nginx.err"))
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is installed by ./test.sh");
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "nginx did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    NginxTls { child, port }
}

/// An agent with a plain listener whose cluster originates TLS to `port`.
fn origin_agent(port: u16, tls: &str) -> Agent {
    let tls = tls.to_string();
    Agent::start(
        move |lport, ring| {
            format!(
                r#"version: 1
listeners:
  - {{ name: api, bind: "127.0.0.1:{lport}", protocol: http, default_route: r }}
clusters:
  - name: ext
    endpoints: [ {{ addr: "127.0.0.1:{port}" }} ]
    tls: {tls}
routes:
  - {{ name: r, to: [ {{ cluster: ext }} ] }}
sampling: {{ default: 1.0, keep_errors: true, max_records_per_sec: 0 }}
ring: {{ path: "{}", size: 4MiB }}
"#,
                ring.display()
            )
        },
        &[],
    )
}

#[test]
fn tls_origination_to_nginx_verifies_its_name_and_reuses_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("ext root");
    let ca_pem = ca.write(d, "ca");
    let (c, k) = ca.leaf(&[San::Dns("api.ext.test")], false);
    let srv = Files::write(d, "ext", &c, &k);
    let nginx = nginx_tls(d, &srv);
    let good = format!(
        "{{ mode: simple, ca: \"{}\", sni: api.ext.test }}",
        ca_pem.display()
    );
    let a = origin_agent(nginx.port, &good);
    for k in 0..5 {
        let r = request(a.port, &format!("GET /o{k} HTTP/1.1\r\nHost: t\r\n\r\n"));
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 200, "{body} {}", a.log());
        // nginx 1.22 offers TLS 1.2 unless told otherwise; SNI reached it.
        assert!(body.starts_with("nginx-tls api.ext.test TLSv1."), "{body}");
    }
    assert_eq!(
        a.metric("tailmesh_tls_handshakes_total{side=\"client\",result=\"ok\"} "),
        1,
        "five requests, one pooled TLS connection"
    );
    let recs = a.records_at_least(5);
    let first = recs.iter().find(|r| r["kind"] == "record").unwrap();
    assert!(first["phases_ns"]["tls"].as_u64().unwrap() > 0, "{first}");
    drop(a);
    // The wrong name, or a CA that did not sign it: 502, counted.
    let wrong = format!(
        "{{ mode: simple, ca: \"{}\", sni: wrong.test }}",
        ca_pem.display()
    );
    let a = origin_agent(nginx.port, &wrong);
    let r = request(a.port, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 502);
    assert_eq!(
        r.header("x-tailmesh-reason").as_deref(),
        Some("tls_handshake")
    );
    let other_ca = Ca::new("other").write(d, "other-ca");
    let untrusted = format!(
        "{{ mode: simple, ca: \"{}\", sni: api.ext.test }}",
        other_ca.display()
    );
    drop(a);
    let a = origin_agent(nginx.port, &untrusted);
    let r = request(a.port, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 502);
    assert_eq!(
        a.metric("tailmesh_tls_handshakes_total{side=\"client\",result=\"unknown_ca\"} "),
        1
    );
}

#[test]
fn a_stalled_handshake_is_cut_at_header_read_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("web root");
    let ca_pem = ca.write(d, "ca");
    let (c, k) = ca.leaf(&[San::Dns("localhost")], false);
    let srv = Files::write(d, "srv", &c, &k);
    let up = Upstream::start(&[]);
    // Client side: a TLS listener with a 300 ms header_read.
    let tls = format!(
        "{{ cert: \"{}\", key: \"{}\" }}\n    timeouts: {{ header_read: 300ms }}",
        srv.cert.display(),
        srv.key.display()
    );
    let a = tls_agent(up.port, &tls);
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The first bytes of a ClientHello record, then nothing.
    s.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut got);
    let waited = t0.elapsed();
    // Closed with at most a TLS alert (close_notify), no HTTP answer.
    assert!(got.is_empty() || got[0] == 0x15, "{got:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(
        a.driver_event("idle_closed"),
        0,
        "not an idle keep-alive close"
    );
    // Upstream side: a server that accepts and never answers the
    // ClientHello; the connect timeout covers the handshake.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _hold = std::thread::spawn(move || {
        let conns: Vec<_> = silent.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(5));
        drop(conns);
    });
    let cfg = format!(
        "{{ mode: simple, ca: \"{}\", sni: localhost }}\n    timeouts: {{ connect: 300ms }}",
        ca_pem.display()
    );
    let o = origin_agent(silent_port, &cfg);
    let t0 = Instant::now();
    let r = request(o.port, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let waited = t0.elapsed();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("x-tailmesh-reason").as_deref(),
        Some("upstream_connect")
    );
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}
