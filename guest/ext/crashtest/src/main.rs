//! `/dev/crashtest`: crashes the kernel on request, in the spirit of
//! Linux's LKDTM, so that diagnosis and recovery can be tested. Each crash
//! kind runs directly in the ioctl, in the calling process's kernel
//! context (the timer kind in a timer callback). Numbers are in
//! `lazarus_abi::dev::crashtest`.
#![no_std]
#![no_main]

mod faults;

use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use lazarus_extsdk::abi::dev::crashtest::{
    IOC_BREAK_PING, IOC_BREAK_READ, IOC_CORRUPT_CODE, IOC_DEADLOCK, IOC_DIVIDE, IOC_DOUBLE_FAULT,
    IOC_EMULATION_FAILURE, IOC_GP, IOC_HARD_LOCKUP, IOC_HOLD_LOCK, IOC_IDT_WIPE,
    IOC_LIST_CORRUPTION, IOC_LOCK_A, IOC_LOCK_B, IOC_NULL_READ, IOC_PANIC, IOC_PEEK_PHYS, IOC_PING,
    IOC_POKE_PHYS, IOC_SLEEP_IN_EXT, IOC_SOFT_LOCKUP, IOC_SPIN_LOCK_A, IOC_STACK_OVERFLOW,
    IOC_TIMER_FAULT, IOC_TRIPLE_FAULT, IOC_TRY_LOCK_B, IOC_UD2, IOC_UNLOCK, IOC_WILD_WRITE,
    PING_REPLY,
};
use lazarus_extsdk::errno::{EAGAIN, EBUSY, EINVAL};
use lazarus_extsdk::sync::KLock;
use lazarus_extsdk::{declare_extension, klog, timer};

/// Held by one process and spun on by another in the deadlock kind; lock
/// A of the multi-process scenarios.
static LOCK: KLock = KLock::new();
/// Lock B of the multi-process scenarios.
static LOCK_B: KLock = KLock::new();

/// The faulting timer, if armed (-1 = none), removed on unload.
static TIMER: AtomicI32 = AtomicI32::new(-1);
/// Fail-silent modes ([`IOC_BREAK_PING`], [`IOC_BREAK_READ`]); a reset
/// restores the pristine image, where both are off.
static PING_BROKEN: AtomicBool = AtomicBool::new(false);
static READ_BROKEN: AtomicBool = AtomicBool::new(false);

fn init() -> i32 {
    match LOCK
        .create("crashtest")
        .and_then(|()| LOCK_B.create("crashtest-b"))
    {
        Ok(()) => 0,
        Err(e) => e,
    }
}

extern "C" fn exit() {
    let id = TIMER.swap(-1, Ordering::AcqRel);
    if id >= 0 {
        let _ = timer::remove(id);
    }
}

extern "C" fn timer_fault(_arg: u64) {
    faults::null_read();
}

/// Releases `lock` if the caller holds it (EPERM otherwise is fine).
fn unlock(lock: &KLock) {
    (lazarus_extsdk::api().lock_release)(lock.id());
}

