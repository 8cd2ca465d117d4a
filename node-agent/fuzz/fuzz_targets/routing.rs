//! Fuzzes the route-match builder and matcher, header edits and every
//! load balancer over live endpoint state: any config validates or is
//! refused, and routing never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    node_agent::fuzzing::routing(data);
});
