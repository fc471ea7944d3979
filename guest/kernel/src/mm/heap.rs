//! Kernel heap on a contiguous physical range reached through the physmap.

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

pub const HEAP_SIZE: u64 = 2 * 1024 * 1024;

/// # Safety
/// `[start, start+size)` must be unused RAM mapped writable, used only here.
pub unsafe fn init(start: u64, size: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { HEAP.lock().init(start as *mut u8, size as usize) };
    let m = &mut crate::state::k().mem;
    m.heap_start = start;
    m.heap_size = size;
}

/// Publishes heap usage in the state root (the soak test watches it).
pub fn update_stats() {
    crate::state::k().mem.heap_used = HEAP.lock().used() as u64;
}
