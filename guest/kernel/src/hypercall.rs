//! Calls into the hypervisor.

use crate::arch::cpu::outl;
use crate::state::kernel_virt_to_phys;
use core::sync::atomic::{Ordering, compiler_fence};
use lazarus_abi::hypercall::Hypercall;
use lazarus_abi::layout::PORT_HYPERCALL;

const EMPTY: Hypercall = Hypercall {
    nr: 0,
    args: [0; 5],
    ret: 0,
};

/// One block per CPU: a CPU may call before it holds the big kernel lock
/// (its start-up message), and an interrupt may call while a call is
/// being prepared.
static mut BLOCKS: [Hypercall; lazarus_abi::boot::MAX_CPUS] = [EMPTY; lazarus_abi::boot::MAX_CPUS];

/// Issues a hypercall. The block lives in the kernel image, which is loaded
/// below 4 GiB, so its physical address fits the 32-bit port write.
pub fn call(nr: u64, args: [u64; 5]) -> i64 {
    let cpu = crate::arch::percpu::id();
    // SAFETY: the block is this CPU's, used with interrupts off; the
    // hypervisor reads it only during the `out` below.
    let block = unsafe { &raw mut BLOCKS[cpu] };
    // SAFETY: as above.
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
