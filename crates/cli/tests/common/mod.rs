//! The `lazarus` binary under test, driven through lazarus-testkit.
#![allow(dead_code, unused_imports)]

pub use lazarus_testkit::{
    Guest, PROMPT, cpu_busy_ticks, kv_check, kv_log, path_str, require_kvm, temp_dir,
};

/// `lazarus run` with the default options, at its shell prompt.
pub fn boot() -> Guest {
    boot_with(&[])
}

/// `lazarus run EXTRA...`, at its shell prompt.
pub fn boot_with(extra: &[&str]) -> Guest {
    Guest::spawn(env!("CARGO_BIN_EXE_lazarus"), extra)
}

/// Waits until init loaded `virtblk` at boot (its first line says so).
pub fn driver_loaded(g: &mut Guest) {
    g.cmd("echo sync");
    assert!(
        g.console.contains("virtblk: /dev/vda: "),
        "{}",
        g.transcript
    );
}
