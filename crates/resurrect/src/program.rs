//! Running the repair program: map the image into the repair slot, enter
//! the program directly in ring 3 on the crashed vCPU with the image's
//! page tables, its stack and an empty IDT (a fault in it is a triple
//! fault, i.e. "repair failed"), wait for its doorbell, and take the image
//! out again.

use std::sync::Arc;
use std::time::Instant;

use kvm_bindings::{kvm_regs, kvm_sregs, kvm_userspace_memory_region};
use kvm_ioctls::{VcpuExit, VmFd};
use lazarus_abi::layout::{SEL_USER_CS, SEL_USER_DS};
use lazarus_abi::repair::{DOORBELL_GPA, SLOT_GPA};
use lazarus_repair_image::SlotWindow;
use lazarus_vmm::boot::GDT;
use lazarus_vmm::cpu::{long_mode_sregs, segment_from_gdt};
use lazarus_vmm::vcpu::Vcpu;

use crate::Resurrector;
use crate::fallback::{Fallback, SlotError};
use crate::reaper::{PendingRemoval, SlotReaper};

/// KVM memory slot used for the repair image (slot 0 is RAM).
pub(crate) const REPAIR_SLOT: u32 = 1;

impl Resurrector {
    /// Maps the image, runs the program to its doorbell and starts
    /// unmapping the image. On an error the slot is already gone.
    pub(crate) fn run_repair(
        &mut self,
        vcpu: &mut Vcpu,
        vm_fd: &Arc<VmFd>,
        crash_sregs: &kvm_sregs,
    ) -> Result<PendingRemoval, Fallback> {
        if let Some(w) = self.window.as_mut() {
            let t0 = Instant::now();
            w.show(self.image.buffer())
                .map_err(|e| SlotError::Show(e.to_string()))?;
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
                (_, Some(Err(e))) => Err(SlotError::Hide(e.to_string()).into()),
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
            .map_err(|e| SlotError::Map(e.to_string()))?;
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
                Err(then) => Err(Fallback::Twice {
                    first: Box::new(why),
                    then,
                }),
            },
        }
    }

    fn enter_and_wait(&mut self, vcpu: &mut Vcpu, crash_sregs: &kvm_sregs) -> Result<(), Fallback> {
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
        vcpu.fd.set_sregs(&s).map_err(|source| Fallback::Kvm {
            op: "KVM_SET_SREGS for repair",
            source,
        })?;
        vcpu.fd.set_regs(&regs).map_err(|source| Fallback::Kvm {
            op: "KVM_SET_REGS for repair",
            source,
        })?;
        let deadline = Instant::now() + self.cfg.budget;
        loop {
            match vcpu.fd.run() {
                Ok(VcpuExit::MmioWrite(addr, _)) if addr == DOORBELL_GPA => return Ok(()),
                Ok(VcpuExit::Shutdown) => return Err(Fallback::ProgramFaulted),
                Ok(other) => return Err(Fallback::UnexpectedExit(format!("{other:?}"))),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    vcpu.fd.set_kvm_immediate_exit(0);
                    if Instant::now() >= deadline {
                        return Err(Fallback::OverBudget(self.cfg.budget));
                    }
                }
                Err(source) => {
                    return Err(Fallback::Kvm {
                        op: "KVM_RUN while repairing",
                        source,
                    });
                }
            }
        }
    }
}

/// Reserves the resident slot's window and registers it with KVM.
pub(crate) fn register_window(vm_fd: &VmFd) -> Result<SlotWindow, String> {
    use lazarus_abi::repair::SLOT_SIZE;
    let w = SlotWindow::new(SLOT_SIZE as usize).map_err(|e| e.to_string())?;
    let region = kvm_userspace_memory_region {
        slot: REPAIR_SLOT,
        flags: 0,
        guest_phys_addr: SLOT_GPA,
        memory_size: SLOT_SIZE,
        userspace_addr: w.as_ptr() as u64,
    };
    // SAFETY: the window is a mapping of SLOT_SIZE bytes owned by the
    // resurrector, which lives as long as the VM's vCPUs.
    unsafe { vm_fd.set_user_memory_region(region) }.map_err(|e| e.to_string())?;
    Ok(w)
}
