//! The kernel's extension list, with Linux-style integrity checks
//! (CONFIG_DEBUG_LIST): every neighbour pointer is validated before it is
//! followed, so a use-after-free shows up as a diagnosable "list
//! corruption" crash instead of a wild access somewhere later.

use crate::crash;
use crate::state::k;
use lazarus_abi::root::{CRASH_LIST_CORRUPTION, ListNode};
use lazarus_abi::syscall::errno::EINVAL;

fn head() -> *mut ListNode {
    &raw mut k().ext_list
}

pub fn init() {
    let h = head() as u64;
    k().ext_list = ListNode { next: h, prev: h };
}

/// Nodes must be the head or 16-byte-aligned kernel heap memory.
fn valid(p: u64) -> bool {
    let m = &k().mem;
    p == head() as u64
        || (p >= m.heap_start && p + 16 <= m.heap_start + m.heap_size && p.is_multiple_of(8))
}

fn corrupted(what: &[u8]) -> ! {
    let f = crash::here();
    crash::report(CRASH_LIST_CORRUPTION, &f, what)
}

fn node(p: u64) -> *mut ListNode {
    p as *mut ListNode
}

pub fn add(n: *mut ListNode) -> i32 {
    let np = n as u64;
    if !valid(np) || np == head() as u64 {
        return -(EINVAL as i32);
    }
    let h = head();
    // SAFETY: the head is ours; every other pointer is validated before use.
    unsafe {
        let prev = (*h).prev;
        if !valid(prev) {
            corrupted(b"list_add corruption: head->prev is not a list node");
        }
        if (*node(prev)).next != h as u64 {
            corrupted(b"list_add corruption: prev->next should be the head");
        }
        (*n).next = h as u64;
        (*n).prev = prev;
        (*node(prev)).next = np;
        (*h).prev = np;
    }
    0
}

pub fn del(n: *mut ListNode) -> i32 {
    let np = n as u64;
    if !valid(np) || np == head() as u64 {
        return -(EINVAL as i32);
    }
    // SAFETY: as in add.
    unsafe {
        let (next, prev) = ((*n).next, (*n).prev);
        if !valid(next) || !valid(prev) {
            corrupted(b"list_del corruption: neighbour is not a list node");
        }
        if (*node(next)).prev != np {
            corrupted(b"list_del corruption: next->prev should be the entry");
        }
        if (*node(prev)).next != np {
            corrupted(b"list_del corruption: prev->next should be the entry");
        }
        (*node(prev)).next = next;
        (*node(next)).prev = prev;
        (*n).next = 0xdead_0000_0000_0100;
        (*n).prev = 0xdead_0000_0000_0122;
    }
    0
}
