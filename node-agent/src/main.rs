//! `node-agent`: the per-node mesh agent (flags as in DESIGN.md).
//!
//! `node-agent --config FILE` (or `--etcd URLS`, with the file as the
//! base) serves: it validates the config, creates the ring file, starts
//! one worker thread per core (each with its own SO_REUSEPORT listeners and
//! ring shard) and the admin server (which also runs the file or etcd
//! watch), and on SIGTERM / SIGINT drains and exits 0. `node-agent
//! check-config FILE | --etcd URLS` validates a config offline or a live
//! prefix; `node-agent register` keeps an endpoint's leased key in etcd.

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
    /// etcd endpoints, comma separated (`host:port` or `http://host:port`):
    /// the config comes from the keys under --etcd-prefix and is watched.
    /// --config FILE may be given too: it supplies the sections etcd does
    /// not hold (ring, node, listeners); a section present in etcd wins.
    #[arg(long)]
    etcd: Option<String>,
    /// etcd key prefix.
    #[arg(long, default_value = "/tailmesh/v1/")]
    etcd_prefix: String,
    /// With --etcd: the last good etcd key set is written here after every
    /// applied change, and used at start if etcd cannot be reached.
    #[arg(long)]
    config_cache: Option<PathBuf>,
    /// How long the start waits for etcd before falling back to
    /// --config-cache (or failing without one).
    #[arg(long, default_value = "10s")]
    etcd_start_timeout: String,
    /// This node's name, for shared breaker hints (else NODE_NAME, else
    /// the host name).
    #[arg(long)]
    node_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Io {
    Auto,
    Uring,
    Epoll,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a config file offline, or the keys under an etcd prefix;
    /// exit 0 if valid, 1 with every problem if not.
    CheckConfig {
        /// The config file (with --etcd: the base under etcd's sections).
        file: Option<PathBuf>,
        /// etcd endpoints, comma separated: validate the live prefix.
        #[arg(long)]
        etcd: Option<String>,
        /// etcd key prefix.
        #[arg(long, default_value = "/tailmesh/v1/")]
        etcd_prefix: String,
    },
    /// Register an endpoint in etcd under a lease kept alive until SIGTERM
    /// / SIGINT, which revoke it (the endpoint leaves the cluster at once;
    /// a killed instance leaves when its lease expires).
    Register {
        /// etcd endpoints, comma separated.
        #[arg(long)]
        etcd: String,
        /// etcd key prefix.
        #[arg(long, default_value = "/tailmesh/v1/")]
        etcd_prefix: String,
        /// The cluster the endpoint joins.
        #[arg(long)]
        cluster: String,
        /// The endpoint, HOST:PORT.
        #[arg(long)]
        addr: String,
        /// Labels, `k=v,k=v` (version, zone, region, ...).
        #[arg(long, default_value = "")]
        labels: String,
        /// Endpoint weight.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Lease time to live (kept alive every third of it).
        #[arg(long, default_value = "10s")]
        ttl: String,
    },
}

/// SO_MARK on upstream sockets when a transparent listener exists, so the
/// redirect rules can exclude the agent's own traffic
/// (`-m mark ! --mark 0x539`, see docs/AGENT.md, "Transparent capture").
const UPSTREAM_MARK: u32 = 0x539;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::CheckConfig {
            file,
            etcd,
            etcd_prefix,
        }) => check_config(file.as_deref(), etcd.as_deref(), etcd_prefix),
        Some(Command::Register { .. }) => match register(&cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("node-agent register: {e:#}");
                ExitCode::FAILURE
            }
        },
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

/// Reads the files a valid config names (TLS certificates, keys, CA
/// bundles, the identity) as the agent would at start.
fn check_files(cfg: &node_agent::config::Config) -> Result<(), String> {
    if let Some(id) = &cfg.identity {
        let files = node_agent::tls::IdentityFiles {
            cert: id.cert.clone(),
            key: id.key.clone(),
            trust_bundle: id.trust_bundle.clone(),
            trust_domain: id.trust_domain.clone(),
        };
        node_agent::tls::Identity::load(&files).map_err(|e| format!("identity: {e}"))?;
    }
    Snapshot::build(cfg.clone(), 1, |_, _| Ok(1))
        .map(|_| ())
        .map_err(|e| match e {
            node_agent::snapshot::SnapshotError::Invalid(p) => p
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  "),
            other => other.to_string(),
        })
}

