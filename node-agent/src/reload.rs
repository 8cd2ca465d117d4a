//! Config reloads from the config file, on SIGHUP or when the file changes
//! (inotify on its directory, so an editor's rename and a Kubernetes
//! ConfigMap's symlink swap are seen; debounced). A reload reads, parses
//! and validates the whole file, refuses changes that need a restart
//! (the ring; a first transparent listener), builds the next generation
//! carrying over the live state of what did not change (breakers, endpoint
//! stats and ejections, rate-limit buckets, retry budgets, listener
//! slots), and swaps it in atomically: workers take it at their next loop
//! turn. No connection drops: a listener is re-bound only if its own
//! address changed, a new one starts accepting, and a removed one stops
//! accepting while its connections finish (closed once idle). [`apply`] is
//! shared with the etcd source. A config that
//! fails is rejected as a whole: the error is logged and counted, a
//! `config_rejected` event goes on the ring, and the running generation
//! keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ringlog::record::{Event, EventKind};

use crate::config::schema::{Config, Mode};
use crate::snapshot::Snapshot;
use crate::worker::Shared;

/// How long a burst of file events is waited out before reloading once.
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// Why a reload was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The config file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It does not parse or validate.
    #[error("{0}")]
    Invalid(String),
    /// It changes what only a restart can change.
    #[error("{0} (needs a restart; the running config keeps serving)")]
    Restart(String),
}

