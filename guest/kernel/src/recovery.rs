//! Resuming after a repair.
//!
//! The repair program (in the hidden repair image, run by the hypervisor
//! while the kernel is stopped) has already quarantined the offender,
//! released its locks, restored code and checked the kernel's invariants.
//! What is left needs ring 0 and is kept short, because ring 0 is the slow
//! path on these hosts: reload the CPU tables, acknowledge the interrupt
//! that was in service, run the init of reset extensions, and schedule.

use crate::arch::{apic, gdt, idt};
use crate::state::k;
use core::arch::global_asm;
use lazarus_abi::root::NONE;

global_asm!(
    r#"
.global recovery_entry
// The hypervisor enters here on the crashed CPU with RDI = its index,
// RSP = its Cpu::recovery_stack (its idle stack), CR3 = the master PML4,
// the boot GDT, interrupts off.
recovery_entry:
    xor ebp, ebp
    call kernel_recover
    ud2
"#
);

unsafe extern "C" {
    pub fn recovery_entry();
}

#[unsafe(no_mangle)]
extern "C" fn kernel_recover(cpu: u64) -> ! {
    // Until this CPU's own GDT is loaded, `percpu::id` cannot tell.
    let me = (cpu as usize).min(lazarus_abi::boot::MAX_CPUS - 1);
    gdt::init(me);
    idt::reload();
    apic::ack_in_service();
    crate::bkl::recover();
    let cpu = crate::state::this_cpu();
    cpu.current = 0;
    cpu.in_irq = 0;
    cpu.irq_ext = NONE;
    crate::timer::recount();
    crate::irq::mask_unhandled();
    // Reset extensions are initialised again at the next timer tick, not
    // here: surviving processes need nothing from the faulty extension to
    // resume, and ring 0 is the slow path on these hosts.
    crate::sched::idle_loop()
}

/// Runs the init of extensions the repair reset (which hands them their
/// open files again), in interrupt context on behalf of the extension (a
/// crash in there blames no process), and closes the files the repair
/// left without a descriptor.
pub fn deferred_work() {
    if core::mem::take(&mut k().recovery.pending_close) != 0 {
        crate::ext::close_orphans();
    }
    let pending = core::mem::take(&mut k().recovery.pending_reinit);
    for slot in 0..lazarus_abi::root::MAX_EXTS {
        if pending & (1 << slot) != 0 {
            crate::ext::in_irq_of(slot as u32, || crate::ext::reinit(slot));
        }
    }
}
