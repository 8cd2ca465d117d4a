//! Creating a ring file and writing to it.
//!
//! [`RingWriter::create`] builds the file under a temporary name, reserves
//! and pre-touches every page, writes the header and only then renames it into
//! place, so a reader never sees a half-initialised file and readers of a
//! previous file keep their (old) mapping intact. Each worker thread takes one
//! [`ShardWriter`]: `Send`, not `Sync`, the single writer of its shard.
//! Writing a record is a handful of plain stores into the mapping: no
//! syscall, no allocation, no lock.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::clock;
use crate::format::{self, Layout, STATE_READY, counter, hdr, meta};
use crate::mapping::Mapping;
use crate::names::{self, NameKind};
use crate::record::{Event, KeepReason, Record};
use crate::sampler::Decision;
use crate::slot;

/// Errors from creating or writing a ring file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriterError {
    /// Filesystem trouble, with the path involved.
    #[error("ring file {path}: {source}")]
    Io {
        /// The path being worked on.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The requested size cannot hold even one slot per shard.
    #[error("ring size {size} bytes is too small for {shards} shard(s); need at least {min} bytes")]
    TooSmall {
        /// Requested size.
        size: u64,
        /// Requested shards.
        shards: u32,
        /// Smallest size that works.
        min: u64,
    },
    /// Bad creation parameter.
    #[error("ring option {field}: {reason}")]
    BadOption {
        /// Which option.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Shard index out of range or already taken by another writer.
    #[error("shard {shard}: {reason}")]
    Shard {
        /// The shard asked for.
        shard: u32,
        /// Why it is not available.
        reason: &'static str,
    },
    /// The name table has no free entry.
    #[error("name table full ({capacity} entries); cannot add {kind} {name:?}")]
    NameTableFull {
        /// Capacity of the table.
        capacity: u64,
        /// Kind of the name.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// More than 65535 ids of one kind.
    #[error("id space of {kind} exhausted (65535 names)")]
    IdsExhausted {
        /// The kind.
        kind: &'static str,
    },
}

/// Parameters for [`RingWriter::create_with`].
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Upper bound on the file size in bytes; the slot count per shard is the
    /// largest power of two that fits.
    pub size: u64,
    /// Shards (one per writer thread), 1..=4096.
    pub shards: u32,
    /// Name-table entries.
    pub name_capacity: u64,
    /// Request types with their own sampler counters; higher ids share the last.
    pub type_slots: u32,
    /// Stored in the header for the application.
    pub user_tag: u64,
}

impl CreateOptions {
    /// Defaults: 4096 names, 64 request-type counter slots, tag 0.
    pub fn new(size: u64, shards: u32) -> CreateOptions {
        CreateOptions {
            size,
            shards,
            name_capacity: 4096,
            type_slots: 64,
            user_tag: 0,
        }
    }
}

#[derive(Debug)]
struct Shared {
    map: Mapping,
    layout: Layout,
    taken: Vec<AtomicBool>,
}

#[derive(Debug, Default)]
struct NameState {
    ids: HashMap<(NameKind, String), u32>,
    next_id: HashMap<NameKind, u32>,
    used: u64,
}

/// The owner of a ring file: hands out shard writers and appends names.
#[derive(Debug)]
pub struct RingWriter {
    shared: Arc<Shared>,
    names: Mutex<NameState>,
    path: PathBuf,
}

impl RingWriter {
    /// Creates (or replaces) the ring file at `path` with default options.
    pub fn create(path: &Path, size: u64, shards: u32) -> Result<RingWriter, WriterError> {
        RingWriter::create_with(path, &CreateOptions::new(size, shards))
    }

    /// Creates (or replaces) the ring file at `path`.
    pub fn create_with(path: &Path, opts: &CreateOptions) -> Result<RingWriter, WriterError> {
        let layout = validate(opts)?;
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| WriterError::Io { path: p, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let tmp = temp_path(path);
        let _ = fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let built = (|| {
            let len = layout.file_size().unwrap_or(0);
            file.set_len(len)?;
            reserve(&file, len)?;
            let map = Mapping::writable(&file, len)?;
            init(&map, &layout, opts, len);
            fs::rename(&tmp, path)?;
            Ok(map)
        })();
        let map = match built {
            Ok(map) => map,
            Err(source) => {
                let _ = fs::remove_file(&tmp);
                return Err(WriterError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let taken = (0..layout.shards).map(|_| AtomicBool::new(false)).collect();
        Ok(RingWriter {
            shared: Arc::new(Shared { map, layout, taken }),
            names: Mutex::new(NameState::default()),
            path: path.to_path_buf(),
        })
    }

    /// The file's layout.
    pub fn layout(&self) -> Layout {
        self.shared.layout
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the single writer of `shard`. Fails if it is out of range or
    /// held by a live [`ShardWriter`]; a dropped writer's shard can be taken
    /// again and continues at its head.
    pub fn shard(&self, shard: u32) -> Result<ShardWriter, WriterError> {
        let flag = self
            .shared
            .taken
            .get(shard as usize)
            .ok_or(WriterError::Shard {
                shard,
                reason: "out of range",
            })?;
        if flag.swap(true, Ordering::AcqRel) {
            return Err(WriterError::Shard {
                shard,
                reason: "already has a writer",
            });
        }
        let layout = self.shared.layout;
        let meta_word = layout.meta_word(shard);
        let words = self.shared.map.words();
        let load = |i: usize| {
            words
                .get(meta_word + i)
                .map_or(0, |w| w.load(Ordering::Acquire))
        };
        Ok(ShardWriter {
            shared: Arc::clone(&self.shared),
            shard,
            slots_word: layout.slots_word(shard),
            meta_word,
            mask: layout.slots_per_shard - 1,
            slots: layout.slots_per_shard,
            last_type: layout.type_slots.saturating_sub(1) as usize,
            head: load(meta::HEAD),
            overwritten: load(meta::OVERWRITTEN),
            events: load(meta::EVENTS),
            _not_sync: PhantomData,
        })
    }

    /// Returns the id of `name` of `kind`, appending it (tagged with
    /// `generation`) if new. Ids start at 1; 0 means "none" in records.
    pub fn intern(&self, kind: NameKind, name: &str, generation: u64) -> Result<u16, WriterError> {
        let mut st = self
            .names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(&id) = st.ids.get(&(kind, name.to_string())) {
            return u16::try_from(id).map_err(|_| WriterError::IdsExhausted { kind: kind.name() });
        }
        let id = st.next_id.get(&kind).copied().unwrap_or(1);
        let id16 =
            u16::try_from(id).map_err(|_| WriterError::IdsExhausted { kind: kind.name() })?;
        self.append_name(&mut st, kind, id, name, generation)?;
        st.next_id.insert(kind, id + 1);
        Ok(id16)
    }

    /// Names worker `shard` (kind [`NameKind::Worker`], id = shard index).
    pub fn name_worker(&self, shard: u32, name: &str) -> Result<(), WriterError> {
        let mut st = self
            .names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if st.ids.contains_key(&(NameKind::Worker, name.to_string())) {
            return Ok(());
        }
        self.append_name(&mut st, NameKind::Worker, shard, name, 0)
    }

    fn append_name(
        &self,
        st: &mut NameState,
        kind: NameKind,
        id: u32,
        name: &str,
        generation: u64,
    ) -> Result<(), WriterError> {
        let layout = self.shared.layout;
        if st.used >= layout.name_capacity {
            return Err(WriterError::NameTableFull {
                capacity: layout.name_capacity,
                kind: kind.name(),
                name: name.to_string(),
            });
        }
        let words = self.shared.map.words();
        let base = layout.name_word(st.used);
        if let Some(entry) = words.get(base..base + 16) {
            let enc = names::encode(kind, id, generation, name);
            for (cell, v) in entry.iter().zip(enc).skip(1) {
                cell.store(v, Ordering::Relaxed);
            }
            // Publish: the meta word last, with Release, so a reader that sees
            // it also sees the body.
            entry[0].store(enc[0], Ordering::Release);
        }
        st.used += 1;
        if let Some(w) = words.get(hdr::NAMES_USED) {
            w.store(st.used, Ordering::Release);
        }
        st.ids.insert((kind, name.to_string()), id);
        Ok(())
    }

    /// Asks the kernel to write dirty pages back (asynchronously).
    pub fn flush(&self) -> Result<(), WriterError> {
        self.shared
            .map
            .flush_async()
            .map_err(|source| WriterError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// The single writer of one shard. `Send` (it can move to its worker
/// thread) but not `Sync`: two threads can never write one shard.
///
/// ```compile_fail
/// fn shared<T: Sync>() {}
/// shared::<ringlog::ShardWriter>();
/// ```
/// ```
/// fn movable<T: Send>() {}
/// movable::<ringlog::ShardWriter>();
/// ```
#[derive(Debug)]
pub struct ShardWriter {
    shared: Arc<Shared>,
    shard: u32,
    slots_word: usize,
    meta_word: usize,
    mask: u64,
    slots: u64,
    last_type: usize,
    head: u64,
    overwritten: u64,
    events: u64,
    _not_sync: PhantomData<Cell<()>>,
}

impl ShardWriter {
    /// This writer's shard index.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// The ticket the next write will get.
    pub fn next_ticket(&self) -> u64 {
        self.head
    }

    /// Entries (records and events) this shard overwrote: the flight
    /// recorder's window moving on, not an error.
    pub fn overwritten(&self) -> u64 {
        self.overwritten
    }

    /// Appends a record; returns its ticket.
    #[inline]
    pub fn write(&mut self, record: &Record) -> u64 {
        self.commit(&record.encode())
    }

    /// Appends an event; returns its ticket.
    pub fn write_event(&mut self, event: &Event) -> u64 {
        self.events += 1;
        self.store_meta(meta::EVENTS, self.events);
        self.commit(&event.encode())
    }

    #[inline(always)]
    fn commit(&mut self, body: &[u64; 7]) -> u64 {
        let ticket = self.head;
        let start = self.slots_word + ((ticket & self.mask) as usize) * format::SLOT_WORDS;
        let words = self.shared.map.words();
        if let Some(slot_words) = words.get(start..start + format::SLOT_WORDS) {
            slot::write(slot_words, ticket, body);
        }
        if ticket >= self.slots {
            self.overwritten += 1;
            self.store_meta(meta::OVERWRITTEN, self.overwritten);
        }
        self.head = ticket + 1;
        if let Some(w) = words.get(self.meta_word + meta::HEAD) {
            w.store(self.head, Ordering::Release);
        }
        ticket
    }

    /// Counts one sampler decision for request type `req_type` in the shard's
    /// counters (types beyond the counter slots share the last slot).
    #[inline]
    pub fn count(&mut self, req_type: u16, decision: &Decision) {
        let t = (req_type as usize).min(self.last_type);
        let base = meta::TYPES + t * 8;
        self.bump(base + counter::SEEN);
        if decision.keep {
            self.bump(
                base + match decision.reason {
                    KeepReason::Error => counter::KEPT_ERROR,
                    KeepReason::Slow => counter::KEPT_SLOW,
                    KeepReason::AboveQuantile => counter::KEPT_QUANTILE,
                    KeepReason::Forced => counter::KEPT_FORCED,
                    _ => counter::KEPT_SAMPLED,
                },
            );
        }
        if decision.demoted {
            self.bump(base + counter::FLOOD_DEMOTED);
        }
    }

    /// Publishes the sampler's current halving level.
    pub fn set_sampler_level(&mut self, level: u32) {
        self.store_meta(meta::SAMPLER_LEVEL, u64::from(level));
    }

    #[inline(always)]
    fn bump(&self, idx: usize) {
        // Single writer: a load and a store, no locked read-modify-write.
        if let Some(w) = self.shared.map.words().get(self.meta_word + idx) {
            w.store(w.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    fn store_meta(&self, idx: usize, v: u64) {
        if let Some(w) = self.shared.map.words().get(self.meta_word + idx) {
            w.store(v, Ordering::Relaxed);
        }
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if let Some(flag) = self.shared.taken.get(self.shard as usize) {
            flag.store(false, Ordering::Release);
        }
    }
}

fn validate(opts: &CreateOptions) -> Result<Layout, WriterError> {
    let bad = |field, reason: &str| WriterError::BadOption {
        field,
        reason: reason.to_string(),
    };
    if opts.shards == 0 || opts.shards > format::MAX_SHARDS {
        return Err(bad("shards", "must be between 1 and 4096"));
    }
    if opts.type_slots == 0 || opts.type_slots > format::MAX_TYPE_SLOTS {
        return Err(bad("type_slots", "must be between 1 and 1024"));
    }
    if opts.name_capacity > format::MAX_NAME_CAPACITY {
        return Err(bad("name_capacity", "must be at most 1048576"));
    }
    Layout::fit(opts.size, opts.shards, opts.name_capacity, opts.type_slots).ok_or_else(|| {
        let min = Layout {
            shards: opts.shards,
            slots_per_shard: 1,
            name_capacity: opts.name_capacity,
            type_slots: opts.type_slots,
        }
        .file_size()
        .unwrap_or(u64::MAX);
        WriterError::TooSmall {
            size: opts.size,
            shards: opts.shards,
            min,
        }
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Reserves disk blocks so a full disk fails here rather than as SIGBUS on a
/// later store. Filesystems without fallocate are accepted as they are.
fn reserve(file: &fs::File, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Pre-touches every page and writes the header; the state word goes last.
fn init(map: &Mapping, layout: &Layout, opts: &CreateOptions, len: u64) {
    let words = map.words();
    for w in words.iter().step_by(4096 / 8) {
        w.store(0, Ordering::Relaxed);
    }
    let (mono, real) = clock::anchor();
    let pid = u64::from(std::process::id());
    let set = |i: usize, v: u64| {
        if let Some(w) = words.get(i) {
            w.store(v, Ordering::Relaxed);
        }
    };
    set(hdr::MAGIC, format::MAGIC);
    set(
        hdr::VERSION_RECSIZE,
        u64::from(format::VERSION) | u64::from(format::RECORD_SIZE) << 32,
    );
    set(
        hdr::SHARDS_TYPES,
        u64::from(layout.shards) | u64::from(layout.type_slots) << 32,
    );
    set(hdr::SLOTS_PER_SHARD, layout.slots_per_shard);
    set(hdr::NAME_CAPACITY, layout.name_capacity);
    set(hdr::NAMES_OFFSET, layout.names_offset());
    set(hdr::SHARD_META_OFFSET, layout.shard_meta_offset());
    set(hdr::SHARD_META_SIZE, layout.shard_meta_size());
    set(hdr::SLOTS_OFFSET, layout.slots_offset());
    set(hdr::FILE_SIZE, len);
    set(hdr::MONO_ANCHOR, mono);
    set(hdr::REALTIME_ANCHOR, real);
    set(hdr::WRITER_PID, pid);
    set(hdr::WRITER_START, real);
    set(
        hdr::INSTANCE,
        crate::synth::mix(real ^ mono.rotate_left(32) ^ pid << 48),
    );
    set(hdr::USER_TAG, opts.user_tag);
    if let Some(w) = words.get(hdr::STATE) {
        w.store(STATE_READY, Ordering::Release);
    }
}

/// Atomic words can be checked by tests without a reader.
#[cfg(test)]
pub(crate) fn words_of(w: &RingWriter) -> &[std::sync::atomic::AtomicU64] {
    w.shared.map.words()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_validates_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        let e = RingWriter::create(&p, 1000, 2).unwrap_err().to_string();
        assert!(e.contains("too small"), "{e}");
        let e = RingWriter::create(&p, 1 << 20, 0).unwrap_err().to_string();
        assert!(e.contains("shards"), "{e}");
        let w = RingWriter::create(&p, 1 << 20, 2).unwrap();
        assert!(w.layout().slots_per_shard.is_power_of_two());
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            w.layout().file_size().unwrap()
        );
        assert_eq!(
            words_of(&w)[hdr::STATE].load(Ordering::Relaxed),
            STATE_READY
        );
    }

    #[test]
    fn shards_are_exclusive_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let w = RingWriter::create(&dir.path().join("r"), 1 << 20, 2).unwrap();
        let mut s0 = w.shard(0).unwrap();
        assert!(w.shard(0).is_err());
        assert!(w.shard(2).is_err());
        s0.write(&Record::default());
        s0.write(&Record::default());
        drop(s0);
        assert_eq!(w.shard(0).unwrap().next_ticket(), 2);
    }

    #[test]
    fn names_are_interned_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CreateOptions {
            name_capacity: 3,
            ..CreateOptions::new(1 << 20, 1)
        };
        let w = RingWriter::create_with(&dir.path().join("r"), &opts).unwrap();
        assert_eq!(w.intern(NameKind::Route, "a", 1).unwrap(), 1);
        assert_eq!(w.intern(NameKind::Route, "b", 2).unwrap(), 2);
        assert_eq!(w.intern(NameKind::Route, "a", 3).unwrap(), 1);
        assert_eq!(w.intern(NameKind::Cluster, "a", 3).unwrap(), 1);
        let e = w.intern(NameKind::Cluster, "z", 3).unwrap_err();
        assert!(matches!(e, WriterError::NameTableFull { .. }), "{e}");
        assert_eq!(words_of(&w)[hdr::NAMES_USED].load(Ordering::Relaxed), 3);
    }
}
