#![no_main]
//! Fuzz target `dump`: see `lazarus_fuzz_harness::dump`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| lazarus_fuzz_harness::dump::run(data));
