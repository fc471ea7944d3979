#![no_main]
//! Fuzz target `hypercall`: see `lazarus_fuzz_harness::hypercall`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| lazarus_fuzz_harness::hypercall::run(data));
