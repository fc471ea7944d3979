#![no_main]
//! Fuzz target `virtio_blk`: see `lazarus_fuzz_harness::virtio_blk`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| lazarus_fuzz_harness::virtio_blk::run(data));
