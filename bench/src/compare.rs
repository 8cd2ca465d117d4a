//! `tailmesh-bench compare`: the same upstream and the same load in front of
//! each target, in one run: `direct` (no proxy), `nginx-origin` (nginx as the
//! origin, the yardstick for our upstream), `agent-uring` / `agent-epoll`
//! (plus `agent-uring-norec`, recording off, `agent-uring-policy`, a rate
//! limit that is never reached and a breaker on, `agent-uring-routes`, 20
//! routes and `p2c_ewma` over three endpoints, not in the default list,
//! and `agent-epoll-copy`, L4 splice off),
//! `haproxy` (http mode), `haproxy-tcp` (the same HAProxy's tcp-mode
//! frontend, HTTP carried as L4) and `nginx`. Every proxy gets one worker thread. Targets run
//! alternately over several rounds to cancel drift. Reported per target:
//! closed-loop RPS, proxy CPU time per request (user + sys from /proc),
//! latency quantiles closed-loop and open-loop at a fixed rate, ratios
//! against haproxy and nginx, and an L4 bulk-transfer row (CPU per GB).

pub(crate) mod procs;
mod reload;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::load;
use procs::{Proc, free_port, render, wait_listening, which};

const HAPROXY_CFG: &str = include_str!("../peers/haproxy.cfg");
const NGINX_CFG: &str = include_str!("../peers/nginx.conf");
const NGINX_ORIGIN_CFG: &str = include_str!("../peers/nginx-origin.conf");
const ALL_TARGETS: [&str; 13] = [
    "direct",
    "nginx-origin",
    "agent-uring",
    "agent-uring-norec",
    "agent-uring-policy",
    "agent-uring-routes",
    "agent-uring-reload",
    "agent-uring-scrape",
    "agent-epoll",
    "agent-epoll-copy",
    "haproxy",
    "haproxy-tcp",
    "nginx",
];

/// Command-line flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Length of each measurement, e.g. 5s (a bare number means seconds).
    #[arg(long, default_value = "5")]
    seconds: String,
    /// Rounds; targets alternate within each round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Load connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Targets, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,nginx-origin,agent-uring,agent-uring-norec,agent-epoll,agent-epoll-copy,haproxy,haproxy-tcp,nginx"
    )]
    targets: Vec<String>,
    /// Bytes per L4 bulk transfer, e.g. 256MiB (repeated for at least 1 s).
    #[arg(long, default_value = "256MiB")]
    bulk_bytes: String,
    /// Open-loop rate as a fraction of the slowest target's closed-loop max.
    #[arg(long, default_value_t = 0.5)]
    open_fraction: f64,
    /// node-agent binary (default: next to this binary).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Also write the markdown table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON instead of markdown.
    #[arg(long)]
    json: bool,
}

/// A target under test.
struct Target {
    name: String,
    url: String,
    /// The proxy process whose CPU is measured (None for direct).
    proxy: Option<u32>,
    /// The origin process serving the requests.
    origin: u32,
    /// Port for the L4 bulk row, if this target has one.
    l4_port: Option<u16>,
    closed: Acc,
    open: Acc,
    bulk: Option<(f64, f64)>,
}

#[derive(Default)]
struct Acc {
    requests: u64,
    seconds: f64,
    errors: u64,
    proxy_cpu: Duration,
    origin_cpu: Duration,
    hist: Option<Histogram<u64>>,
}

impl Acc {
    fn add(&mut self, o: &load::Outcome, proxy_cpu: Duration, origin_cpu: Duration) {
        self.requests += o.stats.all.len();
        self.seconds += o.elapsed_s;
        self.errors += o.stats.error_total();
        self.proxy_cpu += proxy_cpu;
        self.origin_cpu += origin_cpu;
        match &mut self.hist {
            Some(h) => {
                let _ = h.add(&o.stats.all);
            }
            None => self.hist = Some(o.stats.all.clone()),
        }
    }
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
    fn us_per_req(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / (self.requests.max(1) as f64)
    }
    fn q(&self, q: f64) -> u64 {
        self.hist.as_ref().map_or(0, |h| {
            if q >= 1.0 {
                h.max()
            } else {
                h.value_at_quantile(q)
            }
        })
    }
}

