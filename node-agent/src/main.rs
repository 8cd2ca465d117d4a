//! `node-agent`: the per-node mesh agent (flags as in DESIGN.md).
//!
//! `node-agent --config FILE` serves: it validates the config, creates the
//! ring file, starts one worker thread per core (each with its own
//! SO_REUSEPORT listeners and ring shard) and the admin server, and on
//! SIGTERM / SIGINT drains and exits 0. `node-agent check-config FILE`
//! validates a config offline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use node_agent::driver::{self, epoll, uring};
use node_agent::metrics::WorkerStats;
use node_agent::snapshot::Snapshot;
use node_agent::worker::{self, Recorder, Shared, WorkerInit};
use ringlog::record::{Event, EventKind};
use ringlog::writer::{CreateOptions, RingWriter};

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "node-agent",
    version,
    about = "tailmesh per-node service-mesh agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (YAML, or JSON if it ends in .json). Without it (and
    /// without --etcd) the agent serves its embedded default, the loopback
    /// example deploy/examples/local.yaml (what ./demo.sh runs).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Worker threads (default: CPU count).
    #[arg(long)]
    workers: Option<usize>,
    /// I/O driver; auto probes io_uring and falls back to epoll.
    #[arg(long, value_enum, default_value_t = Io::Auto)]
    io: Io,
    /// Admin listener (/metrics, /ready, /healthz, /config, /clusters).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: String,
    /// How long SIGTERM waits for in-flight requests.
    #[arg(long, default_value = "5s")]
    drain_timeout: String,
    /// Most open client connections on the whole agent; excess ones are
    /// accepted and closed at once (tailmesh_driver_events_total
    /// {event="conn_limit"}). Default: seven eighths of the open-file
    /// limit (the rest stays for upstream connections).
    #[arg(long)]
    max_connections: Option<u64>,
    /// This node's zone, for clusters with a `locality` preference (else
    /// NODE_ZONE, else the config's `node.zone`).
    #[arg(long)]
    zone: Option<String>,
    /// This node's region (else NODE_REGION, else the config's
    /// `node.region`).
    #[arg(long)]
    region: Option<String>,
    /// etcd endpoints, comma separated (config from etcd, watched).
    #[arg(long)]
    etcd: Option<String>,
    /// etcd key prefix.
    #[arg(long, default_value = "/tailmesh/v1/")]
    etcd_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Io {
    Auto,
    Uring,
    Epoll,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a config file offline; exit 0 if valid, 1 with every problem if not.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
}

