//! Initial vCPU state: CPUID, MSRs, and for the boot processor the
//! registers that enter 64-bit long mode directly at the kernel entry.

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs,
};
use kvm_ioctls::{Kvm, VcpuFd};
use lazarus_abi::layout::{
    BOOT_GDT_GPA, BOOT_INFO_GPA, BOOT_PML4_GPA, PHYSMAP_BASE, SEL_KERNEL_CS, SEL_KERNEL_DS, SEL_TSS,
};
use tracing::warn;

use crate::boot::GDT;
use crate::error::{Error, Result};

/// One virtual CPU.
pub struct Vcpu {
    /// Its index (the boot vCPU is 0).
    pub id: u32,
    /// Its KVM handle.
    pub fd: VcpuFd,
}

// Local APIC register pages as KVM_GET_LAPIC gives them: 8 words of 32
// vectors each, 16 bytes apart (Intel SDM vol. 3, 11.8.4).
const APIC_ISR: usize = 0x100;
const APIC_IRR: usize = 0x200;

impl Vcpu {
    /// Undoes the local APIC's acceptance of an interrupt whose delivery a
    /// triple fault cut short: the vector leaves in-service and is
    /// requested again, so that the vCPU, resumed where it stopped once
    /// its tables are sound, takes it then. Left in service, it would
    /// block every interrupt of its priority class and below for good (no
    /// handler ran to end it). The vector KVM was delivering must be the
    /// highest in service, else nothing is changed. Returns the vector.
    pub fn requeue_lost_interrupt(&self) -> Result<Option<u8>> {
        let events = self
            .fd
            .get_vcpu_events()
            .map_err(Error::kvm("KVM_GET_VCPU_EVENTS"))?;
        let mut lapic = self.fd.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))?;
        let bit = |base: usize, v: u8| (base + usize::from(v / 32) * 16, 1u32 << (v % 32));
        let word = |regs: &[std::os::raw::c_char], at: usize| {
            u32::from_le_bytes([0, 1, 2, 3].map(|i| regs[at + i] as u8))
        };
        let highest = (0..=255u8).rev().find(|&v| {
            let (at, mask) = bit(APIC_ISR, v);
            word(&lapic.regs, at) & mask != 0
        });
        let v = events.interrupt.nr;
        if highest != Some(v) {
            return Ok(None);
        }
        for (base, set) in [(APIC_ISR, false), (APIC_IRR, true)] {
            let (at, mask) = bit(base, v);
            let w = word(&lapic.regs, at);
            let w = if set { w | mask } else { w & !mask };
            for (i, b) in w.to_le_bytes().into_iter().enumerate() {
                lapic.regs[at + i] = b as std::os::raw::c_char;
            }
        }
        self.fd
            .set_lapic(&lapic)
            .map_err(Error::kvm("KVM_SET_LAPIC"))?;
        Ok(Some(v))
    }
}

/// Protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// Monitor coprocessor.
pub const CR0_MP: u64 = 1 << 1;
/// Extension type (always 1).
pub const CR0_ET: u64 = 1 << 4;
/// Native FPU errors.
pub const CR0_NE: u64 = 1 << 5;
/// Ring 0 honours read-only pages.
pub const CR0_WP: u64 = 1 << 16;
/// Paging.
pub const CR0_PG: u64 = 1 << 31;
/// Physical address extension (needed for long mode).
pub const CR4_PAE: u64 = 1 << 5;
/// Global pages.
pub const CR4_PGE: u64 = 1 << 7;
/// Long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// Long mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// No-execute bit in page tables.
pub const EFER_NXE: u64 = 1 << 11;

/// CPUID.1:ECX bits.
const CPUID1_ECX_X2APIC: u32 = 1 << 21;
const CPUID1_ECX_HYPERVISOR: u32 = 1 << 31;

// MSR numbers (Intel SDM vol. 4).
pub(crate) const MSR_IA32_TSC: u32 = 0x10;
pub(crate) const MSR_IA32_SYSENTER_CS: u32 = 0x174;
pub(crate) const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
pub(crate) const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
pub(crate) const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
pub(crate) const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
pub(crate) const MSR_STAR: u32 = 0xc000_0081;
pub(crate) const MSR_LSTAR: u32 = 0xc000_0082;
pub(crate) const MSR_CSTAR: u32 = 0xc000_0083;
pub(crate) const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
pub(crate) const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default memory type write-back.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// Reads KVM's supported CPUID once per VM.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))
}

/// Adapts the supported CPUID to one vCPU: its APIC id, x2APIC advertised
/// (the kernel drives the LAPIC timer through x2APIC MSRs), hypervisor bit.
pub fn vcpu_cpuid(base: &CpuId, apic_id: u32) -> Result<CpuId> {
    let mut entries = base.as_slice().to_vec();
    for e in &mut entries {
        match e.function {
            1 => {
                e.ecx |= CPUID1_ECX_X2APIC | CPUID1_ECX_HYPERVISOR;
                // EBX[31:24] = initial APIC id.
                e.ebx = (e.ebx & 0x00ff_ffff) | ((apic_id & 0xff) << 24);
            }
            // Extended topology: EDX = x2APIC id.
            0xb | 0x1f => e.edx = apic_id,
            _ => {}
        }
    }
    CpuId::from_entries(&entries)
        .map_err(|e| Error::Setup(format!("building the CPUID table: {e:?}")))
}

/// Boot MSRs, modelled on Firecracker's.
fn boot_msrs() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

