//! The user half of an address space: demand paging of the current
//! process's heap and stack.

use super::frame;
use super::paging::{self, NX, U, W};
use crate::state::current;
use lazarus_abi::layout::{PAGE_SIZE, USER_STACK_SIZE, USER_STACK_TOP};

/// Maps a zeroed page for a first touch of the heap or stack of the
/// current process. Returns false if `va` is not in either.
pub fn demand_map(va: u64) -> bool {
    let Some(p) = current() else { return false };
    let page = va & !(PAGE_SIZE - 1);
    let in_heap = page >= p.brk_base && page < p.brk;
    let in_stack = (USER_STACK_TOP - USER_STACK_SIZE..USER_STACK_TOP).contains(&page);
    if !in_heap && !in_stack {
        return false;
    }
    let Some(f) = frame::alloc_zeroed() else {
        return false;
    };
    if paging::map(p.cr3, page, f, U | W | NX).is_err() {
        frame::free(f);
        return false;
    }
    p.mem_pages += 1;
    true
}
