//! `--config-cache PATH`: the last good etcd key set, written atomically
//! (a temporary file in the same directory, synced, then renamed) after
//! every applied change, and read at start when etcd is unreachable.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{EtcdError, Listing};

/// The cache file.
#[derive(Debug, Clone)]
pub struct Cache {
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    prefix: String,
    revision: i64,
    /// Values as text (they are JSON).
    kvs: BTreeMap<String, String>,
}

impl Cache {
    /// The cache at `path`.
    pub fn new(path: PathBuf) -> Cache {
        Cache { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, reason: impl ToString) -> EtcdError {
        EtcdError::Cache {
            path: self.path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// Writes `listing` (keys under `prefix`) atomically.
    pub fn store(&self, prefix: &str, listing: &Listing) -> Result<(), EtcdError> {
        let stored = Stored {
            prefix: prefix.to_string(),
            revision: listing.revision,
            kvs: listing
                .kvs
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
        };
        let text = serde_json::to_vec_pretty(&stored).map_err(|e| self.err(e))?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| self.err(e))
    }

    /// Reads the cache; it must have been written for `prefix`.
    pub fn load(&self, prefix: &str) -> Result<Listing, EtcdError> {
        let text = std::fs::read(&self.path).map_err(|e| self.err(e))?;
        let stored: Stored = serde_json::from_slice(&text).map_err(|e| self.err(e))?;
        if stored.prefix != prefix {
            return Err(self.err(format!(
                "written for prefix {:?}, not {prefix:?}",
                stored.prefix
            )));
        }
        Ok(Listing {
            kvs: stored
                .kvs
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect(),
            revision: stored.revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_listing_loads_back_for_its_prefix_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache.json"));
        let mut listing = Listing {
            revision: 42,
            ..Listing::default()
        };
        listing
            .kvs
            .insert("/p/routes/r".into(), br#"{"to":[]}"#.to_vec());
        cache.store("/p/", &listing).unwrap();
        assert_eq!(cache.load("/p/").unwrap(), listing);
        assert!(
            cache
                .load("/q/")
                .unwrap_err()
                .to_string()
                .contains("prefix")
        );
        std::fs::write(cache.path(), "{").unwrap();
        assert!(cache.load("/p/").is_err());
    }
}