/// `tailmesh-bench compare`.
pub fn run(args: &Args) -> Result<()> {
    let secs = if args.seconds.chars().all(|c| c.is_ascii_digit() || c == '.') {
        format!("{}s", args.seconds)
    } else {
        args.seconds.clone()
    };
    ringlog::units::parse_duration_ns(&secs)?;
    for t in &args.targets {
        if !ALL_TARGETS.contains(&t.as_str()) {
            bail!(
                "--targets: unknown target {t:?} (known: {})",
                ALL_TARGETS.join(", ")
            );
        }
    }
    let bulk_bytes = ringlog::units::parse_size(&args.bulk_bytes)?;
    let dir = tempdir()?;
    let exe = std::env::current_exe()?;

    // The shared origin: our upstream, one worker.
    // Three ports: the second and third are agent-uring-routes' other
    // endpoints.
    let (mut upstream, up_all) = procs::start_upstream(&exe, 3, &["--name", "origin"])?;
    let up_addr = up_all[0].clone();
    let up_port: u16 = up_addr.rsplit(':').next().unwrap_or("0").parse()?;

    let mut procs: Vec<Proc> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut churns = Vec::new();
    let mut scrapers = Vec::new();
    let target =
        |name: &str, port: u16, proxy: Option<u32>, origin: u32, l4_port: Option<u16>| Target {
            name: name.to_string(),
            url: format!("http://127.0.0.1:{port}/"),
            proxy,
            origin,
            l4_port,
            closed: Acc::default(),
            open: Acc::default(),
            bulk: None,
        };
    for name in &args.targets {
        match name.as_str() {
            "direct" => targets.push(target(
                "direct",
                up_port,
                None,
                upstream.pid(),
                Some(up_port),
            )),
            // Started with (and measured on) the haproxy process.
            "haproxy-tcp" if args.targets.iter().any(|t| t == "haproxy") => {}
            "haproxy-tcp" => {
                skipped.push("haproxy-tcp: skipped: needs the haproxy target too".into())
            }
            "nginx-origin" | "nginx" | "haproxy" => {
                let bin = if name == "haproxy" {
                    "haproxy"
                } else {
                    "nginx"
                };
                let Some(path) = which(bin) else {
                    skipped.push(format!(
                        "{name}: skipped: {bin} is not installed (./test.sh installs it)"
                    ));
                    continue;
                };
                let (http_port, tcp_port) = (free_port()?, free_port()?);
                let vars = [
                    ("http_port", http_port.to_string()),
                    ("tcp_port", tcp_port.to_string()),
                    ("upstream", up_addr.clone()),
                    ("dir", dir.display().to_string()),
                ];
                let (cfg, file) = match name.as_str() {
                    "haproxy" => (HAPROXY_CFG, "haproxy.cfg"),
                    "nginx" => (NGINX_CFG, "nginx.conf"),
                    _ => (NGINX_ORIGIN_CFG, "nginx-origin.conf"),
                };
                let cfg_path = dir.join(file);
                std::fs::write(&cfg_path, render(cfg, &vars))?;
                let mut cmd = Command::new(path);
                if name == "haproxy" {
                    cmd.arg("-db").arg("-f").arg(&cfg_path);
                } else {
                    cmd.arg("-e")
                        .arg(dir.join(format!("{file}.stderr.log")))
                        .arg("-c")
                        .arg(&cfg_path);
                    // Validate first for a clear error, then run.
                    let check = Command::new(cmd.get_program())
                        .arg("-t")
                        .arg("-e")
                        .arg(dir.join("check.log"))
                        .arg("-c")
                        .arg(&cfg_path)
                        .output()?;
                    if !check.status.success() {
                        bail!(
                            "{name} config rejected: {}",
                            String::from_utf8_lossy(&check.stderr)
                        );
                    }
                }
                let log = dir.join(format!("{name}.log"));
                let p = Proc::spawn(
                    name,
                    cmd.stdout(Stdio::null())
                        .stderr(std::fs::File::create(&log)?),
                )?;
                if let Err(e) = wait_listening(http_port, Duration::from_secs(5)) {
                    let said = std::fs::read_to_string(&log).unwrap_or_default();
                    bail!("{name} did not start ({e}); it said: {}", said.trim());
                }
                let pid = p.pid();
                procs.push(p);
                match name.as_str() {
                    "nginx-origin" => targets.push(target(name, http_port, None, pid, None)),
                    "haproxy" => {
                        targets.push(target(
                            name,
                            http_port,
                            Some(pid),
                            upstream.pid(),
                            Some(tcp_port),
                        ));
                        if args.targets.iter().any(|t| t == "haproxy-tcp") {
                            targets.push(target(
                                "haproxy-tcp",
                                tcp_port,
                                Some(pid),
                                upstream.pid(),
                                None,
                            ));
                        }
                    }
                    _ => targets.push(target(name, http_port, Some(pid), upstream.pid(), None)),
                }
            }
            "agent-epoll" | "agent-epoll-copy" | "agent-uring" | "agent-uring-norec"
            | "agent-uring-policy" | "agent-uring-routes" | "agent-uring-reload"
            | "agent-uring-scrape" => {
                // agent-uring-norec: the same agent with recording off;
                // agent-uring-policy: a rate limit (never reached) on the
                // route and a breaker on the cluster; agent-uring-routes:
                // 20 routes (the last one matches) and p2c_ewma over three
                // endpoints;
                // agent-uring-reload: its config replaced every 100 ms;
                // agent-epoll-copy: epoll with L4 splice off (copy loop).
                let io = if name.contains("uring") {
                    "uring"
                } else {
                    "epoll"
                };
                let record = !name.ends_with("-norec");
                let path = args
                    .agent
                    .clone()
                    .unwrap_or_else(|| exe.with_file_name("node-agent"));
                if !path.exists() {
                    skipped.push(format!(
                        "{name}: skipped: {} not found (cargo build --release -p node-agent)",
                        path.display()
                    ));
                    continue;
                }
                let (http_port, tcp_port, admin_port) = (free_port()?, free_port()?, free_port()?);
                let cfg_path = dir.join(format!("{name}.yaml"));
                let ports = (http_port, tcp_port);
                let text = agent_config(ports, &up_all, &dir, name, record);
                std::fs::write(&cfg_path, &text)?;
                let log = dir.join(format!("{name}.log"));
                let p = Proc::spawn(
                    name,
                    Command::new(&path)
                        .arg("--config")
                        .arg(&cfg_path)
                        .args(["--workers", "1", "--io", io, "--admin"])
                        .env(
                            "TAILMESH_EPOLL_SPLICE",
                            if name.ends_with("-copy") { "0" } else { "1" },
                        )
                        .arg(format!("127.0.0.1:{admin_port}"))
                        .stdout(Stdio::null())
                        .stderr(std::fs::File::create(&log)?),
                )?;
                if let Err(e) = wait_listening(http_port, Duration::from_secs(5)) {
                    let said = std::fs::read_to_string(&log).unwrap_or_default();
                    bail!("{name} did not start ({e}); it said: {}", said.trim());
                }
                let pid = Some(p.pid());
                targets.push(target(name, http_port, pid, upstream.pid(), Some(tcp_port)));
                procs.push(p);
                if name.ends_with("-reload") {
                    churns.push((name, reload::Churn::start(cfg_path, text, admin_port)));
                } else if name.ends_with("-scrape") {
                    scrapers.push((name, reload::Scraper::start(admin_port)));
                }
            }
            // Names are checked against ALL_TARGETS above.
            other => skipped.push(format!("{other}: skipped: not a known target")),
        }
    }
    if targets.is_empty() {
        bail!("no target could be started: {}", skipped.join("; "));
    }

    // Closed loop, then open loop at a fraction of the slowest maximum.
    let base = load_args(args, &secs);
    let mut alive = || -> Result<()> {
        upstream.check_alive()?;
        procs.iter_mut().try_for_each(Proc::check_alive)
    };
    run_rounds(&mut targets, args.rounds, &base, None, &mut alive)?;
    let slowest = targets
        .iter()
        .map(|t| t.closed.rps())
        .fold(f64::MAX, f64::min);
    let rate = (slowest * args.open_fraction).max(1.0).round();
    run_rounds(&mut targets, args.rounds, &base, Some(rate), &mut alive)?;
    // L4 bulk transfer.
    for t in targets.iter_mut() {
        if let Some(port) = t.l4_port {
            t.bulk = Some(bulk(port, bulk_bytes, t.proxy.unwrap_or(t.origin))?);
        }
    }
    for (name, churn) in churns {
        let (writes, generation) = churn.finish();
        skipped.push(format!(
            "{name}: config replaced {writes} times during the run (every {:?}); the agent is at generation {generation}",
            reload::EVERY
        ));
    }
    for (name, scraper) in scrapers {
        skipped.push(format!("{name}: /metrics {}", scraper.finish()));
    }
    drop(procs);
    drop(upstream);
    let _ = std::fs::remove_dir_all(&dir);

    let machine = machine();
    let report = report_json(&targets, &skipped, &machine, args, rate, bulk_bytes);
    let md = markdown(&report, args);
    if let Some(out) = &args.out {
        std::fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
    }
    if args.json {
        println!("{report}");
    } else {
        print!("{md}");
    }
    Ok(())
}

