//! Blocking and waking: a process waits for a reason (and an object of
//! that reason, such as a pipe or a lock) until someone wakes it, or
//! sleeps until a tick.

use crate::sched::{make_runnable, schedule};
use crate::state::{current, k, proc_by_pid};
use lazarus_abi::root::{MAX_PROCS, PS_BLOCKED, W_IPC, W_SLEEP};

/// The earliest tick a sleeper waits for (`u64::MAX`: none).
static mut NEXT_WAKE: u64 = u64::MAX;

/// Wakes every process blocked for `reason` on `obj`.
pub fn wake_all(reason: u32, obj: u32) {
    for i in 0..MAX_PROCS {
        let p = &k().procs[i];
        if p.state == PS_BLOCKED && p.wait_reason == reason && p.wait_obj == obj {
            let pid = p.pid;
            make_runnable(pid);
        }
    }
}

fn blocked_for(pid: u32, reason: u32) -> bool {
    proc_by_pid(pid).is_some_and(|p| p.state == PS_BLOCKED && p.wait_reason == reason)
}

/// Wakes `pid` if it is blocked for `reason`.
pub fn wake_pid(pid: u32, reason: u32) {
    if blocked_for(pid, reason) {
        make_runnable(pid);
    }
}

/// Blocks the current process until someone wakes it or, if `deadline`
/// is not 0, until that tick (the timer's sleeper scan wakes it).
pub fn block_until(reason: u32, obj: u32, deadline: u64) {
    block_until_then(reason, obj, deadline, None);
}

/// [`block_until`], giving the CPU to `next` (a process woken for a
/// hand-off, `sched::wake_for_handoff`) rather than to the run queue.
#[inline(always)]
pub fn block_until_then(reason: u32, obj: u32, deadline: u64, next: Option<u32>) {
    if let Some(p) = current() {
        p.wake_tick = deadline;
        if deadline != 0 {
            // SAFETY: the big kernel lock is held.
            unsafe {
                if deadline < NEXT_WAKE {
                    NEXT_WAKE = deadline;
                }
            }
        }
        p.state = PS_BLOCKED;
        p.wait_reason = reason;
        p.wait_obj = obj;
    }
    match next {
        Some(pid) => crate::sched::hand_off(pid),
        None => schedule(),
    }
    if deadline != 0
        && let Some(p) = current()
    {
        p.wake_tick = 0;
    }
}

/// Blocks the current process until someone wakes it.
pub fn block(reason: u32, obj: u32) {
    if let Some(p) = current() {
        p.state = PS_BLOCKED;
        p.wait_reason = reason;
        p.wait_obj = obj;
    }
    schedule();
}

pub fn sleep_ticks(ticks: u64) {
    let wake = crate::state::now() + ticks.max(1);
    if let Some(p) = current() {
        p.wake_tick = wake;
    }
    // SAFETY: the big kernel lock is held.
    unsafe {
        if wake < NEXT_WAKE {
            NEXT_WAKE = wake;
        }
    }
    while crate::state::now() < wake {
        block(W_SLEEP, 0);
    }
}

/// Wakes the sleepers due at `now` (timer interrupt); cheap when none is.
#[inline(always)]
pub fn wake_due(now: u64) {
    // SAFETY: the big kernel lock is held.
    if now >= unsafe { NEXT_WAKE } {
        wake_sleepers(now);
    }
}

fn wake_sleepers(now: u64) {
    let mut next = u64::MAX;
    for i in 0..MAX_PROCS {
        let p = &k().procs[i];
        let timed = p.wait_reason == W_SLEEP || (p.wait_reason == W_IPC && p.wake_tick != 0);
        if p.state == PS_BLOCKED && timed {
            if p.wake_tick <= now {
                let pid = p.pid;
                make_runnable(pid);
            } else {
                next = next.min(p.wake_tick);
            }
        }
    }
    // SAFETY: the big kernel lock is held.
    unsafe { NEXT_WAKE = next };
}