/// SO_MARK on upstream sockets when a transparent listener exists, so the
/// redirect rules can exclude the agent's own traffic
/// (`-m mark ! --mark 0x539`, see docs/AGENT.md, "Transparent capture").
const UPSTREAM_MARK: u32 = 0x539;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::CheckConfig { file }) => check_config(file),
        None => match serve(&cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("node-agent: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The node's zone and region: each from its flag, else its environment
/// variable, else the config.
fn node_locality(
    zone: Option<String>,
    region: Option<String>,
    from_config: Option<node_agent::config::schema::NodeLocality>,
) -> Option<node_agent::config::schema::NodeLocality> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let cfg = from_config.unwrap_or_default();
    let zone = zone.or_else(|| env("NODE_ZONE")).or(cfg.zone);
    let region = region.or_else(|| env("NODE_REGION")).or(cfg.region);
    (zone.is_some() || region.is_some())
        .then_some(node_agent::config::schema::NodeLocality { zone, region })
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match node_agent::config::load(file) {
        Ok(cfg) => {
            println!(
                "{}: valid: {} listener(s), {} cluster(s), {} route(s), {} request type(s)",
                file.display(),
                cfg.listeners.len(),
                cfg.clusters.len(),
                cfg.routes.len(),
                cfg.request_types.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// Picks the driver: `auto` probes io_uring and falls back to epoll.
/// Returns (backend, fell back, errno of the failed probe).
fn choose_io(io: Io) -> anyhow::Result<(u32, bool, i32)> {
    match (io, driver::probe_uring()) {
        (Io::Epoll, _) => Ok((worker::BACKEND_EPOLL, false, 0)),
        (Io::Uring, Err(errno)) => bail!(
            "--io uring: io_uring is not available here ({}); use --io auto or --io epoll",
            std::io::Error::from_raw_os_error(errno)
        ),
        (Io::Uring | Io::Auto, Ok(())) => Ok((worker::BACKEND_URING, false, 0)),
        (Io::Auto, Err(errno)) => {
            eprintln!(
                "node-agent: io_uring unavailable ({}); falling back to epoll",
                std::io::Error::from_raw_os_error(errno)
            );
            Ok((worker::BACKEND_EPOLL, true, errno))
        }
    }
}

/// The config served when neither --config nor --etcd is given.
const EMBEDDED_DEFAULT: &str = include_str!("../../deploy/examples/local.yaml");

fn serve(cli: &Cli) -> anyhow::Result<()> {
    if cli.etcd.is_some() {
        bail!("--etcd is not supported yet; use --config FILE");
    }
    let _ = &cli.etcd_prefix;
    let config = match &cli.config {
        Some(path) => node_agent::config::load(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => {
            eprintln!(
                "node-agent: no --config: serving the embedded default (deploy/examples/local.yaml: 127.0.0.1:18000 -> 127.0.0.1:19001/19002)"
            );
            node_agent::config::parse(EMBEDDED_DEFAULT, false)
                .map_err(|e| anyhow::anyhow!("embedded default config: {e}"))?
        }
    };
    let mut config = config;
    config.node = node_locality(cli.zone.clone(), cli.region.clone(), config.node.take());
    if config.clusters.iter().any(|c| c.locality.is_some())
        && config
            .node
            .as_ref()
            .is_none_or(|n| n.zone.is_none() && n.region.is_none())
    {
        eprintln!(
            "node-agent: a cluster prefers a locality but this node's zone and region are unknown (--zone / --region, NODE_ZONE / NODE_REGION, or node: in the config): its endpoints are all treated alike"
        );
    }
    let workers = match cli.workers {
        Some(0) => bail!("--workers must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let drain_timeout_ns = ringlog::units::parse_duration_ns(&cli.drain_timeout)
        .map_err(|e| anyhow::anyhow!("--drain-timeout {:?}: {e}", cli.drain_timeout))?;
    let admin: SocketAddr = cli
        .admin
        .parse()
        .with_context(|| format!("--admin {:?} is not IP:PORT", cli.admin))?;
    let (backend, fell_back, errno) = choose_io(cli.io)?;

    if let Some(dir) = config
        .ring
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let shards = u32::try_from(workers).context("--workers is too large")?;
    let ring = RingWriter::create_with(
        &config.ring.path,
        &CreateOptions::new(config.ring.size.0, shards),
    )
    .with_context(|| format!("creating the ring file {}", config.ring.path.display()))?;
    let transparent = config
        .listeners
        .iter()
        .any(|l| l.mode == node_agent::config::schema::Mode::Transparent);
    if cli.max_connections == Some(0) {
        bail!("--max-connections must be at least 1");
    }
    let listener_count = config.listeners.len();
    let snap = Snapshot::build(config, 1, |kind, name| {
        ring.intern(kind, name, 1).map_err(|e| e.to_string())
    })?;
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(snap),
        ring,
        draining: AtomicBool::new(false),
        ready_workers: AtomicUsize::new(0),
        exited_workers: AtomicUsize::new(0),
        stats: (0..workers).map(|_| WorkerStats::default()).collect(),
        backend: AtomicU32::new(backend),
        fell_back: AtomicBool::new(fell_back),
        config_rejected: AtomicU64::new(0),
        upstream_mark: if transparent { UPSTREAM_MARK } else { 0 },
        max_connections: cli.max_connections.unwrap_or_else(default_max_connections),
        open_connections: AtomicU64::new(0),
        listener_open: (0..listener_count).map(|_| AtomicU64::new(0)).collect(),
        config_applied: AtomicU64::new(0),
        control_events: std::sync::Mutex::new(Vec::new()),
        control_pending: AtomicBool::new(false),
    });
    let source = match &cli.config {
        Some(path) => format!("file:{}", path.display()),
        None => "embedded:deploy/examples/local.yaml".to_string(),
    };
    let reloader = cli.config.as_ref().map(|path| {
        let (zone, region) = (cli.zone.clone(), cli.region.clone());
        node_agent::reload::Reloader::new(
            path,
            shared.clone(),
            Box::new(move |from_file| node_locality(zone.clone(), region.clone(), from_file)),
        )
    });
    node_agent::admin::spawn(admin, shared.clone(), source, reloader)?;
    let handles = start_workers(&shared, workers, drain_timeout_ns, (fell_back, errno))?;
    eprintln!(
        "node-agent: serving with {workers} worker(s) on {}; admin on http://{admin}; ring {}",
        shared.backend_name(),
        shared.ring.path().display()
    );
    let mut failed = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(anyhow::Error::from(e)),
            Err(_) => failed = Some(anyhow::anyhow!("a worker thread panicked")),
        }
    }
    let _ = shared.ring.flush();
    if let Some(e) = failed {
        return Err(e);
    }
    eprintln!("node-agent: drained, exiting");
    Ok(())
}

/// Seven eighths of the open-file limit: the last eighth stays for
/// upstream connections (pooled ones are shared by many clients),
/// listeners, the ring and the admin server, so accept never starves them.
fn default_max_connections() -> u64 {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20);
    (soft / 8 * 7).max(1)
}

type WorkerHandle = std::thread::JoinHandle<Result<(), node_agent::driver::DriverError>>;

fn start_workers(
    shared: &Arc<Shared>,
    workers: usize,
    drain_timeout_ns: u64,
    (fell_back, errno): (bool, i32),
) -> anyhow::Result<Vec<WorkerHandle>> {
    let snap = shared.snapshot.load_full();
    let use_uring = shared.backend.load(Ordering::Relaxed) == worker::BACKEND_URING;
    let mut handles = Vec::new();
    for id in 0..workers {
        let mut listeners = Vec::new();
        for (idx, l) in snap.listeners.iter().enumerate() {
            let sock = driver::bind_listener(l.bind)
                .with_context(|| format!("listeners[{}]: binding {}", l.name, l.bind))?;
            listeners.push((idx, sock));
        }
        let shard = shared.ring.shard(id as u32)?;
        shared
            .ring
            .name_worker(id as u32, &format!("worker-{id}"))?;
        let now = ringlog::clock::mono_ns();
        let mut recorder = Recorder::new(shard, &snap, now);
        if id == 0 {
            let mut ev = Event::new(EventKind::ConfigApplied, now);
            ev.generation = snap.generation;
            recorder.event(&ev);
            if fell_back {
                let mut ev = Event::new(EventKind::IoFallback, now);
                ev.from = 1;
                ev.to = 2;
                ev.a = u64::from(errno.unsigned_abs());
                recorder.event(&ev);
            }
        }
        let init = WorkerInit {
            id,
            shared: shared.clone(),
            recorder,
            drain_timeout_ns,
        };
        let shared = shared.clone();
        let h = std::thread::Builder::new()
            .name(format!("worker-{id}"))
            .spawn(move || {
                let r = if use_uring {
                    uring::Worker::new(init, listeners).and_then(uring::Worker::run)
                } else {
                    epoll::Worker::new(init, listeners).and_then(epoll::Worker::run)
                };
                shared.exited_workers.fetch_add(1, Ordering::SeqCst);
                r
            })
            .context("spawning a worker thread")?;
        handles.push(h);
    }
    Ok(handles)
}
