//! Reading a ring file, also while its writer is active.
//!
//! [`RingReader::open`] maps the file read-only and validates the header;
//! [`RingView`] does all the work over `&[AtomicU64]`, so the same code reads
//! a live file, a copy in memory, or fuzzer bytes. Every slot read is
//! classified ([`SlotRead`]); only committed, stable slots holding the
//! expected ticket are accepted, and every skipped slot is counted in
//! [`SkipStats`].

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use crate::format::{self, Layout, STATE_READY, counter, hdr, meta};
use crate::mapping::Mapping;
use crate::names::{self, NameTable};
pub use crate::record::Item;
use crate::slot::{self, Read};

mod follow;
pub use follow::Follower;

/// Why a ring file could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file could not be opened or mapped.
    #[error("cannot open ring file {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The first 8 bytes are not `TAILRING`.
    #[error("not a tailmesh ring file (bad magic {found:#018x})")]
    BadMagic {
        /// What was found instead.
        found: u64,
    },
    /// A format version this reader does not know.
    #[error(
        "ring format version {found} is not supported (this ringlog reads version {supported})"
    )]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The file is shorter than its header says.
    #[error("ring file truncated: {actual} bytes, header needs {expected}")]
    Truncated {
        /// Actual length.
        actual: u64,
        /// Length the header requires.
        expected: u64,
    },
    /// The writer has not finished initialising the header.
    #[error("ring file is still being initialised by its writer")]
    NotReady,
    /// A header field is out of range or inconsistent.
    #[error("ring header field {field} is invalid: {reason}")]
    BadHeader {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The validated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u32,
    /// Shape of the file.
    pub layout: Layout,
    /// File size in bytes.
    pub file_size: u64,
    /// Monotonic clock anchor (ns).
    pub mono_anchor: u64,
    /// Realtime clock anchor (ns since the epoch).
    pub realtime_anchor: u64,
    /// Writer process id.
    pub writer_pid: u64,
    /// Writer start (ns since the epoch).
    pub writer_start: u64,
    /// Random id of this file instance.
    pub instance: u64,
    /// Application tag.
    pub user_tag: u64,
}

impl Header {
    /// Converts a monotonic timestamp from a record to wall ns.
    pub fn wall_ns(&self, mono: u64) -> u64 {
        crate::clock::to_wall(mono, self.mono_anchor, self.realtime_anchor)
    }
}

/// Outcome of reading one slot for one expected ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRead {
    /// Accepted.
    Item(Item),
    /// Never written.
    Empty,
    /// A write is in progress in this slot.
    InProgress,
    /// Changed while being read.
    Torn,
    /// A newer ticket already replaced the expected one.
    Overwritten,
    /// An older ticket than expected: the head is ahead of the data.
    Stale,
    /// The sequence word cannot belong to this slot.
    Corrupt,
}

/// Counts of slots not accepted, by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipStats {
    /// Never written.
    pub empty: u64,
    /// Write in progress.
    pub in_progress: u64,
    /// Changed during the read.
    pub torn: u64,
    /// Replaced by a newer ticket before it could be read.
    pub overwritten: u64,
    /// Older than expected.
    pub stale: u64,
    /// Impossible sequence word.
    pub corrupt: u64,
}

impl SkipStats {
    /// Counts one non-accepted read.
    pub(crate) fn add(&mut self, r: &SlotRead) {
        match r {
            SlotRead::Item(_) => {}
            SlotRead::Empty => self.empty += 1,
            SlotRead::InProgress => self.in_progress += 1,
            SlotRead::Torn => self.torn += 1,
            SlotRead::Overwritten => self.overwritten += 1,
            SlotRead::Stale => self.stale += 1,
            SlotRead::Corrupt => self.corrupt += 1,
        }
    }
    /// Sum of all classes.
    pub fn total(&self) -> u64 {
        self.empty + self.in_progress + self.torn + self.overwritten + self.stale + self.corrupt
    }
    /// Adds another set of counts.
    pub fn merge(&mut self, o: &SkipStats) {
        self.empty += o.empty;
        self.in_progress += o.in_progress;
        self.torn += o.torn;
        self.overwritten += o.overwritten;
        self.stale += o.stale;
        self.corrupt += o.corrupt;
    }
}

