//! `tailmesh-bench upstream`: a fast HTTP/1.1 server with injectable faults.
//!
//! Thread per core (`--workers`), each with its own SO_REUSEPORT listeners
//! and event loop. Every response carries `x-upstream: NAME`. Faults come
//! from flags at start and from `PUT /_bench/faults` at run time (same JSON,
//! see [`faults::Faults`]). Control endpoints:
//! - `GET|PUT|DELETE /_bench/faults`: read, replace, clear the faults;
//! - `GET /_bench/stats`: responses served and connections accepted;
//! - `GET /_bench/bulk?bytes=N`: an N-byte body (L4 bulk transfer);
//! - `GET /healthz`: 200, never faulted.

pub mod conn;
pub mod faults;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;
use socket2::{Domain, Socket, Type};

use faults::{Dur, Faults};

/// Command-line flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (repeatable); port 0 picks a free port.
    #[arg(long = "listen", required = true)]
    listen: Vec<SocketAddr>,
    /// Name sent in `x-upstream`.
    #[arg(long, default_value = "upstream")]
    name: String,
    /// Worker threads (default: CPU count).
    #[arg(long)]
    workers: Option<usize>,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 13)]
    body_bytes: usize,
    /// Send every normal response chunked (per request: `x-bench-response: chunked`).
    #[arg(long)]
    chunked: bool,
    /// Listen backlog.
    #[arg(long, default_value_t = 1024)]
    backlog: i32,
    /// Initial faults as JSON (the `PUT /_bench/faults` schema).
    #[arg(long)]
    faults: Option<String>,
    /// Shorthand: fixed latency for every (selected) request, e.g. 20ms.
    #[arg(long)]
    latency: Option<String>,
    /// Shorthand: fraction of requests that get the latency.
    #[arg(long)]
    latency_fraction: Option<f64>,
    /// Shorthand: fraction of requests answered 503.
    #[arg(long)]
    error_fraction: Option<f64>,
    /// Exit after this long (default: run until killed).
    #[arg(long)]
    exit_after: Option<String>,
    /// SO_SNDBUF of accepted connections, e.g. 64KiB (default: the
    /// kernel's autotuning). Hostile-client tests keep stalled bulk bodies
    /// here instead of in the host's TCP memory.
    #[arg(long)]
    sndbuf: Option<String>,
}

/// Faults in force and when they were applied.
#[derive(Debug)]
pub struct Applied {
    /// The faults.
    pub faults: Faults,
    /// When they were applied (windows are relative to this).
    pub at: Instant,
    /// Lower-cased header name and value of `latency_match`.
    pub matcher: Option<(String, String)>,
}

impl Applied {
    fn new(faults: Faults) -> Applied {
        let matcher = faults.match_header();
        Applied {
            faults,
            at: Instant::now(),
            matcher,
        }
    }
}

/// State shared by the workers.
#[derive(Debug)]
pub struct Shared {
    /// Faults in force.
    pub faults: ArcSwap<Applied>,
    /// Responses completed.
    pub served: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// `x-upstream` value.
    pub name: String,
    /// Response body.
    pub body: Vec<u8>,
    /// Prebuilt `200 OK` response (head + body) for the common case.
    pub ok_response: Vec<u8>,
    /// SO_SNDBUF for accepted connections (None: autotuned).
    pub sndbuf: Option<usize>,
    /// Every normal response is chunked.
    pub chunked: bool,
}

