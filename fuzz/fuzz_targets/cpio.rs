#![no_main]
//! Fuzz target `cpio`: see `lazarus_fuzz_harness::cpio`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| lazarus_fuzz_harness::cpio::run(data));
