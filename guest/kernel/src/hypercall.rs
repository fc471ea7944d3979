//! Calls into the hypervisor.

use crate::arch::cpu::outl;
use crate::state::kernel_virt_to_phys;
use core::sync::atomic::{Ordering, compiler_fence};
use lazarus_abi::hypercall::Hypercall;
use lazarus_abi::layout::PORT_HYPERCALL;

static mut BLOCK: Hypercall = Hypercall {
    nr: 0,
    args: [0; 5],
    ret: 0,
};

/// Issues a hypercall. The block lives in the kernel image, which is loaded
/// below 4 GiB, so its physical address fits the 32-bit port write.
pub fn call(nr: u64, args: [u64; 5]) -> i64 {
    let block = &raw mut BLOCK;
    // SAFETY: one CPU, interrupts off; the hypervisor reads the block only
    // during the `out` below.
    unsafe {
        (*block).nr = nr;
        (*block).args = args;
        (*block).ret = -lazarus_abi::syscall::errno::ENOSYS;
        compiler_fence(Ordering::SeqCst);
        outl(PORT_HYPERCALL, kernel_virt_to_phys(block as u64) as u32);
        compiler_fence(Ordering::SeqCst);
        (*block).ret
    }
}
