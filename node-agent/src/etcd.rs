//! Config from etcd (`--etcd URLS --etcd-prefix P`): the keys under the
//! prefix are listed at start, then watched from the listing's revision + 1
//! on the admin runtime (never on a worker). Every burst of changes is
//! debounced, assembled over the base config ([`keys`]), validated as a
//! whole and swapped in like a file reload; a bad push is rejected with the
//! etcd key named and the last good snapshot keeps serving.
//!
//! etcd-client does not reconnect a watch, so [`Watcher`] does: a lost
//! stream (an error, its end, or no answer to a progress request within
//! [`DEAD_AFTER`]) is reconnected with capped, jittered exponential
//! backoff across every endpoint, resuming from the revision after the
//! last one seen. A watch refused because that revision was compacted
//! re-lists the prefix and watches from the new listing's revision + 1, so no event is
//! ever silently missed. While etcd is unreachable the agent serves its
//! last good snapshot and `tailmesh_config_source_connected` is 0.
//!
//! The same watch carries shared breaker hints ([`hints`]), and
//! [`register`] keeps an endpoint's leased key alive.

mod cache;
pub mod hints;
pub mod keys;
pub mod register;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, WatchOptions};
use tokio::time::{Instant, sleep, sleep_until};

use crate::config::schema::{Config, NodeLocality};
use crate::worker::Shared;

pub use cache::Cache;

/// A burst of watch events is waited out this long after its last event...
pub const DEBOUNCE: Duration = Duration::from_millis(20);
/// ...but no longer than this after its first.
pub const MAX_DEBOUNCE: Duration = Duration::from_millis(100);
/// How often a progress request checks that the watch stream is alive.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// A watch stream silent this long (no event, no progress answer) is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(6);
/// First reconnect delay; doubles per failure up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why etcd could not give a config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// A call to etcd failed (unreachable, timed out, refused).
    #[error("etcd {endpoints}: {source}")]
    Etcd {
        /// The endpoints tried.
        endpoints: String,
        /// What the client said.
        source: etcd_client::Error,
    },
    /// The keys do not make a valid config.
    #[error("{0}")]
    Invalid(String),
    /// The config cache could not be read or written.
    #[error("config cache {path}: {reason}")]
    Cache {
        /// The cache file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The runtime for the start-up listing could not be built.
    #[error("starting the etcd client runtime: {0}")]
    Runtime(std::io::Error),
}

/// Where the config lives in etcd.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Endpoints (`http://host:port`).
    pub endpoints: Vec<String>,
    /// Key prefix, ending in `/`.
    pub prefix: String,
    /// This node's name (shared breaker hints are published under it).
    pub node_name: String,
}

impl Settings {
    /// Settings from `--etcd` (comma separated; `host:port` gets `http://`)
    /// and `--etcd-prefix` (a missing trailing `/` is added).
    pub fn new(urls: &str, prefix: &str, node_name: String) -> Settings {
        let endpoints = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                if u.contains("://") {
                    u.to_string()
                } else {
                    format!("http://{u}")
                }
            })
            .collect();
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Settings {
            endpoints,
            prefix,
            node_name,
        }
    }

    fn err(&self, source: etcd_client::Error) -> EtcdError {
        EtcdError::Etcd {
            endpoints: self.endpoints.join(","),
            source,
        }
    }

    /// A client over every endpoint, with bounded connect and call times
    /// and HTTP/2 keepalive (a dead connection is noticed in seconds).
    pub async fn connect(&self) -> Result<Client, EtcdError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        Client::connect(&self.endpoints, Some(opts))
            .await
            .map_err(|e| self.err(e))
    }

    /// Every key under the prefix and the revision they were read at.
    pub async fn list(&self, client: &mut Client) -> Result<Listing, EtcdError> {
        let resp = client
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.err(e))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect();
        Ok(Listing { kvs, revision })
    }
}

/// The keys under the prefix at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Full key → raw value.
    pub kvs: BTreeMap<String, Vec<u8>>,
    /// The etcd revision they were read at (or last changed at).
    pub revision: i64,
}

/// Assembles `kvs` over `base` and validates the result as a whole;
/// errors name the etcd key to fix.
pub fn build(
    prefix: &str,
    kvs: &BTreeMap<String, Vec<u8>>,
    base: Option<&Config>,
) -> Result<keys::Assembled, String> {
    let assembled = keys::assemble(prefix, kvs, base).map_err(|e| e.to_string())?;
    let problems = crate::config::validate(&assembled.config);
    if problems.is_empty() {
        return Ok(assembled);
    }
    let lines: Vec<String> = problems
        .iter()
        .map(|p| {
            format!(
                "{}: {}: {}",
                keys::etcd_key_of_problem(prefix, &p.key),
                p.field,
                p.reason
            )
        })
        .collect();
    Err(lines.join("; "))
}

