//! Resurrection (docs/ARCHITECTURE.md): the crash handler that
//! runs the hidden repair image on a crashed lazarus kernel and resumes
//! the kernel where the repair program says, without a reboot.
//!
//! The hypervisor (`lazarus-vmm`) knows nothing of the lazarus kernel; on
//! a crash it stops every vCPU and calls [`Resurrector`] through its
//! `CrashHandler` trait, on the crashed vCPU's thread. The sequence:
//!
//! 1. [`Resurrector::recover`] reads the state root and the kernel's crash
//!    record and takes the crash snapshot of kernel memory for the dump
//!    ([`snapshot`]);
//! 2. [`program`] maps the image into the repair slot (by default it swaps
//!    the resident slot's host memory from a decoy to the image, else it
//!    adds a fresh slot, removed later by [`reaper`]), runs the program in
//!    ring 3 to its doorbell and takes the image out again;
//! 3. [`plan`] checks the program's plan and gives the hypervisor the
//!    registers that enter the kernel's recovery entry;
//! 4. the kernel reports `HC_RECOVERED` on its way back to user mode (or
//!    idle): [`Resurrector::on_recovered`] waits for the slot to be gone,
//!    records the latency and reports a [`Recovery`]. No user code runs
//!    before that.
//!
//! [`refresh`] keeps the image's pristine copies in step with the kernel's
//! code; every refusal is a typed [`Fallback`].

pub mod config;
pub mod fallback;
pub mod kernel_memory;
pub mod plan;
pub mod program;
pub mod reaper;
pub mod recovery;
pub mod refresh;
pub mod snapshot;

use std::mem::offset_of;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lazarus_abi::repair::{
    MAX_PRISTINE, PLAN_RESUME, PLAN_WAIT, Pristine, RepairInput, StoppedCpu,
};
use lazarus_abi::root::{KernelRoot, MAX_CPUS, MAX_EXTS, RecoveryLog, RecoveryRecord};
use lazarus_repair_image::{ImageSize, PristineSource, RepairImage, SlotWindow, SymbolSource};
use lazarus_vmm::memory::GuestRam;
use lazarus_vmm::{
    CrashHandler, CrashInfo, CrashKind, HandlerError, HandlerSetup, Notification, NotifyContext,
    ResumeState, StoppedVm, Verdict, Vm,
};
use tracing::{info, warn};
use vm_memory::{Bytes, GuestAddress};

pub use config::{RepairSlot, ResurrectConfig};
pub use fallback::{Fallback, PlanError, SetupError, SlotError};
pub use kernel_memory::{GuestKernelMemory, guest_kernel_memory};
pub use recovery::Recovery;
pub use snapshot::MemSnapshot;

use crate::reaper::{PendingRemoval, SlotReaper};
use crate::snapshot::BufferPool;
use lazarus_guestmem::read_root;

/// Crashes of one signature closer together than this count as a loop.
pub const LOOP_WINDOW: Duration = Duration::from_secs(2);

/// A repair done, waiting for the kernel to get back to user mode.
struct Pending {
    t0: Instant,
    resumed: Instant,
    removal: PendingRemoval,
    recovery: Recovery,
}

/// The repair image and what it takes to use it: the VM's crash handler.
pub struct Resurrector {
    cfg: ResurrectConfig,
    image: RepairImage,
    kernel: PristineSource,
    exts: [Option<PristineSource>; MAX_EXTS],
    /// Functions of every extension in the initramfs, by build id, at
    /// link-time (load-base-relative) addresses.
    ext_symbols: Vec<(String, Vec<SymbolSource>)>,
    kernel_text: (u64, u64),
    kernel_phys: (u64, u64),
    mem_size: u64,
    pool: BufferPool,
    last: Option<((u64, u64, u32), Instant)>,
    repeat: u32,
    pending: Option<Pending>,
    /// The resident slot's host memory ([`RepairSlot::Resident`]).
    window: Option<SlotWindow>,
    /// Deletes fresh slots ([`RepairSlot::Fresh`] only; its thread is
    /// started at the first repair that needs it).
    reaper: Option<SlotReaper>,
    count: u64,
}

/// The other vCPUs' stopping points, for the repair program.
fn stopped_cpus(others: &[lazarus_vmm::VcpuRegs]) -> [StoppedCpu; MAX_CPUS] {
    let mut out = [StoppedCpu::default(); MAX_CPUS];
    for o in others {
        let (Some(regs), Some(sregs)) = (o.regs, o.sregs) else {
            continue;
        };
        if let Some(slot) = out.get_mut(o.id as usize) {
            *slot = StoppedCpu {
                valid: 1,
                vcpu: o.id,
                rip: regs.rip,
                rsp: regs.rsp,
                rflags: regs.rflags,
                cs: u64::from(sregs.cs.selector),
                crashed: o.crash.as_ref().map_or(0, detector),
                _pad: 0,
            };
        }
    }
    out
}

