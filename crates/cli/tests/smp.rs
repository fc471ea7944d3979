//! A multiprocessor guest: crashes whose other half runs on another CPU.
//! Each scenario crashes the kernel once while the kv store holds data and
//! a worker runs on each CPU; afterwards no key is lost, every CPU keeps
//! doing work, and only the offender is quarantined.

mod common;
use common::{Guest, kv_check, path_str, temp_dir};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// Every CPU did work while both workers reported a round.
fn every_cpu_progresses(g: &mut Guest, cpus: usize) {
    let n = common::cpu_busy_ticks(&g.cmd("cpus")).len();
    assert_eq!(n, cpus, "{}", g.transcript);
    g.every_cpu_progresses(|g| {
        g.expect("worker w0: round", T);
        g.expect("worker w1: round", T);
    });
}

fn boot(name: &str, vcpus: &str) -> (Guest, tempfile::TempDir) {
    let dir = temp_dir(name);
    let mut g = common::boot_with(&[
        "--memory",
        "64",
        "--vcpus",
        vcpus,
        "--data-dir",
        path_str(dir.path()),
    ]);
    let out = g.cmd("cpus");
    assert_eq!(
        out.lines().filter(|l| l.contains(" online ")).count(),
        vcpus.parse::<usize>().unwrap_or(0),
        "{out}"
    );
    g.cmd("kv fill 60");
    g.cmd("run worker w0 900 &");
    g.cmd("run worker w1 900 &");
    g.wait_lines(&["worker w0: round", "worker w1: round"], T);
    g.resync();
    (g, dir)
}

/// Runs `crash SCENARIO` and returns the hypervisor's resurrection line.
fn resurrect(g: &mut Guest, scenario: &str) -> String {
    g.send(&format!("crash {scenario}"));
    g.expect("[lazarus] resurrected after ", T);
    let rest = g.expect("\n", Duration::from_secs(5));
    format!("[lazarus] resurrected after {rest}")
}

fn intact(g: &mut Guest, cpus: usize) {
    g.resync();
    let (ok, lost) = kv_check(&g.cmd("kv check"));
    assert_eq!((ok, lost), (60, 0), "{}", g.transcript);
    every_cpu_progresses(g, cpus);
    // Only the offenders were quarantined: no worker, no kvstore.
    let ps = g.cmd("ps");
    for l in ps.lines().filter(|l| l.contains("quarantined")) {
        assert!(l.ends_with(" crash"), "a bystander was quarantined:\n{ps}");
    }
    assert!(ps.contains("kvstore"), "{ps}");
}

#[test]
fn cross_cpu_crashes_are_repaired_and_every_cpu_carries_on() {
    let (mut g, dir) = boot("smp-cross", "2");
    every_cpu_progresses(&mut g, 2);

    // The offender holds a lock another process spins on (from user
    // mode, on the other CPU): the repair releases it, the spinner gets it.
    let line = resurrect(&mut g, "lock-waiter");
    assert!(line.contains("quarantined pid"), "{line}");
    assert!(line.contains(" on vCPU "), "all vCPUs stopped: {line}");
    g.expect("crash: spin-lock-b: got lock B after", T);
    intact(&mut g, 2);

    // Another process sleeps inside the same extension: a victim, not an
    // offender. Its call is unwound, it carries on, the extension works.
    let line = resurrect(&mut g, "ext-victim");
    assert!(line.contains("quarantined pid"), "{line}");
    g.expect("crash: sleep-in-ext: the call returned", T);
    let rest = g.expect("\n", Duration::from_secs(5));
    assert!(rest.contains("still running; ping ok: true"), "{rest}");
    intact(&mut g, 2);

    // ABBA: the spinner locks up its CPU holding B while the other waits
    // for B holding A. The repair breaks the cycle at the spinner.
    let line = resurrect(&mut g, "abba");
    assert!(
        line.starts_with("[lazarus] resurrected after deadlock "),
        "{line}"
    );
    g.expect("crash: abba: ", T);
    let rest = g.expect("\n", Duration::from_secs(5));
    assert!(
        rest.starts_with("got lock B") || rest.contains("still running; ping ok: true"),
        "{rest}"
    );
    intact(&mut g, 2);

    // A fault in interrupt context on a CPU other than the boot CPU.
    let line = resurrect(&mut g, "irq-fault-ap");
    assert!(
        line.starts_with("[lazarus] resurrected after irq-fault "),
        "{line}"
    );
    assert!(line.contains(" on vCPU 1 of 2:"), "{line}");
    assert!(line.contains("no process to blame"), "{line}");
    intact(&mut g, 2);

    // Two CPUs crash at once: the extension wipes the IDT they share and
    // interrupts the other CPU, and both triple-fault. Whichever reaches
    // the hypervisor first, one repair covers both (a worker's crash in
    // user mode waits for the extension's), and both CPUs take interrupts
    // again afterwards.
    let line = resurrect(&mut g, "idt-wipe");
    assert!(
        line.starts_with("[lazarus] resurrected after triple-fault in extension crashtest"),
        "{line}"
    );
    assert!(line.contains("at the same moment"), "{line}");
    intact(&mut g, 2);

    let rec = g.cmd("recoveries");
    assert_eq!(
        rec.lines().filter(|l| l.contains("crashtest")).count(),
        5,
        "{rec}"
    );
    assert!(g.poweroff().success());
    drop(dir);
}

/// The kernel and its repair still work on one CPU, where the other half
/// of each scenario shares the CPU.
#[test]
fn cross_process_crashes_on_one_vcpu() {
    let (mut g, dir) = boot("smp-one", "1");
    resurrect(&mut g, "lock-waiter");
    g.expect("crash: spin-lock-b: got lock B after", T);
    resurrect(&mut g, "ext-victim");
    g.expect("crash: sleep-in-ext: the call returned", T);
    g.expect("\n", Duration::from_secs(5));
    g.resync();
    let out = g.cmd("crash irq-fault-ap");
    assert!(out.contains("needs at least 2 vCPUs"), "{out}");
    g.resync();
    let (ok, lost) = kv_check(&g.cmd("kv check"));
    assert_eq!((ok, lost), (60, 0), "{}", g.transcript);
    assert!(g.poweroff().success());
    drop(dir);
}

/// Eight vCPUs boot, all come online, and a crash is repaired with all of
/// them stopped.
#[test]
fn eight_vcpus_come_online_and_survive_a_crash() {
    let dir = temp_dir("smp-eight");
    let mut g = common::boot_with(&[
        "--memory",
        "64",
        "--vcpus",
        "8",
        "--data-dir",
        path_str(dir.path()),
    ]);
    let out = g.cmd("cpus");
    assert_eq!(
        out.lines().filter(|l| l.contains(" online ")).count(),
        8,
        "{out}"
    );
    let line = resurrect(&mut g, "null-read");
    assert!(line.contains(" of 8:"), "{line}");
    g.resync();
    let out = g.cmd("run echo eight");
    assert!(out.contains("eight"), "{out}");
    assert!(g.poweroff().success());
    drop(dir);
}
