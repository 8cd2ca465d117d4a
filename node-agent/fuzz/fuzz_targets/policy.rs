//! Fuzzes the policy config sections and the breaker / rate-limit state
//! machines with arbitrary event sequences.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    node_agent::fuzzing::policy_events(data);
});
