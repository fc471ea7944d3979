//! Resurrection: for every crash kind, the kernel is repaired and resumed
//! while the kv store holds data and workers run. The OS keeps running,
//! the offender is quarantined, no kv key is lost, workers progress.

mod common;
use common::{Guest, kv_check, path_str, temp_dir};
use std::time::Duration;
use tempfile::TempDir;

/// Boots with the default policy (resurrect), data and two workers.
fn boot_loaded(name: &str) -> (Guest, TempDir) {
    boot_loaded_with(name, &[])
}

/// [`boot_loaded`] with more options.
fn boot_loaded_with(name: &str, extra: &[&str]) -> (Guest, TempDir) {
    let dir = temp_dir(name);
    let mut args = vec!["--memory", "64", "--data-dir", path_str(dir.path())];
    args.extend_from_slice(extra);
    let mut g = common::boot_with(&args);
    g.cmd("kv fill 60");
    g.cmd("run worker alpha 600 &");
    g.cmd("run worker beta 600 &");
    g.wait_lines(
        &["worker alpha: round", "worker beta: round"],
        Duration::from_secs(30),
    );
    g.resync();
    (g, dir)
}

/// Runs `crash KIND` and returns the hypervisor's resurrection line.
fn crash_and_resurrect(g: &mut Guest, kind: &str) -> String {
    g.send(&format!("crash {kind}"));
    let line = g.expect("[lazarus] resurrected after ", Duration::from_secs(30));
    let rest = g.expect("\n", Duration::from_secs(5));
    assert!(!line.contains("cannot resurrect"), "{}", g.transcript);
    format!("resurrected after {rest}")
}

/// Where some crash kinds happen, as the repair image's symbols name it.
fn crashing_function(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "null-read" => "crashtest::faults::read_at",
        "wild-write" => "crashtest::faults::wild_write",
        "divide" => "crashtest::faults::divide_by_zero",
        "stack-overflow" => "crashtest::faults::recurse",
        "list-corruption" => "lazarus_kernel::klist::corrupted",
        _ => return None,
    })
}

/// The worker printed a new round after the current read position.
fn worker_progresses(g: &mut Guest, name: &str) {
    g.expect(&format!("worker {name}: round"), Duration::from_secs(30));
}

fn check_kind(kind: &str, expect_kind: &str, blames_process: bool) {
    let (mut g, dir) = boot_loaded(kind);
    let line = crash_and_resurrect(&mut g, kind);
    // Every vCPU was stopped for the repair, not only the crashed one.
    assert!(
        line.contains(" on vCPU ") && line.contains(" of 2: "),
        "{line}"
    );
    assert!(
        line.starts_with(&format!("resurrected after {expect_kind} ")),
        "{line}"
    );
    // The line names the extension and, from the repair image's symbol
    // table, the function that crashed.
    assert!(line.contains(" in extension crashtest (slot "), "{line}");
    if let Some(f) = crashing_function(kind) {
        assert!(line.contains(&format!(" at {f}+0x")), "{line}");
    }
    if blames_process {
        assert!(
            line.contains("quarantined pid") && line.contains("(crash)"),
            "{line}"
        );
        // The parent (the shell) sees the distinct quarantine status.
        g.expect("crash: quarantined", Duration::from_secs(30));
    } else {
        assert!(line.contains("no process to blame"), "{line}");
    }
    survivors_intact(g, expect_kind, dir);
}

/// The OS keeps running after the recovery: new processes, the kv data,
/// the workers; then powers off.
fn survivors_intact(mut g: Guest, expect_kind: &str, dir: TempDir) {
    g.resync();
    let out = g.cmd("run echo still alive");
    assert!(out.contains("still alive"), "{out}\n{}", g.transcript);
    let (intact, lost) = kv_check(&g.cmd("kv check"));
    assert_eq!((intact, lost), (60, 0), "{}", g.transcript);
    // Both workers progress, and so does every CPU (two by default).
    g.every_cpu_progresses(|g| {
        worker_progresses(g, "alpha");
        worker_progresses(g, "beta");
    });
    let ps = g.cmd("ps");
    assert!(ps.contains("kvstore") && ps.contains("worker"), "{ps}");
    let rec = g.cmd("recoveries");
    assert!(rec.contains(expect_kind), "{rec}");
    assert!(g.poweroff().success());
    drop(dir);
}

macro_rules! resurrect_tests {
    ($($name:ident: $crash:literal => $kind:literal, $blame:expr;)*) => {
        $(
            #[test]
            fn $name() {
                check_kind($crash, $kind, $blame);
            }
        )*
    };
}

