//! The timer interrupt: the heartbeats, CPU time accounting, sleepers,
//! extension timers, deferred work after a repair, preemption of user
//! processes and the soft-lockup check.
//!
//! Every CPU has its own tick and heartbeat. Kernel time (the root
//! header's `heartbeat`, which sleepers and timers count in) is the boot
//! CPU's tick, so it advances at `TICK_HZ` whatever the number of CPUs.

use crate::arch::percpu;
use crate::state::{self, current, k};
use crate::{sched, wait};
use core::sync::atomic::Ordering;
use lazarus_abi::trap::TrapFrame;

/// Milliseconds per tick of kernel time.
pub const MS_PER_TICK: u64 = 1000 / lazarus_abi::layout::TICK_HZ;

/// Whole ticks covering `ms` milliseconds (rounded up).
pub fn ticks_for_ms(ms: u64) -> u64 {
    ms.div_ceil(MS_PER_TICK)
}

/// A kernel path running longer than this without scheduling, with
/// interrupts enabled, is a soft lockup.
pub const SOFT_LOCKUP_TICKS: u64 = 10;

/// The part of a tick that needs no lock: this CPU's heartbeat (and the
/// kernel's time on the boot CPU). Done even while the CPU waits for the
/// big kernel lock, so the hypervisor's watchdog blames the CPU that holds
/// it too long, not the ones waiting at the door.
pub fn beat_only() -> u64 {
    let cpu = percpu::id();
    if crate::config::heartbeat() {
        state::cpu_heartbeat(cpu).fetch_add(1, Ordering::SeqCst);
    }
    let time = state::heartbeat();
    if cpu == 0 {
        time.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        time.load(Ordering::SeqCst)
    }
}

/// A tick that interrupted an application processor's idle halt, with no
/// extension timer of its own due: its heartbeat and its tick counts,
/// without the big kernel lock. Sleepers and deferred work are the boot
/// CPU's tick's (kernel time is that tick, so it sees every deadline
/// first), and an idle CPU has no process to account or preempt. So the
/// idle CPUs' ticks never make a CPU that serves system calls wait at the
/// lock's door, nor send it a wake-up when they leave.
pub fn idle_tick(me: usize) {
    beat_only();
    let cpu = &raw mut k().cpus[me];
    // Only this CPU writes its own counts; volatile, as no lock orders
    // them for the readers (`cpus`, the dump), which take them whole.
    // SAFETY: the entry lives in the state root for the kernel's lifetime.
    unsafe {
        let ticks = &raw mut (*cpu).ticks;
        ticks.write_volatile(ticks.read_volatile() + 1);
        let idle = &raw mut (*cpu).idle_ticks;
        idle.write_volatile(idle.read_volatile() + 1);
    }
}

/// Timer interrupt (acknowledged already), with the big kernel lock held.
pub fn tick(frame: &TrapFrame) {
    let now = beat_only();
    let me = percpu::id();
    let r = k();
    r.cpus[me].ticks += 1;
    let pid = r.cpus[me].current;
    match current() {
        Some(p) => p.ticks += 1,
        None => k().cpus[me].idle_ticks += 1,
    }
    // Whichever CPU ticks first after a deadline serves it: sleepers and
    // extension timers are not tied to the boot CPU.
    wait::wake_due(now);
    crate::timer::run_due(now);
    if k().recovery.pending_reinit != 0 || k().recovery.pending_close != 0 {
        crate::recovery::deferred_work();
    }

    if frame.from_user() {
        // The kernel was not in the middle of anything: a good time to
        // free one reaped process's memory.
        crate::reclaim::reclaim_one();
        if k().runq_len > 0 && pid != 0 {
            sched::yield_now();
        }
    } else if let Some(p) = current() {
        // Interrupted kernel code with interrupts enabled: only an
        // extension does that. Too long there is a soft lockup.
        if p.kernel_entry_tick != 0 && now.saturating_sub(p.kernel_entry_tick) > SOFT_LOCKUP_TICKS {
            crate::crash::report(
                lazarus_abi::root::CRASH_SOFT_LOCKUP,
                frame,
                b"soft lockup: kernel code ran too long without scheduling",
            );
        }
    }
}
