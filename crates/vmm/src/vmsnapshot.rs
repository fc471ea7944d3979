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
//! later copies cost no page faults (docs/PLATFORM.md: fresh memory is ~25x
//! slower). On restore, pages that held data are copied back and pages
//! that got data only after the snapshot are zeroed, which is what they
//! were then.
//!
//! The state is read between runs, and KVM finishes an exit's port or
//! MMIO access (e.g. RIP past an `out`) only on the next KVM_RUN: so
//! [`Vm::run`] completes that step for every vCPU before it returns (see
//! `crate::vcpu::complete_pending_io`); otherwise a restored vCPU would repeat the
//! `out` it stopped at, e.g. the milestone hypercall.
//!
//! After RAM is rewritten, KVM's shadow page tables no longer match the
//! guest's page tables, and this KVM keeps using them for ring-3 code
//! (docs/PLATFORM.md). Removing a memory slot discards the shadow pages of
//! that slot, so a restore deletes and re-registers the RAM slot.
//!
//! Not captured: the host-side statistics (exit counts, hypercall counts),
//! console input that is queued on the host but not yet in the UART, and
//! the KVM clock (the guest does not use kvmclock).
//!
//! This file takes and restores a whole VM; the parts, one job a file:
//! `snapshot.rs` (what a snapshot holds), `vcpu_state.rs` (a vCPU's
//! state) and `msr.rs` (its MSRs), `ram.rs` (the copy of guest RAM) and
//! `pagemap.rs` (which pages hold data), `diff.rs` (comparing two
//! snapshots, for tests).

use std::sync::atomic::Ordering;
use std::time::Instant;

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_irqchip,
    kvm_userspace_memory_region,
};
use kvm_ioctls::VmFd;
use tracing::{debug, warn};

use crate::console::lock;
use crate::error::{Error, Result};
use crate::memory::GuestRam;
use crate::vm::Vm;

mod diff;
mod msr;
mod pagemap;
mod ram;
mod snapshot;
#[cfg(test)]
mod tests;
mod vcpu_state;

use pagemap::PAGE;
use ram::{RamImage, copy_ram_in, copy_ram_out};
pub use snapshot::VmSnapshot;
use vcpu_state::{Caps, restore_vcpu, save_vcpu};

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
        ctx.hang.clear();
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