impl Resurrector {
    /// Builds the image with a pristine copy of the kernel's read-only
    /// segments, taken from the kernel ELF itself, and the kernel's
    /// symbols; extension symbols come from the initramfs.
    pub fn new(cfg: ResurrectConfig, setup: &HandlerSetup<'_>) -> Result<Self, SetupError> {
        let (kernel, kernel_text) = refresh::kernel_source(setup.kernel)?;
        let ext_symbols = refresh::extension_symbols(setup.initramfs);
        let mem_size = setup.layout.mem_size;
        let mut image = RepairImage::new(&cfg.program, mem_size)?;
        image.set_pristine(std::slice::from_ref(&kernel))?;
        let window = match cfg.slot {
            RepairSlot::Fresh => None,
            RepairSlot::Resident => {
                Some(program::register_window(setup.vm_fd).map_err(SetupError::Slot)?)
            }
        };
        Ok(Self {
            cfg,
            image,
            kernel,
            exts: Default::default(),
            ext_symbols,
            kernel_text,
            kernel_phys: (setup.layout.kernel_phys_start, setup.layout.kernel_phys_end),
            mem_size,
            pool: BufferPool::prefaulted(2, 8 << 20),
            last: None,
            repeat: 0,
            pending: None,
            window,
            reaper: None,
            count: 0,
        })
    }

    /// The image's size in host memory.
    pub fn image_size(&self) -> ImageSize {
        self.image.size()
    }

