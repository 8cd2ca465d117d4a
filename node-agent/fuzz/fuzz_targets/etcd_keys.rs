//! Fuzzes the etcd snapshot builder from arbitrary key/value sets: it
//! validates or rejects, and a valid set builds a snapshot whose listener
//! slots are placed; it never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    node_agent::fuzzing::etcd_keys(data);
});