/// Measures every target `rounds` times, rotating the order each round to
/// cancel drift; open loop at `rate` if given, else closed loop.
fn run_rounds(
    targets: &mut [Target],
    rounds: usize,
    base: &load::Args,
    rate: Option<f64>,
    alive: &mut impl FnMut() -> Result<()>,
) -> Result<()> {
    let n = targets.len();
    for round in 0..rounds {
        for i in 0..n {
            let t = &mut targets[(i + round) % n];
            let (o, pc, oc) = measure(
                t,
                &load::Args {
                    url: t.url.clone(),
                    rate,
                    ..base.clone()
                },
            )?;
            let acc = if rate.is_some() {
                &mut t.open
            } else {
                &mut t.closed
            };
            acc.add(&o, pc, oc);
        }
        alive()?;
    }
    Ok(())
}

fn load_args(args: &Args, secs: &str) -> load::Args {
    load::Args {
        url: String::new(),
        connections: args.connections,
        threads: 1,
        duration: secs.to_string(),
        rate: None,
        headers: Vec::new(),
        types: Vec::new(),
        max_requests: None,
        timeout: "5s".into(),
        timeline: None,
        timeline_step: "1s".into(),
        alternate: None,
        alternate_skip: "0s".into(),
        json: false,
    }
}

fn measure(t: &Target, args: &load::Args) -> Result<(load::Outcome, Duration, Duration)> {
    let p0 = t.proxy.map(procs::cpu_of).transpose()?.unwrap_or_default();
    let o0 = procs::cpu_of(t.origin)?;
    let out = load::execute(args)?;
    let p1 = t.proxy.map(procs::cpu_of).transpose()?.unwrap_or_default();
    let o1 = procs::cpu_of(t.origin)?;
    Ok((out, p1.saturating_sub(p0), o1.saturating_sub(o0)))
}

