//! `tailmesh-bench tls-compare`: TLS termination cost, the agent against
//! HAProxy, one proxy thread each, in one run, against the same plaintext
//! upstream. Every target requires a client certificate (mTLS) and speaks
//! TLS 1.3 with AES-128-GCM and an ECDSA P-256 certificate (made with rcgen
//! here). Rows, per target, proxy CPU from /proc:
//!
//! - keep-alive requests over TLS: RPS and CPU µs per request;
//! - full mTLS handshakes (a new connection per request, resumption off):
//!   handshakes per second, and per second of proxy CPU (per core);
//! - resumed handshakes (session tickets on): the same;
//! - bulk: a large body over one TLS connection for at least a second
//!   per round, CPU seconds per GB.
//!
//! `agent-uring-mesh` is the mesh hop itself: a `mode: mesh` listener and
//! the transport header, the same crypto.

mod client;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::compare::procs::{self, Proc, cpu_of, free_port, wait_listening, which};
use client::{Conn, Creds};

const TARGETS: [&str; 4] = ["agent-uring", "agent-epoll", "agent-uring-mesh", "haproxy"];
const ROWS: [&str; 3] = ["keepalive", "handshakes", "bulk"];

/// Command-line flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds; targets alternate within each round.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Keep-alive connections (one client thread each).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Client threads opening connections for the handshake rows.
    #[arg(long, default_value_t = 4)]
    handshake_threads: usize,
    /// Bytes per bulk download, e.g. 64MiB.
    #[arg(long, default_value = "64MiB")]
    bulk_bytes: String,
    /// Targets, comma separated (agent-uring, agent-epoll, agent-uring-mesh, haproxy).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "agent-uring,agent-epoll,agent-uring-mesh,haproxy"
    )]
    targets: Vec<String>,
    /// Rows to measure, comma separated (keepalive, handshakes, bulk); the
    /// rows left out print as 0.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "keepalive,handshakes,bulk"
    )]
    rows: Vec<String>,
    /// node-agent binary (default: next to this binary).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Print JSON instead of markdown.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Row {
    count: u64,
    secs: f64,
    cpu: f64,
}

impl Row {
    fn add(&mut self, count: u64, secs: f64, cpu: f64) {
        self.count += count;
        self.secs += secs;
        self.cpu += cpu;
    }
    fn rate(&self) -> f64 {
        self.count as f64 / self.secs.max(1e-9)
    }
    fn cpu_us(&self) -> f64 {
        self.cpu * 1e6 / (self.count.max(1) as f64)
    }
    /// Operations per second of CPU (0 when not measured).
    fn per_core_s(&self) -> f64 {
        if self.cpu > 0.0 {
            self.count as f64 / self.cpu
        } else {
            0.0
        }
    }
}

struct Target {
    name: String,
    port: u16,
    pid: u32,
    header: Vec<u8>,
    keepalive: Row,
    full: Row,
    resumed: Row,
    /// (bytes, seconds, cpu seconds)
    bulk: (u64, f64, f64),
}

/// The PKI of a run: CA, server (localhost, 127.0.0.1 and a SPIFFE ID),
/// client (a SPIFFE ID).
fn pki(dir: &Path) -> Result<Creds> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "bench root");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |sans: Vec<SanType>| -> Result<(String, String)> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, "bench");
        p.use_authority_key_identifier_extension = true;
        p.subject_alt_names = sans;
        let k = KeyPair::generate()?;
        Ok((p.signed_by(&k, &issuer)?.pem(), k.serialize_pem()))
    };
    let (sc, sk) = leaf(vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress([127, 0, 0, 1].into()),
        SanType::URI("spiffe://bench.test/node/server".try_into()?),
    ])?;
    let (cc, ck) = leaf(vec![SanType::URI(
        "spiffe://bench.test/node/client".try_into()?,
    )])?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(dir.join("server.crt"), &sc)?;
    std::fs::write(dir.join("server.key"), &sk)?;
    std::fs::write(dir.join("server.pem"), format!("{sc}{sk}"))?;
    std::fs::write(dir.join("client.crt"), &cc)?;
    std::fs::write(dir.join("client.key"), &ck)?;
    Ok(Creds {
        ca: dir.join("ca.pem"),
        cert: dir.join("client.crt"),
        key: dir.join("client.key"),
    })
}

