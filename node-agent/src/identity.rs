//! The node's mesh identity at run time: loaded at start (a bad file stops
//! the agent), then reloaded whenever one of its files changes (inotify on
//! their directories, as cert-manager and SPIRE write them). A file set
//! that fails to load or check is rejected with its error and the running
//! identity keeps serving; new handshakes take the new identity, open
//! connections keep theirs. A thread warns on stderr, once an hour, while
//! the certificate has less than a third of its lifetime (or a day) left.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::schema::Identity as Files;
use crate::tls::{Identity, IdentityFiles, TlsError};
use crate::worker::Shared;

/// How often expiry is looked at.
const EXPIRY_CHECK: Duration = Duration::from_secs(60);
/// Warn when less than this is left, at the latest.
const WARN_BEFORE_S: i64 = 24 * 3600;

fn files(f: &Files) -> IdentityFiles {
    IdentityFiles {
        cert: f.cert.clone(),
        key: f.key.clone(),
        trust_bundle: f.trust_bundle.clone(),
        trust_domain: f.trust_domain.clone(),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Loads the identity `f` names into `shared` and keeps it current.
pub fn start(shared: &Arc<Shared>, f: &Files) -> Result<(), TlsError> {
    let paths = files(f);
    let first = Identity::load(&paths)?;
    eprintln!(
        "node-agent: mesh identity {} (expires in {} s)",
        first.id,
        first.not_after - unix_now()
    );
    shared.identity.store(Some(Arc::new(first)));
    // One watch per directory (reload::watch watches a file's directory).
    let mut dirs = std::collections::HashSet::new();
    for path in [&paths.cert, &paths.key, &paths.trust_bundle] {
        let path = std::path::Path::new(path.as_str());
        if !dirs.insert(path.parent().map(std::path::Path::to_path_buf)) {
            continue;
        }
        let (sh, files) = (shared.clone(), paths.clone());
        crate::reload::watch(path, move || reload(&sh, &files)).map_err(|e| TlsError::File {
            path: path.display().to_string(),
            reason: format!("cannot watch its directory: {e}"),
        })?;
    }
    let sh = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("identity-expiry".into())
        .spawn(move || watch_expiry(&sh));
    if let Err(e) = spawned {
        eprintln!("node-agent: identity expiry warnings are off: {e}");
    }
    Ok(())
}

/// Reads the files again; swaps the identity in if it loads and differs.
fn reload(shared: &Shared, paths: &IdentityFiles) {
    match Identity::load(paths) {
        Ok(next) => {
            let same = shared
                .identity
                .load()
                .as_ref()
                .is_some_and(|cur| cur.same_material(&next));
            if same {
                return;
            }
            eprintln!(
                "node-agent: mesh identity reloaded: {} (expires in {} s)",
                next.id,
                next.not_after - unix_now()
            );
            shared.identity.store(Some(Arc::new(next)));
            shared.identity_reloads[0].fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            eprintln!(
                "node-agent: mesh identity files rejected, the running identity keeps serving: {e}"
            );
            shared.identity_reloads[1].fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn watch_expiry(shared: &Shared) {
    let mut last_warned: Option<std::time::Instant> = None;
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            std::thread::sleep(EXPIRY_CHECK);
        }
        let Some(id) = shared.identity.load_full() else {
            continue;
        };
        let left = id.not_after - unix_now();
        let lifetime = (id.not_after - id.not_before).max(1);
        let warn = left < WARN_BEFORE_S.max(lifetime / 3);
        let due = last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600));
        if warn && due {
            eprintln!(
                "node-agent: WARNING: mesh identity {} expires in {left} s; rotate its certificate",
                id.id
            );
            last_warned = Some(std::time::Instant::now());
        }
    }
}