/// An accepted slot with where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Shard (worker) index.
    pub shard: u32,
    /// Ticket within the shard.
    pub ticket: u64,
    /// The record or event.
    pub item: Item,
}

/// A shard's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStats {
    /// Next ticket (records + events written).
    pub head: u64,
    /// Committed records later overwritten.
    pub overwritten: u64,
    /// Events written.
    pub events: u64,
    /// Sampler halving level.
    pub sampler_level: u64,
    /// Sampler counters by request type id (the last slot also counts
    /// every higher id).
    pub types: Vec<TypeCounters>,
}

/// One request type's sampler counters in one shard (or summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeCounters {
    /// Requests the sampler saw.
    pub seen: u64,
    /// Kept by the probabilistic rate.
    pub kept_sampled: u64,
    /// Kept because they failed.
    pub kept_error: u64,
    /// Kept because slower than the static threshold.
    pub kept_slow: u64,
    /// Kept because above the rolling quantile.
    pub kept_quantile: u64,
    /// Kept because forced by the caller.
    pub kept_forced: u64,
    /// Errors or slow requests over the flood cap, sampled like the rest.
    pub flood_demoted: u64,
}

impl TypeCounters {
    /// All records kept.
    pub fn kept(&self) -> u64 {
        // Values come from the file; saturate rather than trust them.
        [
            self.kept_error,
            self.kept_slow,
            self.kept_quantile,
            self.kept_forced,
        ]
        .into_iter()
        .fold(self.kept_sampled, u64::saturating_add)
    }
    /// Requests sampled out (seen minus kept; 0 if a torn read makes it negative).
    pub fn dropped(&self) -> u64 {
        self.seen.saturating_sub(self.kept())
    }
    /// Adds another set.
    pub fn merge(&mut self, o: &TypeCounters) {
        self.seen = self.seen.saturating_add(o.seen);
        self.kept_sampled = self.kept_sampled.saturating_add(o.kept_sampled);
        self.kept_error = self.kept_error.saturating_add(o.kept_error);
        self.kept_slow = self.kept_slow.saturating_add(o.kept_slow);
        self.kept_quantile = self.kept_quantile.saturating_add(o.kept_quantile);
        self.kept_forced = self.kept_forced.saturating_add(o.kept_forced);
        self.flood_demoted = self.flood_demoted.saturating_add(o.flood_demoted);
    }
    /// (name, value) pairs in display order, `dropped` derived.
    pub fn named(&self) -> [(&'static str, u64); 8] {
        [
            ("seen", self.seen),
            ("kept_sampled", self.kept_sampled),
            ("kept_error", self.kept_error),
            ("kept_slow", self.kept_slow),
            ("kept_quantile", self.kept_quantile),
            ("kept_forced", self.kept_forced),
            ("dropped", self.dropped()),
            ("flood_demoted", self.flood_demoted),
        ]
    }
}

/// Tickets per block when a scan is split into parts (256 KiB of slots:
/// long enough for sequential reads, short enough to spread hot spots).
pub const PART_BLOCK: u64 = 4096;

/// A validated view over the words of a ring file.
#[derive(Debug, Clone, Copy)]
pub struct RingView<'a> {
    words: &'a [AtomicU64],
    header: Header,
}

