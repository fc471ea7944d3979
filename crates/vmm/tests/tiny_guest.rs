//! Boots hand-assembled guests under KVM and checks what the VMM makes of
//! them. Fails (never skips) when /dev/kvm cannot be used.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lazarus_abi::hypercall::{
    EXT_EVENT_LOADED, HC_CONSOLE_WRITE, HC_CPU_ON, HC_EXT_EVENT, HC_MILESTONE, HC_POWEROFF,
    HC_REBOOT, HC_REGISTER_ROOT, MILESTONE_KERNEL_READY, MILESTONE_SHELL_PROMPT, RootHeader,
};
use lazarus_abi::layout::{BOOT_PML4_GPA, KERNEL_PHYS_BASE, KERNEL_VIRT_BASE, PORT_PVPANIC};
use lazarus_abi::root::{ABI_VERSION, CRASH_PANIC, KernelRoot, ROOT_MAGIC};
use lazarus_vmm::{
    CaptureBuffer, ConsoleInput, ConsoleOutput, CrashHandler, CrashHandlerBuilder, CrashInfo,
    CrashKind, ExitKind, HandlerError, HandlerSetup, Notification, NotifyContext, ResumeState,
    StoppedVm, Verdict, Vm, VmConfig, VmControl, VmOutcome,
};
use zerocopy::IntoBytes;

const MEM: u64 = 16 << 20;
/// Offsets inside the guest image.
const MSG_OFF: u64 = 0x100;
const BLOCK_OFF: u64 = 0x800;
const ROOT_OFF: u64 = 0x1000;

/// A tiny x86-64 assembler for the handful of instructions we need.
#[derive(Default)]
struct Asm(Vec<u8>);

impl Asm {
    fn mov_dx(&mut self, port: u16) -> &mut Self {
        self.0.extend([0x66, 0xba]);
        self.0.extend(port.to_le_bytes());
        self
    }
    fn mov_eax(&mut self, imm: u32) -> &mut Self {
        self.0.push(0xb8);
        self.0.extend(imm.to_le_bytes());
        self
    }
    fn mov_ecx(&mut self, imm: u32) -> &mut Self {
        self.0.push(0xb9);
        self.0.extend(imm.to_le_bytes());
        self
    }
    fn mov_al(&mut self, imm: u8) -> &mut Self {
        self.0.extend([0xb0, imm]);
        self
    }
    /// lea rsi, [rip + to image offset `target`].
    fn lea_rsi(&mut self, target: u64) -> &mut Self {
        let next = self.0.len() as i64 + 7;
        let rel = (target as i64 - next) as i32;
        self.0.extend([0x48, 0x8d, 0x35]);
        self.0.extend(rel.to_le_bytes());
        self
    }
    fn rep_outsb(&mut self) -> &mut Self {
        self.0.extend([0xf3, 0x6e]);
        self
    }
    fn out_dx_eax(&mut self) -> &mut Self {
        self.0.push(0xef);
        self
    }
    fn out_dx_al(&mut self) -> &mut Self {
        self.0.push(0xee);
        self
    }
    fn in_al_dx(&mut self) -> &mut Self {
        self.0.push(0xec);
        self
    }
    /// Issues the hypercall whose block sits at image offset `off`.
    fn hypercall(&mut self, off: u64) -> &mut Self {
        self.mov_eax((KERNEL_PHYS_BASE + off) as u32)
            .mov_dx(lazarus_abi::layout::PORT_HYPERCALL)
            .out_dx_eax()
    }
    fn hlt_forever(&mut self) -> &mut Self {
        self.0.extend([0xf4, 0xeb, 0xfd]);
        self
    }
    fn spin_forever(&mut self) -> &mut Self {
        self.0.extend([0xeb, 0xfe]);
        self
    }
    /// Writes 1 to the pvpanic port: a kernel panic.
    fn pvpanic(&mut self) -> &mut Self {
        self.mov_dx(PORT_PVPANIC).mov_al(1).out_dx_al()
    }
    /// cmp byte [rip + to image offset `target`], `imm`.
    fn cmp_byte(&mut self, target: u64, imm: u8) -> &mut Self {
        self.rip_byte_op([0x80, 0x3d], target, imm)
    }
    /// mov byte [rip + to image offset `target`], `imm`.
    fn mov_byte(&mut self, target: u64, imm: u8) -> &mut Self {
        self.rip_byte_op([0xc6, 0x05], target, imm)
    }
    fn rip_byte_op(&mut self, op: [u8; 2], target: u64, imm: u8) -> &mut Self {
        // RIP-relative: from the end of the instruction (7 bytes).
        let next = self.0.len() as i64 + 7;
        self.0.extend(op);
        self.0.extend(((target as i64 - next) as i32).to_le_bytes());
        self.0.push(imm);
        self
    }
    /// Fills with `hlt` up to image offset `off` (code placed there next).
    fn pad_to(&mut self, off: u64) -> &mut Self {
        assert!(self.0.len() <= off as usize, "code overlaps {off:#x}");
        self.0.resize(off as usize, 0xf4);
        self
    }
    fn here(&self) -> usize {
        self.0.len()
    }
    /// Short conditional/unconditional jump back to `target`.
    fn jcc_back(&mut self, opcode: u8, target: usize) -> &mut Self {
        let rel = target as i64 - (self.0.len() as i64 + 2);
        self.0.extend([opcode, rel as i8 as u8]);
        self
    }
}

