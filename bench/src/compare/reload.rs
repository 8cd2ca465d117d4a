//! Control-plane load on an agent during a run. `agent-uring-reload`: the
//! config file is replaced (written aside, renamed over) every 100 ms with
//! a different header the route adds, so the agent applies a new
//! generation ten times a second under full load; the report's error
//! column shows what a swap costs requests (it must be 0).
//! `agent-uring-scrape`: `/metrics` (about 10k series: 2,000 rate-limited
//! routes and 400 clusters with breakers) is scraped every 100 ms; its
//! latency rows against `agent-uring`'s in the same run show what a scrape
//! costs the workers, and the scrape times are reported.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the config changes.
pub const EVERY: Duration = Duration::from_millis(100);

/// A running churn; stops when dropped.
pub struct Churn {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
    admin: u16,
}

impl Churn {
    /// Rewrites `path` from `base` (whose route line ends in `to: [ {
    /// cluster: origin } ]`) every [`EVERY`].
    pub fn start(path: PathBuf, base: String, admin: u16) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            let tmp = path.with_extension("yaml.tmp");
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EVERY);
                n += 1;
                let text = base.replace(
                    "to: [ { cluster: origin } ]",
                    &format!(
                        "to: [ {{ cluster: origin }} ], headers: {{ request_add: {{ x-gen: \"{n}\" }} }}"
                    ),
                );
                if std::fs::write(&tmp, text).is_err() || std::fs::rename(&tmp, &path).is_err() {
                    break;
                }
            }
            n
        });
        Churn {
            stop,
            thread: Some(thread),
            admin,
        }
    }

    /// Stops the churn; (config writes, generations the agent applied).
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let writes = self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0);
        (writes, generation(self.admin).unwrap_or(0))
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The agent's `tailmesh_config_generation` from its admin `/metrics`.
fn generation(admin: u16) -> Option<u64> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", admin)).ok()?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    c.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("tailmesh_config_generation "))
        .and_then(|v| v.trim().parse().ok())
}

/// Scrapes an agent's `/metrics` every [`EVERY`] until finished.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Vec<Duration>, usize)>>,
}

impl Scraper {
    /// Starts scraping the admin port `admin`.
    pub fn start(admin: u16) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut times = Vec::new();
            let mut series = 0;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EVERY);
                let t = std::time::Instant::now();
                if let Some(body) = get(admin, "/metrics") {
                    times.push(t.elapsed());
                    series = body.lines().filter(|l| !l.starts_with('#')).count();
                }
            }
            (times, series)
        });
        Scraper {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; a line for the report: series, scrapes, p50 / p99 / max.
    pub fn finish(mut self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let (mut times, series) = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        if times.is_empty() {
            return "no scrape answered".into();
        }
        times.sort();
        let q = |f: f64| times[((times.len() as f64 * f) as usize).min(times.len() - 1)];
        format!(
            "{series} series, {} scrapes every {EVERY:?}: p50 {:?}, p99 {:?}, max {:?}",
            times.len(),
            q(0.5),
            q(0.99),
            times[times.len() - 1]
        )
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The body of `GET path` on the admin port.
fn get(admin: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", admin)).ok()?;
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .ok()?;
    let mut body = String::new();
    c.read_to_string(&mut body).ok()?;
    Some(body)
}
