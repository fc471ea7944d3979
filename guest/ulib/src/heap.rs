//! The global allocator: a linked-list heap that grows with `SYS_SBRK`.
//!
//! Growing in chunks of at least [`GROW_MIN`] keeps the number of system
//! calls (each ~15 µs plus emulated kernel time) small.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use linked_list_allocator::Heap;

use crate::process::sbrk;

/// Smallest heap extension.
pub const GROW_MIN: usize = 64 * 1024;
const PAGE: usize = 4096;

/// The process's global allocator: a linked-list heap over memory from
/// `SYS_SBRK`, behind a spin lock.
pub struct SbrkHeap {
    locked: AtomicBool,
    heap: UnsafeCell<Heap>,
}

// SAFETY: every access to `heap` happens with `locked` held (processes are
// single-threaded today; the lock keeps this sound if that changes).
unsafe impl Sync for SbrkHeap {}

#[global_allocator]
static HEAP: SbrkHeap = SbrkHeap::new();

struct Guard<'a>(&'a SbrkHeap);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.locked.store(false, Ordering::Release);
    }
}

impl SbrkHeap {
    /// An empty heap; it takes memory from the kernel on first use.
    pub const fn new() -> SbrkHeap {
        SbrkHeap {
            locked: AtomicBool::new(false),
            heap: UnsafeCell::new(Heap::empty()),
        }
    }

    fn lock(&self) -> Guard<'_> {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        Guard(self)
    }

    /// Extends `heap` so that `layout` fits; false if the kernel refuses.
    fn grow(heap: &mut Heap, layout: Layout) -> bool {
        // Room for the request, its alignment and the hole bookkeeping.
        let need = layout.size() + layout.align() + 64;
        let chunk = need.max(GROW_MIN).next_multiple_of(PAGE);
        let Ok(prev) = sbrk(chunk as i64) else {
            return false;
        };
        let start = prev as *mut u8;
        if heap.size() == 0 {
            // SAFETY: the kernel just gave us [start, start + chunk), which
            // nothing else uses; the heap is empty.
            unsafe { heap.init(start, chunk) };
            true
        } else if start == heap.top() {
            // SAFETY: the new memory directly follows the heap's range.
            unsafe { heap.extend(chunk) };
            true
        } else {
            // Someone else moved the break (a direct `sbrk` call), so the
            // heap cannot grow contiguously. The chunk stays with the
            // process, unused; the allocation fails.
            false
        }
    }

    /// Bytes in use and the heap's size, for diagnostics.
    pub fn usage(&self) -> (usize, usize) {
        let _g = self.lock();
        // SAFETY: the lock is held.
        let heap = unsafe { &*self.heap.get() };
        (heap.used(), heap.size())
    }
}

impl Default for SbrkHeap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: allocations come from linked_list_allocator, which returns
// blocks that fit `layout` and do not overlap; `dealloc` hands back exactly
// what `alloc` returned.
unsafe impl GlobalAlloc for SbrkHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _g = self.lock();
        // SAFETY: the lock is held, so this is the only reference.
        let heap = unsafe { &mut *self.heap.get() };
        loop {
            if let Ok(p) = heap.allocate_first_fit(layout) {
                return p.as_ptr();
            }
            if !Self::grow(heap, layout) {
                return core::ptr::null_mut();
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _g = self.lock();
        // SAFETY: the lock is held; `ptr` came from `alloc` with `layout`
        // (GlobalAlloc contract), so it is non-null.
        unsafe {
            let heap = &mut *self.heap.get();
            heap.deallocate(core::ptr::NonNull::new_unchecked(ptr), layout);
        }
    }
}

/// (used, size) of the process heap in bytes.
pub fn usage() -> (usize, usize) {
    HEAP.usage()
}
