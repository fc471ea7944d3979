//! The kernel state root: every table the repair image and the dump
//! analyser need, in the ABI crate's layout, registered with the
//! hypervisor at boot.

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU64, Ordering};
use lazarus_abi::layout::KERNEL_VIRT_BASE;
use lazarus_abi::root::{KernelRoot, NONE, Proc};

static mut ROOT: MaybeUninit<KernelRoot> = MaybeUninit::zeroed();

/// The state root.
///
/// Every kernel path that touches the root holds the big kernel lock
/// (`bkl`), with interrupts disabled (handlers only run in user mode, in
/// the idle loop or where an extension enabled them), so accesses never
/// overlap; the few fields touched without it (the lock itself, the
/// heartbeats) are accessed atomically. Callers keep the returned borrow
/// short and re-fetch after any call that may schedule.
#[inline(always)]
pub fn k() -> &'static mut KernelRoot {
    let root = &raw mut ROOT;
    // SAFETY: all-zero is a valid KernelRoot (it is FromZeros), and see above
    // for exclusivity.
    unsafe { (*root).assume_init_mut() }
}

pub fn root_phys() -> u64 {
    kernel_virt_to_phys(&raw const ROOT as u64)
}

pub fn kernel_virt_to_phys(va: u64) -> u64 {
    va - KERNEL_VIRT_BASE
}

/// Pid of the process whose kernel code runs here (0: none, see
/// [`current`]).
#[inline(always)]
pub fn current_pid() -> u32 {
    current().map_or(0, |p| p.pid)
}

/// The pid the scheduler last switched this CPU to, from its record in
/// the state root: also right on an interrupt stack (a double fault),
/// where [`current`] knows no process. Crash reports use it.
pub fn running_pid() -> u32 {
    k().cpus[crate::arch::percpu::id()].current
}

/// This CPU's entry in the state root.
#[inline(always)]
pub fn this_cpu() -> &'static mut lazarus_abi::root::Cpu {
    &mut k().cpus[crate::arch::percpu::id()]
}

pub fn proc_by_pid(pid: u32) -> Option<&'static mut Proc> {
    if pid == 0 {
        return None;
    }
    let p = &mut k().procs[KernelRoot::slot_of(pid)];
    (p.pid == pid && p.state != lazarus_abi::root::PS_FREE).then_some(p)
}

/// The process whose kernel stack this code runs on; `None` on an idle,
/// boot or interrupt stack. A process runs kernel code on its own stack
/// only (the scheduler switches stacks with processes), so this needs no
/// CPU index and no pid lookup: it is asked many times per system call,
/// at emulated ring-0 speed. Linux's `current` once came from the stack
/// the same way.
#[inline(always)]
pub fn current() -> Option<&'static mut Proc> {
    let p = k().procs.get_mut(crate::arch::percpu::stack_slot()?)?;
    // A stack is only run on while its process exists; the test is for a
    // slot freed under a corrupted kernel, not for the hot path.
    (p.state != lazarus_abi::root::PS_FREE).then_some(p)
}

/// The extension currently executing on this CPU, if any.
pub fn current_ext() -> u32 {
    let cpu = this_cpu();
    if cpu.irq_ext != NONE {
        return cpu.irq_ext;
    }
    // The CPU's record, not the stack: a double fault inside an
    // extension runs on an interrupt stack and still blames it.
    proc_by_pid(cpu.current).map_or(NONE, |p| p.cur_ext)
}

/// The root header's heartbeat (kernel time), shared between CPUs and
/// read by the hypervisor: only ever accessed atomically.
pub fn heartbeat() -> &'static AtomicU64 {
    let header = &raw mut k().header;
    // SAFETY: the field lives in the state root for the kernel's lifetime
    // and is only accessed through this atomic view.
    unsafe { AtomicU64::from_ptr(&raw mut (*header).heartbeat) }
}

/// CPU `cpu`'s heartbeat in the root header, likewise atomic.
pub fn cpu_heartbeat(cpu: usize) -> &'static AtomicU64 {
    let header = &raw mut k().header;
    let cpu = cpu.min(lazarus_abi::boot::MAX_CPUS - 1);
    // SAFETY: as for `heartbeat`; `cpu` is clamped into the array.
    unsafe { AtomicU64::from_ptr(&raw mut (*header).cpu_heartbeat[cpu]) }
}

/// Kernel time in ticks: the boot CPU's heartbeat, which its timer
/// interrupt advances (`tick`), possibly while another CPU reads it.
#[inline(always)]
pub fn now() -> u64 {
    heartbeat().load(Ordering::SeqCst)
}
