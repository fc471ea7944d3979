//! Timer callbacks registered by extensions, run from the timer interrupt.

use crate::state::k;
use core::sync::atomic::{AtomicU64, Ordering};
use lazarus_abi::boot::MAX_CPUS;
use lazarus_abi::root::*;
use lazarus_abi::syscall::errno::*;

static mut ACTIVE: u32 = 0;

/// Per CPU, the earliest tick a timer armed on it is due (`u64::MAX`:
/// none). Kept under the big lock; read without it by that CPU's idle
/// tick (`due_on`), which takes the lock only when a timer is due.
static NEXT_DUE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];

/// Whether a timer armed on CPU `cpu` is due at tick `now`.
pub fn due_on(cpu: usize, now: u64) -> bool {
    NEXT_DUE
        .get(cpu)
        .is_some_and(|d| d.load(Ordering::Relaxed) <= now)
}

/// Recomputes every CPU's `NEXT_DUE` from the table.
fn note_due() {
    let mut due = [u64::MAX; MAX_CPUS];
    for t in k().timers.iter().filter(|t| t.in_use != 0) {
        if let Some(d) = due.get_mut(t.cpu as usize) {
            *d = (*d).min(t.next_tick);
        }
    }
    for (slot, d) in NEXT_DUE.iter().zip(due) {
        slot.store(d, Ordering::Relaxed);
    }
}

pub fn add(ext: u32, callback: u64, arg: u64, period: u64) -> Result<i32, i64> {
    let r = k();
    let i = r.timers.iter().position(|t| t.in_use == 0).ok_or(ENOSPC)?;
    let now = crate::state::now();
    r.timers[i] = Timer {
        in_use: 1,
        ext,
        period_ticks: period.max(1),
        next_tick: now + period.max(1),
        callback,
        arg,
        cpu: crate::arch::percpu::id() as u32,
        _pad: 0,
    };
    // SAFETY: the big kernel lock is held.
    unsafe { ACTIVE += 1 };
    note_due();
    Ok(i as i32)
}

pub fn remove(id: i32) -> Result<(), i64> {
    let t = k()
        .timers
        .get_mut(usize::try_from(id).map_err(|_| EINVAL)?)
        .ok_or(EINVAL)?;
    if t.in_use == 0 {
        return Err(EINVAL);
    }
    *t = Timer::default();
    // SAFETY: the big kernel lock is held.
    unsafe { ACTIVE = ACTIVE.saturating_sub(1) };
    note_due();
    Ok(())
}

/// Recomputes the active-timer count from the table (after a repair
/// removed timers behind our back).
pub fn recount() {
    let n = k().timers.iter().filter(|t| t.in_use != 0).count() as u32;
    // SAFETY: the big kernel lock is held.
    unsafe { ACTIVE = n };
    note_due();
}

pub fn remove_for_ext(ext: u32) {
    for i in 0..MAX_TIMERS {
        if k().timers[i].in_use != 0 && k().timers[i].ext == ext {
            let _ = remove(i as i32);
        }
    }
}

/// Runs due callbacks, marking the CPU as in interrupt context on behalf
/// of the owning extension so a fault there is attributed correctly.
pub fn run_due(now: u64) {
    // SAFETY: the big kernel lock is held.
    if unsafe { ACTIVE } == 0 {
        return;
    }
    let me = crate::arch::percpu::id();
    // This CPU's next due tick, found in the same pass: only its own
    // timers move here. A callback that adds or removes a timer
    // recomputes every CPU's (`note_due`), and the pass goes on from
    // there.
    let due = &NEXT_DUE[me];
    due.store(u64::MAX, Ordering::Relaxed);
    for i in 0..MAX_TIMERS {
        let t = k().timers[i];
        if t.in_use == 0 || t.cpu != me as u32 {
            continue;
        }
        let next = if t.next_tick > now {
            t.next_tick
        } else {
            now + t.period_ticks
        };
        due.store(due.load(Ordering::Relaxed).min(next), Ordering::Relaxed);
        if t.next_tick > now {
            continue;
        }
        k().timers[i].next_tick = next;
        // SAFETY: the extension registered this address as an
        // `extern "C" fn(u64)` inside its own loaded image.
        let f: extern "C" fn(u64) = unsafe { core::mem::transmute(t.callback) };
        crate::ext::in_irq_of(t.ext, || f(t.arg));
    }
}
