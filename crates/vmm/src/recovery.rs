//! Resurrection (ARCHITECTURE.md parts 3 and 4): when the kernel crashes,
//! run the hidden repair image on the crashed vCPU and resume the kernel
//! where the repair program says, without a reboot.
//!
//! Sequence, all on the crashed vCPU's thread (no hand-off on the
//! critical path): capture the vCPU state and a snapshot of kernel memory
//! for the dump; map the image into the repair slot (see [`RepairSlot`]:
//! by default swap the resident slot's host memory from a decoy to the
//! image, else add a fresh slot); enter the repair program directly in
//! ring 3 with the image's page tables, its stack and an empty IDT (a
//! fault in it is a triple fault, i.e. "repair failed"); wait for its
//! doorbell; take the image out again (swap the decoy back, or start
//! deleting the fresh slot on the reaper thread, see reaper.rs); check the
//! plan; enter the kernel's recovery entry. The latency ends when the
//! kernel reports it is returning to a user process, or idle with nothing
//! runnable (`HC_RECOVERED`), and
//! the image is out of the guest: no user code runs before that.

use std::borrow::Cow;
use std::mem::offset_of;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_sregs, kvm_userspace_memory_region};
use kvm_ioctls::{VcpuExit, VmFd};
use lazarus_abi::layout::{BOOT_PML4_GPA, EXT_REGION, KERNEL_VIRT_BASE, SEL_USER_CS, SEL_USER_DS};
use lazarus_abi::repair::*;
use lazarus_abi::root::{EXT_FREE, KernelRoot, MAX_EXTS, NONE, RecoveryLog, RecoveryRecord};
use lazarus_repair_image::{ImageSize, PristineSource, RepairImage, SlotWindow, SymbolSource};
use object::{Object, ObjectSegment, SegmentFlags};
use tracing::{info, warn};
use vm_memory::{Bytes, GuestAddress};

use crate::boot::GDT;
use crate::cpu::{long_mode_sregs, segment_from_gdt};
use crate::crash::{CrashInfo, CrashKind};
use crate::hypercall::ExtEvent;
use crate::memory::GuestRam;
use crate::reaper::{PendingRemoval, SlotReaper};
use crate::root::read_root;
use crate::snapshot::{BufferPool, MemSnapshot};
use crate::vcpu::Vcpu;

/// KVM memory slot used for the repair image (slot 0 is RAM).
const REPAIR_SLOT: u32 = 1;
/// Crashes of one signature closer together than this count as a loop.
const LOOP_WINDOW: Duration = Duration::from_secs(2);

/// How the repair image enters the guest's physical address space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RepairSlot {
    /// A memory slot registered at boot whose host memory is swapped: the
    /// image during a repair, a decoy of fresh zeroed memory otherwise
    /// (see `lazarus_repair_image::SlotWindow`). No memory-slot changes on
    /// the repair path.
    #[default]
    Resident,
    /// A fresh memory slot added for each repair and deleted after it: no
    /// guest-physical memory at all at the image's address between
    /// repairs, at the price of two slot updates per repair (hundreds of
    /// microseconds on nested KVM).
    Fresh,
}

/// How to resurrect.
#[derive(Clone, Debug)]
pub struct ResurrectConfig {
    /// The repair program (`lazarus_image::REPAIR_ELF`).
    pub program: Cow<'static, [u8]>,
    /// Disable an extension after this many crashes.
    pub ext_crash_limit: u32,
    /// Longest the repair program may run before the repair is abandoned.
    pub budget: Duration,
    /// Receives one report per successful resurrection.
    pub listener: Option<Sender<Recovery>>,
    pub slot: RepairSlot,
}

impl ResurrectConfig {
    pub fn new(program: impl Into<Cow<'static, [u8]>>) -> Self {
        Self {
            program: program.into(),
            ext_crash_limit: 3,
            budget: Duration::from_millis(200),
            listener: None,
            slot: RepairSlot::default(),
        }
    }
}

