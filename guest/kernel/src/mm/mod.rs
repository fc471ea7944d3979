//! Memory management: physical frames, page tables, the kernel heap,
//! demand paging of user memory.

pub mod frame;
pub mod heap;
pub mod paging;
pub mod user;

use lazarus_abi::layout::PHYSMAP_BASE;

/// Kernel virtual address of a physical address (through the physmap).
#[inline(always)]
pub const fn phys_to_virt(p: u64) -> u64 {
    PHYSMAP_BASE + p
}
