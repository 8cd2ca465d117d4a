//! The admin server and signal handling, on a small current-thread tokio
//! runtime of their own (never on a worker): `/healthz`, `/ready`,
//! `/config`, `/clusters`, `/metrics`; SIGTERM / SIGINT start the drain;
//! the active health checks run here too.
//!
//! Requests are tiny GETs; each connection gets one response and is closed.
//! A scrape reads the workers' counters without locking them.

mod clusters;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics;
use crate::worker::Shared;

/// Largest admin request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The runtime could not be built.
    #[error("starting the admin runtime: {0}")]
    Runtime(std::io::Error),
    /// The admin address could not be bound.
    #[error("binding the admin listener {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Starts the admin thread; returns once the listener is bound and the
/// signal handlers are installed (or with the reason they are not).
pub fn spawn(
    addr: SocketAddr,
    shared: Arc<Shared>,
    source: String,
    reloader: Option<crate::reload::Reloader>,
    watcher: Option<crate::etcd::Watcher>,
) -> Result<std::thread::JoinHandle<()>, AdminError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(AdminError::Runtime)?;
    let listener = rt
        .block_on(TcpListener::bind(addr))
        .map_err(|source| AdminError::Bind { addr, source })?;
    let signals = rt
        .block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            Ok::<_, std::io::Error>(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hup: signal(SignalKind::hangup())?,
            })
        })
        .map_err(AdminError::Signals)?;
    let handle = std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            rt.block_on(async move {
                if let Some(w) = watcher {
                    tokio::spawn(w.run());
                }
                serve(listener, shared, source, signals, reloader).await;
            });
        })
        .map_err(AdminError::Runtime)?;
    Ok(handle)
}

/// The signals the admin thread handles.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    source: String,
    mut sig: Signals,
    mut reloader: Option<crate::reload::Reloader>,
) {
    let source = Arc::new(source);
    tokio::spawn(crate::health::run(shared.clone()));
    let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<()>();
    if let Some(r) = &reloader
        && let Err(e) = crate::reload::watch(r.path(), move || {
            let _ = changed_tx.send(());
        })
    {
        eprintln!("node-agent: not watching the config file ({e}); SIGHUP still reloads it");
    }
    loop {
        tokio::select! {
            _ = sig.term.recv() => begin_drain(&shared, "SIGTERM"),
            _ = sig.int.recv() => begin_drain(&shared, "SIGINT"),
            _ = sig.hup.recv() => match &mut reloader {
                Some(r) => {
                    let _ = r.reload(true);
                }
                None => eprintln!("node-agent: SIGHUP: no config file to reload (embedded default)"),
            },
            Some(()) = changed.recv() => {
                if let Some(r) = &mut reloader {
                    let _ = r.reload(false);
                }
            }
            accepted = listener.accept() => {
                if let Ok((conn, _)) = accepted {
                    let shared = shared.clone();
                    let source = source.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            handle(conn, &shared, &source),
                        )
                        .await;
                    });
                }
            }
        }
        if shared.exited_workers.load(Ordering::SeqCst) >= shared.stats.len() {
            return;
        }
    }
}

fn begin_drain(shared: &Shared, signal: &str) {
    if !shared.draining.swap(true, Ordering::SeqCst) {
        shared.wake_workers();
        eprintln!("node-agent: {signal}: draining (no new connections; in-flight requests finish)");
    }
}

async fn handle(mut conn: TcpStream, shared: &Arc<Shared>, source: &str) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let (status, ctype, body) = match req.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("/");
            let path = path.split('?').next().unwrap_or(path);
            if req.method != Some("GET") {
                (405, "text/plain", "only GET is supported\n".to_string())
            } else {
                route(path, shared, source)
            }
        }
        _ => (400, "text/plain", "malformed request\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        crate::http1::response::phrase(status),
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

fn route(path: &str, shared: &Arc<Shared>, source: &str) -> (u16, &'static str, String) {
    let snap = shared.snapshot.load();
    match path {
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/ready" => {
            let ready = shared.ready_workers.load(Ordering::SeqCst);
            let want = shared.stats.len();
            if shared.draining() {
                (503, "text/plain", "draining\n".into())
            } else if ready < want {
                (
                    503,
                    "text/plain",
                    format!("starting: {ready}/{want} workers serving\n"),
                )
            } else {
                (
                    200,
                    "text/plain",
                    format!("ready: {want} workers on {}\n", shared.backend_name()),
                )
            }
        }
        "/config" => {
            let body = serde_json::json!({
                "generation": snap.generation,
                "source": source,
                "revision": shared.source_revision.load(Ordering::Relaxed),
                "worker_generations": shared.stats.iter().map(|s| s.generation()).collect::<Vec<_>>(),
                "source_connected": shared.source_connected.load(Ordering::Relaxed),
                "io": shared.backend_name(),
                "config": snap.config,
            });
            (200, "application/json", format!("{body:#}\n"))
        }
        "/clusters" => {
            let body = clusters::render(&snap, ringlog::clock::mono_ns());
            (200, "application/json", format!("{body:#}\n"))
        }
        "/metrics" => {
            let scraped =
                metrics::expo::registry(shared.clone()).and_then(|r| metrics::expo::scrape(&r));
            match scraped {
                Ok(text) => (200, "text/plain; version=0.0.4", text),
                Err(e) => (500, "text/plain", format!("metrics: {e}\n")),
            }
        }
        _ => (
            404,
            "text/plain",
            "not found: try /metrics /ready /healthz /config /clusters\n".into(),
        ),
    }
}