/// Guest image contents: code at offset 0 plus data patches.
struct Image {
    bytes: Vec<u8>,
}

impl Image {
    fn new(code: &Asm) -> Self {
        let mut bytes = vec![0u8; 0x1000];
        bytes[..code.0.len()].copy_from_slice(&code.0);
        Self { bytes }
    }
    fn put(&mut self, off: u64, data: &[u8]) -> &mut Self {
        let off = off as usize;
        if self.bytes.len() < off + data.len() {
            self.bytes.resize(off + data.len(), 0);
        }
        self.bytes[off..off + data.len()].copy_from_slice(data);
        self
    }
    fn block(&mut self, off: u64, nr: u64, args: [u64; 5]) -> &mut Self {
        let mut b = Vec::new();
        b.extend(nr.to_le_bytes());
        for a in args {
            b.extend(a.to_le_bytes());
        }
        b.extend(0i64.to_le_bytes());
        self.put(off, &b)
    }
    /// An ET_EXEC ELF with one PT_LOAD at KERNEL_PHYS_BASE; memsz covers a
    /// KernelRoot at ROOT_OFF.
    fn elf(&self) -> Vec<u8> {
        let memsz = ROOT_OFF + size_of::<KernelRoot>() as u64 + 0x1000;
        let mut elf = vec![0u8; 0x1000];
        elf[0..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[6] = 1;
        elf[16..18].copy_from_slice(&2u16.to_le_bytes());
        elf[18..20].copy_from_slice(&62u16.to_le_bytes());
        elf[20..24].copy_from_slice(&1u32.to_le_bytes());
        elf[24..32].copy_from_slice(&(KERNEL_VIRT_BASE + KERNEL_PHYS_BASE).to_le_bytes());
        elf[32..40].copy_from_slice(&0x40u64.to_le_bytes());
        elf[52..54].copy_from_slice(&64u16.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 0x40;
        elf[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
        elf[ph + 4..ph + 8].copy_from_slice(&7u32.to_le_bytes());
        elf[ph + 8..ph + 16].copy_from_slice(&0x1000u64.to_le_bytes());
        elf[ph + 16..ph + 24].copy_from_slice(&(KERNEL_VIRT_BASE + KERNEL_PHYS_BASE).to_le_bytes());
        elf[ph + 24..ph + 32].copy_from_slice(&KERNEL_PHYS_BASE.to_le_bytes());
        elf[ph + 32..ph + 40].copy_from_slice(&(self.bytes.len() as u64).to_le_bytes());
        elf[ph + 40..ph + 48].copy_from_slice(&memsz.max(self.bytes.len() as u64).to_le_bytes());
        elf[ph + 48..ph + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        elf.extend_from_slice(&self.bytes);
        elf
    }
}

struct Run {
    vm: Vm,
    outcome: VmOutcome,
    console: CaptureBuffer,
}

/// Builds a VM for `image`; fails the test when KVM is not usable here.
fn vm_with(image: &Image, tweak: impl FnOnce(&mut VmConfig)) -> (Vm, CaptureBuffer) {
    let console = CaptureBuffer::new();
    let mut config = VmConfig::new(image.elf(), b"070701".to_vec());
    config.mem_size = MEM;
    config.console_out = ConsoleOutput::Capture(console.clone());
    config.timeout = Some(Duration::from_secs(20));
    tweak(&mut config);
    // Never skip: these tests exist to exercise the real KVM.
    (lazarus_testkit::boot_vm(config), console)
}

/// Boots `image`; fails the test when KVM is not usable here.
fn boot_with(image: &Image, tweak: impl FnOnce(&mut VmConfig)) -> Option<Run> {
    let (mut vm, console) = vm_with(image, tweak);
    let outcome = vm.run().expect("run");
    Some(Run {
        vm,
        outcome,
        console,
    })
}

fn boot(image: &Image) -> Option<Run> {
    boot_with(image, |_| {})
}

fn hello_poweroff() -> Image {
    let msg = b"hello from a tiny guest\n";
    let mut code = Asm::default();
    code.mov_dx(0x3f8)
        .lea_rsi(MSG_OFF)
        .mov_ecx(msg.len() as u32)
        .rep_outsb()
        .hypercall(BLOCK_OFF)
        .hlt_forever();
    let mut img = Image::new(&code);
    img.put(MSG_OFF, msg)
        .block(BLOCK_OFF, HC_POWEROFF, [7, 0, 0, 0, 0]);
    img
}

#[test]
fn rep_outsb_then_poweroff() {
    let Some(run) = boot(&hello_poweroff()) else {
        return;
    };
    assert!(
        matches!(run.outcome, VmOutcome::PowerOff(7)),
        "{:?}",
        run.outcome
    );
    assert_eq!(run.console.text(), "hello from a tiny guest\n");
    let exits = run.vm.exit_counts();
    assert!(exits.get(ExitKind::PioSerial) >= 1);
    assert_eq!(exits.get(ExitKind::PioHypercall), 1);
    assert!(exits.total() >= 2);
}

#[test]
fn second_vcpu_waits_and_is_stopped() {
    let Some(run) = boot_with(&hello_poweroff(), |c| c.vcpus = 2) else {
        return;
    };
    assert!(
        matches!(run.outcome, VmOutcome::PowerOff(7)),
        "{:?}",
        run.outcome
    );
    assert!(run.vm.vcpu_fd(1).is_some());
}

#[test]
fn triple_fault_is_a_crash_with_registers() {
    let mut code = Asm::default();
    code.0.extend([0x0f, 0x0b]); // ud2 with no IDT
    let Some(run) = boot(&Image::new(&code)) else {
        return;
    };
    let VmOutcome::Crash(info) = run.outcome else {
        panic!("{:?}", run.outcome);
    };
    assert_eq!(info.kind, CrashKind::TripleFault);
    assert_eq!(info.vcpu, 0);
    assert!(info.regs.is_some());
    assert!(info.fallback.is_none());
}

#[test]
fn pvpanic_reports_the_kernel_crash_record() {
    // Register a root, write through HC_CONSOLE_WRITE, then panic.
    let mut code = Asm::default();
    code.hypercall(BLOCK_OFF)
        .hypercall(BLOCK_OFF + 0x40)
        .mov_dx(lazarus_abi::layout::PORT_PVPANIC)
        .in_al_dx()
        .mov_al(1)
        .out_dx_al()
        .hlt_forever();
    let mut img = Image::new(&code);
    let root_gpa = KERNEL_PHYS_BASE + ROOT_OFF;
    let root_size = size_of::<KernelRoot>() as u64;
    img.put(MSG_OFF, b"via hypercall\n")
        .block(
            BLOCK_OFF,
            HC_REGISTER_ROOT,
            [root_gpa, root_size, u64::from(ABI_VERSION), 0, 0],
        )
        .block(
            BLOCK_OFF + 0x40,
            HC_CONSOLE_WRITE,
            [KERNEL_PHYS_BASE + MSG_OFF, 14, 0, 0, 0],
        );
    let mut header = Vec::new();
    header.extend(ROOT_MAGIC.to_le_bytes());
    header.extend(ABI_VERSION.to_le_bytes());
    header.extend((root_size as u32).to_le_bytes());
    img.put(ROOT_OFF, &header);
    // crash.kind and crash.message of the root.
    let crash_off = ROOT_OFF + std::mem::offset_of!(KernelRoot, crash) as u64;
    img.put(crash_off + 8, &CRASH_PANIC.to_le_bytes());
    let msg_off = std::mem::offset_of!(lazarus_abi::root::CrashRecord, message) as u64;
    let len_off = std::mem::offset_of!(lazarus_abi::root::CrashRecord, msg_len) as u64;
    img.put(crash_off + msg_off, b"tiny panic");
    img.put(crash_off + len_off, &10u32.to_le_bytes());

    let Some(run) = boot(&img) else {
        return;
    };
    let VmOutcome::Crash(info) = run.outcome else {
        panic!("{:?}", run.outcome);
    };
    assert_eq!(info.kind, CrashKind::GuestPanic { code: 1 });
    assert!(info.summary().contains("panic"), "{}", info.summary());
    assert_eq!(run.console.text(), "via hypercall\n");
    assert_eq!(run.vm.root_gpa(), Some(root_gpa));
    assert_eq!(run.vm.root_header().expect("root header").magic, ROOT_MAGIC);
    // The hypervisor left the kernel's own record alone: OS-specific code
    // (triage) reads it and tells the kernel's own account.
    let record = lazarus_guestmem::read_crash_record(run.vm.memory(), root_gpa).expect("record");
    assert_eq!(record.kind, CRASH_PANIC);
    let ids = lazarus_triage::BuildIds::default();
    let summary = lazarus_triage::capture_crash(&ids, &run.vm, &info, "tiny", "halt")
        .note
        .detail;
    assert!(summary.contains("tiny panic"), "{summary}");
    assert_eq!(run.vm.hypercall_counts(), (2, 0));
}

#[test]
fn hostile_hypercalls_are_ignored() {
    let mut code = Asm::default();
    code.mov_dx(lazarus_abi::layout::PORT_HYPERCALL)
        .mov_eax(0xffff_ff00) // beyond RAM
        .out_dx_eax()
        .mov_eax((MEM - 8) as u32) // straddles the end
        .out_dx_eax()
        .mov_eax((KERNEL_PHYS_BASE + BLOCK_OFF + 4) as u32) // unaligned
        .out_dx_eax()
        .out_dx_al() // wrong size
        .hypercall(BLOCK_OFF + 0x40) // unknown number
        .hypercall(BLOCK_OFF)
        .hlt_forever();
    let mut img = Image::new(&code);
    img.block(BLOCK_OFF, HC_POWEROFF, [0, 0, 0, 0, 0])
        .block(BLOCK_OFF + 0x40, 0xdead, [0; 5]);
    let Some(run) = boot(&img) else {
        return;
    };
    assert!(
        matches!(run.outcome, VmOutcome::PowerOff(0)),
        "{:?}",
        run.outcome
    );
    assert_eq!(run.vm.hypercall_counts(), (2, 5));
    // -ENOSYS was written back into the unknown call's block.
    let ret: i64 =
        lazarus_vmm::memory::read_obj(run.vm.memory(), KERNEL_PHYS_BASE + BLOCK_OFF + 0x40 + 48)
            .unwrap();
    assert_eq!(ret, -lazarus_abi::syscall::errno::ENOSYS);
}

#[test]
fn stops_at_the_requested_milestone() {
    let mut code = Asm::default();
    code.hypercall(BLOCK_OFF)
        .hypercall(BLOCK_OFF + 0x40)
        .spin_forever();
    let mut img = Image::new(&code);
    img.block(
        BLOCK_OFF,
        HC_MILESTONE,
        [MILESTONE_KERNEL_READY, 0, 0, 0, 0],
    )
    .block(
        BLOCK_OFF + 0x40,
        HC_MILESTONE,
        [MILESTONE_SHELL_PROMPT, 0, 0, 0, 0],
    );
    let Some(run) = boot_with(&img, |c| c.stop_at_milestone = Some(MILESTONE_SHELL_PROMPT)) else {
        return;
    };
    assert!(
        matches!(
            run.outcome,
            VmOutcome::MilestoneReached(MILESTONE_SHELL_PROMPT)
        ),
        "{:?}",
        run.outcome
    );
    let m = run.vm.milestone(MILESTONE_SHELL_PROMPT).unwrap();
    assert!(m.at >= run.vm.created_at());
    assert_eq!(
        m.exits.get(ExitKind::PioHypercall),
        2,
        "counted up to and including the call"
    );
    assert_eq!(run.vm.milestones().len(), 2);
}

#[test]
fn timeout_and_stop_handle_end_a_spinning_or_halted_guest() {
    let mut spin = Asm::default();
    spin.spin_forever();
    let Some(run) = boot_with(&Image::new(&spin), |c| {
        c.timeout = Some(Duration::from_millis(300))
    }) else {
        return;
    };
    assert!(
        matches!(run.outcome, VmOutcome::TimedOut),
        "{:?}",
        run.outcome
    );

    // hlt with interrupts off blocks inside KVM until kicked.
    let mut halt = Asm::default();
    halt.hlt_forever();
    let mut config = VmConfig::new(Image::new(&halt).elf(), Vec::new());
    config.mem_size = MEM;
    config.console_out = ConsoleOutput::Null;
    let mut vm = Vm::new(config).expect("KVM worked a moment ago");
    let stop = vm.stop_handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        stop.stop();
    });
    let outcome = vm.run().unwrap();
    stopper.join().unwrap();
    assert!(matches!(outcome, VmOutcome::Stopped), "{outcome:?}");
    // The vCPU survived and can run again.
    vm.stop_handle().stop();
    assert!(matches!(vm.run().unwrap(), VmOutcome::Stopped));
}

#[test]
fn console_input_reaches_a_polling_guest() {
    let mut code = Asm::default();
    code.mov_dx(0x3f9).mov_al(1).out_dx_al(); // IER: RX interrupt on
    let poll = code.here();
    code.mov_dx(0x3fd).in_al_dx();
    code.0.extend([0xa8, 0x01]); // test al, 1
    code.jcc_back(0x74, poll); // jz poll
    code.mov_dx(0x3f8).in_al_dx().out_dx_al();
    code.0.extend([0x3c, b'\n']); // cmp al, '\n'
    code.jcc_back(0x75, poll); // jne poll
    code.hypercall(BLOCK_OFF).hlt_forever();
    let mut img = Image::new(&code);
    img.block(BLOCK_OFF, HC_POWEROFF, [0; 5]);
    let input: Vec<u8> = (0..150)
        .map(|i| b'a' + (i % 26) as u8)
        .chain(*b"\n")
        .collect();
    let Some(run) = boot_with(&img, |c| c.console_in = ConsoleInput::from_bytes(&input)) else {
        return;
    };
    assert!(
        matches!(run.outcome, VmOutcome::PowerOff(0)),
        "{:?}",
        run.outcome
    );
    assert_eq!(run.console.contents(), input);
}

#[test]
fn reboot_request_is_reported() {
    let mut code = Asm::default();
    code.hypercall(BLOCK_OFF).hlt_forever();
    let mut img = Image::new(&code);
    img.block(BLOCK_OFF, HC_REBOOT, [0; 5]);
    let Some(run) = boot(&img) else {
        return;
    };
    assert!(
        matches!(run.outcome, VmOutcome::RebootRequested),
        "{:?}",
        run.outcome
    );
}

/// vCPU 0 registers a root and ticks `cpu_heartbeat[0]` forever, while
/// `cpu_heartbeat[1]` claims vCPU 1 runs; vCPU 1 is never started, so its
/// heartbeat never moves: vCPU 1 alone is hung.
fn second_cpu_stalls() -> Image {
    let beat0 = ROOT_OFF + std::mem::offset_of!(RootHeader, cpu_heartbeat) as u64;
    let mut code = Asm::default();
    code.hypercall(BLOCK_OFF);
    let tick = code.here();
    let next = tick as i64 + 7;
    code.0.extend([0x48, 0xff, 0x05]); // inc qword [rip + rel32]
    code.0.extend(((beat0 as i64 - next) as i32).to_le_bytes());
    code.jcc_back(0xeb, tick);
    let mut img = Image::new(&code);
    let root_size = size_of::<KernelRoot>() as u64;
    img.block(
        BLOCK_OFF,
        HC_REGISTER_ROOT,
        [
            KERNEL_PHYS_BASE + ROOT_OFF,
            root_size,
            u64::from(ABI_VERSION),
            0,
            0,
        ],
    );
    let mut cpu_heartbeat = [0; lazarus_abi::boot::MAX_CPUS];
    cpu_heartbeat[..2].copy_from_slice(&[1, 1]);
    let header = RootHeader {
        magic: ROOT_MAGIC,
        abi_version: ABI_VERSION,
        root_size: root_size as u32,
        heartbeat: 1,
        cpu_heartbeat,
    };
    img.put(ROOT_OFF, header.as_bytes());
    img
}

/// Two vCPUs and a short watchdog, for the stalled-CPU guest (vCPU 1's
/// idle thread is found after ten timeouts of wall time; vCPU 0's would
/// need as long a starvation on the host).
fn two_cpus_short_watchdog(c: &mut VmConfig) {
    c.vcpus = 2;
    c.watchdog = Some(Duration::from_millis(50));
}

#[test]
fn a_stalled_second_cpu_is_the_hang_not_the_boot_cpu() {
    let Some(run) = boot_with(&second_cpu_stalls(), two_cpus_short_watchdog) else {
        return;
    };
    let VmOutcome::Crash(info) = run.outcome else {
        panic!("{:?}", run.outcome);
    };
    assert!(
        matches!(info.kind, CrashKind::Hang { heartbeat: 1, .. }),
        "{:?}",
        info.kind
    );
    assert_eq!(info.vcpu, 1, "{}", info.summary());
    assert!(info.regs.is_some());
    // vCPU 0 kept ticking all along.
    assert!(run.vm.root_header().expect("root header").cpu_heartbeat[0] > 1);
}

/// Records which vCPU each crash was handled on, and halts.
#[derive(Debug, Default, Clone)]
struct Recorder(Arc<Mutex<Vec<(u32, u32, CrashKind)>>>);

impl CrashHandlerBuilder for Recorder {
    fn build(self: Box<Self>, _: &HandlerSetup<'_>) -> Result<Box<dyn CrashHandler>, HandlerError> {
        Ok(self)
    }
}

impl CrashHandler for Recorder {
    fn on_crash(&mut self, vm: StoppedVm<'_>, crash: &CrashInfo) -> Verdict {
        let seen = (crash.vcpu, vm.vcpu.id, crash.kind.clone());
        self.0.lock().expect("recorder").push(seen);
        Verdict::Halt
    }

    fn on_notification(
        &mut self,
        _: NotifyContext<'_>,
        _: Notification,
    ) -> Result<Option<String>, HandlerError> {
        Ok(None)
    }
}

#[test]
fn a_stalled_second_cpu_is_handled_on_its_own_thread() {
    let recorder = Recorder::default();
    let handler = recorder.clone();
    let Some(run) = boot_with(&second_cpu_stalls(), move |c| {
        two_cpus_short_watchdog(c);
        c.crash_handler = Some(Box::new(handler));
    }) else {
        return;
    };
    let VmOutcome::Crash(info) = run.outcome else {
        panic!("{:?}", run.outcome);
    };
    assert_eq!(info.vcpu, 1, "{}", info.summary());
    let seen = recorder.0.lock().expect("recorder").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (crashed, thread, kind) = &seen[0];
    assert_eq!((*crashed, *thread), (1, 1), "{seen:?}");
    assert!(
        matches!(kind, CrashKind::Hang { heartbeat: 1, .. }),
        "{kind:?}"
    );
}

/// Where the second vCPUs' code starts, and a byte they wait on.
const AP_OFF: u64 = 0x300;
const GATE_OFF: u64 = 0x600;

/// The kernel-window address of image offset `off`.
fn virt(off: u64) -> u64 {
    KERNEL_VIRT_BASE + KERNEL_PHYS_BASE + off
}

/// `HC_CPU_ON` arguments entering `vcpu` at image offset `off` (no stack;
/// the boot page tables).
fn cpu_on(vcpu: u64, off: u64) -> [u64; 5] {
    [vcpu, virt(off), 0, vcpu, BOOT_PML4_GPA]
}

/// One crash handler call, as the handler saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    vcpu: u32,
    all_stopped: bool,
    /// The other vCPUs and the crash each had pending.
    others: Vec<(u32, Option<CrashKind>)>,
}

impl Call {
    fn of(vm: &StoppedVm<'_>, crash: &CrashInfo) -> Call {
        Call {
            vcpu: crash.vcpu,
            all_stopped: vm.all_stopped,
            others: vm.others.iter().map(|o| (o.id, o.crash.clone())).collect(),
        }
    }
}

/// Records every crash handler call; resumes the first crash in a `hlt`
/// loop at `park_rip` and halts at the next. Its first notification, if
/// `gate` is set, opens the gate byte for the guest and keeps the handler
/// busy until that many pvpanic writes have left the guest: crashes that
/// find the handler taken.
#[derive(Debug, Clone, Default)]
struct TakeTurns {
    calls: Arc<Mutex<Vec<Call>>>,
    park_rip: u64,
    /// The gate's guest-physical address, and the pvpanic writes to await.
    gate: Option<(u64, u64)>,
    /// The VM's control handle, for its exit counts (set before the run).
    control: Arc<OnceLock<VmControl>>,
    /// If set, the first verdict also covers every other vCPU's pending
    /// crash, resuming each here.
    cover_rip: Option<u64>,
}

impl CrashHandlerBuilder for TakeTurns {
    fn build(self: Box<Self>, _: &HandlerSetup<'_>) -> Result<Box<dyn CrashHandler>, HandlerError> {
        Ok(self)
    }
}

impl CrashHandler for TakeTurns {
    fn on_crash(&mut self, vm: StoppedVm<'_>, crash: &CrashInfo) -> Verdict {
        let mut calls = self.calls.lock().expect("calls");
        calls.push(Call::of(&vm, crash));
        match (calls.len(), crash.regs, crash.sregs) {
            (1, Some(mut regs), Some(sregs)) => {
                regs.rip = self.park_rip;
                let state = Box::new(ResumeState { regs, sregs });
                let Some(rip) = self.cover_rip else {
                    return Verdict::Resume(state);
                };
                let covered = vm
                    .others
                    .iter()
                    .filter(|o| o.crash.is_some())
                    .filter_map(|o| {
                        let (mut regs, sregs) = (o.regs?, o.sregs?);
                        regs.rip = rip;
                        Some((o.id, ResumeState { regs, sregs }))
                    })
                    .collect();
                Verdict::ResumeCovering { state, covered }
            }
            _ => Verdict::Halt,
        }
    }

