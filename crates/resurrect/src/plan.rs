//! Checking the repair program's resume plan, and the registers that
//! enter the kernel's recovery entry. The plan comes from code that read a
//! crashed kernel: nothing in it is trusted.

use kvm_bindings::{kvm_regs, kvm_sregs};
use lazarus_abi::layout::{BOOT_PML4_GPA, KERNEL_VIRT_BASE};
use lazarus_abi::repair::ResumePlan;
use lazarus_abi::root::{MAX_EXTS, NONE};
use lazarus_vmm::ResumeState;
use lazarus_vmm::cpu::long_mode_sregs;

use crate::fallback::PlanError;

/// Checks `plan` against the kernel's code range `text` and its physical
/// image `phys`.
pub(crate) fn check_plan(
    plan: &ResumePlan,
    text: (u64, u64),
    phys: (u64, u64),
) -> Result<(), PlanError> {
    if !(text.0..text.1).contains(&plan.entry) {
        return Err(PlanError::EntryNotKernelCode(plan.entry));
    }
    let stack = plan.stack_top.wrapping_sub(KERNEL_VIRT_BASE);
    if !(phys.0..=phys.1).contains(&stack) || !plan.stack_top.is_multiple_of(16) {
        return Err(PlanError::StackNotInKernel(plan.stack_top));
    }
    if plan.cr3 != BOOT_PML4_GPA {
        return Err(PlanError::NotKernelPageTable(plan.cr3));
    }
    if plan.ext != NONE && plan.ext as usize >= MAX_EXTS {
        return Err(PlanError::BadExtensionSlot(plan.ext));
    }
    Ok(())
}

/// The registers that enter the kernel's recovery entry in ring 0, with
/// the kernel's IDT (`idt`). The crashed CPU keeps its own GDT when it
/// lies in the kernel image `phys`: the kernel tells its CPUs apart by
/// their GDTs, and a non-boot CPU entered with the boot GDT would take
/// itself for CPU 0. Only the register is kept, not trusted: nothing is
/// loaded through it before the kernel rebuilds that CPU's GDT.
pub(crate) fn resume_state(
    crash_sregs: &kvm_sregs,
    plan: &ResumePlan,
    idt: u64,
    phys: (u64, u64),
) -> ResumeState {
    let mut sregs = long_mode_sregs(*crash_sregs);
    let gdt = crash_sregs.gdt.base.wrapping_sub(KERNEL_VIRT_BASE);
    if (phys.0..phys.1).contains(&gdt) {
        sregs.gdt = crash_sregs.gdt;
    }
    sregs.cr3 = plan.cr3;
    sregs.idt.base = idt;
    sregs.idt.limit = 16 * 256 - 1;
    let regs = kvm_regs {
        rip: plan.entry,
        rsp: plan.stack_top,
        rflags: 0x2,
        ..Default::default()
    };
    ResumeState { regs, sregs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn plans_outside_the_kernel_are_refused() {
        let text = (KERNEL_VIRT_BASE + 0x10_0000, KERNEL_VIRT_BASE + 0x20_0000);
        let phys = (0x10_0000, 0x40_0000);
        let mut plan = ResumePlan::new_zeroed();
        plan.entry = text.0 + 0x100;
        plan.stack_top = KERNEL_VIRT_BASE + 0x30_0000;
        plan.cr3 = BOOT_PML4_GPA;
        plan.ext = NONE;
        assert_eq!(check_plan(&plan, text, phys), Ok(()));
        let mut p = plan;
        p.entry = 0x1000;
        assert_eq!(
            check_plan(&p, text, phys),
            Err(PlanError::EntryNotKernelCode(0x1000))
        );
        let mut p = plan;
        p.stack_top += 8;
        assert!(matches!(
            check_plan(&p, text, phys),
            Err(PlanError::StackNotInKernel(_))
        ));
        let mut p = plan;
        p.cr3 = 0x5000;
        assert_eq!(
            check_plan(&p, text, phys),
            Err(PlanError::NotKernelPageTable(0x5000))
        );
        let mut p = plan;
        p.ext = MAX_EXTS as u32;
        assert!(matches!(
            check_plan(&p, text, phys),
            Err(PlanError::BadExtensionSlot(_))
        ));
    }

    /// A CPU's own GDT (in the kernel image) survives into the recovery
    /// entry; one anywhere else is replaced by the boot GDT.
    #[test]
    fn the_crashed_cpus_gdt_is_kept_only_in_the_kernel_image() {
        let phys = (0x10_0000, 0x40_0000);
        let plan = ResumePlan::new_zeroed();
        let boot = long_mode_sregs(kvm_sregs::default()).gdt;
        let mut crash = kvm_sregs::default();
        crash.gdt.base = KERNEL_VIRT_BASE + 0x20_0000;
        crash.gdt.limit = 0x4f;
        let kept = resume_state(&crash, &plan, 0, phys).sregs.gdt;
        assert_eq!((kept.base, kept.limit), (crash.gdt.base, 0x4f));
        for elsewhere in [boot.base, 0, KERNEL_VIRT_BASE + 0x40_0000, u64::MAX] {
            crash.gdt.base = elsewhere;
            let g = resume_state(&crash, &plan, 0, phys).sregs.gdt;
            assert_eq!((g.base, g.limit), (boot.base, boot.limit), "{elsewhere:#x}");
        }
    }
}
