//! `tailmesh-bench load`: an HTTP/1.1 load generator.
//!
//! Closed loop (default): every connection sends its next request when the
//! previous response ends; the figure is maximum throughput. Open loop
//! (`--rate`): requests are scheduled at a constant total rate and latency
//! is measured from each request's intended send time, so queueing caused
//! by a slow server is counted (coordinated-omission correction). Always
//! bounded by `--duration` and, optionally, `--max-requests`.

pub mod canary;
pub mod client;
pub mod report;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use client::Plan;
use report::Stats;

/// Command-line flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Target, `http://HOST:PORT/PATH`.
    #[arg(long)]
    pub url: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Threads (each drives connections / threads).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// How long to send, e.g. 10s, 500ms, 1m.
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Open loop at this many requests per second in total.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Extra header on every request, `'name: value'` (repeatable).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// A request type in the mix, `NAME:WEIGHT[:name=value[,name=value]]`,
    /// e.g. `market:60:x-order-type=market` (repeatable).
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Stop after this many requests in total.
    #[arg(long)]
    pub max_requests: Option<u64>,
    /// Per-request timeout.
    #[arg(long, default_value = "5s")]
    pub timeout: String,
    /// Write a latency time series (JSON lines) here, one line per
    /// `--timeline-step` of intended send times.
    #[arg(long)]
    pub timeline: Option<std::path::PathBuf>,
    /// Width of a timeline bucket, e.g. 1s, 20ms (at least 1ms).
    #[arg(long, default_value = "1s")]
    pub timeline_step: String,
    /// An A/B split in one run: after `--alternate-skip`, periods of this
    /// length alternate A, B, A, B... by intended send time, and the
    /// report gives each half's latency and errors. Interleaved halves
    /// share the host's slow drift (its other tenants, steal time), which
    /// a run of A and then a run of B do not. A whole number of
    /// `--timeline-step`s.
    #[arg(long)]
    pub alternate: Option<String>,
    /// Time before the first A period of `--alternate`, left out of both
    /// halves (a warm-up). A whole number of `--timeline-step`s.
    #[arg(long, default_value = "0s")]
    pub alternate_skip: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A parsed request type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReqType {
    /// Name.
    pub name: String,
    /// Relative weight.
    pub weight: u64,
    /// Headers it adds.
    pub headers: Vec<(String, String)>,
}

/// Parses `NAME:WEIGHT[:name=value[,name=value]]`.
pub fn parse_type(s: &str) -> Result<ReqType> {
    let mut parts = s.splitn(3, ':');
    let name = parts
        .next()
        .filter(|n| !n.is_empty())
        .context("--type needs a name")?;
    let weight: u64 = parts
        .next()
        .context("--type needs NAME:WEIGHT")?
        .parse()
        .with_context(|| format!("--type {s:?}: weight is not a whole number"))?;
    let headers = match parts.next() {
        None | Some("") => Vec::new(),
        Some(h) => h
            .split(',')
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .with_context(|| format!("--type {s:?}: header {kv:?} is not name=value"))
            })
            .collect::<Result<_>>()?,
    };
    Ok(ReqType {
        name: name.to_string(),
        weight,
        headers,
    })
}

/// Splits `http://host:port/path` into (host header, address, path).
pub fn parse_url(url: &str) -> Result<(String, SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--url {url:?}: only http:// is supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("--url {url:?}: cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("--url {url:?}: {authority} has no address"))?;
    Ok((authority.to_string(), addr, path.to_string()))
}

fn build_request(host: &str, path: &str, extra: &[String], ty: &ReqType) -> Result<Vec<u8>> {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for h in extra {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?} is not 'name: value'"))?;
        r.push_str(&format!("{}: {}\r\n", k.trim(), v.trim()));
    }
    for (k, v) in &ty.headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    Ok(r.into_bytes())
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Merged statistics.
    pub stats: Stats,
    /// Type names, in stats order.
    pub names: Vec<String>,
    /// Seconds from first send to last response.
    pub elapsed_s: f64,
    /// Wall clock at the start (ns since the epoch).
    pub start_wall_ns: u64,
    /// The host's own stalls during the run ([`canary`]).
    pub stalls: canary::Stalls,
    /// `--alternate`, in timeline steps: (skip, period).
    pub alternate: Option<(usize, usize)>,
}

/// `--alternate` and `--alternate-skip` as (skip, period) in timeline
/// steps of `step_ns`; each must be a whole number of steps.
fn alternate_steps(args: &Args, step_ns: u64) -> Result<Option<(usize, usize)>> {
    let Some(period) = &args.alternate else {
        return Ok(None);
    };
    let steps = |flag: &str, text: &str| -> Result<usize> {
        let ns = ringlog::units::parse_duration_ns(text)?;
        if ns % step_ns != 0 {
            bail!("{flag} {text:?} is not a whole number of --timeline-step");
        }
        Ok(usize::try_from(ns / step_ns)?)
    };
    let period = steps("--alternate", period)?;
    if period == 0 {
        bail!("--alternate must be at least one --timeline-step");
    }
    Ok(Some((
        steps("--alternate-skip", &args.alternate_skip)?,
        period,
    )))
}

