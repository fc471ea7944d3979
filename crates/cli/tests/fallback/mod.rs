//! A crash that cannot be resurrected safely, made on purpose in a real
//! `lazarus run`: a wild write corrupts the kernel's process table (as
//! `crates/resurrect/tests/fallback.rs` does from inside the hypervisor),
//! then the kernel crashes; the repair program refuses ("the process
//! table is corrupt") and the VM reboots.
#![allow(dead_code)]

use std::mem::{offset_of, size_of};
use std::path::Path;
use std::time::Duration;

use lazarus_abi::root::{KernelRoot, MAX_PROCS, Proc};
use lazarus_testkit::{Guest, PROMPT};

/// Where the kernel's state root is: from the note of an on-demand dump
/// (`PUT /dump` on the API at `sock`).
pub fn root_gpa(sock: &Path) -> u64 {
    let r = lazarus_api::Client::new(sock)
        .with_timeout(Duration::from_secs(60))
        .request("PUT", "/dump", Some(br#"{"reason":"find the state root"}"#))
        .expect("PUT /dump");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    let dump = v["dump"].as_str().expect("a dump path");
    let d = lazarus_dump::Dump::open(Path::new(dump)).expect("read the dump");
    d.note()
        .root_gpa
        .expect("the kernel registered its state root")
}

/// Corrupts the process table (the last slot claims pid 3, running),
/// crashes the kernel with a null read and waits for the reboot's shell.
pub fn crash_beyond_repair(g: &mut Guest, sock: &Path) {
    let slot = MAX_PROCS - 1;
    // pid and state are adjacent u32s: one 8-byte write sets both.
    assert_eq!(offset_of!(Proc, state), offset_of!(Proc, pid) + 4);
    let gpa = root_gpa(sock)
        + (offset_of!(KernelRoot, procs) + slot * size_of::<Proc>() + offset_of!(Proc, pid)) as u64;
    let out = g.cmd(&format!("crash poke {gpa:#x} {:#x}", (1u64 << 32) | 3));
    assert!(out.contains("done"), "{out}");
    g.send("crash null-read");
    g.wait_host_lines(
        &[
            "lazarus: cannot resurrect it safely",
            "lazarus: rebooted after the crash",
        ],
        Duration::from_secs(60),
    );
    g.send("echo after-the-reboot");
    g.expect("after-the-reboot\n", Duration::from_secs(30));
    g.expect(PROMPT, Duration::from_secs(30));
}

/// `crash KIND`, resurrected; back at the prompt.
pub fn crash_and_resurrect(g: &mut Guest, kind: &str) -> String {
    g.send(&format!("crash {kind}"));
    g.expect("[lazarus] resurrected after ", Duration::from_secs(30));
    let rest = g.expect("\n", Duration::from_secs(5));
    g.resync();
    format!("resurrected after {rest}")
}
