//! The kernel heap: fixed blocks on a contiguous physical range, with the
//! allocation map in the state root (`KernelRoot::heap`) rather than in
//! the heap. An extension's use-after-free can then corrupt data but never
//! the allocator, and the repair image can verify the map and reclaim all
//! memory of an extension it resets. (A general-purpose allocator such as
//! linked_list_allocator keeps its free list inside freed memory, which is
//! exactly what a use-after-free overwrites.)

use crate::state::k;
use core::alloc::{GlobalAlloc, Layout};
use lazarus_abi::root::{HEAP_BLOCK, HEAP_BLOCKS, HEAP_OWNER_KERNEL};

pub const HEAP_SIZE: u64 = (HEAP_BLOCK * HEAP_BLOCKS) as u64;

/// # Safety
/// `[start, start+size)` must be unused RAM mapped writable, used only here.
pub unsafe fn init(start: u64, size: u64) {
    let m = &mut k().mem;
    m.heap_start = start;
    m.heap_size = size.min(HEAP_SIZE);
    m.heap_used = 0;
}

fn is_used(i: usize) -> bool {
    k().heap.used[i / 64] & (1 << (i % 64)) != 0
}

/// Allocates for `owner`; null when no run of free blocks fits.
pub fn alloc(size: usize, align: usize, owner: u8) -> *mut u8 {
    if size == 0 || align > 4096 || !align.is_power_of_two() {
        return core::ptr::null_mut();
    }
    let n = size.div_ceil(HEAP_BLOCK);
    let step = (align / HEAP_BLOCK).max(1);
    let total = (k().mem.heap_size as usize / HEAP_BLOCK).min(HEAP_BLOCKS);
    let mut i = 0;
    while i + n <= total {
        // Skip whole used words quickly.
        if i.is_multiple_of(64) && k().heap.used[i / 64] == u64::MAX {
            i += 64;
            continue;
        }
        match (i..i + n).find(|&j| is_used(j)) {
            Some(j) => i = (j + 1).div_ceil(step) * step,
            None => {
                let h = &mut k().heap;
                for j in i..i + n {
                    h.used[j / 64] |= 1 << (j % 64);
                    h.owner[j] = owner;
                    h.start[j] = 0;
                }
                h.start[i] = 1;
                k().mem.heap_used += (n * HEAP_BLOCK) as u64;
                return (k().mem.heap_start + (i * HEAP_BLOCK) as u64) as *mut u8;
            }
        }
    }
    core::ptr::null_mut()
}

/// Frees an allocation of `size` bytes at `ptr`; ignores pointers that are
/// not the start of a live allocation (an extension's double free must not
/// corrupt the map).
pub fn free(ptr: *mut u8, size: usize) {
    let m = &k().mem;
    let p = ptr as u64;
    if p < m.heap_start
        || p >= m.heap_start + m.heap_size
        || !(p - m.heap_start).is_multiple_of(HEAP_BLOCK as u64)
    {
        return;
    }
    let first = ((p - m.heap_start) / HEAP_BLOCK as u64) as usize;
    if !is_used(first) || k().heap.start[first] == 0 {
        return;
    }
    let owner = k().heap.owner[first];
    let n = size.div_ceil(HEAP_BLOCK).max(1);
    let h = &mut k().heap;
    let mut freed = 0;
    for j in first..(first + n).min(HEAP_BLOCKS) {
        if j > first && (h.start[j] == 1 || h.owner[j] != owner) {
            break;
        }
        h.used[j / 64] &= !(1 << (j % 64));
        h.owner[j] = 0;
        h.start[j] = 0;
        freed += 1;
    }
    k().mem.heap_used -= (freed * HEAP_BLOCK) as u64;
}

struct KernelHeap;

// SAFETY: alloc/free hand out disjoint block runs inside the heap range,
// tracked by the map; every kernel path holds the big kernel lock.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        alloc(l.size(), l.align(), HEAP_OWNER_KERNEL)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, l: Layout) {
        free(ptr, l.size());
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap;
