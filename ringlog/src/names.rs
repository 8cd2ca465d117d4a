//! The append-only name table: ids in records mapped to names.
//!
//! Each entry is 128 bytes (16 words):
//! ```text
//! word 0   meta: 0xA5 << 56 | kind << 48 | len << 32 | id   (0 = free; stored last)
//! word 1   config generation that added the name
//! word 2.. name bytes, UTF-8, `len` bytes, zero padded (at most 112)
//! ```
//! Entries are only ever appended. A config reload adds the names it needs
//! and never rewrites an entry, so records written under any generation
//! resolve for as long as they are in the ring.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::format::NAME_MAX_LEN;

/// Tag in the top byte of a committed entry's meta word.
pub(crate) const NAME_TAG: u64 = 0xA5;

/// What a name names. The numbering is part of the file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum NameKind {
    /// Route (`Record::route`).
    Route = 1,
    /// Cluster (`Record::cluster`).
    Cluster = 2,
    /// Endpoint (`Record::endpoint`).
    Endpoint = 3,
    /// Request type (`Record::req_type`).
    RequestType = 4,
    /// Worker, id = shard index.
    Worker = 5,
    /// Listener.
    Listener = 6,
    /// Peer identity (`Record::peer`): a mutually authenticated TLS
    /// peer's SPIFFE ID.
    Peer = 7,
}

impl NameKind {
    /// All kinds.
    pub const ALL: [NameKind; 7] = [
        NameKind::Route,
        NameKind::Cluster,
        NameKind::Endpoint,
        NameKind::RequestType,
        NameKind::Worker,
        NameKind::Listener,
        NameKind::Peer,
    ];
    /// Decodes the on-disk kind byte.
    pub fn from_code(code: u8) -> Option<NameKind> {
        NameKind::ALL.into_iter().find(|k| *k as u8 == code)
    }
    /// Display name of the kind.
    pub fn name(self) -> &'static str {
        match self {
            NameKind::Route => "route",
            NameKind::Cluster => "cluster",
            NameKind::Endpoint => "endpoint",
            NameKind::RequestType => "request_type",
            NameKind::Worker => "worker",
            NameKind::Listener => "listener",
            NameKind::Peer => "peer",
        }
    }
}

/// One decoded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// Kind.
    pub kind: NameKind,
    /// Id within the kind.
    pub id: u32,
    /// Generation that added it.
    pub generation: u64,
    /// The name (invalid UTF-8 is replaced, never rejected).
    pub name: String,
}

/// Encodes an entry's 16 words; `name` is truncated to a char boundary at
/// [`NAME_MAX_LEN`] bytes.
pub(crate) fn encode(kind: NameKind, id: u32, generation: u64, name: &str) -> [u64; 16] {
    let mut end = name.len().min(NAME_MAX_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = &name.as_bytes()[..end];
    let mut w = [0u64; 16];
    w[0] = NAME_TAG << 56 | u64::from(kind as u8) << 48 | (end as u64) << 32 | u64::from(id);
    w[1] = generation;
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        w[2 + i] = u64::from_le_bytes(b);
    }
    w
}

/// Decodes an entry; `None` for a free or malformed entry.
pub(crate) fn decode(entry: &[AtomicU64]) -> Option<NameEntry> {
    let meta = crate::slot::load_acquire(entry.first()?);
    if meta >> 56 != NAME_TAG {
        return None;
    }
    let kind = NameKind::from_code((meta >> 48) as u8)?;
    let len = ((meta >> 32) & 0xffff) as usize;
    if len > NAME_MAX_LEN || entry.len() < 16 {
        return None;
    }
    let mut bytes = Vec::with_capacity(len);
    for cell in &entry[2..16] {
        bytes.extend_from_slice(&cell.load(Ordering::Relaxed).to_le_bytes());
    }
    bytes.truncate(len);
    Some(NameEntry {
        kind,
        id: meta as u32,
        generation: entry[1].load(Ordering::Relaxed),
        name: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// A reader's snapshot of the name table.
#[derive(Debug, Clone, Default)]
pub struct NameTable {
    by_id: HashMap<(NameKind, u32), String>,
    entries: Vec<NameEntry>,
}

impl NameTable {
    /// Builds from decoded entries (first entry for an id wins).
    pub fn from_entries(entries: Vec<NameEntry>) -> NameTable {
        let mut by_id = HashMap::new();
        for e in &entries {
            by_id
                .entry((e.kind, e.id))
                .or_insert_with(|| e.name.clone());
        }
        NameTable { by_id, entries }
    }
    /// The name for `id` of `kind`, if known.
    pub fn get(&self, kind: NameKind, id: u32) -> Option<&str> {
        self.by_id.get(&(kind, id)).map(String::as_str)
    }
    /// The name, or `-` for id 0, or `#id` when unknown.
    pub fn display(&self, kind: NameKind, id: u32) -> String {
        match self.get(kind, id) {
            Some(n) => n.to_string(),
            None if id == 0 && kind != NameKind::Worker => "-".to_string(),
            None => format!("#{id}"),
        }
    }
    /// All entries in table order.
    pub fn entries(&self) -> &[NameEntry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(w: [u64; 16]) -> Vec<AtomicU64> {
        w.into_iter().map(AtomicU64::new).collect()
    }

    #[test]
    fn round_trip_and_truncation() {
        let e = decode(&cells(encode(NameKind::Endpoint, 7, 3, "10.0.0.1:8080"))).unwrap();
        assert_eq!(
            (e.kind, e.id, e.generation, e.name.as_str()),
            (NameKind::Endpoint, 7, 3, "10.0.0.1:8080")
        );
        let long = "é".repeat(100); // 200 bytes
        let e = decode(&cells(encode(NameKind::Route, 1, 0, &long))).unwrap();
        assert!(e.name.len() <= NAME_MAX_LEN && e.name.chars().all(|c| c == 'é'));
    }

    #[test]
    fn garbage_is_rejected_not_panicking() {
        assert!(decode(&cells([0; 16])).is_none());
        let mut w = encode(NameKind::Route, 1, 0, "x");
        w[0] |= 0xff << 32; // len 255 > max
        assert!(decode(&cells(w)).is_none());
        let mut w = encode(NameKind::Route, 1, 0, "x");
        w[0] = (w[0] & !(0xff << 48)) | 99 << 48; // unknown kind
        assert!(decode(&cells(w)).is_none());
    }
}