/// One resurrection.
#[derive(Debug)]
pub struct Recovery {
    /// 0-based count of recoveries in this boot.
    pub seq: u64,
    pub crash: CrashInfo,
    pub plan: ResumePlan,
    /// Crash exit to the kernel's return to a user process.
    pub latency: Duration,
    /// Of which: taking the kernel-memory snapshot for the dump,
    pub snapshot_time: Duration,
    /// the repair program's run (slot mapped to doorbell),
    pub repair_time: Duration,
    /// removing the slot (overlaps the resume),
    pub unmap_time: Duration,
    /// and the kernel's recovery entry up to its return to user mode.
    pub resume_time: Duration,
    /// Kernel memory at the crash, for the dump.
    pub snapshot: MemSnapshot,
    pub root_gpa: u64,
}

impl Recovery {
    pub fn kind(&self) -> &'static str {
        kind_name(self.plan.kind)
    }

    /// One line for the console and the log.
    pub fn summary(&self) -> String {
        let name = lazarus_abi::name_str(&self.plan.name);
        let who = if self.plan.quarantined != 0 {
            format!("quarantined pid {} ({name})", self.plan.quarantined)
        } else if self.plan.interrupted != 0 && self.plan.kind == KIND_EXT_FAILED {
            format!(
                "no process to blame (the extension failed its caller); pid {} continues",
                self.plan.interrupted
            )
        } else if self.plan.interrupted != 0 {
            format!(
                "no process to blame (interrupt context); pid {} continues",
                self.plan.interrupted
            )
        } else {
            "no process to blame".to_string()
        };
        let ext = if self.plan.ext != NONE {
            let action = match self.plan.ext_actions.get(self.plan.ext as usize) {
                Some(&EXT_ACTION_DISABLED) => ", disabled",
                Some(&EXT_ACTION_RESET) => ", reset",
                _ => "",
            };
            let ext_name = match lazarus_abi::name_str(&self.plan.ext_name) {
                "" => "an extension".to_string(),
                n => format!("extension {n}"),
            };
            format!(" in {ext_name} (slot {}{action})", self.plan.ext)
        } else {
            String::new()
        };
        let at = match lazarus_abi::name_str(&self.plan.symbol) {
            "" => String::new(),
            f => format!(" at {f}"),
        };
        let code = match self.plan.code_bytes_restored {
            0 => String::new(),
            n => format!("; restored {n} bytes of corrupted code"),
        };
        format!(
            "resurrected after {}{ext}{at}: {who}{code}; {:.3} ms",
            self.kind(),
            self.latency.as_secs_f64() * 1e3
        )
    }
}

struct Pending {
    t0: Instant,
    resumed: Instant,
    removal: PendingRemoval,
    recovery: Recovery,
}

/// The repair image and what it takes to use it.
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

/// Why a resurrection was not possible (the caller falls back).
pub type Fallback = String;