fn agent_config(name: &str, port: u16, up: &str, dir: &Path) -> String {
    let d = dir.display();
    let (identity, listener) = if name.ends_with("-mesh") {
        (
            format!(
                "identity: {{ cert: \"{d}/server.crt\", key: \"{d}/server.key\", trust_bundle: \"{d}/ca.pem\", trust_domain: bench.test }}\n"
            ),
            format!("  - {{ name: mesh, bind: \"127.0.0.1:{port}\", mode: mesh }}\n"),
        )
    } else {
        (
            String::new(),
            format!(
                "  - {{ name: tls, bind: \"127.0.0.1:{port}\", protocol: http, default_route: r, tls: {{ cert: \"{d}/server.crt\", key: \"{d}/server.key\", client_ca: \"{d}/ca.pem\", require_client_cert: true }} }}\n"
            ),
        )
    };
    format!(
        r#"version: 1
{identity}listeners:
{listener}clusters:
  - {{ name: origin, endpoints: [ {{ addr: "{up}" }} ] }}
routes:
  - {{ name: r, to: [ {{ cluster: origin }} ] }}
sampling: {{ default: 1.0, max_records_per_sec: 0 }}
ring: {{ path: "{d}/{name}.ring", size: 64MiB }}
"#
    )
}

const HAPROXY_TLS: &str = r#"global
    nbthread 1
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always
frontend tls_in
    bind 127.0.0.1:{port} ssl crt {dir}/server.pem ca-file {dir}/ca.pem verify required alpn http/1.1
    default_backend origin
backend origin
    server origin {up} maxconn 1000
"#;

/// `tailmesh-bench tls-compare`.
pub fn run(args: &Args) -> Result<()> {
    for t in &args.targets {
        if !TARGETS.contains(&t.as_str()) {
            bail!(
                "--targets: unknown target {t:?} (known: {})",
                TARGETS.join(", ")
            );
        }
    }
    for r in &args.rows {
        if !ROWS.contains(&r.as_str()) {
            bail!("--rows: unknown row {r:?} (known: {})", ROWS.join(", "));
        }
    }
    let row = |r: &str| args.rows.iter().any(|x| x == r);
    let bulk_bytes = ringlog::units::parse_size(&args.bulk_bytes)?;
    let dir = std::env::temp_dir().join(format!("tailmesh-tls-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let creds = pki(&dir)?;
    let exe = std::env::current_exe()?;
    let (mut upstream, addrs) = procs::start_upstream(&exe, 1, &[])?;
    let up = addrs[0].clone();
    let up_port: u16 = up.rsplit(':').next().unwrap_or("0").parse()?;
    let mut procs = Vec::new();
    let mut targets = Vec::new();
    let mut notes = Vec::new();
    for name in &args.targets {
        let port = free_port()?;
        let log = dir.join(format!("{name}.log"));
        let p = if name == "haproxy" {
            let Some(bin) = which("haproxy") else {
                notes.push("haproxy: skipped: not installed (./test.sh installs it)".to_string());
                continue;
            };
            let cfg = HAPROXY_TLS
                .replace("{port}", &port.to_string())
                .replace("{dir}", &dir.display().to_string())
                .replace("{up}", &up);
            let path = dir.join("haproxy-tls.cfg");
            std::fs::write(&path, cfg)?;
            Proc::spawn(
                name,
                Command::new(bin)
                    .arg("-db")
                    .arg("-f")
                    .arg(&path)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log)?),
            )?
        } else {
            let agent = args
                .agent
                .clone()
                .unwrap_or_else(|| exe.with_file_name("node-agent"));
            let cfg = dir.join(format!("{name}.yaml"));
            std::fs::write(&cfg, agent_config(name, port, &up, &dir))?;
            let io = if name.contains("uring") {
                "uring"
            } else {
                "epoll"
            };
            Proc::spawn(
                name,
                Command::new(agent)
                    .arg("--config")
                    .arg(&cfg)
                    .args(["--workers", "1", "--io", io, "--admin"])
                    .arg(format!("127.0.0.1:{}", free_port()?))
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log)?),
            )?
        };
        if let Err(e) = wait_listening(port, Duration::from_secs(5)) {
            bail!(
                "{name} did not start ({e}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let header = if name.ends_with("-mesh") {
            let mut h = b"TMX1\x00\x08\x01\x04\x7f\x00\x00\x01".to_vec();
            h.extend_from_slice(&up_port.to_be_bytes());
            h
        } else {
            Vec::new()
        };
        targets.push(Target {
            name: name.clone(),
            port,
            pid: p.pid(),
            header,
            keepalive: Row::default(),
            full: Row::default(),
            resumed: Row::default(),
            bulk: (0, 0.0, 0.0),
        });
        procs.push(p);
    }
    let dur = Duration::from_secs_f64(args.seconds);
    let full_cfg = client::config(&creds, false)?;
    let resume_cfg = client::config(&creds, true)?;
    let n = targets.len();
    for round in 0..args.rounds {
        for i in 0..n {
            let t = &mut targets[(i + round) % n];
            if row("keepalive") {
                keepalive(t, &full_cfg, args.connections, dur)?;
            }
            if row("handshakes") {
                handshakes(t, [&full_cfg, &resume_cfg], args.handshake_threads, dur)?;
            }
            if row("bulk") {
                bulk(t, &full_cfg, bulk_bytes)?;
            }
        }
        upstream.check_alive()?;
        for p in &mut procs {
            p.check_alive()?;
        }
    }
    drop(procs);
    drop(upstream);
    let _ = std::fs::remove_dir_all(&dir);
    let report = report(&targets, &notes, args);
    if args.json {
        println!("{report}");
    } else {
        print!("{}", markdown(&report));
    }
    Ok(())
}

