//! The timer interrupt: the heartbeat, CPU time accounting, sleepers,
//! extension timers, deferred work after a repair, preemption of user
//! processes and the soft-lockup check.

use crate::arch::apic;
use crate::state::{current, k};
use crate::{sched, wait};
use lazarus_abi::trap::TrapFrame;

/// A kernel path running longer than this without scheduling, with
/// interrupts enabled, is a soft lockup.
pub const SOFT_LOCKUP_TICKS: u64 = 10;

/// Timer interrupt.
pub fn tick(frame: &TrapFrame) {
    apic::eoi();
    let r = k();
    r.header.heartbeat += 1;
    let now = r.header.heartbeat;
    let pid = r.cpus[0].current;
    match current() {
        Some(p) => p.ticks += 1,
        None => k().cpus[0].idle_ticks += 1,
    }
    wait::wake_due(now);
    crate::timer::run_due(now);
    if k().recovery.pending_reinit != 0 {
        crate::recovery::deferred_reinit();
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
