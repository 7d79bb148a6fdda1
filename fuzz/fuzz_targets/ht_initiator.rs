//! Fuzz target: `sasl2_fast::fuzzing::ht_initiator` (the checks are documented there; `cargo test`
//! replays the kept corpus and every crash reproducer through the same function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sasl2_fast::fuzzing::ht_initiator(data));
