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

/// Takes `lock` and sleeps in the kernel holding it, forever: the holder
/// half of the deadlock kind.
pub fn hold_lock(lock: &KLock) -> i64 {
    let r = lock.acquire_raw();
    if r < 0 {
        return i64::from(r);
    }
    loop {
        (api().sleep_ticks)(1000);
    }
}

/// Spins with interrupts off on `lock`, held by another process that will
/// never release it: a classic spinlock deadlock. The kernel records what
/// we spin on, so the lockup is diagnosed as a deadlock.
pub fn deadlock(lock: &KLock) -> ! {
    (api().irq_disable)();
    loop {
        if (api().lock_try_acquire)(lock.id()) == 0 {
            // The holder went away; this should not happen.
            panic("crashtest: deadlock: the lock was released");
        }
        core::hint::spin_loop();
    }
}

/// Spins with interrupts off until `lock` is free, then takes it: the
/// half of an ABBA deadlock that locks up its CPU while the other half
/// waits for a lock this caller holds.
pub fn spin_on(lock: &KLock) -> i64 {
    (api().irq_disable)();
    while (api().lock_try_acquire)(lock.id()) != 0 {
        core::hint::spin_loop();
    }
    0
}

/// Sleeps inside the extension for `ms` milliseconds, a tick at a time.
pub fn sleep_in_ext(ms: u64) -> i64 {
    let ticks = ms
        .div_ceil(1000 / lazarus_extsdk::abi::layout::TICK_HZ)
        .min(60_000);
    let start = (api().ticks)();
    while (api().ticks)().wrapping_sub(start) < ticks {
        (api().sleep_ticks)(1);
    }
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

/// A use after free of a node on the kernel's extension list: the node is
/// freed while still linked, then written through the stale pointer, as a
/// driver that forgot to unregister would. The kernel checks its list
/// (like Linux's CONFIG_DEBUG_LIST) on the next insertion and reports the
/// corruption.
pub fn list_corruption() -> ! {
    use lazarus_extsdk::abi::root::ListNode;
    let size = core::mem::size_of::<ListNode>();
    let align = 16;
    let node: *mut ListNode = (api().alloc)(size, align).cast();
    let other: *mut ListNode = (api().alloc)(size, align).cast();
    if node.is_null() || other.is_null() {
        panic("crashtest: list corruption: out of memory");
    }
    // SAFETY: `node` is a fresh allocation of ListNode size; after it is
    // freed we deliberately write to it: that use after free is the bug
    // this crash kind models. `other` stays valid.
    unsafe {
        node.write(ListNode::default());
        (api().list_add)(node);
        (api().free)(node.cast(), size, align);
        core::ptr::write_bytes(node.cast::<u8>(), 0x6b, size);
        other.write(ListNode::default());
        (api().list_add)(other);
    }
    panic("crashtest: list corruption went undetected")
}

/// Loads an IDT of limit 0, then faults: no exception can be delivered.
pub fn triple_fault() -> ! {
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let empty = Idtr { limit: 0, base: 0 };
    // SAFETY: deliberately makes every exception undeliverable; the CPU
    // shuts down. Nothing after this runs.
    unsafe { asm!("cli", "lidt [{}]", "ud2", in(reg) &empty, options(noreturn)) }
}

/// Zeroes the IDT the CPU uses (the kernel's, shared by every CPU),
/// sends every other CPU an interrupt (x2APIC ICR, all but self), gives
/// it a moment to arrive (a few thousand `pause`s, milliseconds of
/// emulated ring 0) and executes `ud2`: this CPU and each CPU the
/// interrupt reaches shut down, nearly at once.
pub fn idt_wipe(vector: u8) -> ! {
    let mut idtr = [0u8; 10];
    // SAFETY: `sidt` stores 10 bytes into the buffer.
    unsafe { asm!("sidt [{}]", in(reg) idtr.as_mut_ptr(), options(nostack)) };
    let limit = u16::from_le_bytes([idtr[0], idtr[1]]) as usize;
    let mut base = [0u8; 8];
    base.copy_from_slice(&idtr[2..]);
    let base = u64::from_le_bytes(base);
    // SAFETY: deliberately destroys the kernel's IDT (that is the fault
    // this injects); then interrupts every other CPU and faults.
    unsafe {
        core::ptr::write_bytes(base as *mut u8, 0, limit + 1);
        asm!(
            "wrmsr",
            "mov ecx, 4000",
            "2:",
            "pause",
            "dec ecx",
            "jnz 2b",
            "ud2",
            in("ecx") 0x830u32,
            in("eax") u32::from(vector) | (3 << 18),
            in("edx") 0u32,
            options(noreturn, nostack)
        )
    }
}

/// `movq xmm0, rbx` as raw bytes: the kernel is built without SSE.
pub fn emulation_failure() -> ! {
    // SAFETY: deliberately executes an instruction the kernel never enables.
    unsafe {
        asm!(
            ".byte 0x66, 0x48, 0x0f, 0x6e, 0xc3",
            options(nostack, nomem)
        )
    };
    panic("crashtest: SSE instruction ran in ring 0")
}

/// A stray write into kernel code: the first instruction of the kernel
/// function behind `ExtApi::log` becomes `ud2`, and then it runs. Every
/// later log call would fault too unless the repair restores the code.
pub fn corrupt_code() -> ! {
    let target = api().log as usize as *mut u8;
    // SAFETY: deliberately corrupts kernel code (mapped writable in the
    // kernel window); that is this crash kind's purpose.
    unsafe {
        target.write_volatile(0x0f);
        target.add(1).write_volatile(0x0b);
    }
    (api().log)(b"!".as_ptr(), 1);
    panic("crashtest: corrupted kernel code ran without faulting")
}