/// Keep-alive requests over `connections` TLS connections for `dur`.
fn keepalive(
    t: &mut Target,
    cfg: &Arc<rustls::ClientConfig>,
    connections: usize,
    dur: Duration,
) -> Result<()> {
    let (port, header, cfg) = (t.port, t.header.clone(), cfg.clone());
    let (count, secs, cpu) = measure(t.pid, || {
        client::on_threads(connections, dur, move |until| {
            let mut c = Conn::open(&cfg, port, &header)?;
            let mut k = 0;
            while Instant::now() < until {
                c.get("/").context("keep-alive request")?;
                k += 1;
            }
            Ok(k)
        })
    })
    .with_context(|| format!("{}: keep-alive", t.name))?;
    t.keepalive.add(count, secs, cpu);
    Ok(())
}

/// A new connection per request for `dur`: full handshakes with the first
/// config, then resumed ones with the second.
fn handshakes(
    t: &mut Target,
    cfgs: [&Arc<rustls::ClientConfig>; 2],
    threads: usize,
    dur: Duration,
) -> Result<()> {
    let port = t.port;
    for (row, cfg) in [(&mut t.full, cfgs[0]), (&mut t.resumed, cfgs[1])] {
        let (header, cfg) = (t.header.clone(), cfg.clone());
        let (count, secs, cpu) = measure(t.pid, || {
            client::on_threads(threads, dur, move |until| {
                let mut k = 0;
                while Instant::now() < until {
                    let mut c = Conn::open(&cfg, port, &header)?;
                    c.get("/").context("request on a new connection")?;
                    k += 1;
                }
                Ok(k)
            })
        })
        .with_context(|| format!("{}: handshakes", t.name))?;
        row.add(count, secs, cpu);
    }
    Ok(())
}