fn check_config(file: Option<&std::path::Path>, etcd: Option<&str>, prefix: &str) -> ExitCode {
    let summary = |what: &str, cfg: &node_agent::config::Config| {
        println!(
            "{what}: valid: {} listener(s), {} cluster(s), {} route(s), {} request type(s)",
            cfg.listeners.len(),
            cfg.clusters.len(),
            cfg.routes.len(),
            cfg.request_types.len()
        );
    };
    let Some(urls) = etcd else {
        let Some(file) = file else {
            eprintln!("check-config: give a FILE, or --etcd URLS [--etcd-prefix P]");
            return ExitCode::FAILURE;
        };
        return match node_agent::config::load(file)
            .map_err(|e| e.to_string())
            .and_then(|c| node_agent::reload::check_source_fields(&c, false).map(|()| c))
            .and_then(|c| check_files(&c).map(|()| c))
        {
            Ok(cfg) => {
                summary(&file.display().to_string(), &cfg);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::FAILURE
            }
        };
    };
    let settings = node_agent::etcd::Settings::new(urls, prefix, String::new());
    let base = match file.map(load_base).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    match node_agent::etcd::check(&settings, base.as_ref()) {
        Ok((a, revision)) => {
            summary(
                &format!("etcd {} at revision {revision}", settings.prefix),
                &a.config,
            );
            for key in a.orphans {
                println!("{key}: no such cluster (the endpoint waits for it)");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("etcd {}: {e}", settings.prefix);
            ExitCode::FAILURE
        }
    }
}

/// The base file under etcd's sections: parsed, not validated alone.
fn load_base(path: &std::path::Path) -> anyhow::Result<node_agent::config::Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json = path.extension().is_some_and(|e| e == "json");
    node_agent::config::parse_unvalidated(&text, json)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// This node's name: --node-name, else NODE_NAME, else the host name.
fn node_name(flag: Option<&str>) -> String {
    flag.map(str::to_string)
        .or_else(|| std::env::var("NODE_NAME").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| {
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned()
        })
}

/// `node-agent register`.
fn register(cli: &Cli) -> anyhow::Result<()> {
    let Some(Command::Register {
        etcd,
        etcd_prefix,
        cluster,
        addr,
        labels,
        weight,
        ttl,
    }) = &cli.command
    else {
        bail!("not a register command");
    };
    addr.parse::<SocketAddr>()
        .with_context(|| format!("--addr {addr:?} is not HOST:PORT"))?;
    let ttl_ns = ringlog::units::parse_duration_ns(ttl)
        .map_err(|e| anyhow::anyhow!("--ttl {ttl:?}: {e}"))?;
    let ttl_s = i64::try_from(ttl_ns / 1_000_000_000).unwrap_or(i64::MAX);
    if ttl_s < 2 {
        bail!("--ttl {ttl:?}: must be at least 2s");
    }
    let mut map = std::collections::BTreeMap::new();
    for pair in labels.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--labels: {pair:?} is not k=v"))?;
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    let reg = node_agent::etcd::register::Registration {
        settings: node_agent::etcd::Settings::new(etcd, etcd_prefix, String::new()),
        cluster: cluster.clone(),
        addr: addr.clone(),
        labels: map,
        weight: *weight,
        ttl_s,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        node_agent::etcd::register::run(&reg, stop).await;
        Ok::<(), std::io::Error>(())
    })
    .context("installing signal handlers")
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
    if cli.max_connections == Some(0) {
        bail!("--max-connections must be at least 1");
    }
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let max_connections = cli
        .max_connections
        .unwrap_or_else(|| default_max_connections(soft));
    // Before any thread exists: grown later, under a burst of accepts, the
    // table would stall a worker for an RCU grace period per doubling.
    let fd_slots = node_agent::descriptors::wanted(max_connections, soft);
    let fd_table = match node_agent::descriptors::prealloc(fd_slots) {
        Ok(n) => format!("descriptor table {n} slots"),
        Err(e) => {
            eprintln!("node-agent: {e} (the kernel grows the table on demand instead)");
            "descriptor table on demand".to_string()
        }
    };
    let (config, etcd) = match &cli.etcd {
        Some(urls) => {
            let (config, watcher) = from_etcd(cli, urls)?;
            (config, Some(watcher))
        }
        None => (from_file(cli)?, None),
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
    let listener_count = config.listeners.len();
    let snap = Snapshot::build(config, 1, |kind, name| {
        ring.intern(kind, name, 1).map_err(|e| e.to_string())
    })?;
    let (bells, wakes) =
        node_agent::worker::wake::pairs(workers).context("worker wake-up sockets")?;
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
        max_connections,
        open_connections: AtomicU64::new(0),
        listener_open: (0..listener_count.max(node_agent::snapshot::MAX_LISTENERS))
            .map(|_| AtomicU64::new(0))
            .collect(),
        config_applied: AtomicU64::new(0),
        control_events: std::sync::Mutex::new(Vec::new()),
        control_pending: AtomicBool::new(false),
        source_revision: AtomicU64::new(0),
        source_connected: AtomicBool::new(true),
        identity: arc_swap::ArcSwapOption::empty(),
        identity_reloads: [AtomicU64::new(0), AtomicU64::new(0)],
        bells,
    });
    if let Some(f) = &shared.snapshot.load().config.identity {
        node_agent::identity::start(&shared, f).context("identity")?;
    }
    let source = match (&etcd, &cli.config) {
        (Some(_), _) => format!(
            "etcd:{}{}",
            cli.etcd.as_deref().unwrap_or_default(),
            cli.etcd_prefix
        ),
        (None, Some(path)) => format!("file:{}", path.display()),
        (None, None) => "embedded:deploy/examples/local.yaml".to_string(),
    };
    let watcher = etcd.map(|e| e.into_watcher(&shared));
    if let Some(rev) = watcher.as_ref().map(node_agent::etcd::Watcher::revision) {
        shared.source_revision.store(rev, Ordering::Relaxed);
    }
    let reloader = cli
        .config
        .as_ref()
        .filter(|_| cli.etcd.is_none())
        .map(|path| {
            let (zone, region) = (cli.zone.clone(), cli.region.clone());
            node_agent::reload::Reloader::new(
                path,
                shared.clone(),
                Box::new(move |from_file| node_locality(zone.clone(), region.clone(), from_file)),
            )
        });
    node_agent::admin::spawn(admin, shared.clone(), source, reloader, watcher)?;
    let handles = start_workers(&shared, wakes, drain_timeout_ns, (fell_back, errno))?;
    eprintln!(
        "node-agent: serving with {workers} worker(s) on {}; admin on http://{admin}; ring {}; at most {max_connections} connections, {fd_table}",
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

/// The config from --config FILE, or the embedded default.
fn from_file(cli: &Cli) -> anyhow::Result<node_agent::config::Config> {
    if cli.config_cache.is_some() {
        bail!("--config-cache needs --etcd (it caches etcd's keys)");
    }
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
    node_agent::reload::check_source_fields(&config, false).map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// What the etcd watcher needs once the agent's shared state exists.
struct EtcdStart {
    settings: node_agent::etcd::Settings,
    base: Option<node_agent::config::Config>,
    cache: Option<node_agent::etcd::Cache>,
    listing: (node_agent::etcd::Listing, bool),
    zone: Option<String>,
    region: Option<String>,
}

impl EtcdStart {
    fn into_watcher(self, shared: &Arc<Shared>) -> node_agent::etcd::Watcher {
        let (zone, region) = (self.zone, self.region);
        node_agent::etcd::Watcher::new(
            self.settings,
            self.base,
            Box::new(move |from| node_locality(zone.clone(), region.clone(), from)),
            shared.clone(),
            self.cache,
            self.listing,
        )
    }
}

/// The start-up config from etcd (over --config FILE if given): listed
/// once, else from --config-cache; then validated as a whole.
fn from_etcd(cli: &Cli, urls: &str) -> anyhow::Result<(node_agent::config::Config, EtcdStart)> {
    let settings = node_agent::etcd::Settings::new(
        urls,
        &cli.etcd_prefix,
        node_name(cli.node_name.as_deref()),
    );
    if settings.endpoints.is_empty() {
        bail!("--etcd {urls:?}: no endpoint given");
    }
    let base = cli.config.as_deref().map(load_base).transpose()?;
    let cache = cli.config_cache.clone().map(node_agent::etcd::Cache::new);
    let wait = ringlog::units::parse_duration_ns(&cli.etcd_start_timeout)
        .map_err(|e| anyhow::anyhow!("--etcd-start-timeout {:?}: {e}", cli.etcd_start_timeout))?;
    let (listing, from_cache) = node_agent::etcd::initial(
        &settings,
        cache.as_ref(),
        std::time::Duration::from_nanos(wait),
    )?;
    let assembled = node_agent::etcd::build(&settings.prefix, &listing.kvs, base.as_ref())
        .map_err(|e| {
            anyhow::anyhow!(
                "etcd {} (revision {}): {e}",
                settings.prefix,
                listing.revision
            )
        })?;
    for key in &assembled.orphans {
        eprintln!("node-agent: {key}: no such cluster; this endpoint waits for it");
    }
    eprintln!(
        "node-agent: config from etcd {} at revision {}{}",
        settings.prefix,
        listing.revision,
        if from_cache { " (from the cache)" } else { "" }
    );
    if !from_cache && let Some(c) = &cache {
        c.store(&settings.prefix, &listing)?;
    }
    let start = EtcdStart {
        settings,
        base,
        cache,
        listing: (listing, from_cache),
        zone: cli.zone.clone(),
        region: cli.region.clone(),
    };
    Ok((assembled.config, start))
}

/// Seven eighths of the open-file limit: the last eighth stays for
/// upstream connections (pooled ones are shared by many clients),
/// listeners, the ring and the admin server, so accept never starves them.
fn default_max_connections(soft: Option<u64>) -> u64 {
    (soft.unwrap_or(1 << 20) / 8 * 7).max(1)
}

type WorkerHandle = std::thread::JoinHandle<Result<(), node_agent::driver::DriverError>>;

fn start_workers(
    shared: &Arc<Shared>,
    wakes: Vec<node_agent::worker::wake::Wake>,
    drain_timeout_ns: u64,
    (fell_back, errno): (bool, i32),
) -> anyhow::Result<Vec<WorkerHandle>> {
    let snap = shared.snapshot.load_full();
    let use_uring = shared.backend.load(Ordering::Relaxed) == worker::BACKEND_URING;
    let mut handles = Vec::new();
    for (id, wake) in wakes.into_iter().enumerate() {
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
            wake,
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
