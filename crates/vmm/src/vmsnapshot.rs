//! Whole-VM snapshots, kept in memory: the baseline that resurrection is
//! measured against ("restore the latest snapshot, lose the work since").
//!
//! Like a Firecracker full snapshot, a [`VmSnapshot`] holds everything the
//! guest can observe: guest RAM, every vCPU's architectural state (general
//! and special registers, FPU/XSAVE, XCRs, debug registers, local APIC,
//! MSRs, multiprocessing state, pending events), the in-kernel PICs and
//! IOAPIC (and the PIT, if one is created), the COM1 UART and the
//! hypervisor's hypercall bookkeeping (the registered state root, the
//! milestones, the extension events).
//!
//! RAM is copied with `memcpy` into a page-aligned image of guest RAM.
//! Pages the guest never touched (or only read: the shared zero page) are
//! not copied: the page map (`PAGEMAP_SCAN` on `/proc/self/pagemap`, or
//! reading it on kernels before 6.7) tells which pages hold data (present
//! or swapped out). The image's pages fault in once, on the first copy
//! into them; passing the previous snapshot as `reuse` recycles them, so
//! later copies cost no page faults (PLATFORM.md: fresh memory is ~25x
//! slower). On restore, pages that held data are copied back and pages
//! that got data only after the snapshot are zeroed, which is what they
//! were then.
//!
//! The state is read between runs, and KVM finishes an exit's port or
//! MMIO access (e.g. RIP past an `out`) only on the next KVM_RUN: so
//! [`Vm::run`] completes that step for every vCPU before it returns (see
//! [`crate::vcpu::complete_pending_io`]); otherwise a restored vCPU would repeat the
//! `out` it stopped at, e.g. the milestone hypercall.
//!
//! After RAM is rewritten, KVM's shadow page tables no longer match the
//! guest's page tables, and this KVM keeps using them for ring-3 code
//! (PLATFORM.md). Removing a memory slot discards the shadow pages of
//! that slot, so a restore deletes and re-registers the RAM slot.
//!
//! Not captured: the host-side statistics (exit counts, hypercall counts),
//! console input that is queued on the host but not yet in the UART, and
//! the KVM clock (the guest does not use kvmclock).

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_MSR_ENTRIES,
    KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SIPI_VECTOR, Msrs, kvm_debugregs, kvm_fpu,
    kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs,
    kvm_userspace_memory_region, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use tracing::{debug, warn};
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vm_superio::serial::SerialState;
use zerocopy::IntoBytes;

use crate::console::lock;
use crate::error::{Error, Result};
use crate::hypercall::HypercallState;
use crate::memory::GuestRam;
use crate::vcpu::Vcpu;
use crate::vm::Vm;

/// Host page size (guest RAM is mapped with 4 KiB pages).
const PAGE: usize = 4096;
/// `/proc/self/pagemap` entry bits: page present in RAM, page swapped out.
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;

// MSRs that must be saved even if KVM's index list left them out: the boot
// MSRs of `cpu.rs` (defined there) and these.
use crate::cpu::{
    MSR_CSTAR, MSR_IA32_MISC_ENABLE, MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_EIP,
    MSR_IA32_SYSENTER_ESP, MSR_IA32_TSC, MSR_KERNEL_GS_BASE, MSR_LSTAR, MSR_MTRR_DEF_TYPE,
    MSR_STAR, MSR_SYSCALL_MASK,
};
const MSR_IA32_APICBASE: u32 = 0x1b;
const MSR_IA32_CR_PAT: u32 = 0x277;
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
const MSR_TSC_AUX: u32 = 0xc000_0103;
/// The x2APIC register MSRs: the local APIC state covers them.
const X2APIC_MSRS: std::ops::RangeInclusive<u32> = 0x800..=0x8ff;

const REQUIRED_MSRS: [u32; 14] = [
    MSR_IA32_TSC,
    MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_ESP,
    MSR_IA32_SYSENTER_EIP,
    MSR_IA32_MISC_ENABLE,
    MSR_IA32_CR_PAT,
    MSR_MTRR_DEF_TYPE,
    MSR_STAR,
    MSR_LSTAR,
    MSR_CSTAR,
    MSR_SYSCALL_MASK,
    MSR_KERNEL_GS_BASE,
    MSR_TSC_AUX,
    MSR_IA32_TSC_DEADLINE,
];

/// A copy of a whole stopped VM, taken by [`Vm::snapshot`] and put back by
/// [`Vm::restore`].
pub struct VmSnapshot {
    taken_at: Instant,
    ram: RamImage,
    vcpus: Vec<VcpuState>,
    /// PIC master, PIC slave, IOAPIC.
    irqchips: [kvm_irqchip; 3],
    pit: Option<kvm_pit_state2>,
    serial: SerialState,
    hypercalls: HypercallState,
    guest_ready: bool,
}

/// Guest RAM: an image of all of it, of which only the populated pages
/// are meaningful (the others were zero).
struct RamImage {
    /// The image, `len` bytes at the guest-physical offsets, inside this
    /// buffer from its first page boundary on: page-aligned copies avoid
    /// a `memcpy` slow path (on this AMD host, glibc's `rep movsb` is ~15x
    /// slower when the destination sits 16 bytes past the source modulo
    /// 4 KiB, where a plain heap buffer would put it). Only the pages a
    /// copy ever wrote are backed by host memory: they fault in once, and
    /// a recycled image copies into them without faults.
    buf: Vec<u8>,
    start: usize,
    len: usize,
    /// Per 4 KiB page: whether it held data (else it was zero).
    populated: Vec<bool>,
    /// Page map read buffers.
    pagemap: PageMapBufs,
    /// Page map read buffers for restores, and RAM's pages then.
    scratch: Mutex<(PageMapBufs, Vec<bool>)>,
}