    fn on_notification(
        &mut self,
        cx: NotifyContext<'_>,
        _: Notification,
    ) -> Result<Option<String>, HandlerError> {
        if let Some((gate, pvpanics)) = self.gate.take() {
            lazarus_vmm::memory::write_obj(cx.mem, gate, &1u8).expect("open the gate");
            let control = self.control.get().expect("control handle");
            let deadline = Instant::now() + Duration::from_secs(15);
            while control.exit_counts().get(ExitKind::PioPvpanic) < pvpanics {
                assert!(Instant::now() < deadline, "the guest never panicked");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(None)
    }
}

/// Boots `image` on `vcpus` vCPUs with `handler`; returns the outcome and
/// the handler's calls.
fn run_taking_turns(image: &Image, vcpus: u32, handler: TakeTurns) -> (VmOutcome, Vec<Call>) {
    let (calls, control) = (handler.calls.clone(), handler.control.clone());
    let (mut vm, _console) = vm_with(image, |c| {
        c.vcpus = vcpus;
        c.crash_handler = Some(Box::new(handler));
    });
    control.set(vm.control()).expect("set once");
    let outcome = vm.run().expect("run");
    let calls = calls.lock().expect("calls").clone();
    (outcome, calls)
}

/// The second handler call, for the crash that was pending during the
/// first, ends the run: its crash is the outcome.
fn assert_second_crash_is_the_outcome(outcome: &VmOutcome, calls: &[Call]) {
    let VmOutcome::Crash(info) = outcome else {
        panic!("{outcome:?} ({calls:?})");
    };
    assert_eq!(info.kind, CrashKind::GuestPanic { code: 1 });
    assert_eq!(info.vcpu, calls[1].vcpu, "{calls:?}");
    assert!(info.fallback.is_none());
}

#[test]
fn two_cpus_crashing_at_once_are_both_handled_with_every_cpu_stopped() {
    // vCPU 0 starts vCPU 1 and waits for its flag; vCPU 1 raises the flag
    // and panics at once, and so does vCPU 0 when it sees it.
    let mut code = Asm::default();
    code.hypercall(BLOCK_OFF);
    let wait = code.here();
    code.cmp_byte(GATE_OFF, 0).jcc_back(0x74, wait); // jz wait
    code.pvpanic().hlt_forever();
    code.pad_to(AP_OFF).mov_byte(GATE_OFF, 1).pvpanic();
    let park = code.here() as u64;
    code.hlt_forever();
    let mut img = Image::new(&code);
    img.block(BLOCK_OFF, HC_CPU_ON, cpu_on(1, AP_OFF));
    let handler = TakeTurns {
        park_rip: virt(park),
        ..TakeTurns::default()
    };
    let (outcome, calls) = run_taking_turns(&img, 2, handler);

    // Whichever came first, each crash had the handler once, with the
    // other vCPU stopped (parked with its crash pending, or stopped before
    // it crashed and crashing after the resume): no stop timed out.
    assert_eq!(calls.len(), 2, "{calls:?}");
    let mut crashed: Vec<u32> = calls.iter().map(|c| c.vcpu).collect();
    crashed.sort_unstable();
    assert_eq!(crashed, [0, 1], "{calls:?}");
    assert!(calls.iter().all(|c| c.all_stopped), "{calls:?}");
    let (first, second) = (calls[0].vcpu, calls[1].vcpu);
    assert_eq!(calls[0].others.len(), 1, "{calls:?}");
    assert_eq!(calls[0].others[0].0, second, "{calls:?}");
    assert!(
        matches!(
            calls[0].others[0].1,
            None | Some(CrashKind::GuestPanic { code: 1 })
        ),
        "{calls:?}"
    );
    assert_eq!(calls[1].others, [(first, None)], "{calls:?}");
    assert_second_crash_is_the_outcome(&outcome, &calls);
}

/// vCPU 0 starts vCPUs 1 and 2 and sends a notification; the APs wait
/// at the gate, panic, and halt at `park`. `poweroff` is code that powers
/// the VM off with status 7. Returns (image, park, poweroff).
fn busy_handler_image() -> (Image, u64, u64) {
    let mut code = Asm::default();
    code.hypercall(BLOCK_OFF)
        .hypercall(BLOCK_OFF + 0x40)
        .hypercall(BLOCK_OFF + 0x80)
        .hlt_forever();
    let poweroff = code.here() as u64;
    code.hypercall(BLOCK_OFF + 0xc0).hlt_forever();
    code.pad_to(AP_OFF);
    let wait = code.here();
    code.cmp_byte(GATE_OFF, 0).jcc_back(0x74, wait); // jz wait
    code.pvpanic();
    let park = code.here() as u64;
    code.hlt_forever();
    let mut img = Image::new(&code);
    img.block(BLOCK_OFF, HC_CPU_ON, cpu_on(1, AP_OFF))
        .block(BLOCK_OFF + 0x40, HC_CPU_ON, cpu_on(2, AP_OFF))
        .block(
            BLOCK_OFF + 0x80,
            HC_EXT_EVENT,
            [EXT_EVENT_LOADED, 0, 0, 0, 0],
        )
        .block(BLOCK_OFF + 0xc0, HC_POWEROFF, [7, 0, 0, 0, 0]);
    (img, park, poweroff)
}

#[test]
fn a_crash_while_the_handler_is_busy_is_listed_and_handled_next() {
    // The handler, busy with the notification, opens the gate and waits
    // until both APs have panicked.
    let (img, park, _) = busy_handler_image();
    let handler = TakeTurns {
        park_rip: virt(park),
        gate: Some((KERNEL_PHYS_BASE + GATE_OFF, 2)),
        ..TakeTurns::default()
    };
    let (outcome, calls) = run_taking_turns(&img, 3, handler);

    assert_eq!(calls.len(), 2, "{calls:?}");
    let (first, second) = (calls[0].vcpu, calls[1].vcpu);
    let mut crashed = [first, second];
    crashed.sort_unstable();
    assert_eq!(crashed, [1, 2], "{calls:?}");
    assert!(calls.iter().all(|c| c.all_stopped), "{calls:?}");
    // The first call saw the second crash pending on its (stopped) vCPU.
    let panic = Some(CrashKind::GuestPanic { code: 1 });
    let mut expected = vec![(0, None), (second, panic)];
    expected.sort_by_key(|o| o.0);
    assert_eq!(calls[0].others, expected, "{calls:?}");
    // The second, after the first was resumed, saw nothing pending.
    let mut expected = vec![(0, None), (first, None)];
    expected.sort_by_key(|o| o.0);
    assert_eq!(calls[1].others, expected, "{calls:?}");
    assert_second_crash_is_the_outcome(&outcome, &calls);
}

#[test]
fn a_crash_the_first_verdict_covers_does_not_come_to_the_handler_again() {
    // As above, and the first verdict covers the second crash: that vCPU
    // resumes where the handler says (a power-off), with no call of its
    // own.
    let (img, park, poweroff) = busy_handler_image();
    let handler = TakeTurns {
        park_rip: virt(park),
        gate: Some((KERNEL_PHYS_BASE + GATE_OFF, 2)),
        cover_rip: Some(virt(poweroff)),
        ..TakeTurns::default()
    };
    let (outcome, calls) = run_taking_turns(&img, 3, handler);

    assert_eq!(calls.len(), 1, "{calls:?}");
    let panic = Some(CrashKind::GuestPanic { code: 1 });
    assert!(
        calls[0].others.iter().any(|o| o.1 == panic),
        "the second crash was not pending: {calls:?}"
    );
    assert!(
        matches!(outcome, VmOutcome::PowerOff(7)),
        "{outcome:?} {calls:?}"
    );
}

/// Asks the hypervisor to wait (`Verdict::Wait`) while no other vCPU has a
/// crash pending, opening the gate byte the first time so that the other
/// vCPU goes on to crash. Once one is pending, it covers it: that vCPU
/// resumes at `cover_rip`, the handler's own at `park_rip`. With `always`,
/// it only ever waits.
#[derive(Debug, Clone, Default)]
struct Waits {
    calls: Arc<Mutex<Vec<Call>>>,
    park_rip: u64,
    cover_rip: u64,
    gate: u64,
    always: bool,
}

impl CrashHandlerBuilder for Waits {
    fn build(self: Box<Self>, _: &HandlerSetup<'_>) -> Result<Box<dyn CrashHandler>, HandlerError> {
        Ok(self)
    }
}

impl CrashHandler for Waits {
    fn on_crash(&mut self, vm: StoppedVm<'_>, crash: &CrashInfo) -> Verdict {
        self.calls.lock().expect("calls").push(Call::of(&vm, crash));
        let pending: Vec<(u32, ResumeState)> = vm
            .others
            .iter()
            .filter(|o| o.crash.is_some())
            .filter_map(|o| {
                let (mut regs, sregs) = (o.regs?, o.sregs?);
                regs.rip = self.cover_rip;
                Some((o.id, ResumeState { regs, sregs }))
            })
            .collect();
        if self.always || pending.is_empty() {
            if !self.always {
                lazarus_vmm::memory::write_obj(vm.mem, self.gate, &1u8).expect("open the gate");
            }
            return Verdict::Wait(Arc::new(std::io::Error::other("vCPU 0 is busy")));
        }
        let (Some(mut regs), Some(sregs)) = (crash.regs, crash.sregs) else {
            return Verdict::Halt;
        };
        regs.rip = self.park_rip;
        Verdict::ResumeCovering {
            state: Box::new(ResumeState { regs, sregs }),
            covered: pending,
        }
    }

    fn on_notification(
        &mut self,
        _: NotifyContext<'_>,
        _: Notification,
    ) -> Result<Option<String>, HandlerError> {
        Ok(None)
    }
}

/// vCPU 0 starts vCPU 1, waits at the gate and panics; vCPU 1 panics at
/// once. `park` halts; `poweroff` powers off with status 7. Returns
/// (image, park, poweroff).
fn waiting_image() -> (Image, u64, u64) {
    let mut code = Asm::default();
    code.hypercall(BLOCK_OFF);
    let wait = code.here();
    code.cmp_byte(GATE_OFF, 0).jcc_back(0x74, wait); // jz wait
    code.pvpanic();
    let park = code.here() as u64;
    code.hlt_forever();
    let poweroff = code.here() as u64;
    code.hypercall(BLOCK_OFF + 0x40).hlt_forever();
    code.pad_to(AP_OFF).pvpanic().hlt_forever();
    let mut img = Image::new(&code);
    img.block(BLOCK_OFF, HC_CPU_ON, cpu_on(1, AP_OFF)).block(
        BLOCK_OFF + 0x40,
        HC_POWEROFF,
        [7, 0, 0, 0, 0],
    );
    (img, park, poweroff)
}

fn run_waiting(always: bool) -> (VmOutcome, Vec<Call>) {
    let (img, park, poweroff) = waiting_image();
    let handler = Waits {
        park_rip: virt(park),
        cover_rip: virt(poweroff),
        gate: KERNEL_PHYS_BASE + GATE_OFF,
        always,
        ..Waits::default()
    };
    let calls = handler.calls.clone();
    let (mut vm, _console) = vm_with(&img, |c| {
        c.vcpus = 2;
        c.crash_handler = Some(Box::new(handler));
    });
    let outcome = vm.run().expect("run");
    let calls = calls.lock().expect("calls").clone();
    (outcome, calls)
}

#[test]
fn a_crash_whose_handler_waits_comes_back_after_the_others_ran() {
    // vCPU 1's crash comes first; vCPU 0 spins at the closed gate, so the
    // handler waits and opens it. vCPU 0 then runs, passes the gate and
    // panics: its crash goes to the handler with vCPU 1's pending (parked
    // while it waited), and the verdict covers it: vCPU 1 powers off.
    let (outcome, calls) = run_waiting(false);
    assert!(
        matches!(outcome, VmOutcome::PowerOff(7)),
        "{outcome:?} {calls:?}"
    );
    assert!(calls.len() >= 2, "the handler never waited: {calls:?}");
    assert_eq!(calls[0].vcpu, 1, "{calls:?}");
    assert_eq!(calls[0].others, [(0, None)], "{calls:?}");
    let last = calls.last().expect("calls");
    assert_eq!(last.vcpu, 0, "{calls:?}");
    assert_eq!(
        last.others,
        [(1, Some(CrashKind::GuestPanic { code: 1 }))],
        "{calls:?}"
    );
    assert!(calls.iter().all(|c| c.all_stopped), "{calls:?}");
}

#[test]
fn a_handler_that_only_waits_ends_the_run_with_its_reason() {
    // Nothing ever changes: after a few waits the hypervisor stops asking
    // and ends the run as for a reboot, with the handler's reason.
    let (outcome, calls) = run_waiting(true);
    let VmOutcome::Crash(info) = outcome else {
        panic!("{outcome:?} {calls:?}");
    };
    assert_eq!(info.vcpu, 1, "{calls:?}");
    let why = info.fallback.as_ref().map(|e| e.to_string());
    assert_eq!(why.as_deref(), Some("vCPU 0 is busy"), "{calls:?}");
    assert!(calls.len() > 1, "the hypervisor never waited: {calls:?}");
    assert!(calls.iter().all(|c| c.vcpu == 1), "{calls:?}");
}
