//! Test support shared by the integration tests of every lazarus crate,
//! instead of a copy in each: [`require_kvm`] (tests fail loudly, never
//! skip, where KVM is missing), booting the default guest in-process
//! ([`vm`]) or as a `lazarus run` process driven through its console
//! ([`console`]), and temporary directories that clean up after
//! themselves ([`temp_dir`]).
//!
//! Use it from integration tests (`tests/*.rs`) only: a crate's own unit
//! tests would link a second copy of that crate.

pub mod console;
pub mod vm;

use std::path::Path;

pub use console::{Guest, PROMPT, cpu_busy_ticks, kv_check};
pub use vm::{VmGuest, boot_vm, default_config};

/// Fails the test, with a clear message, when this machine cannot run
/// guests: lazarus tests exercise the real KVM and never skip.
pub fn require_kvm() {
    let kvm = Path::new("/dev/kvm");
    assert!(
        kvm.exists(),
        "/dev/kvm is missing: lazarus tests boot a real guest under KVM and cannot run here"
    );
    assert!(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(kvm)
            .is_ok(),
        "/dev/kvm exists but cannot be opened read-write by this user"
    );
}

/// The kv store's disk log in the image at `image`, replayed from the host
/// by the same rules the kvstore follows at start
/// (`lazarus_abi::dev::kvlog`): the store it holds and how many changes
/// made it. Panics on an unreadable image or one with no valid log.
pub fn kv_log(image: &Path) -> (std::collections::BTreeMap<Vec<u8>, Vec<u8>>, u64) {
    use lazarus_abi::dev::kvlog::{self, BLOCK, OP_DEL, OP_PUT};
    let data = std::fs::read(image).expect("read the disk image");
    let region = kvlog::region(data.len() as u64);
    let (base, half_blocks) = (
        region.start as usize,
        (region.end - region.start) as usize / BLOCK / 2,
    );
    let half_bytes = |half: usize| {
        let at = base + half * half_blocks * BLOCK;
        &data[at..at + half_blocks * BLOCK]
    };
    let first = [0, 1].map(|h| {
        <&[u8; BLOCK]>::try_from(&half_bytes(h)[..BLOCK])
            .ok()
            .and_then(kvlog::open)
    });
    let (half, generation) = kvlog::newest_half(first).expect("a valid log on the disk");
    let mut map = std::collections::BTreeMap::new();
    let mut changes = 0;
    kvlog::replay_blocks(
        half_bytes(half as usize),
        0,
        generation,
        |op, key, value| {
            changes += 1;
            match op {
                OP_PUT => {
                    map.insert(key.to_vec(), value.to_vec());
                }
                OP_DEL => {
                    map.remove(key);
                }
                other => panic!("a record with op {other} in the log"),
            }
        },
    );
    (map, changes)
}

/// A fresh directory for one test (data directories, sockets, dumps),
/// removed when the returned guard is dropped.
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("lazarus-{name}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a temporary directory for {name}: {e}"))
}

/// A path as a `&str` (test paths are temporary directories, UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", p.display()))
}