impl RamImage {
    fn new(len: usize) -> Self {
        // Zeroed allocation: fresh pages, not touched until written.
        let buf = vec![0u8; len + PAGE];
        let start = buf.as_ptr().align_offset(PAGE);
        Self {
            start: if start < PAGE { start } else { 0 },
            buf,
            len,
            populated: Vec::new(),
            pagemap: PageMapBufs::default(),
            scratch: Mutex::new((PageMapBufs::default(), Vec::new())),
        }
    }

    fn populated_bytes(&self) -> usize {
        self.populated.iter().filter(|&&p| p).count() * PAGE
    }

    fn image(&self) -> &[u8] {
        self.buf
            .get(self.start..self.start + self.len)
            .unwrap_or_default()
    }

    fn image_mut(&mut self) -> &mut [u8] {
        self.buf
            .get_mut(self.start..self.start + self.len)
            .unwrap_or_default()
    }
}

/// What KVM lets us save and restore on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Caps {
    xsave: bool,
    xcrs: bool,
    debugregs: bool,
    vcpu_events: bool,
}

impl Caps {
    fn of(vm_fd: &VmFd) -> Self {
        // KVM_SET_XSAVE copies KVM's xsave size, which exceeds the legacy
        // 4 KiB struct only with dynamically enabled features (AMX) that
        // this process never enables; without XSAVE2 it is 4 KiB at most.
        let xsave2 = vm_fd.check_extension_int(Cap::Xsave2);
        let fits = usize::try_from(xsave2).map_or(true, |n| n <= size_of::<kvm_xsave>());
        Self {
            xsave: vm_fd.check_extension(Cap::Xsave) && fits,
            xcrs: vm_fd.check_extension(Cap::Xcrs),
            debugregs: vm_fd.check_extension(Cap::Debugregs),
            vcpu_events: vm_fd.check_extension(Cap::VcpuEvents),
        }
    }
}

/// One vCPU's state.
struct VcpuState {
    id: u32,
    mp_state: kvm_mp_state,
    regs: kvm_regs,
    sregs: kvm_sregs,
    /// Used when XSAVE is not available.
    fpu: kvm_fpu,
    xsave: Option<Box<[u32; 1024]>>,
    xcrs: Option<kvm_xcrs>,
    debugregs: Option<kvm_debugregs>,
    lapic: kvm_lapic_state,
    /// The MSRs, in chunks of at most `KVM_MAX_MSR_ENTRIES`.
    msrs: Vec<Msrs>,
    events: Option<kvm_vcpu_events>,
}

impl fmt::Debug for VmSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmSnapshot")
            .field("ram_bytes", &self.ram_bytes())
            .field("populated_bytes", &self.populated_bytes())
            .field("vcpus", &self.vcpus.len())
            .field(
                "msrs",
                &self
                    .vcpus
                    .first()
                    .map_or(0, |v| msr_entries(&v.msrs).count()),
            )
            .field("pit", &self.pit.is_some())
            .field("root_gpa", &self.hypercalls.root_gpa)
            .finish_non_exhaustive()
    }
}

impl VmSnapshot {
    /// Size of the guest RAM image this snapshot holds (the guest's RAM
    /// size; see [`VmSnapshot::populated_bytes`] for what was copied).
    pub fn ram_bytes(&self) -> usize {
        self.ram.len
    }

    /// Bytes of guest RAM that held data and were copied (the rest of
    /// RAM had never been touched and reads as zero).
    pub fn populated_bytes(&self) -> usize {
        self.ram.populated_bytes()
    }

    /// When the snapshot was taken (the capture started).
    pub fn taken_at(&self) -> Instant {
        self.taken_at
    }

    /// Number of vCPUs captured.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// The registered kernel state root at the time of the snapshot.
    pub fn root_gpa(&self) -> Option<u64> {
        self.hypercalls.root_gpa
    }

    /// What differs between two snapshots, one line per difference (empty:
    /// identical). For tests and debugging: a restore followed by a new
    /// snapshot differs only in what time changes (TSC, the APIC timer's
    /// current count).
    pub fn differences(&self, other: &VmSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        diff_ram(&self.ram, &other.ram, &mut out);
        if self.vcpus.len() != other.vcpus.len() {
            out.push(format!(
                "vCPU count {} vs {}",
                self.vcpus.len(),
                other.vcpus.len()
            ));
        }
        for (a, b) in self.vcpus.iter().zip(&other.vcpus) {
            diff_vcpu(a, b, &mut out);
        }
        for (a, b) in self.irqchips.iter().zip(&other.irqchips) {
            if !irqchip_eq(a, b) {
                out.push(format!("irqchip {}", a.chip_id));
            }
        }
        if self.pit != other.pit {
            out.push("PIT".into());
        }
        if self.serial != other.serial {
            out.push(format!("serial {:?} vs {:?}", self.serial, other.serial));
        }
        let (h, g) = (&self.hypercalls, &other.hypercalls);
        if h.root_gpa != g.root_gpa
            || h.ext_events != g.ext_events
            || h.last_ext_event != g.last_ext_event
            || !h.milestones.keys().eq(g.milestones.keys())
            || !h
                .milestones
                .values()
                .map(|m| m.count)
                .eq(g.milestones.values().map(|m| m.count))
        {
            out.push("hypercall state".into());
        }
        if self.guest_ready != other.guest_ready {
            out.push("guest-ready flag".into());
        }
        out
    }
}