/// Sets the boot MSRs; an MSR KVM refuses is skipped with a warning.
pub fn set_boot_msrs(vcpu: &VcpuFd, id: u32) -> Result<()> {
    let mut pending = boot_msrs();
    while !pending.is_empty() {
        let msrs = Msrs::from_entries(&pending)
            .map_err(|e| Error::Setup(format!("building the MSR list: {e:?}")))?;
        let done = vcpu.set_msrs(&msrs).map_err(Error::kvm("KVM_SET_MSRS"))?;
        if done >= pending.len() {
            break;
        }
        // KVM stops at the first MSR it refuses.
        warn!(
            vcpu = id,
            msr = format_args!("{:#x}", pending[done].index),
            "KVM refused a boot MSR; skipping it"
        );
        pending.drain(..=done);
    }
    Ok(())
}

/// Decodes a GDT descriptor into KVM's segment form.
pub fn segment_from_gdt(entry: u64, selector: u16) -> kvm_segment {
    let limit_raw = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 {
            (limit_raw << 12) | 0xfff
        } else {
            limit_raw
        },
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// Special registers for direct 64-bit entry, on top of KVM's defaults.
pub fn long_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = segment_from_gdt(GDT[usize::from(SEL_KERNEL_CS / 8)], SEL_KERNEL_CS);
    let data = segment_from_gdt(GDT[usize::from(SEL_KERNEL_DS / 8)], SEL_KERNEL_DS);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    // A placeholder busy 64-bit TSS: entry requires a usable TR; the kernel
    // loads its own right away.
    sregs.tr = kvm_segment {
        base: 0,
        limit: 0x67,
        selector: SEL_TSS,
        type_: 11,
        present: 1,
        s: 0,
        ..Default::default()
    };
    sregs.gdt.base = PHYSMAP_BASE + BOOT_GDT_GPA;
    sregs.gdt.limit = (std::mem::size_of_val(&GDT) - 1) as u16;
    // No IDT until the kernel installs one: an early fault triple-faults,
    // which the VMM reports as a crash.
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = BOOT_PML4_GPA;
    sregs.cr4 = CR4_PAE | CR4_PGE;
    sregs.efer = EFER_LME | EFER_LMA | EFER_NXE;
    sregs
}

/// General registers at kernel entry.
pub fn entry_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rdi: PHYSMAP_BASE + BOOT_INFO_GPA,
        rsp: 0,
        rflags: 0x2,
        ..Default::default()
    }
}

/// x87/SSE control words at reset values (as Firecracker sets them).
pub fn initial_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// Puts the boot processor at the kernel entry in 64-bit mode.
pub fn setup_boot_cpu(vcpu: &VcpuFd, entry: u64) -> Result<()> {
    let sregs = vcpu.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
    vcpu.set_sregs(&long_mode_sregs(sregs))
        .map_err(Error::kvm("KVM_SET_SREGS"))?;
    vcpu.set_regs(&entry_regs(entry))
        .map_err(Error::kvm("KVM_SET_REGS"))?;
    vcpu.set_fpu(&initial_fpu())
        .map_err(Error::kvm("KVM_SET_FPU"))?;
    Ok(())
}

/// Starts a vCPU that has not run yet (`HC_CPU_ON`): 64-bit mode as the
/// boot processor enters it, the guest's registers, then runnable (a vCPU
/// with an in-kernel LAPIC is created waiting for INIT/SIPI).
pub fn start_cpu(vcpu: &VcpuFd, start: &crate::hypercall::CpuStart) -> Result<()> {
    let mut sregs = long_mode_sregs(vcpu.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?);
    sregs.cr3 = start.cr3;
    vcpu.set_sregs(&sregs)
        .map_err(Error::kvm("KVM_SET_SREGS"))?;
    vcpu.set_regs(&kvm_regs {
        rip: start.rip,
        rsp: start.rsp,
        rdi: start.arg,
        rflags: 0x2,
        ..Default::default()
    })
    .map_err(Error::kvm("KVM_SET_REGS"))?;
    vcpu.set_fpu(&initial_fpu())
        .map_err(Error::kvm("KVM_SET_FPU"))?;
    vcpu.set_mp_state(kvm_bindings::kvm_mp_state {
        mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
    })
    .map_err(Error::kvm("KVM_SET_MP_STATE"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_decodes_like_linux() {
        let cs = segment_from_gdt(GDT[2], 0x10);
        assert_eq!((cs.l, cs.db, cs.dpl, cs.s, cs.present), (1, 0, 0, 1, 1));
        assert_eq!(cs.type_, 0xb);
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = segment_from_gdt(GDT[3], 0x18);
        assert_eq!((ds.l, ds.db, ds.dpl, ds.type_), (0, 1, 0, 3));
        let ucs = segment_from_gdt(GDT[6], 0x33);
        assert_eq!((ucs.l, ucs.dpl), (1, 3));
        let uds = segment_from_gdt(GDT[5], 0x2b);
        assert_eq!((uds.dpl, uds.type_), (3, 3));
        let ucs32 = segment_from_gdt(GDT[4], 0x23);
        assert_eq!((ucs32.l, ucs32.db, ucs32.dpl), (0, 1, 3));
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn long_mode_state() {
        let s = long_mode_sregs(kvm_sregs::default());
        assert_eq!(s.cs.selector, 0x10);
        assert_eq!(s.ss.selector, 0x18);
        assert_eq!(s.cr3, BOOT_PML4_GPA);
        assert_eq!(s.gdt.base, PHYSMAP_BASE + BOOT_GDT_GPA);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_ne!(s.cr0 & CR0_PG, 0);
        let r = entry_regs(0xffff_ffff_8010_0000);
        assert_eq!(r.rdi, PHYSMAP_BASE + BOOT_INFO_GPA);
        assert_eq!(r.rflags, 2);
    }
}
