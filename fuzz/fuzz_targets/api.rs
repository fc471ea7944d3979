#![no_main]
//! Fuzz target `api`: see `lazarus_fuzz_harness::api`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| lazarus_fuzz_harness::api::run(data));
