//! Whole-VM snapshot and restore with the real guest under KVM: the
//! baseline resurrection is measured against. Needs /dev/kvm; fails (never
//! skips) without it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lazarus_abi::hypercall::MILESTONE_SHELL_PROMPT;
use lazarus_vmm::{CaptureBuffer, ConsoleInput, CrashKind, Vm, VmOutcome, VmSnapshot};
use vm_memory::{Bytes, GuestAddress};

const PROMPT: &str = "lazarus> ";
const MEM: u64 = 128 << 20;
const STEP: Duration = Duration::from_secs(120);

/// The real guest and its console.
struct Guest {
    vm: Vm,
    input: ConsoleInput,
    console: CaptureBuffer,
    /// Console bytes already looked at.
    pos: usize,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Guest {
    /// Boots to the shell prompt (the run stops at that milestone).
    fn boot() -> Guest {
        Self::boot_with(1)
    }

    fn boot_with(vcpus: u32) -> Guest {
        let input = ConsoleInput::manual();
        let console = CaptureBuffer::new();
        let mut config = lazarus_testkit::default_config(&input, &console);
        config.mem_size = MEM;
        config.vcpus = vcpus;
        config.timeout = Some(STEP);
        let booted = lazarus_testkit::VmGuest::boot(config, input, console);
        let g = Guest {
            vm: booted.vm,
            input: booted.input,
            console: booted.console,
            pos: 0,
        };
        assert!(g.console.text().ends_with(PROMPT), "{}", g.console.text());
        let mut g = g;
        g.pos = g.console.contents().len();
        g
    }

    /// Runs the guest until the console prints `pattern` after what was
    /// already read; returns the output up to and including it.
    fn run_until(&mut self, pattern: &str) -> String {
        let stop = self.vm.stop_handle();
        let console = self.console.clone();
        let start = self.pos;
        let needle = pattern.as_bytes().to_vec();
        let done = Arc::new(AtomicBool::new(false));
        let finished = done.clone();
        let watcher = std::thread::spawn(move || {
            let deadline = Instant::now() + STEP;
            while !finished.load(Ordering::Acquire) && Instant::now() < deadline {
                let text = console.contents();
                if let Some(i) = text.get(start..).and_then(|t| find(t, &needle)) {
                    stop.stop();
                    return Some(start + i + needle.len());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        });
        let outcome = self.vm.run().expect("run");
        done.store(true, Ordering::Release);
        let end = watcher.join().expect("watcher");
        let text = self.console.contents();
        match (outcome, end) {
            (VmOutcome::Stopped, Some(end)) => {
                self.pos = end;
                String::from_utf8_lossy(&text[start..end]).into_owned()
            }
            (other, _) => panic!(
                "waiting for {pattern:?}: {other:?}; console:\n{}",
                String::from_utf8_lossy(&text)
            ),
        }
    }

    /// Runs one shell command; returns its output (without the prompt).
    fn cmd(&mut self, line: &str) -> String {
        self.input.push(format!("{line}\n").as_bytes());
        let out = self.run_until(PROMPT);
        out.trim_end_matches(PROMPT).to_string()
    }

    /// Crashes the kernel; the VM has no resurrection, so run() returns.
    fn crash(&mut self) {
        self.input.push(b"crash null-read\n");
        match self.vm.run().expect("run") {
            VmOutcome::Crash(info) => {
                assert!(
                    matches!(info.kind, CrashKind::GuestPanic { .. }),
                    "{}",
                    info.summary()
                );
            }
            other => panic!("expected a crash, got {other:?}:\n{}", self.console.text()),
        }
        self.pos = self.console.contents().len();
    }

    fn snapshot(&self, reuse: Option<VmSnapshot>) -> (VmSnapshot, Duration) {
        let t = Instant::now();
        let s = self.vm.snapshot(reuse).expect("snapshot");
        (s, t.elapsed())
    }

    fn restore(&mut self, s: &VmSnapshot) -> Duration {
        let t = Instant::now();
        self.vm.restore(s).expect("restore");
        let took = t.elapsed();
        self.pos = self.console.contents().len();
        took
    }
}

/// Differences between snapshots that time alone explains.
fn timeless(diffs: Vec<String>) -> Vec<String> {
    diffs
        .into_iter()
        .filter(|d| !d.contains("(time)"))
        .collect()
}

#[test]
fn restore_brings_back_the_snapshot_and_loses_later_work() {
    let mut g = Guest::boot();

    // At the prompt. The first snapshot faults its buffer in.
    let (s0, t_first) = g.snapshot(None);
    assert_eq!(s0.ram_bytes(), MEM as usize);
    assert!(s0.populated_bytes() > 0 && s0.populated_bytes() <= s0.ram_bytes());
    assert_eq!(s0.vcpu_count(), 1);
    assert_eq!(s0.root_gpa(), g.vm.root_gpa());
    assert!(s0.root_gpa().is_some());
    assert!(s0.taken_at() <= Instant::now());

    // Restoring at once and snapshotting again gives the same snapshot,
    // but for what time moves (TSC, APIC timer count).
    let t_restore0 = g.restore(&s0);
    let (s0b, _) = g.snapshot(None);
    let diffs = s0.differences(&s0b);
    eprintln!("round trip differences: {diffs:?}");
    assert_eq!(timeless(diffs), Vec::<String>::new());

    // Work, then a second snapshot recycling the buffers of the first.
    assert_eq!(g.cmd("kv put a 1"), "");
    assert_eq!(g.cmd("kv get a").trim(), "1");
    let (s1, t_reuse) = g.snapshot(Some(s0b));
    assert_eq!(s1.ram_bytes(), MEM as usize);

    // More work, then the kernel crashes.
    assert_eq!(g.cmd("kv put b 2"), "");
    g.crash();

    // Back to s1: `a` is there, `b` (written after s1) is lost.
    let t_restore1 = g.restore(&s1);
    assert_eq!(g.cmd("kv get a").trim(), "1");
    assert_eq!(g.cmd("kv get b").trim(), "kv: b: not found");
    let ps = g.cmd("ps");
    for p in ["init", "shell", "kvstore"] {
        assert!(ps.contains(p), "{p} missing from ps:\n{ps}");
    }

    // Crash again and go all the way back to the prompt snapshot.
    g.crash();
    let t_restore2 = g.restore(&s0);
    assert_eq!(g.cmd("kv get a").trim(), "kv: a: not found");
    // The vCPU resumed past the milestone hypercall it stopped at in s0,
    // instead of issuing it again.
    let prompt = g.vm.milestone(MILESTONE_SHELL_PROMPT).expect("milestone");
    assert_eq!(prompt.count, 1);
    assert!(g.cmd("ps").contains("kvstore"));
    assert_eq!(g.cmd("kv put c 3"), "");
    assert_eq!(g.cmd("kv get c").trim(), "3");
    assert_eq!(g.cmd("echo still alive").trim(), "still alive");

    g.input.push(b"poweroff\n");
    match g.vm.run().expect("run") {
        VmOutcome::PowerOff(0) => {}
        other => panic!("expected power-off, got {other:?}:\n{}", g.console.text()),
    }
    eprintln!(
        "snapshot {} MiB ({} MiB populated): first {t_first:?}, recycled {t_reuse:?}; \
         restore {t_restore0:?} / {t_restore1:?} / {t_restore2:?}",
        s0.ram_bytes() >> 20,
        s0.populated_bytes() >> 20,
    );
}

/// Times `n` recycled snapshots and `n` restores: (first, min and median
/// snapshot, min and median restore).
fn time_cycles(g: &mut Guest, n: usize) -> (VmSnapshot, [Duration; 5]) {
    let (mut snap, first) = g.snapshot(None);
    let mut takes = Vec::new();
    let mut restores = Vec::new();
    for _ in 0..n {
        let (s, t) = g.snapshot(Some(snap));
        snap = s;
        takes.push(t);
    }
    for _ in 0..n {
        restores.push(g.restore(&snap));
    }
    takes.sort();
    restores.sort();
    let times = [first, takes[0], takes[n / 2], restores[0], restores[n / 2]];
    (snap, times)
}

#[test]
fn snapshot_and_restore_times() {
    let mut g = Guest::boot();
    assert_eq!(g.cmd("kv fill 200").trim(), "kv fill: 200 keys written");
    let (snap, t) = time_cycles(&mut g, 7);
    eprintln!(
        "{} MiB guest, {} MiB populated: first snapshot {:?}; recycled snapshot min {:?} \
         median {:?}; restore min {:?} median {:?}",
        snap.ram_bytes() >> 20,
        snap.populated_bytes() >> 20,
        t[0],
        t[1],
        t[2],
        t[3],
        t[4],
    );
    assert_eq!(g.cmd("kv count").trim(), "kv: 200 keys");

    // The worst case: every page of RAM holds data. Pages that read as
    // zero get a zero written, which changes nothing the guest can see.
    let mem = g.vm.memory();
    let mut page = vec![0u8; 4096];
    for gpa in (0..MEM).step_by(4096) {
        mem.read_slice(&mut page, GuestAddress(gpa)).expect("read");
        if page.iter().all(|&b| b == 0) {
            mem.write_slice(&[0], GuestAddress(gpa)).expect("write");
        }
    }
    drop(snap);
    let (snap, t) = time_cycles(&mut g, 5);
    assert_eq!(snap.populated_bytes(), MEM as usize);
    eprintln!(
        "{} MiB guest, all populated: first snapshot {:?}; recycled snapshot min {:?} \
         median {:?}; restore min {:?} median {:?}",
        snap.ram_bytes() >> 20,
        t[0],
        t[1],
        t[2],
        t[3],
        t[4],
    );
    assert_eq!(g.cmd("kv count").trim(), "kv: 200 keys");
    assert_eq!(g.cmd("kv check").trim(), "kv check: 200 intact, 0 lost");
}

#[test]
fn two_vcpus_round_trip() {
    let mut g = Guest::boot_with(2);
    let (s0, _) = g.snapshot(None);
    assert_eq!(s0.vcpu_count(), 2);
    assert_eq!(g.cmd("kv put x 9"), "");
    g.crash();
    g.restore(&s0);
    let (s1, _) = g.snapshot(None);
    assert_eq!(timeless(s0.differences(&s1)), Vec::<String>::new());
    assert_eq!(g.cmd("kv get x").trim(), "kv: x: not found");
    assert_eq!(g.cmd("echo two").trim(), "two");
}

#[test]
fn a_snapshot_of_another_vm_shape_is_refused() {
    let a = Guest::boot();
    let (s, _) = a.snapshot(None);
    drop(a);
    let mut b = Guest::boot_with(2);
    match b.vm.restore(&s) {
        Err(e) => assert!(e.to_string().contains("vCPUs"), "{e}"),
        Ok(()) => panic!("a 1-vCPU snapshot restored into a 2-vCPU VM"),
    }
    // Nothing changed: the guest still works.
    assert_eq!(b.cmd("echo fine").trim(), "fine");
}