extern "C" fn ioctl(_aux: u64, cmd: u64, arg: u64) -> i64 {
    if cmd >= IOC_PANIC {
        klog!("crashtest: crash kind {} requested", cmd);
    }
    match cmd {
        IOC_PING if PING_BROKEN.load(Ordering::Relaxed) => PING_REPLY ^ 0x5a5a,
        IOC_PING => PING_REPLY,
        IOC_BREAK_PING => {
            PING_BROKEN.store(true, Ordering::Relaxed);
            0
        }
        IOC_BREAK_READ => {
            READ_BROKEN.store(true, Ordering::Relaxed);
            0
        }
        IOC_PANIC => faults::panic("crashtest: requested panic"),
        IOC_NULL_READ => faults::null_read(),
        IOC_WILD_WRITE => faults::wild_write(),
        IOC_GP => faults::general_protection(),
        IOC_UD2 => faults::invalid_opcode(),
        IOC_DIVIDE => faults::divide_by_zero(),
        IOC_STACK_OVERFLOW => faults::stack_overflow(),
        IOC_HARD_LOCKUP => faults::hard_lockup(),
        IOC_SOFT_LOCKUP => faults::soft_lockup(),
        IOC_DEADLOCK => faults::deadlock(&LOCK),
        IOC_HOLD_LOCK => faults::hold_lock(&LOCK),
        IOC_LOCK_A => i64::from(LOCK.acquire_raw()),
        IOC_LOCK_B => i64::from(LOCK_B.acquire_raw()),
        IOC_TRY_LOCK_B => i64::from((lazarus_extsdk::api().lock_try_acquire)(LOCK_B.id())),
        IOC_UNLOCK => {
            unlock(&LOCK);
            unlock(&LOCK_B);
            0
        }
        IOC_SPIN_LOCK_A => faults::spin_on(&LOCK),
        IOC_SLEEP_IN_EXT => faults::sleep_in_ext(arg),
        IOC_PEEK_PHYS | IOC_POKE_PHYS => phys_access(cmd, arg),
        IOC_TRIPLE_FAULT => faults::triple_fault(),
        IOC_IDT_WIPE => faults::idt_wipe(lazarus_abi::layout::VEC_RESCHED),
        IOC_EMULATION_FAILURE => faults::emulation_failure(),
        IOC_CORRUPT_CODE => faults::corrupt_code(),
        IOC_DOUBLE_FAULT => faults::double_fault(),
        IOC_LIST_CORRUPTION => faults::list_corruption(),
        IOC_TIMER_FAULT => {
            if TIMER.load(Ordering::Acquire) >= 0 {
                return -EBUSY;
            }
            // Timers fire on the CPU that arms them. arg: 0 = this one,
            // n = only CPU n-1 (EAGAIN elsewhere: the caller retries until
            // the scheduler runs it there).
            if arg != 0 && u64::from((lazarus_extsdk::api().cpu_id)()) != arg - 1 {
                return -EAGAIN;
            }
            match timer::add(timer_fault, 0, 1) {
                Ok(id) => {
                    TIMER.store(id, Ordering::Release);
                    0
                }
                Err(e) => i64::from(e),
            }
        }
        _ => -EINVAL,
    }
}

/// Reads or writes one u64 of guest-physical memory through ioremap, as a
/// driver touching device memory would. The repair image's address is a
/// good target: it must not be there.
fn phys_access(cmd: u64, arg: u64) -> i64 {
    let mut req = [0u8; 16];
    if let Err(e) = lazarus_extsdk::user::copy_from_user(&mut req, arg) {
        return e;
    }
    let gpa = u64::from_le_bytes(req[..8].try_into().unwrap_or_default());
    let va = (lazarus_extsdk::api().ioremap)(gpa, 8);
    if va == 0 {
        return -EINVAL;
    }
    let p = va as *mut u64;
    if cmd == IOC_PEEK_PHYS {
        // SAFETY: `va` maps 8 bytes at `gpa` (just created by ioremap).
        let v = unsafe { p.read_volatile() };
        req[8..].copy_from_slice(&v.to_le_bytes());
        match lazarus_extsdk::user::copy_to_user(arg, &req) {
            Ok(()) => 0,
            Err(e) => e,
        }
    } else {
        let v = u64::from_le_bytes(req[8..].try_into().unwrap_or_default());
        // SAFETY: as above.
        unsafe { p.write_volatile(v) };
        0
    }
}

/// An empty device (end of file at once) unless broken.
extern "C" fn read(_aux: u64, _buf: u64, len: usize, _pos: u64) -> i64 {
    if READ_BROKEN.load(Ordering::Relaxed) {
        len as i64 + 4096
    } else {
        0
    }
}

declare_extension! {
    name: "crashtest",
    device: "crashtest",
    init: init,
    exit: exit,
    open: None,
    read: Some(read),
    write: None,
    ioctl: Some(ioctl),
    close: None,
}