/// Fetches `bytes` through `port`, repeated until at least a second of
/// transfer (at most 64 times) so /proc's 10 ms CPU ticks resolve it; returns
/// (GB/s, CPU seconds per GB of `pid`).
fn bulk(port: u16, bytes: u64, pid: u32) -> Result<(f64, f64)> {
    let c0 = procs::cpu_of(pid)?;
    let t0 = Instant::now();
    let mut moved = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    for _ in 0..64 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "GET /_bench/bulk?bytes={bytes} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
        )?;
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        if total < bytes {
            bail!("bulk transfer through port {port} ended after {total} of {bytes} bytes");
        }
        moved += bytes;
        if t0.elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = procs::cpu_of(pid)?.saturating_sub(c0).as_secs_f64();
    let gb = moved as f64 / 1e9;
    Ok((gb / secs, cpu / gb))
}

/// The agent's config for a comparison: an HTTP listener and a TCP
/// listener (L4 bulk) to one endpoint; full recording (every request kept,
/// no budget), or none at all (`record` false: sample 0, errors not kept).
fn agent_config(
    (http, tcp): (u16, u16),
    upstreams: &[String],
    dir: &std::path::Path,
    name: &str,
    record: bool,
) -> String {
    let upstream = upstreams.first().map_or("127.0.0.1:1", String::as_str);
    let sampling = if record {
        "{ default: 1.0, max_records_per_sec: 0 }"
    } else {
        "{ default: 0.0, keep_errors: false, max_records_per_sec: 0 }"
    };
    let (limit, breaker) = if name.ends_with("-policy") {
        (
            ", rate_limit: { rps: 100000000, burst: 1000000 }",
            ", breaker: { max_concurrent: 100000, max_pending: 100000 }",
        )
    } else {
        ("", "")
    };
    if name.ends_with("-scrape") {
        return scrape_config((http, tcp), upstream, dir, name, sampling);
    }
    let (endpoints, lb, table) = if name.ends_with("-routes") {
        let eps: Vec<String> = upstreams
            .iter()
            .map(|u| format!("{{ addr: \"{u}\" }}"))
            .collect();
        // 19 routes on path prefixes the load never uses (prefix routes
        // have no host, so each is tried in turn), then the one it hits.
        let table: String = (0..19)
            .map(|i| {
                format!(
                    "  - {{ name: r{i}, match: {{ path_prefix: /svc{i}/ }}, to: [ {{ cluster: origin }} ] }}\n"
                )
            })
            .collect();
        (eps.join(", "), ", lb: p2c_ewma", table)
    } else {
        (format!("{{ addr: \"{upstream}\" }}"), "", String::new())
    };
    format!(
        "version: 1\n\
         listeners:\n  - {{ name: bench, bind: \"127.0.0.1:{http}\", protocol: http, default_route: r }}\n  \
         - {{ name: bench-tcp, bind: \"127.0.0.1:{tcp}\", protocol: tcp, default_route: r }}\n\
         clusters:\n  - {{ name: origin, endpoints: [ {endpoints} ]{breaker}{lb} }}\n\
         routes:\n{table}  - {{ name: r, match: {{ path_prefix: / }}, to: [ {{ cluster: origin }} ]{limit} }}\n\
         sampling: {sampling}\n\
         ring: {{ path: \"{}\", size: 64MiB }}\n",
        dir.join(format!("{name}.ring")).display()
    )
}