resurrect_tests! {
    panic: "panic" => "panic", true;
    null_pointer_read: "null-read" => "null-deref", true;
    wild_write: "wild-write" => "wild-write", true;
    general_protection: "gp" => "general-protection", true;
    invalid_opcode: "ud2" => "invalid-opcode", true;
    divide_by_zero: "divide" => "divide-error", true;
    kernel_stack_overflow: "stack-overflow" => "stack-overflow", true;
    hard_lockup: "hard-lockup" => "hard-lockup", true;
    soft_lockup: "soft-lockup" => "soft-lockup", true;
    deadlock: "deadlock" => "deadlock", true;
    double_fault: "double-fault" => "double-fault", true;
    list_corruption: "list-corruption" => "list-corruption", true;
    fault_in_interrupt_context: "timer-fault" => "irq-fault", false;
    triple_fault: "triple-fault" => "triple-fault", true;
    kvm_internal_error: "emulation-failure" => "kvm-internal-error", true;
}

/// An extension that fails without crashing (`crash fail-silent`: its
/// client notices and reports it; `crash overlong-read`: the kernel
/// catches the broken contract) is reset. Its caller is its victim: it is
/// not quarantined, its call returns, and it finds the extension working.
fn check_failure(kind: &str, client_says: &str) {
    let (mut g, dir) = boot_loaded(kind);
    let line = crash_and_resurrect(&mut g, kind);
    assert!(
        line.starts_with("resurrected after extension-failure in extension crashtest (slot "),
        "{line}"
    );
    assert!(line.contains(", reset)"), "{line}");
    assert!(
        line.contains("no process to blame (the extension failed its caller); pid "),
        "{line}"
    );
    g.expect(client_says, Duration::from_secs(30));
    survivors_intact(g, "extension-failure", dir);
}

#[test]
fn fail_silent_extension_reported_by_its_client_is_reset() {
    check_failure(
        "fail-silent",
        "crash: the extension was reset and answers right again",
    );
}

#[test]
fn broken_extension_contract_is_caught_and_reset() {
    check_failure(
        "overlong-read",
        "crash: the extension was reset and reads right again",
    );
}

#[test]
fn survives_fifty_consecutive_crashes_in_one_boot() {
    let (mut g, dir) = boot_loaded("fifty");
    let kinds = [
        "null-read",
        "gp",
        "panic",
        "ud2",
        "divide",
        "wild-write",
        "list-corruption",
        "double-fault",
        "stack-overflow",
        "soft-lockup",
        "hard-lockup",
        "deadlock",
        "timer-fault",
        "triple-fault",
        "emulation-failure",
    ];
    for i in 0..50 {
        let kind = kinds[i % kinds.len()];
        crash_and_resurrect(&mut g, kind);
        g.resync();
        if i % 10 == 9 {
            let (intact, lost) = kv_check(&g.cmd("kv check"));
            assert_eq!(
                (intact, lost),
                (60, 0),
                "after {} crashes:\n{}",
                i + 1,
                g.transcript
            );
        }
    }
    assert!(
        !g.transcript.contains("cannot resurrect"),
        "{}",
        g.transcript
    );
    assert!(!g.transcript.contains("rebooting"), "{}", g.transcript);
    worker_progresses(&mut g, "alpha");
    worker_progresses(&mut g, "beta");
    let out = g.cmd("run echo fifty crashes later");
    assert!(out.contains("fifty crashes later"), "{out}");
    assert!(g.poweroff().success());
    drop(dir);
}

/// The single-CPU kernel still resurrects: every crash kind in one boot
/// on one vCPU, with the data and the workers intact.
#[test]
fn every_crash_kind_in_one_boot_on_one_vcpu() {
    let (mut g, dir) = boot_loaded_with("one-vcpu", &["--vcpus", "1"]);
    for (kind, _, _) in lazarus_abi::dev::crashtest::KINDS {
        let line = crash_and_resurrect(&mut g, kind);
        assert!(!line.contains(" on vCPU "), "one vCPU: {line}");
        g.resync();
    }
    survivors_intact(g, "kvm-internal-error", dir);
}

