//! The big kernel lock: one CPU at a time runs kernel code, while user
//! code runs on every CPU in parallel.
//!
//! Why one lock: ring 0 is the slow, emulated path on these hosts and the
//! kernel's paths are short, so fine-grained locking would buy little, and
//! it keeps the repair's question "is another CPU halfway through changing
//! a kernel structure?" answerable from one word: only the lock's owner
//! can be. (Linux 2.0 and FreeBSD's Giant started the same way.)
//!
//! A waiter halts instead of spinning, and the releaser wakes it with an
//! IPI, as KVM's paravirtual spinlocks do: a waiting vCPU costs the host
//! nothing. Taken on every kernel entry (`trap`) and dropped on the way
//! back to user mode or into the idle halt; the lock belongs to the CPU,
//! not the process, so a context switch inside the kernel keeps it.

use crate::arch::{apic, cpu, percpu};
use crate::state::k;
use core::sync::atomic::{AtomicU32, Ordering::SeqCst};
use lazarus_abi::layout::VEC_RESCHED;
use lazarus_abi::root::NONE;

fn word(field: *mut u32) -> &'static AtomicU32 {
    // SAFETY: the field lives in the state root for the kernel's lifetime
    // and is only accessed atomically.
    unsafe { AtomicU32::from_ptr(field) }
}

fn locked() -> &'static AtomicU32 {
    word(&raw mut k().bkl.locked)
}

fn waiters() -> &'static AtomicU32 {
    word(&raw mut k().bkl.waiters)
}

/// Whether this CPU holds the lock.
#[inline(always)]
pub fn held_by_me() -> bool {
    held_by(percpu::id())
}

/// Whether CPU `me` holds the lock (the hot paths pass the index they
/// already have: every lookup is emulated memory traffic on these hosts).
#[inline(always)]
pub fn held_by(me: usize) -> bool {
    k().bkl.owner_cpu == me as u32 && locked().load(SeqCst) != 0
}

/// Takes the lock, halting (interrupts enabled only inside the halt)
/// until it is free. Called with interrupts off.
pub fn lock() {
    lock_on(percpu::id());
}

/// [`lock`] for the caller's CPU `me`.
pub fn lock_on(me: usize) {
    if locked().compare_exchange(0, 1, SeqCst, SeqCst).is_err() {
        wait(me);
    }
    let r = k();
    let pid = r.cpus[me].current;
    let b = &mut r.bkl;
    b.owner_cpu = me as u32;
    b.owner_pid = pid;
    b.depth = 1;
    b.acquisitions += 1;
}

#[cold]
fn wait(me: usize) {
    let bit = 1u32 << me;
    percpu::this().waiting_bkl = 1;
    waiters().fetch_or(bit, SeqCst);
    k().cpus[me].bkl_waits += 1;
    loop {
        if locked().compare_exchange(0, 1, SeqCst, SeqCst).is_ok() {
            break;
        }
        // The releaser clears `locked` before it reads `waiters`, and we
        // set our bit before reading `locked`: either we see it free or
        // it sees us and sends the wake-up (delivered at the `hlt`).
        cpu::sti_hlt();
        cpu::cli();
    }
    waiters().fetch_and(!bit, SeqCst);
    percpu::this().waiting_bkl = 0;
    k().bkl.contended += 1;
}

/// Drops the lock and wakes the CPUs waiting for it.
pub fn unlock() {
    unlock_on(percpu::id());
}

/// [`unlock`] for the caller's CPU `me`.
pub fn unlock_on(me: usize) {
    let b = &mut k().bkl;
    b.owner_cpu = NONE;
    b.owner_pid = 0;
    b.depth = 0;
    locked().store(0, SeqCst);
    // Only the waiters' bits are visited: a loop over every possible CPU
    // is a hundred emulated instructions on each contended release.
    let mut w = waiters().load(SeqCst) & !(1u32 << me);
    while w != 0 {
        let cpu = w.trailing_zeros() as usize;
        w &= w - 1;
        apic::send_ipi(cpu, VEC_RESCHED);
    }
}

/// After a repair on this CPU: the lock is this CPU's again, whatever
/// depth the crash left it at; if another CPU holds it (it was inside the
/// kernel elsewhere), wait for it to finish, as any entry would.
pub fn recover() {
    waiters().fetch_and(!(1u32 << percpu::id()), SeqCst);
    percpu::this().waiting_bkl = 0;
    if held_by_me() {
        k().bkl.depth = 1;
    } else {
        lock();
    }
}