/// `agent-uring-scrape`'s config: the bench route plus 2,000 host routes
/// with rate limits (never hit) over 400 clusters with breakers, outlier
/// detection and retries: about 10k series on `/metrics`.
fn scrape_config(
    (http, tcp): (u16, u16),
    upstream: &str,
    dir: &std::path::Path,
    name: &str,
    sampling: &str,
) -> String {
    let clusters: String = (0..400)
        .map(|c| {
            format!(
                "  - {{ name: c{c}, endpoints: [ {{ addr: \"{upstream}\" }} ], breaker: {{}}, outlier: {{}}, retry: {{ attempts: 1, on: [connect_failure] }} }}\n"
            )
        })
        .collect();
    let routes: String = (0..2000)
        .map(|r| {
            format!(
                "  - {{ name: r{r}, match: {{ host: svc{r}.local }}, to: [ {{ cluster: c{} }} ], rate_limit: {{ rps: 1000, burst: 100 }} }}\n",
                r % 400
            )
        })
        .collect();
    format!(
        "version: 1\n\
         listeners:\n  - {{ name: bench, bind: \"127.0.0.1:{http}\", protocol: http, default_route: r }}\n  \
         - {{ name: bench-tcp, bind: \"127.0.0.1:{tcp}\", protocol: tcp, default_route: r }}\n\
         clusters:\n  - {{ name: origin, endpoints: [ {{ addr: \"{upstream}\" }} ] }}\n{clusters}\
         routes:\n{routes}  - {{ name: r, match: {{ path_prefix: / }}, to: [ {{ cluster: origin }} ] }}\n\
         sampling: {sampling}\n\
         ring: {{ path: \"{}\", size: 64MiB }}\n",
        dir.join(format!("{name}.ring")).display()
    )
}

