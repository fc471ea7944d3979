//! One vCPU's architectural state: saving it from KVM and loading it back,
//! in the order KVM needs.

use kvm_bindings::{
    KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SIPI_VECTOR, Msrs, kvm_debugregs, kvm_fpu,
    kvm_lapic_state, kvm_mp_state, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};

use super::msr::{msr_candidates, probe_msrs, read_msr_chunks, write_msrs};
use crate::cpu::Vcpu;
use crate::error::{Error, Result};

/// What KVM lets us save and restore on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Caps {
    xsave: bool,
    xcrs: bool,
    debugregs: bool,
    vcpu_events: bool,
}

impl Caps {
    pub(super) fn of(vm_fd: &VmFd) -> Self {
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
pub(super) struct VcpuState {
    pub(super) id: u32,
    pub(super) mp_state: kvm_mp_state,
    pub(super) regs: kvm_regs,
    pub(super) sregs: kvm_sregs,
    /// Used when XSAVE is not available.
    pub(super) fpu: kvm_fpu,
    pub(super) xsave: Option<Box<[u32; 1024]>>,
    pub(super) xcrs: Option<kvm_xcrs>,
    pub(super) debugregs: Option<kvm_debugregs>,
    pub(super) lapic: kvm_lapic_state,
    /// The MSRs, in chunks of at most `KVM_MAX_MSR_ENTRIES`.
    pub(super) msrs: Vec<Msrs>,
    pub(super) events: Option<kvm_vcpu_events>,
}

pub(super) fn save_vcpu(
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

pub(super) fn restore_vcpu(fd: &VcpuFd, s: &VcpuState, caps: Caps) -> Result<()> {
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
