//! The honest fallback: when the repair program finds kernel invariants
//! broken beyond repair, the hypervisor must not resume the kernel. Here
//! the kernel's process table is corrupted from the host (as a wild write
//! into a kernel structure would), then a crash is triggered: the result
//! must be a crash outcome carrying the reason, never a resumed kernel.

use std::mem::offset_of;
use std::sync::mpsc::Sender;
use std::time::Duration;

use lazarus_abi::root::{KernelRoot, Proc};
use lazarus_resurrect::{Fallback, Recovery, ResurrectConfig};
use lazarus_vmm::{CaptureBuffer, ConsoleInput, Vm, VmOutcome};
use vm_memory::{Bytes, GuestAddress};

fn boot(input: &ConsoleInput, console: &CaptureBuffer) -> Vm {
    boot_with(input, console, 1, None)
}

/// The guest with `vcpus` vCPUs, resurrecting; reports go to `listener`.
fn boot_with(
    input: &ConsoleInput,
    console: &CaptureBuffer,
    vcpus: u32,
    listener: Option<Sender<Recovery>>,
) -> Vm {
    let mut config = lazarus_testkit::default_config(input, console);
    config.mem_size = 64 << 20;
    config.vcpus = vcpus;
    config.timeout = Some(Duration::from_secs(60));
    let mut rc = ResurrectConfig::new(lazarus_image::REPAIR_ELF);
    rc.listener = listener;
    config.crash_handler = Some(Box::new(rc));
    lazarus_testkit::boot_vm(config)
}

/// Runs a null read to a resurrection and on to a clean power-off.
fn crash_and_power_off(vm: &mut Vm, input: &ConsoleInput, console: &CaptureBuffer) {
    assert!(matches!(
        vm.run().expect("run"),
        VmOutcome::MilestoneReached(_)
    ));
    vm.set_stop_milestone(None);
    input.push(b"crash null-read\nrecoveries\npoweroff\n");
    let outcome = vm.run().expect("run");
    assert!(
        matches!(outcome, VmOutcome::PowerOff(0)),
        "{outcome:?}\n{}",
        console.text()
    );
}

#[test]
fn corrupted_process_table_falls_back_instead_of_resuming() {
    let input = ConsoleInput::manual();
    let console = CaptureBuffer::new();
    let mut vm = boot(&input, &console);
    assert!(
        matches!(vm.run().expect("run"), VmOutcome::MilestoneReached(_)),
        "{}",
        console.text()
    );
    vm.set_stop_milestone(None);

    // A wild write into the process table: slot 5 claims to hold pid 3.
    let gpa = vm.root_gpa().expect("root registered");
    let at = gpa + (offset_of!(KernelRoot, procs) + 5 * std::mem::size_of::<Proc>()) as u64;
    vm.memory()
        .write_obj(3u32, GuestAddress(at + offset_of!(Proc, pid) as u64))
        .expect("write");
    vm.memory()
        .write_obj(1u32, GuestAddress(at + offset_of!(Proc, state) as u64))
        .expect("write");

    input.push(b"crash null-read\n");
    match vm.run().expect("run") {
        VmOutcome::Crash(info) => {
            let why = Fallback::of(&info).expect("a typed fallback reason");
            assert!(matches!(why, Fallback::Refused(_)), "{why:?}");
            assert!(
                why.to_string().contains("process table is corrupt"),
                "{why}"
            );
        }
        other => panic!(
            "expected a fallback crash, got {other:?}:\n{}",
            console.text()
        ),
    }
    assert!(
        !console.text().contains("[lazarus] resurrected"),
        "{}",
        console.text()
    );
}

#[test]
fn a_healthy_kernel_is_resurrected_in_the_same_setup() {
    let input = ConsoleInput::manual();
    let console = CaptureBuffer::new();
    let mut vm = boot(&input, &console);
    crash_and_power_off(&mut vm, &input, &console);
    let text = console.text();
    assert!(
        text.contains("[lazarus] resurrected after null-deref"),
        "{text}"
    );
    assert!(text.contains("null-deref"), "{text}");
}

/// With a second vCPU, the crash handler gets the machine with that vCPU
/// stopped (it parks and records its registers), and both run on after.
#[test]
fn the_other_vcpu_is_stopped_during_the_repair() {
    let input = ConsoleInput::manual();
    let console = CaptureBuffer::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut vm = boot_with(&input, &console, 2, Some(tx));
    crash_and_power_off(&mut vm, &input, &console);
    let rec = rx.try_recv().expect("one resurrection reported");
    assert_eq!(rec.others_stopped, 1, "{}", rec.summary());
    // The crash happens on whichever CPU ran the process.
    assert!(rec.crash.vcpu < 2, "{}", rec.summary());
    assert!(rec.summary().contains(" of 2: "), "{}", rec.summary());
    assert!(
        console
            .text()
            .contains("[lazarus] resurrected after null-deref"),
        "{}",
        console.text()
    );
}