impl Vm {
    /// Captures the whole VM. The VM must not be running (call between
    /// `run()`s, e.g. after `run()` returned `MilestoneReached`, `Stopped`
    /// or `Crash`). `reuse` recycles a previous snapshot's buffers, so that
    /// the copy costs no page faults.
    pub fn snapshot(&self, reuse: Option<VmSnapshot>) -> Result<VmSnapshot> {
        let taken_at = Instant::now();
        let ctx = self.context();
        let caps = Caps::of(self.vm_fd());
        let mem_size = ram_len(self.layout().mem_size)?;
        let (ram, mut old_vcpus) = match reuse {
            Some(s) if s.ram.len == mem_size => (Some(s.ram), s.vcpus),
            Some(s) => (None, s.vcpus),
            None => (None, Vec::new()),
        };

        // Devices and VM-wide state first, then the vCPUs, then RAM (the
        // largest part; nothing runs meanwhile, so the order is free).
        let irqchips = [
            get_irqchip(self.vm_fd(), KVM_IRQCHIP_PIC_MASTER)?,
            get_irqchip(self.vm_fd(), KVM_IRQCHIP_PIC_SLAVE)?,
            get_irqchip(self.vm_fd(), KVM_IRQCHIP_IOAPIC)?,
        ];
        // No PIT is created today; save it if a later version adds one.
        let pit = self.vm_fd().get_pit2().ok();
        let serial = lock(&ctx.devices.serial).save_state();
        let hypercalls = ctx.devices.hypercalls.save_state();
        let guest_ready = ctx.guest_ready.load(Ordering::Acquire);

        let mut candidates = None;
        let mut vcpus = Vec::with_capacity(self.vcpus().len());
        for vcpu in self.vcpus() {
            let previous = old_vcpus
                .iter()
                .position(|v| v.id == vcpu.id)
                .map(|i| old_vcpus.swap_remove(i));
            vcpus.push(save_vcpu(
                vcpu,
                caps,
                previous.map(|p| p.msrs),
                self.kvm(),
                &mut candidates,
            )?);
        }

        let mut ram = ram.unwrap_or_else(|| RamImage::new(mem_size));
        copy_ram_out(self.memory(), mem_size, &mut ram)?;
        debug!(
            populated_mib = ram.populated_bytes() >> 20,
            elapsed = ?taken_at.elapsed(),
            "whole-VM snapshot taken"
        );
        Ok(VmSnapshot {
            taken_at,
            ram,
            vcpus,
            irqchips,
            pit,
            serial,
            hypercalls,
            guest_ready,
        })
    }

    /// Puts the VM back exactly as captured (RAM, vCPUs, irqchip, devices,
    /// hypercall bookkeeping). The VM must not be running. The snapshot
    /// stays valid: it can be restored again. A snapshot of another VM
    /// shape is refused before anything changes; if a KVM call fails
    /// midway, the VM is left half restored (restore again or drop it).
    pub fn restore(&mut self, snap: &VmSnapshot) -> Result<()> {
        let t0 = Instant::now();
        let mem_size = ram_len(self.layout().mem_size)?;
        if snap.ram.len != mem_size || snap.ram.populated.len() != mem_size / PAGE {
            return Err(Error::SnapshotMismatch(format!(
                "it holds {} bytes of RAM, the VM has {mem_size}",
                snap.ram.len
            )));
        }
        let ids: Vec<u32> = self.vcpus().iter().map(|v| v.id).collect();
        let saved: Vec<u32> = snap.vcpus.iter().map(|v| v.id).collect();
        if ids != saved {
            return Err(Error::SnapshotMismatch(format!(
                "it holds vCPUs {saved:?}, the VM has {ids:?}"
            )));
        }
        let caps = Caps::of(self.vm_fd());

        copy_ram_in(self.memory(), mem_size, &snap.ram)?;
        drop_shadow_page_tables(self.vm_fd(), self.memory(), mem_size as u64)?;
        let t_ram = t0.elapsed();

        for chip in &snap.irqchips {
            self.vm_fd()
                .set_irqchip(chip)
                .map_err(Error::kvm("KVM_SET_IRQCHIP"))?;
        }
        if let Some(pit) = &snap.pit {
            self.vm_fd()
                .set_pit2(pit)
                .map_err(Error::kvm("KVM_SET_PIT2"))?;
        }
        for (vcpu, state) in self.vcpus().iter().zip(&snap.vcpus) {
            restore_vcpu(&vcpu.fd, state, caps)?;
        }

        let ctx = self.context();
        lock(&ctx.devices.serial).restore_state(&snap.serial)?;
        let (ext_events_now, _) = ctx.devices.hypercalls.ext_events();
        if ctx.handler.is_some() && ext_events_now != snap.hypercalls.ext_events {
            warn!(
                "extensions were loaded or unloaded since the snapshot: the repair \
                 image's pristine extension copies are not rolled back"
            );
        }
        ctx.devices.hypercalls.restore_state(&snap.hypercalls);
        ctx.guest_ready.store(snap.guest_ready, Ordering::Release);
        *lock(&ctx.hang) = None;
        *lock(&ctx.handling) = None;
        debug!(ram = ?t_ram, total = ?t0.elapsed(), "whole-VM snapshot restored");
        Ok(())
    }
}

fn ram_len(mem_size: u64) -> Result<usize> {
    usize::try_from(mem_size)
        .ok()
        .filter(|n| n.is_multiple_of(PAGE))
        .ok_or_else(|| Error::GuestMemory(format!("RAM size {mem_size} cannot be snapshotted")))
}

fn get_irqchip(vm_fd: &VmFd, chip_id: u32) -> Result<kvm_irqchip> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm_fd
        .get_irqchip(&mut chip)
        .map_err(Error::kvm("KVM_GET_IRQCHIP"))?;
    Ok(chip)
}

