//! Fuzzes every read path of a ring file with arbitrary bytes: header
//! validation, name table, shard counters, merged snapshot, follower and
//! verifier. The seed corpus is replayed by `ringlog/tests/reader_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringlog::fuzzing::read_ring_bytes(data);
});