impl<'a> RingView<'a> {
    /// Validates the header over `words` (the whole file).
    pub fn new(words: &'a [AtomicU64]) -> Result<RingView<'a>, OpenError> {
        let header = parse_header(words)?;
        Ok(RingView { words, header })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.header.layout.shards
    }

    fn load(&self, i: usize) -> u64 {
        self.words.get(i).map_or(0, slot::load_acquire)
    }

    /// Snapshot of the name table.
    pub fn names(&self) -> NameTable {
        let layout = self.header.layout;
        let mut entries = Vec::new();
        for i in 0..layout.name_capacity {
            let base = layout.name_word(i);
            match self.words.get(base..base + 16).and_then(names::decode) {
                Some(e) => entries.push(e),
                None => break,
            }
        }
        NameTable::from_entries(entries)
    }

    /// A shard's counters.
    pub fn shard_stats(&self, shard: u32) -> ShardStats {
        let m = self.header.layout.meta_word(shard);
        let types = (0..self.header.layout.type_slots as usize)
            .map(|t| {
                let c = |i: usize| self.load(m + meta::TYPES + t * 8 + i);
                TypeCounters {
                    seen: c(counter::SEEN),
                    kept_sampled: c(counter::KEPT_SAMPLED),
                    kept_error: c(counter::KEPT_ERROR),
                    kept_slow: c(counter::KEPT_SLOW),
                    kept_quantile: c(counter::KEPT_QUANTILE),
                    kept_forced: c(counter::KEPT_FORCED),
                    flood_demoted: c(counter::FLOOD_DEMOTED),
                }
            })
            .collect();
        ShardStats {
            head: self.load(m + meta::HEAD),
            overwritten: self.load(m + meta::OVERWRITTEN),
            events: self.load(m + meta::EVENTS),
            sampler_level: self.load(m + meta::SAMPLER_LEVEL),
            types,
        }
    }

    /// Reads `ticket` of `shard`.
    pub fn read(&self, shard: u32, ticket: u64) -> SlotRead {
        let layout = self.header.layout;
        let mask = layout.slots_per_shard - 1;
        let start = layout.slots_word(shard) + ((ticket & mask) as usize) * format::SLOT_WORDS;
        let Some(s) = self.words.get(start..start + format::SLOT_WORDS) else {
            return SlotRead::Corrupt;
        };
        match slot::read(s, ticket, mask) {
            Read::Ok(body) => SlotRead::Item(Item::decode(&body)),
            Read::Empty => SlotRead::Empty,
            Read::InProgress => SlotRead::InProgress,
            Read::Torn => SlotRead::Torn,
            Read::Other(found) if found > ticket => SlotRead::Overwritten,
            Read::Other(_) => SlotRead::Stale,
            Read::Corrupt => SlotRead::Corrupt,
        }
    }

    /// The shard's committed ticket range `[first, end)` right now. The head
    /// word is published after each commit, so a writer that died between
    /// the two leaves one committed ticket past it: probe forward for it.
    pub fn range(&self, shard: u32) -> (u64, u64) {
        let slots = self.header.layout.slots_per_shard;
        let mut end = self.load(self.header.layout.meta_word(shard) + meta::HEAD);
        for _ in 0..2 {
            match self.read(shard, end) {
                SlotRead::Item(_) => end = end.saturating_add(1),
                _ => break,
            }
        }
        (end.saturating_sub(slots), end)
    }

    /// Iterates every accepted slot of every shard, merged by time
    /// (a record's end, an event's time). Memory: one pending item per shard.
    pub fn snapshot(&self) -> Snapshot<'a> {
        let cursors = (0..self.shards())
            .map(|s| {
                let (first, end) = self.range(s);
                Cursor {
                    shard: s,
                    next: first,
                    end,
                    pending: None,
                }
            })
            .collect();
        Snapshot {
            view: *self,
            cursors,
            skips: SkipStats::default(),
        }
    }

    /// Visits every accepted slot, shard by shard in ticket order (not
    /// merged by time): for aggregations that do not care about order, a
    /// straight sequential read of each shard. Returns the skipped slots.
    pub fn for_each_unordered(&self, f: impl FnMut(&Entry)) -> SkipStats {
        self.for_each_unordered_part(0, 1, f)
    }