fn save_vcpu(
    vcpu: &Vcpu,
    caps: Caps,
    msrs: Option<Vec<Msrs>>,
    kvm: &Kvm,
    candidates: &mut Option<Vec<u32>>,
) -> Result<VcpuState> {
    let fd = &vcpu.fd;
    // Firecracker's order: the MP state first (reading it may accept
    // pending INIT/SIPI events), the events last.
    let mp_state = fd.get_mp_state().map_err(Error::kvm("KVM_GET_MP_STATE"))?;
    let regs = fd.get_regs().map_err(Error::kvm("KVM_GET_REGS"))?;
    let sregs = fd.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
    let (fpu, xsave) = if caps.xsave {
        let x = fd.get_xsave().map_err(Error::kvm("KVM_GET_XSAVE"))?;
        (kvm_fpu::default(), Some(Box::new(x.region)))
    } else {
        (fd.get_fpu().map_err(Error::kvm("KVM_GET_FPU"))?, None)
    };
    let xcrs = if caps.xcrs {
        Some(fd.get_xcrs().map_err(Error::kvm("KVM_GET_XCRS"))?)
    } else {
        None
    };
    let debugregs = if caps.debugregs {
        Some(
            fd.get_debug_regs()
                .map_err(Error::kvm("KVM_GET_DEBUGREGS"))?,
        )
    } else {
        None
    };
    let lapic = fd.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))?;
    let reused = match msrs {
        Some(mut chunks) => read_msr_chunks(fd, &mut chunks)?.then_some(chunks),
        None => None,
    };
    let msrs = match reused {
        Some(chunks) => chunks,
        None => {
            let list = candidates.get_or_insert_with(|| msr_candidates(kvm));
            probe_msrs(fd, vcpu.id, list)?
        }
    };
    let events = if caps.vcpu_events {
        Some(
            fd.get_vcpu_events()
                .map_err(Error::kvm("KVM_GET_VCPU_EVENTS"))?,
        )
    } else {
        None
    };
    Ok(VcpuState {
        id: vcpu.id,
        mp_state,
        regs,
        sregs,
        fpu,
        xsave,
        xcrs,
        debugregs,
        lapic,
        msrs,
        events,
    })
}

fn restore_vcpu(fd: &VcpuFd, s: &VcpuState, caps: Caps) -> Result<()> {
    fd.set_mp_state(s.mp_state)
        .map_err(Error::kvm("KVM_SET_MP_STATE"))?;
    fd.set_regs(&s.regs).map_err(Error::kvm("KVM_SET_REGS"))?;
    // The APIC base (x2APIC mode) is part of the special registers; it
    // must be set before the APIC state, whose layout depends on it.
    fd.set_sregs(&s.sregs)
        .map_err(Error::kvm("KVM_SET_SREGS"))?;
    match &s.xsave {
        Some(region) if caps.xsave => {
            let xsave = kvm_xsave {
                region: **region,
                ..Default::default()
            };
            // SAFETY: `caps.xsave` holds only when KVM's xsave size fits
            // the 4 KiB `kvm_xsave` (see `Caps::of`), so KVM reads nothing
            // beyond `xsave`.
            unsafe { fd.set_xsave(&xsave) }.map_err(Error::kvm("KVM_SET_XSAVE"))?;
        }
        Some(_) => {
            return Err(Error::SnapshotMismatch(
                "it holds XSAVE state this KVM cannot take".into(),
            ));
        }
        None => fd.set_fpu(&s.fpu).map_err(Error::kvm("KVM_SET_FPU"))?,
    }
    if let Some(xcrs) = &s.xcrs {
        fd.set_xcrs(xcrs).map_err(Error::kvm("KVM_SET_XCRS"))?;
    }
    if let Some(dr) = &s.debugregs {
        fd.set_debug_regs(dr)
            .map_err(Error::kvm("KVM_SET_DEBUGREGS"))?;
    }
    fd.set_lapic(&s.lapic)
        .map_err(Error::kvm("KVM_SET_LAPIC"))?;
    // After the APIC: the TSC deadline (last in the list) needs the APIC
    // timer mode and the TSC.
    for chunk in &s.msrs {
        write_msrs(fd, s.id, chunk)?;
    }
    if let Some(events) = &s.events {
        let mut events = *events;
        events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
        fd.set_vcpu_events(&events)
            .map_err(Error::kvm("KVM_SET_VCPU_EVENTS"))?;
    }
    Ok(())
}

/// The MSRs to save: KVM's index list plus the ones the VMM sets at boot,
/// without the APIC ones (the APIC state holds them), the TSC deadline
/// last (it must be written after the TSC and the APIC).
fn msr_candidates(kvm: &Kvm) -> Vec<u32> {
    let listed = match kvm.get_msr_index_list() {
        Ok(list) => list.as_slice().to_vec(),
        Err(e) => {
            warn!("KVM_GET_MSR_INDEX_LIST failed, saving the basic MSRs only: {e}");
            Vec::new()
        }
    };
    candidate_list(&listed)
}

fn candidate_list(listed: &[u32]) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::with_capacity(listed.len() + REQUIRED_MSRS.len());
    for &i in listed.iter().chain(&REQUIRED_MSRS) {
        if i == MSR_IA32_APICBASE || X2APIC_MSRS.contains(&i) || out.contains(&i) {
            continue;
        }
        out.push(i);
    }
    if let Some(pos) = out.iter().position(|&i| i == MSR_IA32_TSC_DEADLINE) {
        let d = out.remove(pos);
        out.push(d);
    }
    out
}

fn msr_chunk(indices: &[u32]) -> Result<Msrs> {
    let entries: Vec<kvm_msr_entry> = indices
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&entries).map_err(|e| Error::Setup(format!("building an MSR list: {e:?}")))
}