    /// Tries to resurrect the kernel after `crash` on the stopped VM. On
    /// success returns the registers that enter the kernel's recovery
    /// entry; the repair is complete at [`Resurrector::on_recovered`].
    pub fn recover(
        &mut self,
        vm: StoppedVm<'_>,
        crash: &CrashInfo,
    ) -> Result<(ResumeState, Vec<(u32, ResumeState)>), Fallback> {
        let t0 = crash.detected_at;
        let Some(root_gpa) = vm.root_gpa else {
            return Err(Fallback::NoStateRoot);
        };
        if !vm.all_stopped {
            return Err(Fallback::OthersRunning);
        }
        if let Some(p) = self.pending.take() {
            // Crashed again before getting back to user mode: the
            // recovery itself failed.
            let _ = p.removal.wait();
            return Err(Fallback::CrashedWhileRecovering);
        }
        let (Some(regs), Some(sregs)) = (crash.regs, crash.sregs) else {
            return Err(Fallback::NoRegisters);
        };
        let root = read_root(vm.mem, root_gpa)?;
        // Read now, before the repair changes it.
        let guest_record = matches!(crash.kind, CrashKind::GuestPanic { .. }).then_some(root.crash);
        let detector = detector(&crash.kind);
        // Same place, same way, same process, again and again: a crash
        // loop (the repair did not stop it). Different processes crashing
        // in the same place are separate crashes: each was quarantined.
        let rip = guest_record.as_ref().map_or(regs.rip, |r| r.frame.rip);
        let pid = guest_record.as_ref().map_or_else(
            || root.cpus.get(vm.vcpu.id as usize).map_or(0, |c| c.current),
            |r| r.pid,
        );
        let key = (rip, u64::from(detector), pid);
        let (last, repeat) = (self.last, self.repeat);
        self.repeat = match self.last {
            Some((k, at)) if k == key && at.elapsed() < LOOP_WINDOW => self.repeat + 1,
            _ => 0,
        };
        self.last = Some((key, Instant::now()));

        let offender_cr3 = {
            let p = &root.procs[KernelRoot::slot_of(pid)];
            (pid != 0 && p.pid == pid).then_some(p.cr3)
        };
        // The faulting instruction's stack and code (the kernel's trap
        // frame), the crashed vCPU's at the exit, and every other vCPU's.
        let at_fault = guest_record.as_ref().map(|r| snapshot::CpuView {
            cr3: sregs.cr3,
            rsp: r.frame.rsp,
            rip: r.frame.rip,
        });
        let cpus: Vec<snapshot::CpuView> = std::iter::once((Some(regs), Some(sregs)))
            .chain(vm.others.iter().map(|o| (o.regs, o.sregs)))
            .filter_map(|(r, s)| {
                let (r, s) = (r?, s?);
                Some(snapshot::CpuView {
                    cr3: s.cr3,
                    rsp: r.rsp,
                    rip: r.rip,
                })
            })
            .chain(at_fault)
            .collect();
        let snap_start = Instant::now();
        let snapshot = snapshot::take(
            vm.mem,
            self.mem_size,
            &root,
            self.kernel_phys,
            offender_cr3,
            &cpus,
            &self.pool,
        );
        let snapshot_time = snap_start.elapsed();

        // Other vCPUs parked with a crash of their own: the repair may
        // cover them (they then resume where they stopped).
        let pending: Vec<(u32, ResumeState)> = vm
            .others
            .iter()
            .filter(|o| o.crash.is_some())
            .filter_map(|o| {
                Some((
                    o.id,
                    ResumeState {
                        regs: o.regs?,
                        sregs: o.sregs?,
                    },
                ))
            })
            .collect();
        let input = RepairInput {
            detector,
            vcpu: crash.vcpu,
            root_gpa,
            mem_size: self.mem_size,
            rip: regs.rip,
            rsp: regs.rsp,
            rbp: regs.rbp,
            rflags: regs.rflags,
            cr2: sregs.cr2,
            cr3: sregs.cr3,
            cs: u64::from(sregs.cs.selector),
            repeat: self.repeat,
            ext_crash_limit: self.cfg.ext_crash_limit,
            code_verified: u32::from(self.code_intact(vm.mem, &root)),
            _pad: 0,
            pristine: [Pristine::default(); MAX_PRISTINE],
            others: stopped_cpus(&vm.others),
        };
        self.image.prepare(input);
        let started = Instant::now();
        let tsc0 = rdtsc();
        let others_stopped = vm.others.len();
        let run = self.run_repair(vm.vcpu, vm.vm_fd, &sregs);
        let tsc1 = rdtsc();
        let repair_time = started.elapsed();
        let plan = self.image.plan();
        if plan.tsc_end > plan.tsc_start && tsc1 > tsc0 {
            let total = (tsc1 - tsc0) as f64;
            let program = (plan.tsc_end - plan.tsc_start) as f64;
            let to_start = plan.tsc_start.saturating_sub(tsc0) as f64;
            tracing::debug!(
                program_us = repair_time.as_secs_f64() * 1e6 * program / total,
                before_start_us = repair_time.as_secs_f64() * 1e6 * to_start / total,
                "repair run profile"
            );
        }
        let removal = run?;
        // Every refusal below waits for the slot to be gone first.
        let refuse = |removal: PendingRemoval, why: Fallback| match removal.wait() {
            Ok(_) => why,
            Err(then) => Fallback::Twice {
                first: Box::new(why),
                then,
            },
        };
        if plan.action == PLAN_WAIT {
            // Presented again shortly: not a repeat of the crash.
            (self.last, self.repeat) = (last, repeat);
            let why = lazarus_abi::name_str(&plan.reason).to_string();
            return Err(refuse(removal, Fallback::Busy(why)));
        }
        if plan.action != PLAN_RESUME {
            let why = lazarus_abi::name_str(&plan.reason).to_string();
            return Err(refuse(removal, Fallback::Refused(why)));
        }
        if let Err(e) = plan::check_plan(&plan, self.kernel_text, self.kernel_phys) {
            return Err(refuse(removal, e.into()));
        }
        // The devices the reset driver drove lose the rings it kept in
        // memory the repair freed; its init sets them up again.
        for &base in plan.reset_devices.iter().filter(|&&b| b != 0) {
            if vm.virtio.reset_at(base) {
                info!(
                    base = format_args!("{base:#x}"),
                    "virtio device reset with its driver"
                );
            } else {
                warn!(
                    base = format_args!("{base:#x}"),
                    "the repair asked to reset a device that is not there"
                );
            }
        }
        let resume = plan::resume_state(&sregs, &plan, root.idt, vm.vcpu.id);
        let covered: Vec<(u32, ResumeState)> = pending
            .into_iter()
            .filter(|(id, _)| *id < 32 && plan.covered_cpus & (1 << id) != 0)
            .collect();
        self.pending = Some(Pending {
            t0,
            resumed: Instant::now(),
            removal,
            recovery: Recovery {
                seq: self.count,
                crash: crash.clone(),
                guest_record,
                plan,
                latency: Duration::ZERO,
                snapshot_time,
                repair_time,
                unmap_time: Duration::ZERO,
                resume_time: Duration::ZERO,
                snapshot,
                root_gpa,
                others_stopped,
            },
        });
        Ok((resume, covered))
    }

