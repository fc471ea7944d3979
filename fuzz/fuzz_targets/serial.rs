#![no_main]
//! Fuzz target `serial`: see `lazarus_fuzz_harness::serial`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| lazarus_fuzz_harness::serial::run(data));