/// Reads MSRs into chunks that worked before. `false`: one failed now.
fn read_msr_chunks(fd: &VcpuFd, chunks: &mut [Msrs]) -> Result<bool> {
    for chunk in chunks {
        let n = fd.get_msrs(chunk).map_err(Error::kvm("KVM_GET_MSRS"))?;
        if n != chunk.as_slice().len() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reads every candidate MSR KVM lets us read, dropping the others.
fn probe_msrs(fd: &VcpuFd, id: u32, candidates: &[u32]) -> Result<Vec<Msrs>> {
    let mut left: Vec<u32> = candidates.to_vec();
    let mut chunks = Vec::new();
    while !left.is_empty() {
        let take = left.len().min(KVM_MAX_MSR_ENTRIES);
        let mut chunk = msr_chunk(&left[..take])?;
        let n = fd
            .get_msrs(&mut chunk)
            .map_err(Error::kvm("KVM_GET_MSRS"))?;
        if n >= take {
            chunks.push(chunk);
            left.drain(..take);
            continue;
        }
        // KVM stops at the first MSR it cannot read: keep what came
        // before, drop that one, go on after it.
        debug!(
            vcpu = id,
            msr = format_args!("{:#x}", left[n]),
            "MSR not readable, not saved"
        );
        if n > 0 {
            let mut good = msr_chunk(&left[..n])?;
            good.as_mut_slice().copy_from_slice(&chunk.as_slice()[..n]);
            chunks.push(good);
        }
        left.drain(..=n);
    }
    Ok(chunks)
}

/// Writes MSRs; one KVM refuses is skipped (with a warning) and the
/// others are still written.
fn write_msrs(fd: &VcpuFd, id: u32, chunk: &Msrs) -> Result<()> {
    let all = chunk.as_slice();
    let mut start = 0;
    let mut rest;
    while start < all.len() {
        let n = if start == 0 {
            fd.set_msrs(chunk)
        } else {
            rest = Msrs::from_entries(&all[start..])
                .map_err(|e| Error::Setup(format!("building an MSR list: {e:?}")))?;
            fd.set_msrs(&rest)
        }
        .map_err(Error::kvm("KVM_SET_MSRS"))?;
        if start + n >= all.len() {
            break;
        }
        warn!(
            vcpu = id,
            msr = format_args!("{:#x}", all[start + n].index),
            "KVM refused to restore an MSR; skipping it"
        );
        start += n + 1;
    }
    Ok(())
}

fn msr_entries(chunks: &[Msrs]) -> impl Iterator<Item = &kvm_msr_entry> {
    chunks.iter().flat_map(|c| c.as_slice())
}

/// Guest RAM's host address, checked to be one mapping of `len` bytes.
fn ram_base(mem: &GuestRam, len: usize) -> Result<*mut u8> {
    if mem.num_regions() != 1 || !mem.check_range(GuestAddress(0), len) {
        return Err(Error::GuestMemory(
            "guest RAM is not one mapping of its full size".into(),
        ));
    }
    mem.get_host_address(GuestAddress(0))
        .map_err(|e| Error::GuestMemory(format!("no host mapping for RAM: {e}")))
}

/// Reusable buffers for reading the page map.
#[derive(Default)]
struct PageMapBufs {
    /// PAGEMAP_SCAN output.
    regions: Vec<PageRegion>,
    /// Raw page map entries (the fallback).
    entries: Vec<u64>,
}

/// `struct pm_scan_arg` of `<linux/fs.h>` (Linux 6.7).
#[repr(C)]
#[derive(Debug, Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xc000_0000 | (96 << 16) | (0x66 << 8) | 16;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// Mapped to the shared zero page: reads as zero, holds nothing.
const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// Regions per PAGEMAP_SCAN call.
const SCAN_REGIONS: usize = 512;

/// `/proc/self/pagemap`, opened once per process.
fn pagemap_file() -> Option<&'static File> {
    static FILE: OnceLock<Option<File>> = OnceLock::new();
    FILE.get_or_init(|| {
        File::open("/proc/self/pagemap")
            .inspect_err(|e| debug!("cannot open /proc/self/pagemap, copying all of RAM: {e}"))
            .ok()
    })
    .as_ref()
}

/// Fills `populated` with which pages of `[base, base + len)` hold data
/// (present or swapped out, and not the shared zero page). `false` when
/// the page map cannot be read.
fn read_populated(
    base: usize,
    len: usize,
    bufs: &mut PageMapBufs,
    populated: &mut Vec<bool>,
) -> bool {
    let Some(file) = pagemap_file() else {
        return false;
    };
    populated.clear();
    populated.resize(len / PAGE, false);
    match scan_populated(file, base, len, &mut bufs.regions, populated) {
        Ok(()) => return true,
        Err(e) => debug!("PAGEMAP_SCAN failed, reading the page map: {e}"),
    }
    bufs.entries.resize(len / PAGE, 0);
    let offset = (base / PAGE) as u64 * 8;
    if let Err(e) = file.read_exact_at(bufs.entries.as_mut_bytes(), offset) {
        debug!("cannot read /proc/self/pagemap, copying all of RAM: {e}");
        return false;
    }
    for (p, &e) in populated.iter_mut().zip(&bufs.entries) {
        *p = e & (PM_PRESENT | PM_SWAPPED) != 0;
    }
    true
}

/// The page map as ranges (PAGEMAP_SCAN, Linux 6.7): it skips the
/// unmapped parts of RAM without producing an entry per page. `populated`
/// must be all `false` and hold one entry per page.
fn scan_populated(
    file: &File,
    base: usize,
    len: usize,
    regions: &mut Vec<PageRegion>,
    populated: &mut [bool],
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    regions.resize(SCAN_REGIONS, PageRegion::default());
    let (lo, hi) = (base as u64, (base + len) as u64);
    let mut at = lo;
    while at < hi {
        let mut arg = PmScanArg {
            size: size_of::<PmScanArg>() as u64,
            start: at,
            end: hi,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO,
            ..Default::default()
        };
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points to
        // `regions`, `vec_len` entries of the kernel's page_region layout;
        // the kernel writes at most that many and reads only [at, hi),
        // our own mapping.
        let n = unsafe { libc::ioctl(file.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
        let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
        for r in regions.get(..n).unwrap_or_default() {
            if r.categories & PAGE_IS_PFNZERO != 0 {
                continue;
            }
            let first = (r.start.max(lo) - lo) as usize / PAGE;
            let last = (r.end.min(hi).saturating_sub(lo) as usize).div_ceil(PAGE);
            if let Some(pages) = populated.get_mut(first..last) {
                pages.fill(true);
            }
        }
        if arg.walk_end <= at {
            return Err(std::io::Error::other("PAGEMAP_SCAN made no progress"));
        }
        at = arg.walk_end;
    }
    Ok(())
}

/// Maximal runs of `true`: (first page, page count).
fn runs(flags: &[bool]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let start = i + flags.get(i..)?.iter().position(|&f| f)?;
        let len = flags[start..].iter().take_while(|&&f| f).count();
        i = start + len;
        Some((start, len))
    })
}

/// What restoring one run of pages takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageOp {
    /// Copy the snapshot's pages back.
    Copy,
    /// Zero them: they held data now but not at the snapshot.
    Zero,
}

