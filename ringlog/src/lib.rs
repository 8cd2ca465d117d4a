//! The tailmesh flight recorder.
//!
//! One memory-mapped file holds a header, an append-only name table, per-shard
//! counters and one ring of 64-byte slots per shard (one shard per worker).
//! Each kept request becomes one [`Record`]; agent happenings become
//! [`Event`]s on the same timeline. Writers ([`ShardWriter`]) never block, never
//! allocate and make no syscall; readers ([`RingReader`]) map the file
//! read-only and may run while the writer is active, accepting only records
//! whose per-slot sequence word proves them complete.
//!
//! The byte-level format is documented in `docs/RINGLOG.md`; [`format`] is
//! its single source of truth in code.

pub mod analyze;
pub mod clock;
pub mod format;
pub mod fuzzing;
mod mapping;
pub mod names;
pub mod reader;
pub mod record;
pub mod sampler;
pub mod scenario;
mod slot;
pub mod synth;
pub mod units;
pub mod writer;

pub use names::{NameKind, NameTable};
pub use reader::{Entry, Follower, Header, OpenError, RingReader, RingView, SkipStats, SlotRead};
pub use record::{Event, EventKind, Flags, Item, KeepReason, Phase, Reason, Record};
pub use sampler::{Decision, Sampler, SamplerConfig, TypeRule};
pub use writer::{CreateOptions, RingWriter, ShardWriter, WriterError};
