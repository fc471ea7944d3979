#![no_main]
//! Fuzz target `elf`: see `lazarus_fuzz_harness::elf`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| lazarus_fuzz_harness::elf::run(data));
