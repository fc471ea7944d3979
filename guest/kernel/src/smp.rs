//! Bringing up the other CPUs, and the IPIs between CPUs.
//!
//! The boot CPU starts each application processor with `HC_CPU_ON`, the
//! paravirtual equivalent of INIT-SIPI-SIPI: the hypervisor enters it in
//! 64-bit mode at `ap_start` on its idle stack, so no real-mode trampoline
//! is needed.

use crate::arch::{apic, cpu, gdt, idt, percpu};
use crate::klog::kprintln;
use crate::state::k;
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use lazarus_abi::boot::MAX_CPUS;
use lazarus_abi::hypercall::HC_CPU_ON;
use lazarus_abi::layout::VEC_STOP;

/// The LAPIC timer input frequency, for the APs' timers.
static LAPIC_HZ: AtomicU64 = AtomicU64::new(0);
/// CPUs the VM has (started or not).
static COUNT: AtomicU64 = AtomicU64::new(1);

/// CPUs the VM has, as the hypervisor said at boot.
pub fn count() -> usize {
    COUNT.load(Ordering::SeqCst) as usize
}

global_asm!(
    r#"
.global ap_start
// HC_CPU_ON enters here: RDI = the CPU's index, RSP = its idle stack.
ap_start:
    xor ebp, ebp
    call ap_main
    ud2
"#
);

unsafe extern "C" {
    fn ap_start();
}

/// Starts CPUs 1..`count`. Called by the boot CPU holding the big kernel
/// lock: each new CPU waits for it before running anything.
pub fn start_aps(count: u32, lapic_timer_hz: u64) {
    LAPIC_HZ.store(lapic_timer_hz, Ordering::SeqCst);
    COUNT.store(u64::from(count).clamp(1, MAX_CPUS as u64), Ordering::SeqCst);
    let master = k().master_pml4;
    for cpu in 1..(count as usize).min(MAX_CPUS) {
        let stack = percpu::idle_stack_top(cpu);
        k().cpus[cpu].recovery_stack = stack;
        let rc = crate::hypercall::call(
            HC_CPU_ON,
            [
                cpu as u64,
                ap_start as *const () as u64,
                stack,
                cpu as u64,
                master,
            ],
        );
        if rc != 0 {
            kprintln!("[kernel] cpu {cpu}: the hypervisor refused to start it ({rc})");
        }
    }
}

#[unsafe(no_mangle)]
extern "C" fn ap_main(cpu: u64) -> ! {
    let cpu = cpu as usize;
    gdt::init(cpu);
    idt::reload();
    apic::init_local(LAPIC_HZ.load(Ordering::SeqCst));
    crate::bkl::lock();
    let c = &mut k().cpus[cpu];
    c.online = 1;
    percpu::set_online(cpu, true);
    c.irq_ext = lazarus_abi::root::NONE;
    kprintln!("[kernel] cpu {cpu} online");
    crate::sched::idle_loop()
}

/// Stops every other CPU (power-off): each halts for good with
/// interrupts off, its heartbeat cleared so that no watchdog takes it for
/// a hang. The caller holds the big kernel lock.
pub fn stop_others() {
    let me = percpu::id();
    for c in 0..MAX_CPUS {
        if c != me && k().cpus[c].online != 0 {
            apic::send_ipi(c, VEC_STOP);
        }
    }
}

/// The stop IPI (taken without the big kernel lock, which its sender
/// holds).
pub fn on_stop_ipi() -> ! {
    let me = percpu::id();
    k().cpus[me].online = 0;
    percpu::set_online(me, false);
    crate::state::cpu_heartbeat(me).store(0, Ordering::SeqCst);
    cpu::halt_forever()
}