/// Runs of pages to restore: (first page, page count, what to do). Pages
/// empty in both the snapshot and now are left alone. `now` is `None`
/// when the current state is unknown (then all non-snapshot pages are
/// zeroed).
fn restore_plan(saved: &[bool], now: Option<&[bool]>) -> Vec<(usize, usize, PageOp)> {
    let mut plan: Vec<(usize, usize, PageOp)> = Vec::new();
    for (i, &s) in saved.iter().enumerate() {
        let op = if s {
            PageOp::Copy
        } else if now.is_none_or(|n| n.get(i).copied().unwrap_or(true)) {
            PageOp::Zero
        } else {
            continue;
        };
        match plan.last_mut() {
            Some((start, len, last)) if *last == op && *start + *len == i => *len += 1,
            _ => plan.push((i, 1, op)),
        }
    }
    plan
}

/// Copies guest RAM into the image.
fn copy_ram_out(mem: &GuestRam, len: usize, ram: &mut RamImage) -> Result<()> {
    let base = ram_base(mem, len)?;
    if ram.image().len() != len {
        return Err(Error::GuestMemory(
            "snapshot buffer has the wrong size".into(),
        ));
    }
    let ok = read_populated(base as usize, len, &mut ram.pagemap, &mut ram.populated);
    if !ok {
        ram.populated.clear();
        ram.populated.resize(len / PAGE, true);
    }
    let dst = ram.image_mut().as_mut_ptr();
    for (page, pages) in runs(&ram.populated) {
        let (off, n) = (page * PAGE, pages * PAGE);
        // SAFETY: `runs` yields page ranges inside `populated`, which has
        // len / PAGE entries, so [off, off + n) is inside both guest RAM
        // (one mapping of `len` bytes, checked by `ram_base`) and the image
        // (`len` bytes, checked above). The vCPUs are stopped (the caller holds the `Vm`),
        // so no one writes guest RAM during the copy; the two never overlap.
        unsafe { std::ptr::copy_nonoverlapping(base.add(off), dst.add(off), n) };
    }
    Ok(())
}

/// Copies the image back into guest RAM, zeroing what was empty then.
fn copy_ram_in(mem: &GuestRam, len: usize, ram: &RamImage) -> Result<()> {
    let base = ram_base(mem, len)?;
    if ram.image().len() != len || ram.populated.len() != len / PAGE {
        return Err(Error::SnapshotMismatch(format!(
            "it holds {} bytes of RAM, the VM has {len}",
            ram.len
        )));
    }
    let mut scratch = lock(&ram.scratch);
    let (pagemap, now) = &mut *scratch;
    let known = read_populated(base as usize, len, pagemap, now);
    let plan = restore_plan(&ram.populated, known.then_some(now.as_slice()));
    let src = ram.image().as_ptr();
    for (page, pages, op) in plan {
        let (off, n) = (page * PAGE, pages * PAGE);
        // SAFETY: `restore_plan` yields page ranges inside `ram.populated`
        // (len / PAGE entries, checked above), so [off, off + n)
        // is inside guest RAM (one mapping of `len` bytes, checked by
        // `ram_base`) and inside the image (`len` bytes). The vCPUs are
        // stopped; raw pointers are used because other holders of the RAM
        // (a background dump writer) may read it meanwhile.
        unsafe {
            match op {
                PageOp::Copy => std::ptr::copy_nonoverlapping(src.add(off), base.add(off), n),
                PageOp::Zero => std::ptr::write_bytes(base.add(off), 0, n),
            }
        }
    }
    Ok(())
}

/// Makes KVM discard its shadow page tables, built from the guest page
/// tables that the restore just rewrote behind its back: the RAM slot is
/// deleted and registered again (the vCPUs are stopped). Deleting the RAM
/// slot itself works whether or not KVM zaps every shadow page on any
/// slot deletion (the VM turns that quirk off, see `kvm.rs`).
fn drop_shadow_page_tables(vm_fd: &VmFd, mem: &GuestRam, mem_size: u64) -> Result<()> {
    let remove = kvm_userspace_memory_region {
        memory_size: 0,
        ..crate::vm::ram_region(mem, mem_size)?
    };
    // SAFETY: deletes the RAM slot; no vCPU runs during a restore.
    unsafe { vm_fd.set_user_memory_region(remove) }
        .map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION (RAM slot removal)"))?;
    crate::vm::register_memory(vm_fd, mem, mem_size)
}

fn diff_ram(a: &RamImage, b: &RamImage, out: &mut Vec<String>) {
    if a.len != b.len {
        out.push(format!("RAM size {} vs {}", a.len, b.len));
        return;
    }
    let differing: Vec<usize> = (0..a.len / PAGE)
        .filter(|&i| page_of(a, i) != page_of(b, i))
        .collect();
    if !differing.is_empty() {
        let first: Vec<String> = differing
            .iter()
            .take(8)
            .map(|i| format!("{:#x}", i * PAGE))
            .collect();
        out.push(format!(
            "RAM: {} pages differ (first at {})",
            differing.len(),
            first.join(", ")
        ));
    }
}

/// One page of a RAM image (a page that was empty reads as zeros).
fn page_of(r: &RamImage, i: usize) -> &[u8] {
    static ZERO: [u8; PAGE] = [0; PAGE];
    if r.populated.get(i).copied().unwrap_or(false) {
        r.image().get(i * PAGE..(i + 1) * PAGE).unwrap_or(&ZERO)
    } else {
        &ZERO
    }
}

