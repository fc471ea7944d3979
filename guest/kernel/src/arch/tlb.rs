//! TLB shootdown: a kernel mapping shared by every CPU was removed, so
//! every other CPU must forget it before the page is reused. A process's
//! own mappings need none: it runs on one CPU at a time, and every CPU
//! switches CR3 when it changes process.

use super::{apic, cpu, percpu};
use core::sync::atomic::{AtomicU32, Ordering};
use lazarus_abi::layout::VEC_TLB;

/// CPUs that have not yet flushed for the current shootdown.
static PENDING: AtomicU32 = AtomicU32::new(0);

/// Makes every other online CPU flush its TLB and waits until they have.
/// The caller holds the big kernel lock, so the others are in user mode,
/// idle or waiting for the lock, all with interrupts deliverable.
pub fn shootdown() {
    let me = percpu::id();
    let mask = percpu::online_mask() & !(1u32 << me);
    if mask == 0 {
        return;
    }
    PENDING.fetch_or(mask, Ordering::SeqCst);
    for c in 0..32 {
        if mask & (1 << c) != 0 {
            apic::send_ipi(c, VEC_TLB);
        }
    }
    while PENDING.load(Ordering::SeqCst) & mask != 0 {
        core::hint::spin_loop();
    }
}

/// The shootdown IPI: flush everything, global pages included.
pub fn on_ipi() {
    cpu::flush_tlb_all();
    PENDING.fetch_and(!(1u32 << percpu::id()), Ordering::SeqCst);
}