#[test]
fn repair_image_is_reported_and_fits_in_two_mib() {
    let dir = temp_dir("image-size");
    let g = common::boot_with(&["--memory", "64", "--data-dir", path_str(dir.path())]);
    let t = g.transcript.clone();
    let line = t
        .lines()
        .find(|l| l.contains("repair image:"))
        .unwrap_or_else(|| panic!("{t}"));
    let kib: u64 = line
        .split("repair image: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(kib <= 2048, "repair image is {kib} KiB (> 2 MiB): {line}");
    assert!(g.poweroff().success());
    drop(dir);
}

/// The repair image is out of the guest's reach while the guest runs: a
/// ring-0 driver that maps the image's slot address (and the doorbell)
/// never reads the image and cannot change it, while the same probe does
/// read real RAM. Resurrection still works after the attempted writes.
///
/// With a fresh slot per repair there is no memory at that address
/// between repairs (reads give all-ones, writes go nowhere). With the
/// resident slot the address is backed by a decoy: reads give zeros, and
/// a write lands in the decoy, which is thrown away at the next repair.
fn check_image_hidden(slot: &str) {
    use lazarus_abi::repair::{DOORBELL_GPA, HEADER_MAGIC, SLOT_GPA, SLOT_SIZE};
    let dir = temp_dir(&format!("hidden-{slot}"));
    let mut g = common::boot_with(&[
        "--memory",
        "64",
        "--data-dir",
        path_str(dir.path()),
        "--repair-slot",
        slot,
    ]);
    // The probe works: BootInfo's magic sits at guest-physical 0x1000.
    let boot = g.cmd("crash peek 0x1000");
    let magic = u64::from_le_bytes(*b"LZRSBOOT");
    assert!(boot.contains(&format!("= {magic:#x}")), "{boot}");
    let empty = if slot == "fresh" { u64::MAX } else { 0 };
    let slot_addrs = [SLOT_GPA, SLOT_GPA + SLOT_SIZE / 2, SLOT_GPA + SLOT_SIZE - 8];
    let peek = |g: &mut Guest, gpa: u64| {
        let out = g.cmd(&format!("crash peek {gpa:#x}"));
        assert!(!out.contains(&format!("{HEADER_MAGIC:#x}")), "{out}");
        out
    };
    for gpa in slot_addrs {
        let out = peek(&mut g, gpa);
        assert!(
            out.contains(&format!("peek {gpa:#x} = {empty:#x}")),
            "{out}"
        );
        let out = g.cmd(&format!("crash poke {gpa:#x} 0x5a5a5a5a"));
        assert!(out.contains("done"), "{out}");
    }
    let out = peek(&mut g, DOORBELL_GPA);
    assert!(out.contains(&format!("= {:#x}", u64::MAX)), "{out}");
    let line = crash_and_resurrect(&mut g, "null-read");
    assert!(line.starts_with("resurrected after null-deref"), "{line}");
    g.resync();
    // After a repair the image is gone again and the guest's writes did
    // not reach it (the repair above read its header and tables intact).
    for gpa in slot_addrs {
        let out = peek(&mut g, gpa);
        assert!(
            out.contains(&format!("peek {gpa:#x} = {empty:#x}")),
            "{out}"
        );
    }
    let line = crash_and_resurrect(&mut g, "null-read");
    assert!(line.starts_with("resurrected after null-deref"), "{line}");
    g.resync();
    assert!(g.poweroff().success());
    drop(dir);
}

#[test]
fn guest_cannot_read_or_write_the_resident_repair_image() {
    check_image_hidden("resident");
}

#[test]
fn guest_cannot_read_or_write_the_fresh_slot_repair_image() {
    check_image_hidden("fresh");
}

/// Corrupted kernel code is restored from the repair image's pristine copy:
/// the corrupted function is the one every later extension log call runs,
/// so the following crash (which logs) proves the code is whole again.
#[test]
fn corrupted_kernel_code_is_restored() {
    let (mut g, dir) = boot_loaded("code");
    let line = crash_and_resurrect(&mut g, "corrupt-code");
    assert!(
        line.starts_with("resurrected after invalid-opcode"),
        "{line}"
    );
    assert!(
        line.contains("restored 2 bytes of corrupted code"),
        "{line}"
    );
    g.resync();
    let line = crash_and_resurrect(&mut g, "null-read");
    assert!(line.starts_with("resurrected after null-deref"), "{line}");
    assert!(
        !line.contains("restored"),
        "the code stayed repaired: {line}"
    );
    g.resync();
    let (intact, lost) = kv_check(&g.cmd("kv check"));
    assert_eq!((intact, lost), (60, 0));
    assert!(g.poweroff().success());
    drop(dir);
}

/// A use-after-free in an extension writes into freed kernel heap memory.
/// The heap's allocation map lives outside the heap, so the allocator
/// survives any number of them, and the repair reclaims the extension's
/// blocks on every reset.
#[test]
fn repeated_use_after_free_never_corrupts_the_allocator() {
    let (mut g, dir) = boot_loaded("uaf");
    for _ in 0..6 {
        let line = crash_and_resurrect(&mut g, "list-corruption");
        assert!(
            line.starts_with("resurrected after list-corruption"),
            "{line}"
        );
        g.resync();
    }
    g.cmd("insmod rand");
    g.cmd("insmod ramdisk");
    let out = g.cmd("run devtest");
    assert!(out.contains("devtest: ok"), "{out}\n{}", g.transcript);
    let (intact, lost) = kv_check(&g.cmd("kv check"));
    assert_eq!((intact, lost), (60, 0));
    assert!(g.poweroff().success());
    drop(dir);
}