    /// Like [`RingView::for_each_unordered`], over part `part` of `parts`:
    /// each shard's ticket range is cut into blocks of [`PART_BLOCK`]
    /// tickets dealt round-robin to the parts, and this visits part `part`'s
    /// blocks of every shard. Calling it for every part (e.g. one per
    /// thread) visits each slot exactly once; dealing blocks rather than
    /// halves keeps the parts even when the work is bunched in time (a
    /// `--since` window, a spike). `parts` of 0 counts as 1; a `part` at or
    /// past `parts` visits nothing.
    pub fn for_each_unordered_part(
        &self,
        part: usize,
        parts: usize,
        mut f: impl FnMut(&Entry),
    ) -> SkipStats {
        let mut skips = SkipStats::default();
        let parts = parts.max(1) as u64;
        let part = part as u64;
        if part >= parts {
            return skips;
        }
        let stride = PART_BLOCK.saturating_mul(parts);
        for shard in 0..self.shards() {
            let (first, end) = self.range(shard);
            let mut block = first.saturating_add(part * PART_BLOCK);
            while block < end {
                let stop = block.saturating_add(PART_BLOCK).min(end);
                self.visit(shard, block..stop, &mut skips, &mut f);
                block = block.saturating_add(stride);
            }
        }
        skips
    }

    /// Reads tickets `range` of `shard` in order: every accepted entry goes
    /// to `f`, every skipped slot is counted in `skips`.
    pub(crate) fn visit(
        &self,
        shard: u32,
        range: std::ops::Range<u64>,
        skips: &mut SkipStats,
        f: &mut impl FnMut(&Entry),
    ) {
        for ticket in range {
            let r = self.read(shard, ticket);
            skips.add(&r);
            if let SlotRead::Item(item) = r {
                f(&Entry {
                    shard,
                    ticket,
                    item,
                });
            }
        }
    }

    /// Sum of every shard's overwritten counter.
    pub fn overwritten(&self) -> u64 {
        // Values come from the file; saturate rather than trust them.
        (0..self.shards())
            .map(|s| self.shard_stats(s).overwritten)
            .fold(0, u64::saturating_add)
    }
}

#[derive(Debug)]
struct Cursor {
    shard: u32,
    next: u64,
    end: u64,
    pending: Option<Entry>,
}

/// Iterator over a shard-merged snapshot; see [`RingView::snapshot`].
#[derive(Debug)]
pub struct Snapshot<'a> {
    view: RingView<'a>,
    cursors: Vec<Cursor>,
    skips: SkipStats,
}

impl Snapshot<'_> {
    /// Slots skipped so far, by class.
    pub fn skips(&self) -> SkipStats {
        self.skips
    }

    fn fill(&mut self) {
        for c in &mut self.cursors {
            while c.pending.is_none() && c.next < c.end {
                let r = self.view.read(c.shard, c.next);
                self.skips.add(&r);
                if let SlotRead::Item(item) = r {
                    c.pending = Some(Entry {
                        shard: c.shard,
                        ticket: c.next,
                        item,
                    });
                }
                c.next += 1;
            }
        }
    }
}

impl Iterator for Snapshot<'_> {
    type Item = Entry;
    fn next(&mut self) -> Option<Entry> {
        self.fill();
        let best = self
            .cursors
            .iter_mut()
            .filter(|c| c.pending.is_some())
            .min_by_key(|c| c.pending.map_or(u64::MAX, |e| e.item.time_key()))?;
        best.pending.take()
    }
}

/// A ring file mapped read-only.
#[derive(Debug)]
pub struct RingReader {
    map: Mapping,
    header: Header,
    path: PathBuf,
    ino: (u64, u64),
}

impl RingReader {
    /// Opens and validates `path`. Works while a writer is active.
    pub fn open(path: &Path) -> Result<RingReader, OpenError> {
        let io_err = |source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let md = file.metadata().map_err(io_err)?;
        let len = md.len();
        if len < format::HEADER_SIZE {
            return Err(OpenError::Truncated {
                actual: len,
                expected: format::HEADER_SIZE,
            });
        }
        let map = Mapping::read_only(&file, len).map_err(io_err)?;
        let header = parse_header(map.words())?;
        Ok(RingReader {
            map,
            header,
            path: path.to_path_buf(),
            ino: (md.dev(), md.ino()),
        })
    }