/// Applies new versions of one config file.
pub struct Reloader {
    path: PathBuf,
    shared: Arc<Shared>,
    /// Puts the node's flag and environment locality over the file's.
    node: crate::etcd::NodeFn,
    /// The text last applied (a change event with the same text is not a
    /// change).
    last: String,
    /// The text last rejected: one burst of file events that the debounce
    /// saw as two must not reject (and count) the same text twice.
    refused: Option<String>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for `path`, whose current text is the running config.
    pub fn new(path: &Path, shared: Arc<Shared>, node: crate::etcd::NodeFn) -> Reloader {
        Reloader {
            path: path.to_path_buf(),
            shared,
            node,
            last: std::fs::read_to_string(path).unwrap_or_default(),
            refused: None,
        }
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reloads: `force` (SIGHUP) applies even an unchanged text as a new
    /// generation. The generation applied (None: the text had not
    /// changed). A rejection is logged, counted and put on the ring here.
    pub fn reload(&mut self, force: bool) -> Result<Option<u32>, ReloadError> {
        let origin = self.path.display().to_string();
        let read = std::fs::read_to_string(&self.path).map_err(|source| ReloadError::Read {
            path: origin.clone(),
            source,
        });
        let r = match read {
            Ok(text) if !force && (text == self.last || self.refused.as_ref() == Some(&text)) => {
                return Ok(None);
            }
            Ok(text) => {
                let r = self.try_reload(&text, &origin);
                self.refused = r.is_err().then_some(text);
                r
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &r {
            rejected(&self.shared, &origin, e);
        }
        r
    }

    fn try_reload(&mut self, text: &str, origin: &str) -> Result<Option<u32>, ReloadError> {
        let json = self.path.extension().is_some_and(|e| e == "json");
        let mut cfg = crate::config::parse(text, json)
            .map_err(|e| ReloadError::Invalid(format!("{origin}: {e}")))?;
        cfg.node = (self.node)(cfg.node.take());
        check_source_fields(&cfg, false).map_err(ReloadError::Invalid)?;
        let generation = apply(&self.shared, cfg, origin, 0)?;
        self.last = text.to_string();
        Ok(Some(generation))
    }
}

/// Swaps in `cfg` (already validated) as the next generation: refuses
/// what needs a restart, builds the snapshot, carries over the live state
/// of what did not change, and logs, counts and puts on the ring that it
/// was applied. `revision` is the source's (etcd's; 0 for a file).
pub fn apply(
    shared: &Shared,
    cfg: Config,
    origin: &str,
    revision: u64,
) -> Result<u32, ReloadError> {
    let prev = shared.snapshot.load_full();
    needs_restart(&prev.config, &cfg, shared.upstream_mark != 0)
        .map_or(Ok(()), |why| Err(ReloadError::Restart(why)))?;
    check_binds(&prev.config, &cfg)?;
    let generation = prev.generation.wrapping_add(1).max(1);
    let ring = &shared.ring;
    let mut snap = Snapshot::build(cfg, generation, |kind, name| {
        ring.intern(kind, name, u64::from(generation))
            .map_err(|e| e.to_string())
    })
    .map_err(|e| ReloadError::Invalid(format!("{origin}: {e}")))?;
    snap.inherit(&prev);
    snap.place_listeners(&prev, |i| {
        shared
            .listener_open
            .get(i)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    })
    .map_err(ReloadError::Invalid)?;
    shared.snapshot.store(Arc::new(snap));
    shared.source_revision.store(revision, Ordering::Relaxed);
    shared.config_applied.fetch_add(1, Ordering::Relaxed);
    let mut ev = Event::new(EventKind::ConfigApplied, ringlog::clock::mono_ns());
    ev.generation = generation;
    ev.a = u64::from(prev.generation);
    ev.b = revision;
    shared.control_event(ev);
    // Idle workers take the new snapshot now, not at their next timeout.
    shared.wake_workers();
    let at = if revision > 0 {
        format!(" (revision {revision})")
    } else {
        String::new()
    };
    eprintln!("node-agent: config {origin}{at} applied as generation {generation}");
    Ok(generation)
}

/// What a config may only ask of some sources: `breaker.shared` needs
/// etcd (`etcd`: the config comes with an etcd connection).
pub fn check_source_fields(cfg: &Config, etcd: bool) -> Result<(), String> {
    match cfg
        .clusters
        .iter()
        .find(|c| c.breaker.as_ref().is_some_and(|b| b.shared))
    {
        Some(c) if !etcd => Err(format!(
            "clusters[{}]: breaker.shared: needs --etcd (hints travel through etcd)",
            c.name
        )),
        _ => Ok(()),
    }
}

/// Logs, counts and puts on the ring a config that was not applied.
pub fn rejected(shared: &Shared, origin: &str, e: &ReloadError) {
    shared.config_rejected.fetch_add(1, Ordering::Relaxed);
    let generation = shared.snapshot.load().generation;
    let mut ev = Event::new(EventKind::ConfigRejected, ringlog::clock::mono_ns());
    ev.generation = generation;
    shared.control_event(ev);
    eprintln!("node-agent: config {origin} rejected, generation {generation} keeps serving: {e}");
}

/// What in `next` only a restart can apply, compared with `running`: the
/// ring file is mapped once, and the SO_MARK that keeps the agent's own
/// upstream traffic out of the redirect rules is set at start only if a
/// transparent listener existed then (`marked`). Listeners may be added,
/// removed or moved; everything else may change.
pub fn needs_restart(running: &Config, next: &Config, marked: bool) -> Option<String> {
    if running.ring != next.ring {
        return Some("ring: the recorder file is mapped at start".into());
    }
    if running.identity != next.identity {
        return Some(
            "identity: which files hold the identity is read at start (their contents are reloaded when they change)".into(),
        );
    }
    if !marked && let Some(l) = next.listeners.iter().find(|l| l.mode == Mode::Transparent) {
        return Some(format!(
            "listeners[{}]: the first transparent listener (the agent marks its upstream traffic only if one exists at start)",
            l.name
        ));
    }
    None
}

/// Binds (and closes again) each listener of `next` that `running` does
/// not have at the same address, so one that cannot be bound (taken,
/// not a local address) rejects the config instead of failing in every
/// worker.
fn check_binds(running: &Config, next: &Config) -> Result<(), ReloadError> {
    for l in &next.listeners {
        if running
            .listeners
            .iter()
            .any(|r| r.name == l.name && r.bind == l.bind)
        {
            continue;
        }
        let addr: std::net::SocketAddr = l.bind.parse().map_err(|_| {
            ReloadError::Invalid(format!(
                "listeners[{}]: bind {:?} is not IP:PORT",
                l.name, l.bind
            ))
        })?;
        crate::driver::bind_listener(addr).map_err(|e| {
            ReloadError::Invalid(format!("listeners[{}]: binding {addr}: {e}", l.name))
        })?;
    }
    Ok(())
}

/// Watches the directory of `path` from a thread of its own and calls
/// `changed` after each burst of events (waited out for [`DEBOUNCE`]).
/// The caller compares contents; events for other files in the directory
/// cost one read.
pub fn watch(path: &Path, changed: impl Fn() + Send + 'static) -> std::io::Result<()> {
    use rustix::fs::inotify;

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC)?;
    let flags = inotify::WatchFlags::CLOSE_WRITE
        | inotify::WatchFlags::MOVED_TO
        | inotify::WatchFlags::CREATE
        | inotify::WatchFlags::DELETE
        | inotify::WatchFlags::MODIFY;
    inotify::add_watch(&fd, &dir, flags)?;
    std::thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || {
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
            loop {
                let mut events = inotify::Reader::new(&fd, &mut buf);
                if events.next().is_err() {
                    return;
                }
                std::thread::sleep(DEBOUNCE);
                // Whatever else arrived meanwhile belongs to this burst.
                let _ = rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NONBLOCK);
                let mut rest = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
                let mut more = inotify::Reader::new(&fd, &mut rest);
                while more.next().is_ok() {}
                let _ = rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::empty());
                changed();
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
version: 1
listeners:
  - { name: api, bind: "127.0.0.1:18000", protocol: http, default_route: r }
clusters:
  - { name: c, endpoints: [ { addr: "127.0.0.1:1" } ] }
routes:
  - { name: r, to: [ { cluster: c } ] }
"#;

    fn cfg(text: &str) -> Config {
        crate::config::parse(text, false).unwrap()
    }

    #[test]
    fn only_the_ring_and_a_first_transparent_listener_need_a_restart() {
        let base = cfg(BASE);
        assert_eq!(needs_restart(&base, &base, false), None);
        let routes = BASE.replace(r#"addr: "127.0.0.1:1""#, r#"addr: "127.0.0.1:2""#);
        assert_eq!(needs_restart(&base, &cfg(&routes), false), None);
        let timeouts = BASE.replace(
            "default_route: r }",
            "default_route: r, timeouts: { header_read: 3s } }",
        );
        assert_eq!(needs_restart(&base, &cfg(&timeouts), false), None);
        let moved = BASE.replace("18000", "18001");
        assert_eq!(needs_restart(&base, &cfg(&moved), false), None);
        let transparent = BASE.replace("protocol: http,", "protocol: http, mode: transparent,");
        assert!(
            needs_restart(&base, &cfg(&transparent), false)
                .is_some_and(|w| w.contains("first transparent listener"))
        );
        assert_eq!(needs_restart(&base, &cfg(&transparent), true), None);
        let ring = format!("{BASE}ring: {{ size: 8MiB }}\n");
        assert!(needs_restart(&base, &cfg(&ring), false).is_some_and(|w| w.starts_with("ring")));
    }

    #[test]
    fn unchanged_parts_keep_their_live_state_across_generations() {
        let build =
            |text: &str, generation| Snapshot::build(cfg(text), generation, |_, _| Ok(1)).unwrap();
        let limited = BASE.replace(
            "to: [ { cluster: c } ] }",
            "to: [ { cluster: c } ], rate_limit: { rps: 1, burst: 5 } }",
        );
        let old = build(&limited, 1);
        let mut same = build(&limited, 2);
        same.inherit(&old);
        assert!(std::sync::Arc::ptr_eq(
            &same.clusters[0].live,
            &old.clusters[0].live
        ));
        assert!(std::sync::Arc::ptr_eq(
            &same.clusters[0].breaker,
            &old.clusters[0].breaker
        ));
        let (a, b) = (same.routes[0].limit.as_ref(), old.routes[0].limit.as_ref());
        assert!(a.zip(b).is_some_and(|(a, b)| std::sync::Arc::ptr_eq(a, b)));
        let moved = limited.replace(r#"addr: "127.0.0.1:1""#, r#"addr: "127.0.0.1:2""#);
        let mut changed = build(&moved, 3);
        changed.inherit(&old);
        assert!(!std::sync::Arc::ptr_eq(
            &changed.clusters[0].live,
            &old.clusters[0].live
        ));
        // The breaker section did not change: its state stays.
        assert!(std::sync::Arc::ptr_eq(
            &changed.clusters[0].breaker,
            &old.clusters[0].breaker
        ));
    }
}