/// Runs a load as described by `args` and returns the merged outcome.
pub fn execute(args: &Args) -> Result<Outcome> {
    if args.connections == 0 || args.threads == 0 {
        bail!("--connections and --threads must be at least 1");
    }
    if let Some(r) = args.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        bail!("--rate {r} must be a positive number");
    }
    let (host, addr, path) = parse_url(&args.url)?;
    let duration = Duration::from_nanos(ringlog::units::parse_duration_ns(&args.duration)?);
    let timeout = Duration::from_nanos(ringlog::units::parse_duration_ns(&args.timeout)?);
    let step_ns = ringlog::units::parse_duration_ns(&args.timeline_step)?;
    if step_ns < 1_000_000 {
        bail!(
            "--timeline-step {:?} is shorter than 1ms",
            args.timeline_step
        );
    }
    let step = Duration::from_nanos(step_ns);
    let alternate = alternate_steps(args, step_ns)?;
    let mut types: Vec<ReqType> = args
        .types
        .iter()
        .map(|t| parse_type(t))
        .collect::<Result<_>>()?;
    if types.is_empty() {
        types.push(ReqType {
            name: "default".into(),
            weight: 1,
            headers: Vec::new(),
        });
    }
    if types.iter().all(|t| t.weight == 0) {
        bail!("--type weights are all zero");
    }
    let requests = types
        .iter()
        .map(|t| build_request(&host, &path, &args.headers, t))
        .collect::<Result<Vec<_>>>()?;
    let cumulative: Vec<u64> = types
        .iter()
        .scan(0u64, |acc, t| {
            *acc += t.weight;
            Some(*acc)
        })
        .collect();
    let threads = args.threads.min(args.connections);
    let start = Instant::now() + Duration::from_millis(20);
    let start_wall_ns = ringlog::clock::realtime_ns() + 20_000_000;
    let end = start + duration;
    let max_total = args.max_requests.unwrap_or(u64::MAX);
    let canary = canary::spawn(start, end, step);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let first = args.connections * t / threads;
            let next = args.connections * (t + 1) / threads;
            let plan = Plan {
                addr,
                requests: requests.clone(),
                cumulative: cumulative.clone(),
                first_conn: first,
                conns: next - first,
                total_conns: args.connections,
                rate: args.rate,
                start,
                end,
                max_requests: if max_total == u64::MAX {
                    u64::MAX
                } else {
                    max_total * (next - first) as u64 / args.connections as u64
                },
                timeout,
                step,
                head: false,
                seed: 0x10ad + t as u64,
            };
            std::thread::spawn(move || client::run(&plan))
        })
        .collect();
    let mut stats = Stats::new(types.len(), step);
    for h in handles {
        let s = h
            .join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
        stats.merge(&s);
    }
    let stalls = canary
        .join()
        .map_err(|_| anyhow::anyhow!("canary thread panicked"))?;
    let elapsed_s = start
        .elapsed()
        .as_secs_f64()
        .min(duration.as_secs_f64())
        .max(1e-9);
    Ok(Outcome {
        stats,
        names: types.into_iter().map(|t| t.name).collect(),
        elapsed_s,
        start_wall_ns,
        stalls,
        alternate,
    })
}

/// `tailmesh-bench load`.
pub fn run(args: &Args) -> Result<()> {
    let out = execute(args)?;
    let mode = match args.rate {
        Some(r) => format!("open loop at {r} req/s (latency from intended send time)"),
        None => "closed loop".to_string(),
    };
    if let Some(path) = &args.timeline {
        std::fs::write(
            path,
            report::timeline_lines(&out.stats, out.start_wall_ns, &out.stalls),
        )
        .with_context(|| format!("writing timeline {}", path.display()))?;
    }
    if args.json {
        let mode = if args.rate.is_some() {
            "open"
        } else {
            "closed"
        };
        let mut v = report::to_json(&out.stats, &out.names, out.elapsed_s, mode, args.rate);
        v["host_stalls"] = serde_json::json!({
            "late_ns": canary::LATE_NS,
            "count": out.stalls.count,
            "max_ns": out.stalls.max_ns,
        });
        if let Some((skip, period)) = out.alternate {
            v["alternating"] = report::alternating_json(&out.stats, skip, period);
        }
        println!("{v}");
    } else {
        print!(
            "{}",
            report::to_table(&out.stats, &out.names, out.elapsed_s, &mode)
        );
        if let Some((skip, period)) = out.alternate {
            print!("{}", report::alternating_table(&out.stats, skip, period));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_urls_parse() {
        let t = parse_type("market:60:x-order-type=market,x-a=b").unwrap();
        assert_eq!(t.weight, 60);
        assert_eq!(
            t.headers,
            vec![
                ("x-order-type".into(), "market".into()),
                ("x-a".into(), "b".into())
            ]
        );
        assert!(parse_type("market").is_err());
        assert!(parse_type("m:x").is_err());
        assert!(parse_type("m:1:novalue").is_err());
        let (host, addr, path) = parse_url("http://127.0.0.1:8080/api/x").unwrap();
        assert_eq!(
            (host.as_str(), addr.port(), path.as_str()),
            ("127.0.0.1:8080", 8080, "/api/x")
        );
        assert!(parse_url("https://x").is_err());
    }
}