impl Resurrector {
    /// Builds the image with a pristine copy of the kernel's read-only
    /// segments, taken from the kernel ELF itself, and the kernel's
    /// symbols; extension symbols come from the initramfs.
    pub fn new(
        cfg: ResurrectConfig,
        kernel_elf: &[u8],
        initramfs: &[u8],
        kernel_phys: (u64, u64),
        mem_size: u64,
        vm_fd: &VmFd,
    ) -> Result<Self, String> {
        let elf = object::File::parse(kernel_elf).map_err(|e| format!("kernel ELF: {e}"))?;
        let mut ro: Vec<(u64, &[u8])> = Vec::new();
        let mut text = (u64::MAX, 0);
        for seg in elf.segments() {
            let SegmentFlags::Elf { p_flags } = seg.flags() else {
                continue;
            };
            if p_flags & object::elf::PF_W != 0 || seg.size() == 0 {
                continue;
            }
            let data = seg.data().map_err(|e| format!("kernel ELF: {e}"))?;
            ro.push((seg.address(), data));
            if p_flags & object::elf::PF_X != 0 {
                text = (
                    text.0.min(seg.address()),
                    text.1.max(seg.address() + seg.size()),
                );
            }
        }
        let lo = ro
            .iter()
            .map(|s| s.0)
            .min()
            .ok_or("kernel ELF has no read-only segment")?;
        let hi = ro
            .iter()
            .map(|s| s.0 + s.1.len() as u64)
            .max()
            .unwrap_or(lo);
        let mut bytes = vec![0u8; (hi - lo) as usize];
        for (va, data) in ro {
            bytes[(va - lo) as usize..][..data.len()].copy_from_slice(data);
        }
        let mut kernel = PristineSource::kernel(lo, bytes);
        kernel.symbols = elf_symbols(kernel_elf)?;
        // An initramfs without (readable) extensions just means extension
        // crashes are not named in the console line.
        let ext_symbols = match lazarus_symbols::initramfs_modules(initramfs) {
            Ok(mods) => mods
                .into_iter()
                .filter_map(|m| Some((m.build_id?, elf_symbols(&m.elf).ok()?)))
                .collect(),
            Err(e) => {
                warn!("no extension symbols for the repair image: {e}");
                Vec::new()
            }
        };
        let mut image = RepairImage::new(&cfg.program, mem_size).map_err(|e| e.to_string())?;
        image
            .set_pristine(std::slice::from_ref(&kernel))
            .map_err(|e| e.to_string())?;
        let window = match cfg.slot {
            RepairSlot::Fresh => None,
            RepairSlot::Resident => {
                let w = SlotWindow::new(SLOT_SIZE as usize)
                    .map_err(|e| format!("reserving the repair slot: {e}"))?;
                let region = kvm_userspace_memory_region {
                    slot: REPAIR_SLOT,
                    flags: 0,
                    guest_phys_addr: SLOT_GPA,
                    memory_size: SLOT_SIZE,
                    userspace_addr: w.as_ptr() as u64,
                };
                // SAFETY: the window is a mapping of SLOT_SIZE bytes owned by
                // the resurrector, which lives as long as the VM's vCPUs.
                unsafe { vm_fd.set_user_memory_region(region) }
                    .map_err(|e| format!("registering the repair slot: {e}"))?;
                Some(w)
            }
        };
        Ok(Self {
            cfg,
            image,
            kernel,
            exts: Default::default(),
            ext_symbols,
            kernel_text: text,
            kernel_phys,
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

    pub fn image_size(&self) -> ImageSize {
        self.image.size()
    }

    /// Kernel code changed: refresh the pristine copies. On load, the
    /// extension is relocated but its init has not run, which is exactly
    /// the state a reset restores.
    pub fn on_ext_event(&mut self, mem: &GuestRam, root_gpa: Option<u64>, ev: ExtEvent) {
        let slot = ev.slot as usize;
        if slot >= MAX_EXTS {
            return;
        }
        self.exts[slot] = None;
        if ev.loaded {
            match root_gpa
                .ok_or("no state root".to_string())
                .and_then(|g| capture_ext(mem, g, slot))
            {
                Ok(mut p) => {
                    let id = lazarus_symbols::build_id_of_loaded(|off, buf| {
                        let Some(src) = usize::try_from(off)
                            .ok()
                            .and_then(|o| p.bytes.get(o..o.checked_add(buf.len())?))
                        else {
                            return false;
                        };
                        buf.copy_from_slice(src);
                        true
                    });
                    if let Some((_, syms)) = self
                        .ext_symbols
                        .iter()
                        .find(|(b, _)| Some(b) == id.as_ref())
                    {
                        p.symbols = syms
                            .iter()
                            .map(|f| SymbolSource {
                                addr: f.addr.wrapping_add(p.va),
                                ..f.clone()
                            })
                            .collect();
                    }
                    self.exts[slot] = Some(p);
                }
                Err(e) => warn!(
                    slot,
                    "cannot snapshot the extension for the repair image: {e}"
                ),
            }
        }
        let mut all = vec![self.kernel.clone()];
        all.extend(self.exts.iter().flatten().cloned());
        match self.image.set_pristine(&all) {
            Ok(()) => info!(
                generation = self.image.generation(),
                bytes = self.image.size().total,
                "repair image refreshed"
            ),
            Err(e) => warn!("repair image refresh failed: {e}"),
        }
    }

    /// Tries to resurrect the kernel after `crash` on `vcpu`. On success
    /// the vCPU is set up to enter the kernel's recovery entry.
    pub fn recover(
        &mut self,
        vcpu: &mut Vcpu,
        vm_fd: &Arc<VmFd>,
        mem: &GuestRam,
        root_gpa: Option<u64>,
        crash: CrashInfo,
        t0: Instant,
    ) -> Result<(), (Box<CrashInfo>, Fallback)> {
        let fail = |crash: CrashInfo, why: String| Err((Box::new(crash), why));
        let Some(root_gpa) = root_gpa else {
            return fail(crash, "the kernel never registered its state root".into());
        };
        if let Some(p) = self.pending.take() {
            // Crashed again before getting back to user mode: the
            // recovery itself failed.
            let _ = p.removal.wait();
            return fail(crash, "the kernel crashed again while recovering".into());
        }
        let (Some(regs), Some(sregs)) = (crash.regs, crash.sregs) else {
            return fail(crash, "the crashed vCPU's registers are unavailable".into());
        };
        let root = match read_root(mem, root_gpa) {
            Ok(r) => r,
            Err(e) => return fail(crash, format!("the kernel state root is unreadable: {e}")),
        };
        let detector = detector(&crash.kind);
        // Same place, same way, same process, again and again: a crash
        // loop (the repair did not stop it). Different processes crashing
        // in the same place are separate crashes: each was quarantined.
        let rip = crash
            .guest_record
            .as_ref()
            .map_or(regs.rip, |r| r.frame.rip);
        let pid = crash
            .guest_record
            .as_ref()
            .map_or(root.cpus[0].current, |r| r.pid);
        let key = (rip, u64::from(detector), pid);
        self.repeat = match self.last {
            Some((k, at)) if k == key && at.elapsed() < LOOP_WINDOW => self.repeat + 1,
            _ => 0,
        };
        self.last = Some((key, Instant::now()));

        let offender_cr3 = {
            let pid = crash
                .guest_record
                .as_ref()
                .map_or(root.cpus[0].current, |r| r.pid);
            let p = &root.procs[KernelRoot::slot_of(pid)];
            (pid != 0 && p.pid == pid).then_some(p.cr3)
        };
        let snap_start = Instant::now();
        let snapshot = crate::snapshot::take(
            mem,
            self.mem_size,
            &root,
            self.kernel_phys,
            offender_cr3,
            &self.pool,
        );
        let snapshot_time = snap_start.elapsed();

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
            code_verified: u32::from(self.code_intact(mem, &root)),
            _pad: 0,
            pristine: [Pristine::default(); MAX_PRISTINE],
        };
        self.image.prepare(input);
        let started = Instant::now();
        let tsc0 = rdtsc();
        let run = self.run_repair(vcpu, vm_fd, &sregs);
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
        let removal = match run {
            Ok(removal) => removal,
            Err(why) => return fail(crash, why),
        };
        // Every refusal below waits for the slot to be gone first.
        let refuse = |crash: CrashInfo, removal: PendingRemoval, why: String| {
            let why = match removal.wait() {
                Ok(_) => why,
                Err(e) => format!("{why}; {e}"),
            };
            fail(crash, why)
        };
        if plan.action != PLAN_RESUME {
            let why = lazarus_abi::name_str(&plan.reason).to_string();
            return refuse(crash, removal, format!("the repair program refused: {why}"));
        }
        if let Err(why) = self.check_plan(&plan) {
            return refuse(crash, removal, why);
        }
        if let Err(e) = enter_kernel(vcpu, &sregs, &plan, root.idt) {
            return refuse(crash, removal, format!("cannot resume the vCPU: {e}"));
        }
        self.pending = Some(Pending {
            t0,
            resumed: Instant::now(),
            removal,
            recovery: Recovery {
                seq: self.count,
                crash,
                plan,
                latency: Duration::ZERO,
                snapshot_time,
                repair_time,
                unmap_time: Duration::ZERO,
                resume_time: Duration::ZERO,
                snapshot,
                root_gpa,
            },
        });
        Ok(())
    }

    /// Compares kernel and extension code with the pristine copies at
    /// native speed on the host, so that the repair program (whose every
    /// first touch of a page costs a shadow-page fault) can skip that pass
    /// when nothing differs.
    fn code_intact(&self, mem: &GuestRam, root: &KernelRoot) -> bool {
        let kernel_ok = {
            let p = &self.kernel;
            let pa = p.va.wrapping_sub(KERNEL_VIRT_BASE);
            let mut live = vec![0u8; p.code_len as usize];
            mem.read_slice(&mut live, GuestAddress(pa)).is_ok()
                && live == p.bytes[..p.code_len as usize]
        };
        kernel_ok
            && self.exts.iter().flatten().all(|p| {
                let e = &root.exts[p.ext_slot as usize];
                if e.state == EXT_FREE || e.base != p.va {
                    return true;
                }
                let mut off = 0u64;
                while off < p.code_len {
                    let Some(pa) = translate(mem, root.master_pml4, p.va + off) else {
                        return false;
                    };
                    let n = (4096 - (off % 4096)).min(p.code_len - off) as usize;
                    let mut live = vec![0u8; n];
                    if mem.read_slice(&mut live, GuestAddress(pa)).is_err()
                        || live != p.bytes[off as usize..off as usize + n]
                    {
                        return false;
                    }
                    off += n as u64;
                }
                true
            })
    }

    /// Maps the image, runs the program to its doorbell and starts
    /// unmapping the image. On an error the slot is already gone.
    fn run_repair(
        &mut self,
        vcpu: &mut Vcpu,
        vm_fd: &Arc<VmFd>,
        crash_sregs: &kvm_sregs,
    ) -> Result<PendingRemoval, String> {
        if let Some(w) = self.window.as_mut() {
            let t0 = Instant::now();
            w.show(self.image.buffer())
                .map_err(|e| format!("showing the repair image: {e}"))?;
            let t1 = Instant::now();
            let result = self.enter_and_wait(vcpu, crash_sregs);
            let t2 = Instant::now();
            let hidden = self.window.as_mut().map(SlotWindow::hide);
            tracing::debug!(
                show_us = (t1 - t0).as_micros() as u64,
                run_us = (t2 - t1).as_micros() as u64,
                hide_us = t2.elapsed().as_micros() as u64,
                "repair window profile"
            );
            return match (result, hidden) {
                (_, Some(Err(e))) => Err(format!("hiding the repair image: {e}")),
                (Ok(()), _) => Ok(PendingRemoval::done(t2.elapsed())),
                (Err(why), _) => Err(why),
            };
        }
        let (host, size) = self.image.host_region();
        let region = kvm_userspace_memory_region {
            slot: REPAIR_SLOT,
            flags: 0,
            guest_phys_addr: SLOT_GPA,
            memory_size: size,
            userspace_addr: host as u64,
        };
        let t0 = Instant::now();
        // SAFETY: `host` is the start of the image's own page-aligned
        // mapping of `size` bytes, which outlives the slot: the slot is
        // removed before the image is touched again (the next repair waits
        // for the removal, see `Pending`).
        unsafe { vm_fd.set_user_memory_region(region) }
            .map_err(|e| format!("mapping the repair image: {e}"))?;
        let t1 = Instant::now();
        let result = self.enter_and_wait(vcpu, crash_sregs);
        let t2 = Instant::now();
        let removal = self
            .reaper
            .get_or_insert_with(SlotReaper::new)
            .remove(vm_fd, region);
        tracing::debug!(
            add_us = (t1 - t0).as_micros() as u64,
            run_us = (t2 - t1).as_micros() as u64,
            "repair slot profile"
        );
        match result {
            Ok(()) => Ok(removal),
            Err(why) => match removal.wait() {
                Ok(_) => Err(why),
                // The guest must never keep the image: nothing can be
                // resumed.
                Err(e) => Err(format!("{why}; {e}")),
            },
        }
    }

    fn enter_and_wait(&mut self, vcpu: &mut Vcpu, crash_sregs: &kvm_sregs) -> Result<(), String> {
        let mut s = *crash_sregs;
        let code = segment_from_gdt(GDT[usize::from(SEL_USER_CS / 8)], SEL_USER_CS);
        let data = segment_from_gdt(GDT[usize::from(SEL_USER_DS / 8)], SEL_USER_DS);
        s.cs = code;
        s.ss = data;
        s.ds = data;
        s.es = data;
        s.cr3 = self.image.cr3();
        // No IDT: any exception in the repair program is a triple fault.
        s.idt.base = 0;
        s.idt.limit = 0;
        let base = long_mode_sregs(kvm_sregs::default());
        s.cr0 = base.cr0;
        s.cr4 = base.cr4;
        s.efer = base.efer;
        let (rip, rsp) = self.image.entry();
        let regs = kvm_regs {
            rip,
            rsp,
            rflags: 0x2,
            ..Default::default()
        };
        vcpu.fd
            .set_sregs(&s)
            .map_err(|e| format!("KVM_SET_SREGS for repair: {e}"))?;
        vcpu.fd
            .set_regs(&regs)
            .map_err(|e| format!("KVM_SET_REGS for repair: {e}"))?;
        let deadline = Instant::now() + self.cfg.budget;
        loop {
            match vcpu.fd.run() {
                Ok(VcpuExit::MmioWrite(addr, _)) if addr == DOORBELL_GPA => return Ok(()),
                Ok(VcpuExit::Shutdown) => {
                    return Err("the repair program faulted (triple fault)".into());
                }
                Ok(other) => return Err(format!("unexpected exit while repairing: {other:?}")),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    vcpu.fd.set_kvm_immediate_exit(0);
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "the repair program ran past its {:?} budget",
                            self.cfg.budget
                        ));
                    }
                }
                Err(e) => return Err(format!("KVM_RUN while repairing: {e}")),
            }
        }
    }

    /// The plan comes from code that read a crashed kernel: check it.
    fn check_plan(&self, plan: &ResumePlan) -> Result<(), String> {
        let (lo, hi) = self.kernel_text;
        if !(lo..hi).contains(&plan.entry) {
            return Err(format!(
                "resume plan: entry {:#x} is not kernel code",
                plan.entry
            ));
        }
        let stack = plan.stack_top.wrapping_sub(KERNEL_VIRT_BASE);
        if !(self.kernel_phys.0..=self.kernel_phys.1).contains(&stack)
            || !plan.stack_top.is_multiple_of(16)
        {
            return Err(format!(
                "resume plan: stack {:#x} is not in the kernel image",
                plan.stack_top
            ));
        }
        if plan.cr3 != BOOT_PML4_GPA {
            return Err(format!(
                "resume plan: page table {:#x} is not the kernel's",
                plan.cr3
            ));
        }
        if plan.ext != NONE && plan.ext as usize >= MAX_EXTS {
            return Err("resume plan: bad extension slot".into());
        }
        Ok(())
    }

    /// Whether a repair is waiting for the kernel to get back to user mode.
    pub fn awaiting(&self) -> bool {
        self.pending.is_some()
    }

    /// The kernel is returning to a user process: the resurrection is
    /// complete once the image's slot is gone. Records the latency in the
    /// kernel's log and reports. An error means the slot could not be
    /// removed and the guest must not run on.
    pub fn on_recovered(&mut self, mem: &GuestRam, count: u64) -> Result<Option<String>, String> {
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

fn detector(kind: &CrashKind) -> u32 {
    match kind {
        CrashKind::GuestPanic { .. } => DETECT_PANIC,
        CrashKind::TripleFault => DETECT_TRIPLE_FAULT,
        CrashKind::Hang { .. } => DETECT_HANG,
        CrashKind::InternalError { .. } => DETECT_INTERNAL_ERROR,
        _ => DETECT_OTHER,
    }
}

/// Sets the vCPU to enter the kernel's recovery entry in ring 0.
fn enter_kernel(
    vcpu: &mut Vcpu,
    crash_sregs: &kvm_sregs,
    plan: &ResumePlan,
    idt: u64,
) -> Result<(), String> {
    let mut s = long_mode_sregs(*crash_sregs);
    s.cr3 = plan.cr3;
    s.idt.base = idt;
    s.idt.limit = 16 * 256 - 1;
    let regs = kvm_regs {
        rip: plan.entry,
        rsp: plan.stack_top,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu.fd.set_sregs(&s).map_err(|e| e.to_string())?;
    vcpu.fd.set_regs(&regs).map_err(|e| e.to_string())
}

/// Copies a freshly loaded (relocated, not yet initialised) extension
/// image out of guest memory.
fn capture_ext(mem: &GuestRam, root_gpa: u64, slot: usize) -> Result<PristineSource, String> {
    let root = read_root(mem, root_gpa).map_err(|e| e.to_string())?;
    let e = root.exts[slot];
    if e.state == EXT_FREE
        || !e.size.is_multiple_of(4096)
        || e.base < EXT_REGION
        || e.size == 0
        || e.size > lazarus_abi::layout::EXT_SLOT_SIZE
    {
        return Err(format!("slot {slot} does not hold a loaded extension"));
    }
    if e.text_end <= e.base || e.text_end > e.base + e.size {
        return Err(format!("slot {slot}: bad text range"));
    }
    let mut bytes = vec![0u8; e.size as usize];
    let mut off = 0u64;
    while off < e.size {
        let pa =
            translate(mem, root.master_pml4, e.base + off).ok_or("extension page not mapped")?;
        mem.read_slice(
            &mut bytes[off as usize..(off + 4096) as usize],
            GuestAddress(pa),
        )
        .map_err(|e| e.to_string())?;
        off += 4096;
    }
    Ok(PristineSource {
        ext_slot: slot as u32,
        va: e.base,
        code_len: e.text_end - e.base,
        bytes,
        symbols: Vec::new(),
    })
}

/// An ELF's functions for the image, at link-time addresses.
fn elf_symbols(elf: &[u8]) -> Result<Vec<SymbolSource>, String> {
    let funcs = lazarus_symbols::function_symbols(elf).map_err(|e| format!("symbols: {e}"))?;
    Ok(funcs
        .into_iter()
        .map(|f| SymbolSource {
            addr: f.start,
            size: f.size,
            name: f.name,
        })
        .collect())
}

/// Walks the guest's page tables on the host (4 KiB leaves only).
fn translate(mem: &GuestRam, pml4: u64, va: u64) -> Option<u64> {
    let mut table = pml4;
    for level in (0..4).rev() {
        let e: u64 = mem
            .read_obj(GuestAddress(table + ((va >> (12 + 9 * level)) & 0x1ff) * 8))
            .ok()?;
        if e & 1 == 0 || (level > 0 && e & 0x80 != 0) {
            return None;
        }
        table = e & 0x000f_ffff_ffff_f000;
    }
    Some(table)
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_ram;
    use lazarus_abi::root::{EXT_LIVE, ExtSlot};

    /// A guest can put anything in its extension table; snapshotting an
    /// extension for the repair image must reject it, never panic.
    #[test]
    fn hostile_extension_slots_are_rejected() {
        let mem = create_guest_ram(16 << 20).expect("ram");
        let gpa = 0x10_0000;
        crate::root::tests::plant_root(&mem, gpa);
        let slot_at = gpa + offset_of!(KernelRoot, exts) as u64;
        let cases = [
            (5000, EXT_REGION, EXT_REGION + 10),
            (u64::MAX, EXT_REGION, EXT_REGION + 10),
            (4096, 0, 0),
            (8192, EXT_REGION, EXT_REGION + 4096),
            (8192, EXT_REGION, EXT_REGION + 100_000),
        ];
        for (size, base, text_end) in cases {
            let e = ExtSlot {
                state: EXT_LIVE,
                base,
                size,
                text_start: base,
                text_end,
                ..ExtSlot::default()
            };
            mem.write_slice(zerocopy::IntoBytes::as_bytes(&e), GuestAddress(slot_at))
                .expect("write slot");
            assert!(
                capture_ext(&mem, gpa, 0).is_err(),
                "{size} {base:#x} {text_end:#x}"
            );
        }
    }
}
