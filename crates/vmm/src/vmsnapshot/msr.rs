//! Which MSRs a snapshot holds, and reading and writing them. The
//! candidates are KVM's index list and the MSRs the VMM sets at boot; one
//! KVM cannot read is left out, and a restore skips one KVM refuses
//! instead of failing.

use kvm_bindings::{KVM_MAX_MSR_ENTRIES, Msrs, kvm_msr_entry};
use kvm_ioctls::{Kvm, VcpuFd};
use tracing::{debug, warn};

use crate::error::{Error, Result};

// MSRs that must be saved even if KVM's index list left them out: the boot
// MSRs of `cpu.rs` (defined there) and these.
use crate::cpu::{
    MSR_CSTAR, MSR_IA32_MISC_ENABLE, MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_EIP,
    MSR_IA32_SYSENTER_ESP, MSR_IA32_TSC, MSR_KERNEL_GS_BASE, MSR_LSTAR, MSR_MTRR_DEF_TYPE,
    MSR_STAR, MSR_SYSCALL_MASK,
};
pub(super) const MSR_IA32_APICBASE: u32 = 0x1b;
const MSR_IA32_CR_PAT: u32 = 0x277;
pub(super) const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
const MSR_TSC_AUX: u32 = 0xc000_0103;
/// The x2APIC register MSRs: the local APIC state covers them.
pub(super) const X2APIC_MSRS: std::ops::RangeInclusive<u32> = 0x800..=0x8ff;

pub(super) const REQUIRED_MSRS: [u32; 14] = [
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

/// The MSRs to save: KVM's index list plus the ones the VMM sets at boot,
/// without the APIC ones (the APIC state holds them), the TSC deadline
/// last (it must be written after the TSC and the APIC).
pub(super) fn msr_candidates(kvm: &Kvm) -> Vec<u32> {
    let listed = match kvm.get_msr_index_list() {
        Ok(list) => list.as_slice().to_vec(),
        Err(e) => {
            warn!("KVM_GET_MSR_INDEX_LIST failed, saving the basic MSRs only: {e}");
            Vec::new()
        }
    };
    candidate_list(&listed)
}

pub(super) fn candidate_list(listed: &[u32]) -> Vec<u32> {
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
pub(super) fn read_msr_chunks(fd: &VcpuFd, chunks: &mut [Msrs]) -> Result<bool> {
    for chunk in chunks {
        let n = fd.get_msrs(chunk).map_err(Error::kvm("KVM_GET_MSRS"))?;
        if n != chunk.as_slice().len() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reads every candidate MSR KVM lets us read, dropping the others.
pub(super) fn probe_msrs(fd: &VcpuFd, id: u32, candidates: &[u32]) -> Result<Vec<Msrs>> {
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
pub(super) fn write_msrs(fd: &VcpuFd, id: u32, chunk: &Msrs) -> Result<()> {
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

pub(super) fn msr_entries(chunks: &[Msrs]) -> impl Iterator<Item = &kvm_msr_entry> {
    chunks.iter().flat_map(|c| c.as_slice())
}