    /// A view over the mapping.
    pub fn view(&self) -> RingView<'_> {
        RingView {
            words: self.map.words(),
            header: self.header,
        }
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the path now names a different file (the writer restarted
    /// and created a new ring); reopen to follow it.
    pub fn is_replaced(&self) -> bool {
        match std::fs::metadata(&self.path) {
            Ok(md) => (md.dev(), md.ino()) != self.ino,
            Err(_) => false,
        }
    }
}

fn parse_header(words: &[AtomicU64]) -> Result<Header, OpenError> {
    let actual = (words.len() as u64) * 8;
    if actual < format::HEADER_SIZE {
        return Err(OpenError::Truncated {
            actual,
            expected: format::HEADER_SIZE,
        });
    }
    let get = |i: usize| words.get(i).map_or(0, slot::load_acquire);
    let bad = |field, reason: String| OpenError::BadHeader { field, reason };
    let magic = get(hdr::MAGIC);
    if magic != format::MAGIC {
        return Err(OpenError::BadMagic { found: magic });
    }
    let vr = get(hdr::VERSION_RECSIZE);
    let version = vr as u32;
    if version != format::VERSION {
        return Err(OpenError::UnsupportedVersion {
            found: version,
            supported: format::VERSION,
        });
    }
    if get(hdr::STATE) != STATE_READY {
        return Err(OpenError::NotReady);
    }
    if (vr >> 32) as u32 != format::RECORD_SIZE {
        return Err(bad("record_size", format!("{} (must be 64)", vr >> 32)));
    }
    let st = get(hdr::SHARDS_TYPES);
    let (shards, type_slots) = (st as u32, (st >> 32) as u32);
    if shards == 0 || shards > format::MAX_SHARDS {
        return Err(bad("shard_count", format!("{shards} (must be 1..=4096)")));
    }
    if type_slots == 0 || type_slots > format::MAX_TYPE_SLOTS {
        return Err(bad(
            "type_slots",
            format!("{type_slots} (must be 1..=1024)"),
        ));
    }
    let slots_per_shard = get(hdr::SLOTS_PER_SHARD);
    if !slots_per_shard.is_power_of_two() {
        return Err(bad(
            "slots_per_shard",
            format!("{slots_per_shard} (must be a power of two)"),
        ));
    }
    let name_capacity = get(hdr::NAME_CAPACITY);
    if name_capacity > format::MAX_NAME_CAPACITY {
        return Err(bad(
            "name_capacity",
            format!("{name_capacity} (must be <= 1048576)"),
        ));
    }
    let layout = Layout {
        shards,
        slots_per_shard,
        name_capacity,
        type_slots,
    };
    let expected = layout.file_size().ok_or_else(|| {
        bad(
            "slots_per_shard",
            format!("{slots_per_shard} overflows the file size"),
        )
    })?;
    for (field, idx, want) in [
        ("names_offset", hdr::NAMES_OFFSET, layout.names_offset()),
        (
            "shard_meta_offset",
            hdr::SHARD_META_OFFSET,
            layout.shard_meta_offset(),
        ),
        (
            "shard_meta_size",
            hdr::SHARD_META_SIZE,
            layout.shard_meta_size(),
        ),
        ("slots_offset", hdr::SLOTS_OFFSET, layout.slots_offset()),
        ("file_size", hdr::FILE_SIZE, expected),
    ] {
        let found = get(idx);
        if found != want {
            return Err(bad(field, format!("{found} (layout implies {want})")));
        }
    }
    if actual < expected {
        return Err(OpenError::Truncated { actual, expected });
    }
    Ok(Header {
        version,
        layout,
        file_size: expected,
        mono_anchor: get(hdr::MONO_ANCHOR),
        realtime_anchor: get(hdr::REALTIME_ANCHOR),
        writer_pid: get(hdr::WRITER_PID),
        writer_start: get(hdr::WRITER_START),
        instance: get(hdr::INSTANCE),
        user_tag: get(hdr::USER_TAG),
    })
}
