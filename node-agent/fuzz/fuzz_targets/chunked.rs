//! Fuzzes the chunked decoder, whole and split.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    node_agent::fuzzing::chunked_body(data);
});