fn tempdir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("tailmesh-compare-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu": cpu,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "date": ringlog::clock::rfc3339(ringlog::clock::realtime_ns()),
    })
}

fn ratio(a: f64, b: Option<f64>) -> Option<f64> {
    b.filter(|b| *b > 0.0 && a > 0.0).map(|b| a / b)
}

fn find<'a>(targets: &'a [Target], name: &str) -> Option<&'a Target> {
    targets.iter().find(|t| t.name == name)
}

/// CPU per request of the process that does the work for this row: the
/// proxy, or for direct rows the origin itself.
fn cpu_us(t: &Target) -> f64 {
    t.closed.us_per_req(if t.proxy.is_some() {
        t.closed.proxy_cpu
    } else {
        t.closed.origin_cpu
    })
}

fn report_json(
    targets: &[Target],
    skipped: &[String],
    machine: &Value,
    args: &Args,
    rate: f64,
    bulk_bytes: u64,
) -> Value {
    let hap = find(targets, "haproxy").map(cpu_us);
    let ngx = find(targets, "nginx").map(cpu_us);
    let hap_rps = find(targets, "haproxy").map(|t| t.closed.rps());
    let ngx_rps = find(targets, "nginx").map(|t| t.closed.rps());
    let rows: Vec<Value> = targets
        .iter()
        .map(|t| {
            json!({
                "target": t.name,
                "rps": t.closed.rps(),
                "requests": t.closed.requests,
                "errors": t.closed.errors + t.open.errors,
                "cpu_us_per_req": cpu_us(t),
                "proxy_cpu_us_per_req": t.proxy.map(|_| t.closed.us_per_req(t.closed.proxy_cpu)),
                "origin_cpu_us_per_req": t.closed.us_per_req(t.closed.origin_cpu),
                "closed_latency_ns": { "p50": t.closed.q(0.5), "p99": t.closed.q(0.99), "p99.9": t.closed.q(0.999), "max": t.closed.q(1.0) },
                "open_latency_ns": { "p50": t.open.q(0.5), "p99": t.open.q(0.99), "p99.9": t.open.q(0.999), "max": t.open.q(1.0) },
                "open_proxy_cpu_us_per_req": t.proxy.map(|_| t.open.us_per_req(t.open.proxy_cpu)),
                "cpu_vs_haproxy": ratio(cpu_us(t), hap),
                "cpu_vs_nginx": ratio(cpu_us(t), ngx),
                "rps_vs_haproxy": ratio(t.closed.rps(), hap_rps),
                "rps_vs_nginx": ratio(t.closed.rps(), ngx_rps),
                "bulk": t.bulk.map(|(gbps, cpu)| json!({ "gb_per_s": gbps, "cpu_s_per_gb": cpu })),
            })
        })
        .collect();
    json!({
        "machine": machine,
        "rounds": args.rounds,
        "seconds_per_run": args.seconds,
        "connections": args.connections,
        "open_rate": rate,
        "bulk_bytes": bulk_bytes,
        "targets": rows,
        "skipped": skipped,
    })
}