/// Bulk: downloads of `bytes` over one connection for at least a second
/// (in every round: one sample of about a second is too noisy to rank by).
fn bulk(t: &mut Target, cfg: &Arc<rustls::ClientConfig>, bytes: u64) -> Result<()> {
    let path = format!("/_bench/bulk?bytes={bytes}");
    let (port, header) = (t.port, t.header.clone());
    let (moved, secs, cpu) = measure(t.pid, || {
        let mut c = Conn::open(cfg, port, &header)?;
        let t0 = Instant::now();
        let mut moved = 0;
        while moved == 0 || t0.elapsed() < Duration::from_secs(1) {
            moved += c.get(&path).context("bulk download")?;
        }
        Ok(moved)
    })
    .with_context(|| format!("{}: bulk", t.name))?;
    t.bulk = (t.bulk.0 + moved, t.bulk.1 + secs, t.bulk.2 + cpu);
    Ok(())
}

/// Runs `f`, returning its count, the seconds it took and the CPU seconds
/// process `pid` used meanwhile.
fn measure(pid: u32, f: impl FnOnce() -> Result<u64>) -> Result<(u64, f64, f64)> {
    let c0 = cpu_of(pid)?;
    let t0 = Instant::now();
    let count = f()?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_of(pid)?.saturating_sub(c0).as_secs_f64();
    Ok((count, secs, cpu))
}

fn report(targets: &[Target], notes: &[String], args: &Args) -> Value {
    let rows: Vec<Value> = targets
        .iter()
        .map(|t| {
            let gb = t.bulk.0 as f64 / 1e9;
            json!({
                "target": t.name,
                "keepalive_rps": t.keepalive.rate(),
                "keepalive_cpu_us_per_req": t.keepalive.cpu_us(),
                "full_handshakes_per_s": t.full.rate(),
                "full_handshake_cpu_us": t.full.cpu_us(),
                "full_handshakes_per_core_s": t.full.per_core_s(),
                "resumed_handshakes_per_s": t.resumed.rate(),
                "resumed_handshake_cpu_us": t.resumed.cpu_us(),
                "bulk_gb_per_s": gb / t.bulk.1.max(1e-9),
                "bulk_cpu_s_per_gb": t.bulk.2 / gb.max(1e-12),
            })
        })
        .collect();
    json!({
        "targets": rows,
        "notes": notes,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "connections": args.connections,
        "handshake_threads": args.handshake_threads,
    })
}

fn markdown(r: &Value) -> String {
    let rows = r["targets"].as_array().cloned().unwrap_or_default();
    let hap = rows.iter().find(|t| t["target"] == "haproxy").cloned();
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let ratio = |v: &Value, k: &str| match &hap {
        Some(h) if f(h, k) > 0.0 => format!("{:.2}x", f(v, k) / f(h, k)),
        _ => "-".into(),
    };
    let mut s = String::from(
        "| target | keep-alive RPS | CPU µs/req | vs HAProxy | full mTLS handshakes/s | per core-s | vs HAProxy | resumed/s | resumed CPU µs | bulk CPU s/GB | vs HAProxy |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for t in &rows {
        s.push_str(&format!(
            "| {} | {:.0} | {:.1} | {} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.2} | {} |\n",
            t["target"].as_str().unwrap_or(""),
            f(t, "keepalive_rps"),
            f(t, "keepalive_cpu_us_per_req"),
            ratio(t, "keepalive_cpu_us_per_req"),
            f(t, "full_handshakes_per_s"),
            f(t, "full_handshakes_per_core_s"),
            ratio(t, "full_handshakes_per_core_s"),
            f(t, "resumed_handshakes_per_s"),
            f(t, "resumed_handshake_cpu_us"),
            f(t, "bulk_cpu_s_per_gb"),
            ratio(t, "bulk_cpu_s_per_gb"),
        ));
    }
    for n in r["notes"].as_array().into_iter().flatten() {
        s.push_str(&format!("\n{}\n", n.as_str().unwrap_or("")));
    }
    s.push_str(&format!(
        "\n{} s per measurement, {} rounds, {} keep-alive connections, {} handshake threads; one proxy thread each; TLS 1.3, AES-128-GCM, ECDSA P-256, client certificates required.\n",
        r["seconds"], r["rounds"], r["connections"], r["handshake_threads"]
    ));
    s
}
