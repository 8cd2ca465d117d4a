//! Active health checks, on the admin thread's tokio runtime (never on a
//! worker): one task per endpoint of each cluster with a `health_check`,
//! probing every `interval` (jittered by up to a tenth, first probe at a
//! random point of the first interval, so nodes and endpoints do not probe
//! in step) with an HTTP GET of `http_path` or a TCP connect, each bounded
//! by `timeout`. Verdicts go to the cluster's live state
//! ([`crate::snapshot::live::ClusterLive::health_result`]), which the
//! workers read through atomics. When the config generation changes the
//! tasks are replaced.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::config::schema::HealthCheck;
use crate::snapshot::live::ClusterLive;
use crate::worker::Shared;

/// How often the checker looks for a new config generation.
const WATCH: Duration = Duration::from_millis(200);
/// Largest response head a check reads.
const MAX_HEAD: usize = 8 * 1024;

/// Runs the checks for the snapshots `shared` publishes, until the agent
/// stops.
pub async fn run(shared: Arc<Shared>) {
    let mut generation = 0;
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let snap = shared.snapshot.load_full();
        if snap.generation != generation {
            generation = snap.generation;
            for t in tasks.drain(..) {
                t.abort();
            }
            for c in &snap.clusters {
                let Some(hc) = snap
                    .config
                    .clusters
                    .iter()
                    .find(|k| k.name == c.name)
                    .and_then(|k| k.health_check.clone())
                else {
                    continue;
                };
                for (i, e) in c.endpoints.iter().enumerate() {
                    let probe = Probe {
                        live: c.live.clone(),
                        endpoint: i,
                        addr: e.addr,
                        hc: hc.clone(),
                        mark: shared.upstream_mark,
                        seed: ringlog::synth::mix(
                            ringlog::clock::realtime_ns() ^ ((i as u64) << 32) ^ u64::from(c.id),
                        ),
                    };
                    tasks.push(tokio::spawn(probe.run()));
                }
            }
        }
        if shared.exited_workers.load(Ordering::SeqCst) >= shared.stats.len() {
            return;
        }
        tokio::time::sleep(WATCH).await;
    }
}

/// One endpoint's checks.
struct Probe {
    live: Arc<ClusterLive>,
    endpoint: usize,
    addr: SocketAddr,
    hc: HealthCheck,
    mark: u32,
    seed: u64,
}

impl Probe {
    async fn run(mut self) {
        let interval = self.hc.interval.0.max(1);
        tokio::time::sleep(Duration::from_nanos(self.seed % interval)).await;
        loop {
            let limit = Duration::from_nanos(self.hc.timeout.0);
            let ok = matches!(tokio::time::timeout(limit, self.check()).await, Ok(true));
            self.live.health_result(self.endpoint, ok);
            self.seed = ringlog::synth::mix(self.seed);
            let jitter = self.seed % (interval / 10).max(1);
            tokio::time::sleep(Duration::from_nanos(interval - interval / 20 + jitter)).await;
        }
    }

    /// One check: connected (TCP), or answered with an expected status.
    async fn check(&self) -> bool {
        let Ok(sock) = crate::driver::upstream_socket(self.addr, self.mark) else {
            return false;
        };
        let std: std::net::TcpStream = sock.into();
        let Ok(stream) = tokio::net::TcpSocket::from_std_stream(std)
            .connect(self.addr)
            .await
        else {
            return false;
        };
        let Some(path) = self.hc.http_path.as_deref().filter(|_| !self.hc.tcp) else {
            return true;
        };
        http_check(stream, self.addr, path, self.hc.expected_status).await
    }
}

/// GET `path` on `stream`; true if the status is within `expected`.
async fn http_check(
    mut stream: tokio::net::TcpStream,
    addr: SocketAddr,
    path: &str,
    expected: (u16, u16),
) -> bool {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tailmesh-health-check\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                return resp
                    .code
                    .is_some_and(|c| (expected.0..=expected.1).contains(&c));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return false,
        }
    }
}
