//! The memory a process leaves behind: the kernel stack of each
//! process-table slot, and the memory of reaped quarantined processes,
//! freed when the CPU has time.

use crate::mm::frame;
use crate::mm::paging::{self, NX, W};
use crate::state::k;
use crate::uaccess::KResult;
use lazarus_abi::layout::{KSTACK_REGION, KSTACK_SIZE, KSTACK_STRIDE, PAGE_SIZE};
use lazarus_abi::root::{PS_RECLAIM, Proc};
use lazarus_abi::syscall::errno::ENOMEM;

/// Maps the kernel stack of process-table slot `slot` if it is not yet
/// (stacks are kept mapped and reused by the next process in the slot).
pub fn ensure_kstack(slot: usize) -> KResult<u64> {
    let base = KSTACK_REGION + slot as u64 * KSTACK_STRIDE;
    let top = base + KSTACK_STRIDE;
    let master = k().master_pml4;
    let mut va = top - KSTACK_SIZE;
    while va < top {
        if paging::translate(master, va).is_none() {
            let f = frame::alloc().ok_or(ENOMEM)?;
            paging::map(master, va, f, W | NX).map_err(|_| ENOMEM)?;
        }
        va += PAGE_SIZE;
    }
    Ok(top)
}

/// Unmaps and frees the kernel stack of a process slot whose process is
/// gone (reaped, never running again), so that kernel memory follows the
/// live processes instead of every slot ever used.
pub fn free_kstack(slot: usize) {
    let top = KSTACK_REGION + (slot as u64 + 1) * KSTACK_STRIDE;
    let master = k().master_pml4;
    let mut va = top - KSTACK_SIZE;
    while va < top {
        if let Some(f) = paging::unmap(master, va) {
            frame::free(f);
        }
        va += PAGE_SIZE;
    }
}

/// Set when a process entered `PS_RECLAIM`, so that the timer tick does
/// not scan the process table for nothing.
static RECLAIM_PENDING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Frees the memory of one reaped quarantined process (`PS_RECLAIM`), if
/// there is one. Called when the CPU is idle and from the timer tick when
/// it interrupted user mode (with CPU-bound processes the CPU is never
/// idle, and memory must not wait for that).
pub fn reclaim_one() -> bool {
    use core::sync::atomic::Ordering::Relaxed;
    if !RECLAIM_PENDING.load(Relaxed) {
        return false;
    }
    let Some(i) = k().procs.iter().position(|p| p.state == PS_RECLAIM) else {
        RECLAIM_PENDING.store(false, Relaxed);
        return false;
    };
    let cr3 = k().procs[i].cr3;
    paging::free_user_half(cr3);
    frame::free(cr3);
    free_kstack(i);
    k().procs[i] = Proc::default();
    true
}

/// Hands the reaped quarantined process in slot `i` to [`reclaim_one`].
pub fn later(i: usize) {
    let c = &mut k().procs[i];
    c.state = PS_RECLAIM;
    c.parent = 0;
    RECLAIM_PENDING.store(true, core::sync::atomic::Ordering::Relaxed);
}