/// Lists the prefix once at start, retrying until `wait` is over. If etcd
/// stays unreachable, the cache (if any) stands in. Returns the listing
/// and whether it came from the cache.
pub fn initial(
    settings: &Settings,
    cache: Option<&Cache>,
    wait: Duration,
) -> Result<(Listing, bool), EtcdError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(EtcdError::Runtime)?;
    let listed = rt.block_on(async {
        let end = Instant::now() + wait;
        let mut backoff = Backoff::default();
        loop {
            let tried = async {
                let mut client = settings.connect().await?;
                settings.list(&mut client).await
            };
            match tokio::time::timeout_at(end, tried).await {
                Ok(Ok(listing)) => return Ok(listing),
                Ok(Err(e)) if Instant::now() + backoff.peek() < end => {
                    eprintln!("node-agent: etcd not reachable yet: {e}");
                    sleep(backoff.next_delay()).await;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(EtcdError::Invalid(format!(
                        "etcd {}: no answer within {wait:?}",
                        settings.endpoints.join(",")
                    )));
                }
            }
        }
    });
    match (listed, cache) {
        (Ok(listing), _) => Ok((listing, false)),
        (Err(e), Some(cache)) => {
            eprintln!(
                "node-agent: {e}; starting from the config cache {}",
                cache.path().display()
            );
            let listing = cache.load(&settings.prefix)?;
            Ok((listing, true))
        }
        (Err(e), None) => Err(e),
    }
}

/// Capped exponential backoff with jitter (each delay is 50-100% of the
/// current step).
#[derive(Debug)]
struct Backoff {
    step: Duration,
    seed: u64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            step: BACKOFF_MIN,
            seed: ringlog::clock::mono_ns() | 1,
        }
    }
}

impl Backoff {
    fn peek(&self) -> Duration {
        self.step
    }

    fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter needs no quality, only spread between nodes.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = self.step / 2;
        let jitter = half.mul_f64((self.seed % 1024) as f64 / 1024.0);
        let delay = half + jitter;
        self.step = (self.step * 2).min(BACKOFF_MAX);
        delay
    }

    fn reset(&mut self) {
        self.step = BACKOFF_MIN;
    }
}

/// Puts the node's flag and environment locality over the config's.
pub type NodeFn = Box<dyn Fn(Option<NodeLocality>) -> Option<NodeLocality> + Send>;

/// Why a watch session ended.
enum Ended {
    /// etcd unreachable, the stream broke or went silent: back off.
    Lost(String),
    /// The start revision was compacted: re-list at once.
    Compacted(i64),
}

/// Keeps the running config in step with etcd (see the module doc).
pub struct Watcher {
    settings: Settings,
    base: Option<Config>,
    node: NodeFn,
    shared: Arc<Shared>,
    cache: Option<Cache>,
    listing: Listing,
    /// The listing came from the cache: list again once connected.
    stale: bool,
    hints: hints::Hints,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("settings", &self.settings)
            .field("revision", &self.listing.revision)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// A watcher that continues from `listing` (what the running snapshot
    /// was built from; `stale` if it came from the cache).
    pub fn new(
        settings: Settings,
        base: Option<Config>,
        node: NodeFn,
        shared: Arc<Shared>,
        cache: Option<Cache>,
        (listing, stale): (Listing, bool),
    ) -> Watcher {
        let hints = hints::Hints::new(settings.node_name.clone());
        Watcher {
            settings,
            base,
            node,
            shared,
            cache,
            listing,
            stale,
            hints,
        }
    }

    /// The etcd revision the running config was built from.
    pub fn revision(&self) -> u64 {
        u64::try_from(self.listing.revision).unwrap_or(0)
    }

    /// The origin named in logs.
    fn origin(&self) -> String {
        format!("etcd {}", self.settings.prefix)
    }

    /// Assembles, validates and swaps in the current key set; a rejection
    /// is logged (with the key), counted and put on the ring.
    fn apply(&mut self) {
        let origin = self.origin();
        let revision = self.revision();
        let built = build(&self.settings.prefix, &self.listing.kvs, self.base.as_ref())
            .map_err(crate::reload::ReloadError::Invalid)
            .and_then(|mut a| {
                a.config.node = (self.node)(a.config.node.take());
                crate::reload::check_source_fields(&a.config, true)
                    .map_err(crate::reload::ReloadError::Invalid)?;
                if a.config == self.shared.snapshot.load().config {
                    // Nothing the snapshot holds changed (a hint, an
                    // orphan endpoint, or a bad key put back as it was).
                    self.shared
                        .source_revision
                        .store(revision, Ordering::Relaxed);
                } else {
                    crate::reload::apply(&self.shared, a.config, &origin, revision)?;
                }
                Ok((a.orphans, a.hints))
            });
        match built {
            Ok((orphans, hints)) => {
                for key in orphans {
                    eprintln!("node-agent: {key}: no such cluster; this endpoint waits for it");
                }
                self.hints.seen(&self.shared, &hints);
                if let Some(cache) = &self.cache
                    && let Err(e) = cache.store(&self.settings.prefix, &self.listing)
                {
                    eprintln!("node-agent: {e}");
                }
            }
            Err(e) => crate::reload::rejected(&self.shared, &origin, &e),
        }
    }