/// Renders the JSON report as markdown (one source for every figure).
fn markdown(report: &Value, args: &Args) -> String {
    use ringlog::units::format_ns;
    let m = &report["machine"];
    let r = |v: &Value| v.as_f64().map_or("-".to_string(), |v| format!("{v:.2}x"));
    let ns = |v: &Value| format_ns(v.as_u64().unwrap_or(0));
    let mut s = format!(
        "tailmesh-bench compare, {}: {} cores ({}), kernel {}; {} round(s) x {} s per target; {} connections; one worker per proxy\n\n",
        m["date"].as_str().unwrap_or(""),
        m["cores"],
        m["cpu"].as_str().unwrap_or(""),
        m["kernel"].as_str().unwrap_or(""),
        args.rounds,
        args.seconds,
        args.connections
    );
    s.push_str("| target | req/s | CPU µs/req | closed p50 | closed p99 | open p50 | open p99 | open p99.9 | errors | CPU vs haproxy | CPU vs nginx | req/s vs haproxy | req/s vs nginx |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let rows = report["targets"].as_array().map_or(&[][..], Vec::as_slice);
    for t in rows {
        let (c, o) = (&t["closed_latency_ns"], &t["open_latency_ns"]);
        s.push_str(&format!(
            "| {} | {:.0} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            t["target"].as_str().unwrap_or(""),
            t["rps"].as_f64().unwrap_or(0.0),
            t["cpu_us_per_req"].as_f64().unwrap_or(0.0),
            ns(&c["p50"]),
            ns(&c["p99"]),
            ns(&o["p50"]),
            ns(&o["p99"]),
            ns(&o["p99.9"]),
            t["errors"],
            r(&t["cpu_vs_haproxy"]),
            r(&t["cpu_vs_nginx"]),
            r(&t["rps_vs_haproxy"]),
            r(&t["rps_vs_nginx"]),
        ));
    }
    s.push_str(&format!(
        "\nCPU µs/req: the proxy's user+sys CPU per request; for direct rows, the origin's. Open loop at {:.0} req/s ({:.0}% of the slowest closed-loop max), latency from intended send time.\n",
        report["open_rate"].as_f64().unwrap_or(0.0),
        args.open_fraction * 100.0
    ));
    let bulk: Vec<&Value> = rows.iter().filter(|t| !t["bulk"].is_null()).collect();
    if !bulk.is_empty() {
        let hap = bulk
            .iter()
            .find(|t| t["target"] == "haproxy")
            .and_then(|t| t["bulk"]["cpu_s_per_gb"].as_f64());
        s.push_str(&format!(
            "\nL4 bulk transfer, {} per fetch, repeated for at least 1 s:\n\n| target | GB/s | CPU s per GB | vs haproxy tcp |\n|---|---|---|---|\n",
            ringlog::units::format_size(report["bulk_bytes"].as_u64().unwrap_or(0))
        ));
        for t in bulk {
            let name = t["target"].as_str().unwrap_or("");
            let label = if name == "haproxy" {
                "haproxy (tcp mode)"
            } else {
                name
            };
            let cpu = t["bulk"]["cpu_s_per_gb"].as_f64().unwrap_or(0.0);
            s.push_str(&format!(
                "| {label} | {:.2} | {cpu:.3} | {} |\n",
                t["bulk"]["gb_per_s"].as_f64().unwrap_or(0.0),
                r(&json!(ratio(cpu, hap)))
            ));
        }
        s.push_str("\nCPU s per GB: the proxy's CPU (for direct, the origin's) per GB moved.\n");
    }
    let skipped = report["skipped"].as_array().map_or(&[][..], Vec::as_slice);
    for line in skipped {
        s.push_str(&format!("\n{}", line.as_str().unwrap_or("")));
    }
    if !skipped.is_empty() {
        s.push('\n');
    }
    s
}