fn diff_vcpu(a: &VcpuState, b: &VcpuState, out: &mut Vec<String>) {
    let id = a.id;
    let mut field = |name: &str, same: bool| {
        if !same {
            out.push(format!("vCPU {id}: {name}"));
        }
    };
    field("id", a.id == b.id);
    field("mp_state", a.mp_state == b.mp_state);
    field("regs", a.regs == b.regs);
    field("sregs", a.sregs == b.sregs);
    field("fpu", a.fpu == b.fpu);
    field("xsave", a.xsave == b.xsave);
    field("xcrs", a.xcrs == b.xcrs);
    field("debugregs", a.debugregs == b.debugregs);
    field("vcpu_events", a.events == b.events);
    // The APIC timer's current count (TMCCT, offset 0x390) runs with time.
    let mut la = a.lapic;
    let mut lb = b.lapic;
    for l in [&mut la, &mut lb] {
        l.regs[0x390..0x394].fill(0);
    }
    field("lapic", la == lb);
    if a.lapic.regs[0x390..0x394] != b.lapic.regs[0x390..0x394] {
        out.push(format!("vCPU {id}: lapic timer current count (time)"));
    }
    let ma: Vec<&kvm_msr_entry> = msr_entries(&a.msrs).collect();
    let mb: Vec<&kvm_msr_entry> = msr_entries(&b.msrs).collect();
    if ma.len() != mb.len() || ma.iter().zip(&mb).any(|(x, y)| x.index != y.index) {
        out.push(format!("vCPU {id}: MSR lists differ"));
        return;
    }
    for (x, y) in ma.iter().zip(&mb) {
        if x.data != y.data {
            let what = if x.index == MSR_IA32_TSC {
                " (time)"
            } else {
                ""
            };
            out.push(format!(
                "vCPU {id}: MSR {:#x}{what}: {:#x} vs {:#x}",
                x.index, x.data, y.data
            ));
        }
    }
}

