//! Differential fuzzing of the whole request path: what the session sends
//! upstream must re-frame as exactly the client's requests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    node_agent::fuzzing::session_stream(data);
});