/// Handles a control request; returns (status, body).
pub fn control(shared: &Shared, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::sync::atomic::Ordering::Relaxed;
    match (method, path) {
        ("GET", "/_bench/faults") => (200, faults_json(&shared.faults.load().faults)),
        ("PUT", "/_bench/faults") => match std::str::from_utf8(body)
            .map_err(|e| e.to_string())
            .and_then(Faults::from_json)
        {
            Ok(f) => {
                let text = faults_json(&f);
                shared.faults.store(Arc::new(Applied::new(f)));
                (200, text)
            }
            Err(e) => (
                400,
                format!("{{\"error\":{}}}\n", serde_json::Value::String(e)),
            ),
        },
        ("DELETE", "/_bench/faults") => {
            shared
                .faults
                .store(Arc::new(Applied::new(Faults::default())));
            (200, "{}\n".into())
        }
        ("GET", "/_bench/stats") => (
            200,
            format!(
                "{{\"name\":{},\"served\":{},\"accepted\":{}}}\n",
                serde_json::Value::String(shared.name.clone()),
                shared.served.load(Relaxed),
                shared.accepted.load(Relaxed)
            ),
        ),
        _ => (404, "{\"error\":\"unknown control endpoint\"}\n".into()),
    }
}

fn faults_json(f: &Faults) -> String {
    serde_json::to_string(f).map_or_else(|e| format!("{{\"error\":\"{e}\"}}"), |s| s + "\n")
}

fn initial_faults(args: &Args) -> Result<Faults> {
    let mut f = match &args.faults {
        Some(j) => Faults::from_json(j).map_err(anyhow::Error::msg)?,
        None => Faults::default(),
    };
    if let Some(l) = &args.latency {
        f.latency = Some(Dur(Duration::from_nanos(
            ringlog::units::parse_duration_ns(l)?,
        )));
    }
    if let Some(x) = args.latency_fraction {
        f.latency_fraction = Some(x);
    }
    if let Some(x) = args.error_fraction {
        f.error_fraction = x;
    }
    f.validate().map_err(anyhow::Error::msg)?;
    Ok(f)
}

fn listener(addr: SocketAddr, backlog: i32) -> Result<mio::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .with_context(|| format!("bind {addr}"))?;
    s.listen(backlog)?;
    Ok(mio::net::TcpListener::from_std(s.into()))
}

/// Runs the server (blocks until `--exit-after`, or forever).
pub fn run(args: &Args) -> Result<()> {
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if workers == 0 {
        bail!("--workers must be at least 1");
    }
    let until = args
        .exit_after
        .as_deref()
        .map(ringlog::units::parse_duration_ns)
        .transpose()?
        .map(|ns| Instant::now() + Duration::from_nanos(ns));
    let body = vec![b'x'; args.body_bytes];
    let mut ok_response = format!(
        "HTTP/1.1 200 OK\r\nx-upstream: {}\r\ncontent-length: {}\r\n\r\n",
        args.name,
        body.len()
    )
    .into_bytes();
    ok_response.extend_from_slice(&body);
    let shared = Arc::new(Shared {
        faults: ArcSwap::from_pointee(Applied::new(initial_faults(args)?)),
        served: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        name: args.name.clone(),
        body,
        ok_response,
        chunked: args.chunked,
        sndbuf: args
            .sndbuf
            .as_deref()
            .map(ringlog::units::parse_size)
            .transpose()?
            .map(|n| n as usize),
    });
    // Bind worker 0 first so port 0 resolves once; the others join that port.
    let mut per_worker: Vec<Vec<mio::net::TcpListener>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for &addr in &args.listen {
        let first = listener(addr, args.backlog)?;
        let actual = first.local_addr()?;
        per_worker[0].push(first);
        for w in per_worker.iter_mut().skip(1) {
            w.push(listener(actual, args.backlog)?);
        }
        bound.push(actual.to_string());
    }
    println!(
        "{}",
        serde_json::json!({ "listening": bound, "workers": workers, "name": args.name })
    );
    let handles: Vec<_> = per_worker
        .into_iter()
        .enumerate()
        .map(|(i, ls)| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("upstream-{i}"))
                .spawn(move || worker::run(ls, shared, i as u64 + 1, until))
        })
        .collect::<std::io::Result<_>>()?;
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("upstream worker panicked"))??;
    }
    Ok(())
}