fn irqchip_eq(a: &kvm_irqchip, b: &kvm_irqchip) -> bool {
    if a.chip_id != b.chip_id {
        return false;
    }
    match a.chip_id {
        // SAFETY: KVM fills the union member that `chip_id` names; both
        // members are plain integers, valid for any bit pattern.
        KVM_IRQCHIP_PIC_MASTER | KVM_IRQCHIP_PIC_SLAVE => unsafe { a.chip.pic == b.chip.pic },
        KVM_IRQCHIP_IOAPIC => {
            // SAFETY: as above, the IOAPIC member for the IOAPIC chip.
            let (x, y) = unsafe { (a.chip.ioapic, b.chip.ioapic) };
            x.base_address == y.base_address
                && x.ioregsel == y.ioregsel
                && x.id == y.id
                && x.irr == y.irr
                && x.redirtbl.iter().zip(&y.redirtbl).all(|(p, q)| {
                    // SAFETY: a redirection entry is one u64 (`bits`) or
                    // its bit fields; every bit pattern is valid.
                    unsafe { p.bits == q.bits }
                })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::{CaptureBuffer, ConsoleOutput, ConsoleSink};
    use crate::hypercall::Hypercalls;
    use crate::memory::create_guest_ram;
    use crate::serial::SerialDevice;
    use vmm_sys_util::eventfd::EventFd;

    #[test]
    fn runs_of_pages() {
        let f = |v: &[u8]| v.iter().map(|&b| b != 0).collect::<Vec<bool>>();
        assert_eq!(runs(&f(&[])).count(), 0);
        assert_eq!(runs(&f(&[0, 0])).count(), 0);
        assert_eq!(
            runs(&f(&[1, 1, 0, 1, 0, 0, 1, 1, 1])).collect::<Vec<_>>(),
            vec![(0, 2), (3, 1), (6, 3)]
        );
        assert_eq!(runs(&f(&[0, 1])).collect::<Vec<_>>(), vec![(1, 1)]);
    }

    #[test]
    fn restore_plan_copies_zeroes_and_skips() {
        let saved = [true, true, false, false, false, true, false];
        let now = [true, true, true, false, true, true, false];
        assert_eq!(
            restore_plan(&saved, Some(&now)),
            vec![
                (0, 2, PageOp::Copy),
                (2, 1, PageOp::Zero),
                (4, 1, PageOp::Zero),
                (5, 1, PageOp::Copy),
            ]
        );
        // Unknown current state: everything not saved is zeroed.
        assert_eq!(
            restore_plan(&saved, None),
            vec![
                (0, 2, PageOp::Copy),
                (2, 3, PageOp::Zero),
                (5, 1, PageOp::Copy),
                (6, 1, PageOp::Zero),
            ]
        );
        assert!(restore_plan(&[], None).is_empty());
    }

    #[test]
    fn msr_candidates_are_deduplicated_and_ordered() {
        let listed = [0x10, 0x6e0, 0x1b, 0x802, 0x3b, 0xc000_0082, 0x10];
        let c = candidate_list(&listed);
        assert_eq!(c.last(), Some(&MSR_IA32_TSC_DEADLINE));
        assert_eq!(&c[..3], &[0x10, 0x3b, 0xc000_0082]);
        assert!(!c.contains(&MSR_IA32_APICBASE));
        assert!(!c.iter().any(|i| X2APIC_MSRS.contains(i)));
        for r in REQUIRED_MSRS {
            assert_eq!(c.iter().filter(|&&i| i == r).count(), 1, "{r:#x}");
        }
        assert_eq!(candidate_list(&[]).last(), Some(&MSR_IA32_TSC_DEADLINE));
    }

    #[test]
    fn pagemap_sees_touched_pages_only() {
        let mem = create_guest_ram(16 << 20).unwrap();
        let len = 16 << 20;
        let base = ram_base(&mem, len).unwrap();
        // SAFETY: offsets inside the 16 MiB mapping.
        let zero = unsafe {
            base.add(5 * PAGE).write(7);
            base.add(9 * PAGE + 100).write(1);
            base.add(3000 * PAGE).write(1);
            // A read maps the shared zero page.
            base.add(20 * PAGE).read_volatile()
        };
        assert_eq!(zero, 0);
        let (mut pm, mut pop) = (PageMapBufs::default(), Vec::new());
        assert!(read_populated(base as usize, len, &mut pm, &mut pop));
        assert_eq!(pop.len(), len / PAGE);
        let set = |pop: &[bool]| -> Vec<usize> {
            pop.iter()
                .enumerate()
                .filter(|(_, p)| **p)
                .map(|(i, _)| i)
                .collect()
        };
        let got = set(&pop);
        // The fallback (no PAGEMAP_SCAN) counts the zero page as data.
        assert!(got == [5, 9, 3000] || got == [5, 9, 20, 3000], "{got:?}");
        // This host's kernel (6.18) has PAGEMAP_SCAN: ranges, zero page
        // left out, in calls of at most SCAN_REGIONS ranges.
        let mut regions = Vec::new();
        let mut pop = vec![false; len / PAGE];
        scan_populated(
            pagemap_file().unwrap(),
            base as usize,
            len,
            &mut regions,
            &mut pop,
        )
        .unwrap();
        assert_eq!(set(&pop), [5, 9, 3000]);
        // Many ranges: more than one call.
        for i in 0..2 * SCAN_REGIONS + 3 {
            // SAFETY: every other page of the first 8 MiB.
            unsafe { base.add((100 + 2 * i) * PAGE).write(1) };
        }
        let mut pop = vec![false; len / PAGE];
        scan_populated(
            pagemap_file().unwrap(),
            base as usize,
            len,
            &mut regions,
            &mut pop,
        )
        .unwrap();
        assert_eq!(pop.iter().filter(|&&p| p).count(), 3 + 2 * SCAN_REGIONS + 3);
        assert!(pop[100] && !pop[101] && pop[102]);
    }

    #[test]
    fn ram_round_trip_restores_data_and_zeroes_new_pages() {
        let len = 16 << 20;
        let mem = create_guest_ram(len as u64).unwrap();
        let base = ram_base(&mem, len).unwrap();
        // SAFETY: offsets inside the 16 MiB mapping.
        unsafe {
            base.add(3 * PAGE).write_bytes(0xab, PAGE);
            base.add(len - 1).write(0xcd);
        }
        let mut ram = RamImage::new(len);
        copy_ram_out(&mem, len, &mut ram).unwrap();
        assert_eq!(ram.populated.iter().filter(|&&p| p).count(), 2);
        // The guest goes on: changes a saved page, touches new ones.
        // SAFETY: as above.
        unsafe {
            base.add(3 * PAGE + 8).write(0);
            base.add(100 * PAGE).write_bytes(0x11, 3 * PAGE);
        }
        copy_ram_in(&mem, len, &ram).unwrap();
        let mut back = vec![0u8; len];
        // SAFETY: reads the whole mapping, nothing writes it meanwhile.
        unsafe { std::ptr::copy_nonoverlapping(base, back.as_mut_ptr(), len) };
        let mut want = vec![0u8; len];
        want[3 * PAGE..4 * PAGE].fill(0xab);
        want[len - 1] = 0xcd;
        assert!(back == want, "RAM differs after the restore");
        // A snapshot of the restored RAM is the same snapshot.
        let mut again = RamImage::new(len);
        copy_ram_out(&mem, len, &mut again).unwrap();
        let mut diffs = Vec::new();
        diff_ram(&ram, &again, &mut diffs);
        assert!(diffs.is_empty(), "{diffs:?}");
        // Zeroed pages stay resident; the snapshot copies them as zeros.
        unsafe { base.add(200 * PAGE).write(1) };
        copy_ram_out(&mem, len, &mut again).unwrap();
        diff_ram(&ram, &again, &mut diffs);
        assert_eq!(diffs.len(), 1, "{diffs:?}");
    }

    #[test]
    fn serial_state_round_trip_keeps_the_sink() {
        let cap = CaptureBuffer::new();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(
            irq.try_clone().unwrap(),
            ConsoleSink::new(ConsoleOutput::Capture(cap.clone())),
        );
        dev.write(1, &[1]); // IER: RX interrupt on
        dev.write(7, &[0x5a]); // scratch
        assert_eq!(dev.enqueue_input(b"abc"), 3);
        let saved = dev.save_state();
        let mut b = [0u8];
        dev.read(0, &mut b);
        assert_eq!(b[0], b'a');
        dev.write(7, &[0]);
        let _ = irq.read();
        dev.restore_state(&saved).unwrap();
        assert_eq!(dev.save_state(), saved);
        // The pending RX interrupt is raised again.
        assert_eq!(irq.read().unwrap(), 1);
        let mut got = Vec::new();
        for _ in 0..3 {
            dev.read(0, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, b"abc");
        dev.write(0, b"out");
        assert_eq!(cap.text(), "out");
        // A FIFO larger than the UART's is refused, the device unharmed.
        let mut bad = saved.clone();
        bad.in_buffer = vec![0; 65];
        assert!(matches!(
            dev.restore_state(&bad),
            Err(Error::SnapshotMismatch(_))
        ));
        dev.write(0, b"!");
        assert_eq!(cap.text(), "out!");
    }

    #[test]
    fn hypercall_state_round_trip() {
        use lazarus_abi::hypercall::{HC_MILESTONE, HC_REGISTER_ROOT, Hypercall};
        let mem = create_guest_ram(16 << 20).unwrap();
        let hc = Hypercalls::new();
        let stats = crate::stats::ExitStats::default();
        let mut console = Vec::new();
        let mut call = |nr: u64, a0: u64| {
            let block = Hypercall {
                nr,
                args: [a0, 0, 0, 0, 0],
                ret: 0,
            };
            crate::memory::write_obj(&mem, 0x8000, &block).unwrap();
            hc.handle_block(&mem, 0x8000, &mut console, &stats)
        };
        call(HC_MILESTONE, 1);
        let saved = hc.save_state();
        call(HC_MILESTONE, 2);
        call(HC_MILESTONE, 1);
        // A bad root registration is rejected and changes nothing.
        call(HC_REGISTER_ROOT, 0x1234);
        assert_eq!(hc.milestones().len(), 2);
        hc.restore_state(&saved);
        let ms = hc.milestones();
        assert_eq!(ms.len(), 1);
        assert_eq!((ms[0].id, ms[0].count), (1, 1));
        assert_eq!(hc.root_gpa(), None);
        // The call counters are host statistics: not rolled back.
        assert_eq!(hc.counts().0, 4);
    }
}