    /// Whether a repair is waiting for the kernel to get back to user mode.
    pub fn awaiting(&self) -> bool {
        self.pending.is_some()
    }

    /// The kernel is returning to a user process: the resurrection is
    /// complete once the image's slot is gone. Records the latency in the
    /// kernel's log and reports. An error means the slot could not be
    /// removed and the guest must not run on.
    pub fn on_recovered(
        &mut self,
        mem: &GuestRam,
        count: u64,
    ) -> Result<Option<String>, SlotError> {
        let Some(p) = self.pending.take() else {
            return Ok(None);
        };
        let unmap_time = p.removal.wait()?;
        let latency = p.t0.elapsed();
        let mut recovery = p.recovery;
        recovery.latency = latency;
        recovery.unmap_time = unmap_time;
        recovery.resume_time = p.resumed.elapsed();
        self.count += 1;
        if count > 0 {
            let idx = ((count - 1) % lazarus_abi::root::MAX_RECOVERIES as u64) as usize;
            let at = recovery.root_gpa
                + (offset_of!(KernelRoot, recovery)
                    + offset_of!(RecoveryLog, records)
                    + idx * std::mem::size_of::<RecoveryRecord>()
                    + offset_of!(RecoveryRecord, latency_ns)) as u64;
            let _ = mem.write_obj(latency.as_nanos() as u64, GuestAddress(at));
        }
        let line = recovery.summary();
        info!(
            kind = recovery.kind(),
            pid = recovery.plan.quarantined,
            latency_us = latency.as_micros() as u64,
            snapshot_us = recovery.snapshot_time.as_micros() as u64,
            snapshot_kib = recovery.snapshot.len() / 1024,
            repair_us = recovery.repair_time.as_micros() as u64,
            unmap_us = recovery.unmap_time.as_micros() as u64,
            resume_us = recovery.resume_time.as_micros() as u64,
            "{line}"
        );
        match &self.cfg.listener {
            Some(tx) => {
                let _ = tx.send(recovery);
            }
            None => drop(recovery),
        }
        Ok(Some(line))
    }
}

impl CrashHandler for Resurrector {
    fn on_crash(&mut self, vm: StoppedVm<'_>, crash: &CrashInfo) -> Verdict {
        match self.recover(vm, crash) {
            Ok((state, covered)) if covered.is_empty() => Verdict::Resume(Box::new(state)),
            Ok((state, covered)) => Verdict::ResumeCovering {
                state: Box::new(state),
                covered,
            },
            Err(why @ Fallback::Busy(_)) => Verdict::Wait(Arc::new(why)),
            Err(why) => Verdict::Reboot(Arc::new(why)),
        }
    }

    fn on_notification(
        &mut self,
        cx: NotifyContext<'_>,
        n: Notification,
    ) -> Result<Option<String>, HandlerError> {
        match n {
            Notification::CodeChanged(ev) => {
                self.on_code_changed(cx.mem, cx.root_gpa, ev);
                Ok(None)
            }
            Notification::Recovered(count) => self
                .on_recovered(cx.mem, count)
                .map_err(|e| Arc::new(e) as HandlerError),
        }
    }
}

/// The size of `vm`'s repair image, when it resurrects.
pub fn image_size(vm: &Vm) -> Option<ImageSize> {
    let handler = vm.crash_handler()?;
    let any: &dyn std::any::Any = &**handler;
    any.downcast_ref::<Resurrector>()
        .map(Resurrector::image_size)
}

/// How the hypervisor saw the crash, as the repair ABI numbers it
/// (`DETECT_*`; the one mapping, named by [`detector_name`]).
pub fn detector(kind: &CrashKind) -> u32 {
    use lazarus_abi::repair::*;
    match kind {
        CrashKind::GuestPanic { .. } => DETECT_PANIC,
        CrashKind::TripleFault => DETECT_TRIPLE_FAULT,
        CrashKind::Hang { .. } => DETECT_HANG,
        CrashKind::InternalError { .. } => DETECT_INTERNAL_ERROR,
        CrashKind::EntryFailure { .. } => DETECT_ENTRY_FAILURE,
        CrashKind::SystemEvent { .. } | CrashKind::UnhandledExit { .. } => DETECT_OTHER,
    }
}

/// The detector's name, as dumps and the crash database record it:
/// `pvpanic`, `triple-fault`, `watchdog`, ...
pub fn detector_name(kind: &CrashKind) -> &'static str {
    lazarus_abi::repair::detector_name(detector(kind))
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}
