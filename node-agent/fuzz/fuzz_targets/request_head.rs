//! Fuzzes the request-head parser, its framing rules and the upstream rewrite.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    node_agent::fuzzing::request_head(data);
});
