//! Physical frame allocator: one bit per 4 KiB frame, 1 = used.
//!
//! A bitmap in .bss starts all-zero (all free) without the kernel touching
//! it, which matters when every ring-0 store is emulated: boot only marks
//! the few reserved ranges.

use crate::state::k;
use core::ptr::addr_of_mut;
use lazarus_abi::layout::{MAX_MEMORY, PAGE_SIZE};

const WORDS: usize = (MAX_MEMORY / PAGE_SIZE / 64) as usize;
static mut BITMAP: [u64; WORDS] = [0; WORDS];
static mut NWORDS: usize = 0;
static mut HINT: usize = 0;

fn bitmap() -> &'static mut [u64; WORDS] {
    // SAFETY: the big kernel lock is held on every kernel path
    // (interrupt handlers never allocate frames).
    unsafe { &mut *addr_of_mut!(BITMAP) }
}

pub fn init(mem_size: u64) {
    let frames = mem_size / PAGE_SIZE;
    let words = frames.div_ceil(64) as usize;
    // SAFETY: boot is single-threaded.
    unsafe { NWORDS = words };
    // Frames past the end of RAM in the last word are permanently used.
    let tail = frames % 64;
    if tail != 0 {
        bitmap()[words - 1] = !0u64 << tail;
    }
    let m = &mut k().mem;
    m.frames_total = frames;
    m.frames_free = frames;
    m.bitmap_phys = crate::state::kernel_virt_to_phys(addr_of_mut!(BITMAP) as u64);
    m.bitmap_words = words as u64;
}

/// Marks [start, end) used (boot-time reservations).
pub fn reserve(start: u64, end: u64) {
    let first = start / PAGE_SIZE;
    let last = end.div_ceil(PAGE_SIZE);
    let bm = bitmap();
    let mut newly = 0;
    for f in first..last {
        let (w, b) = ((f / 64) as usize, f % 64);
        if w < WORDS && bm[w] & (1 << b) == 0 {
            bm[w] |= 1 << b;
            newly += 1;
        }
    }
    k().mem.frames_free -= newly;
}

pub fn alloc() -> Option<u64> {
    let bm = bitmap();
    // SAFETY: see bitmap().
    let (n, hint) = unsafe { (NWORDS, HINT) };
    for i in 0..n {
        let w = (hint + i) % n;
        if bm[w] != !0 {
            let b = bm[w].trailing_ones() as u64;
            bm[w] |= 1 << b;
            // SAFETY: see bitmap().
            unsafe { HINT = w };
            k().mem.frames_free -= 1;
            return Some((w as u64 * 64 + b) * PAGE_SIZE);
        }
    }
    None
}

pub fn alloc_zeroed() -> Option<u64> {
    let p = alloc()?;
    // SAFETY: the frame was just allocated and is reachable via the physmap.
    unsafe { core::ptr::write_bytes(super::phys_to_virt(p) as *mut u8, 0, PAGE_SIZE as usize) };
    Some(p)
}

pub fn free(p: u64) {
    let f = p / PAGE_SIZE;
    let (w, b) = ((f / 64) as usize, f % 64);
    let bm = bitmap();
    if w < WORDS && bm[w] & (1 << b) != 0 {
        bm[w] &= !(1 << b);
        k().mem.frames_free += 1;
    }
}
