//! What each fuzz target does with one input.
//!
//! Every target is a `fn(&[u8])` that feeds the bytes to one of lazarus's
//! parsers or devices the way hostile input reaches it (a guest, an API
//! client, a file on disk) and panics only when the code under test broke
//! a promise: it panicked itself, or an invariant checked here failed (a
//! hypercall wrote guest RAM it must not touch, the UART lost or invented
//! a byte, an API answer is not well-formed HTTP with a JSON body).
//!
//! The libFuzzer binaries in `fuzz/` call these functions, and so do the
//! tests in `tests/replay.rs`, which run every file of the committed
//! corpus and of the regression inputs under plain `cargo test`: a bug the
//! fuzzer found stays fixed without the fuzzer. See `docs/FUZZING.md`.

pub mod api;
pub mod cpio;
pub mod dump;
pub mod elf;
pub mod hypercall;
pub mod serial;
pub mod virtio_blk;

/// A fuzz target: what it is called (its directory under `fuzz/corpus/`
/// and `fuzz/regressions/`, and its binary in `fuzz/`) and its function.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Name of the target.
    pub name: &'static str,
    /// Runs one input.
    pub run: fn(&[u8]),
}

/// Every fuzz target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "api",
        run: api::run,
    },
    Target {
        name: "cpio",
        run: cpio::run,
    },
    Target {
        name: "dump",
        run: dump::run,
    },
    Target {
        name: "elf",
        run: elf::run,
    },
    Target {
        name: "hypercall",
        run: hypercall::run,
    },
    Target {
        name: "serial",
        run: serial::run,
    },
    Target {
        name: "virtio_blk",
        run: virtio_blk::run,
    },
];
