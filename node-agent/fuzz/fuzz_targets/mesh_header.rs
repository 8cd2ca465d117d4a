//! Fuzzes the mesh transport header parser: valid headers round-trip,
//! parsing is incremental over every prefix, and nothing panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    node_agent::fuzzing::mesh_header(data);
});
