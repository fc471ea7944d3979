//! The crash kinds. Faults are raised with inline assembly so that the
//! exact instruction is known (and the compiler cannot reason about, or
//! remove, an access that is undefined behaviour in Rust).

use core::arch::asm;
use core::hint::black_box;

use lazarus_extsdk::api;
use lazarus_extsdk::sync::KLock;

/// A canonical user-half address far above the user stack: never mapped
/// (bit 47 clear, or it would be a #GP instead of a #PF).
const UNMAPPED: u64 = 0x0000_0bad_0000_0000;
/// A non-canonical address: any access is a #GP.
const NON_CANONICAL: u64 = 0x8000_0000_0000_0000;

pub fn panic(msg: &str) -> ! {
    (api().panic)(msg.as_ptr(), msg.len())
}

/// Reads a quadword at `addr`.
fn read_at(addr: u64) -> ! {
    // SAFETY: deliberately faults; that is this extension's purpose. If the
    // access somehow succeeds we fall through to the panic below.
    unsafe {
        asm!("mov {tmp}, qword ptr [{addr}]", addr = in(reg) addr, tmp = out(reg) _, options(nostack, readonly))
    };
    panic("crashtest: faulting read did not fault")
}

pub fn null_read() -> ! {
    read_at(0)
}

pub fn wild_write() -> ! {
    // SAFETY: deliberately faults (#PF, write to an unmapped page).
    unsafe {
        asm!("mov qword ptr [{addr}], {val}", addr = in(reg) UNMAPPED, val = in(reg) 0x5a5a_5a5a_u64, options(nostack))
    };
    panic("crashtest: wild write did not fault")
}

pub fn general_protection() -> ! {
    read_at(NON_CANONICAL)
}

pub fn invalid_opcode() -> ! {
    // SAFETY: deliberately raises #UD in ring 0.
    unsafe { asm!("ud2", options(noreturn, nostack)) }
}

pub fn divide_by_zero() -> ! {
    // SAFETY: deliberately raises #DE; `div` by a zero register.
    unsafe {
        asm!(
            "xor edx, edx",
            "div {zero}",
            zero = in(reg) black_box(0u64),
            inout("rax") 1u64 => _,
            out("rdx") _,
            options(nostack),
        )
    };
    panic("crashtest: division by zero did not fault")
}

/// Recurses with a sizeable frame until the kernel stack's guard page.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 512];
    frame[(depth % 512) as usize] = depth as u8;
    let frame = black_box(frame);
    // A bound far past any kernel stack keeps the recursion finite in
    // the compiler's eyes.
    if depth > 1 << 20 {
        return 0;
    }
    recurse(depth + 1).wrapping_add(u64::from(frame[(depth % 512) as usize]))
}

pub fn stack_overflow() -> ! {
    black_box(recurse(0));
    panic("crashtest: stack overflow did not fault")
}

pub fn hard_lockup() -> ! {
    (api().irq_disable)();
    loop {
        core::hint::spin_loop();
    }
}

/// System calls run with interrupts disabled; a driver that enables them
/// and then spins is what the kernel's soft-lockup detector (in the timer
/// interrupt) exists to catch.
pub fn soft_lockup() -> ! {
    (api().irq_restore)(1);
    loop {
        core::hint::spin_loop();
    }
}

/// Takes `lock`, then spins (interrupts enabled) trying to take it again,
/// as a driver that re-enters its own spinlock would. The kernel refuses
/// the recursive acquire (EBUSY) instead of blocking, so the CPU spins in
/// ring 0 forever with the lock held: a soft lockup whose diagnosis must
/// find the lock and its owner.
pub fn deadlock(lock: &KLock) -> i64 {
    let first = lock.acquire_raw();
    if first < 0 {
        return i64::from(first);
    }
    (api().irq_restore)(1);
    while lock.acquire_raw() < 0 {
        core::hint::spin_loop();
    }
    // Reached only if someone else released our lock for us.
    (api().lock_release)(lock.id());
    (api().lock_release)(lock.id());
    0
}

pub fn double_fault() -> ! {
    // SAFETY: deliberately moves RSP to an unmapped page and pushes: the
    // #PF cannot be delivered on that stack, so the CPU raises #DF.
    unsafe {
        asm!(
            "mov rsp, {bad}",
            "push rax",
            "ud2",
            bad = in(reg) UNMAPPED,
            options(noreturn),
        )
    }
}

/// A doubly-linked list node in the kernel heap.
#[repr(C)]
struct Node {
    next: *mut Node,
    prev: *mut Node,
}

/// Builds a three-node list in the kernel heap, corrupts a link as a
/// stray write would, then deletes a node with Linux's `list_del` checks,
/// which find the corruption and panic (as `CONFIG_DEBUG_LIST` does).
pub fn list_corruption() -> ! {
    let size = core::mem::size_of::<Node>();
    let align = core::mem::align_of::<Node>();
    let mut nodes = [core::ptr::null_mut::<Node>(); 3];
    for n in &mut nodes {
        *n = (api().alloc)(size, align).cast();
        if n.is_null() {
            panic("crashtest: list corruption: out of memory");
        }
    }
    let [a, b, c] = nodes;
    // SAFETY: a, b and c are fresh, distinct, aligned Node-sized kernel
    // allocations; the links only point among them. They are leaked: the
    // kernel is about to panic.
    unsafe {
        a.write(Node { next: b, prev: c });
        b.write(Node { next: c, prev: a });
        c.write(Node { next: a, prev: b });
        // The stray write: c's back link no longer points at b.
        (*c).prev = black_box(UNMAPPED as *mut Node);
        // list_del(b), with the debug checks.
        let (next, prev) = ((*b).next, (*b).prev);
        if (*next).prev != b {
            panic("crashtest: list_del corruption: next->prev should be entry");
        }
        if (*prev).next != b {
            panic("crashtest: list_del corruption: prev->next should be entry");
        }
        (*prev).next = next;
        (*next).prev = prev;
    }
    panic("crashtest: list corruption went undetected")
}