    /// Runs until the agent drains: watch, and on any loss reconnect.
    pub async fn run(mut self) {
        let mut backoff = Backoff::default();
        if self.stale {
            self.shared.source_connected.store(false, Ordering::Relaxed);
        }
        while !self.shared.draining() {
            match self.session(&mut backoff).await {
                Ended::Compacted(rev) => {
                    eprintln!(
                        "node-agent: etcd watch from revision {} was compacted (at {rev}); listing {} again",
                        self.listing.revision + 1,
                        self.settings.prefix
                    );
                    self.stale = true;
                }
                Ended::Lost(why) => {
                    self.shared.source_connected.store(false, Ordering::Relaxed);
                    let delay = backoff.next_delay();
                    eprintln!(
                        "node-agent: etcd watch lost ({why}); serving generation {} and retrying in {delay:?}",
                        self.shared.snapshot.load().generation
                    );
                    sleep(delay).await;
                }
            }
        }
    }

    /// One connection: list if needed, then watch until it ends.
    async fn session(&mut self, backoff: &mut Backoff) -> Ended {
        let mut client = match self.settings.connect().await {
            Ok(c) => c,
            Err(e) => return Ended::Lost(e.to_string()),
        };
        if self.stale {
            match self.settings.list(&mut client).await {
                Ok(listing) => {
                    let changed = listing.kvs != self.listing.kvs;
                    self.listing = listing;
                    self.stale = false;
                    if changed {
                        self.apply();
                    }
                }
                Err(e) => return Ended::Lost(e.to_string()),
            }
        }
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.listing.revision + 1)
            .with_progress_notify();
        let mut stream = match client
            .watch(self.settings.prefix.as_str(), Some(opts))
            .await
        {
            Ok(s) => s,
            Err(e) => return Ended::Lost(e.to_string()),
        };
        let mut heard = Instant::now();
        let mut probe = tokio::time::interval(PROGRESS_EVERY);
        let mut hint_tick = tokio::time::interval(hints::CHECK_EVERY);
        let mut burst: Option<(Instant, Instant)> = None; // (first, last event)
        loop {
            let due = burst.map(|(first, last)| (last + DEBOUNCE).min(first + MAX_DEBOUNCE));
            tokio::select! {
                msg = stream.message() => {
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => return Ended::Lost("the watch stream ended".into()),
                        Err(e) => return Ended::Lost(e.to_string()),
                    };
                    heard = Instant::now();
                    if resp.compact_revision() > 0 {
                        return Ended::Compacted(resp.compact_revision());
                    }
                    if resp.canceled() {
                        return Ended::Lost(format!("watch canceled: {}", resp.cancel_reason()));
                    }
                    if resp.created() {
                        self.shared.source_connected.store(true, Ordering::Relaxed);
                        backoff.reset();
                    }
                    if self.take(&resp) {
                        burst = Some(burst.map_or((heard, heard), |(first, _)| (first, heard)));
                    }
                }
                () = async { if let Some(at) = due { sleep_until(at).await } else { std::future::pending().await } } => {
                    burst = None;
                    self.apply();
                }
                _ = probe.tick() => {
                    if heard.elapsed() > DEAD_AFTER {
                        return Ended::Lost(format!("no answer from etcd for {:?}", heard.elapsed()));
                    }
                    if let Err(e) = stream.request_progress().await {
                        return Ended::Lost(e.to_string());
                    }
                }
                _ = hint_tick.tick() => {
                    self.hints.publish(&self.shared, &self.settings.prefix, &client);
                }
            }
        }
    }

    /// Applies one watch response's events to the key set; true if any.
    /// A progress notification (no events) moves the revision on.
    fn take(&mut self, resp: &etcd_client::WatchResponse) -> bool {
        let mut any = false;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            // A delete's key-value has version 0 (a put's is at least 1);
            // read that rather than the event type, whose accessor panics
            // on a type it does not know.
            if kv.version() == 0 {
                self.listing.kvs.remove(&key);
            } else {
                self.listing.kvs.insert(key, kv.value().to_vec());
            }
            self.listing.revision = self.listing.revision.max(kv.mod_revision());
            any = true;
        }
        if !any && let Some(h) = resp.header() {
            self.listing.revision = self.listing.revision.max(h.revision());
        }
        any
    }
}

/// `node-agent check-config --etcd`: lists the prefix and validates it
/// (over `base` if given). The assembled config, or every reason not.
pub fn check(
    settings: &Settings,
    base: Option<&Config>,
) -> Result<(keys::Assembled, i64), EtcdError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(EtcdError::Runtime)?;
    let listing = rt.block_on(async {
        let mut client = settings.connect().await?;
        settings.list(&mut client).await
    })?;
    let a = build(&settings.prefix, &listing.kvs, base).map_err(EtcdError::Invalid)?;
    Ok((a, listing.revision))
}
