//! `/dev/crashtest`: crashes the kernel on request, in the spirit of
//! Linux's LKDTM, so that diagnosis and recovery can be tested. Each crash
//! kind runs directly in the ioctl, in the calling process's kernel
//! context (the timer kind in a timer callback). Numbers are in
//! `lazarus_abi::dev::crashtest`.
#![no_std]
#![no_main]

mod faults;

use core::sync::atomic::{AtomicI32, Ordering};

use lazarus_extsdk::abi::dev::crashtest::{
    IOC_DEADLOCK, IOC_DIVIDE, IOC_DOUBLE_FAULT, IOC_EMULATION_FAILURE, IOC_GP, IOC_HARD_LOCKUP,
    IOC_HOLD_LOCK, IOC_LIST_CORRUPTION, IOC_NULL_READ, IOC_PANIC, IOC_PING, IOC_SOFT_LOCKUP,
    IOC_STACK_OVERFLOW, IOC_TIMER_FAULT, IOC_TRIPLE_FAULT, IOC_UD2, IOC_WILD_WRITE, PING_REPLY,
};
use lazarus_extsdk::errno::{EBUSY, EINVAL};
use lazarus_extsdk::sync::KLock;
use lazarus_extsdk::{declare_extension, klog, timer};

/// Held by one process and spun on by another in the deadlock kind.
static LOCK: KLock = KLock::new();
/// The faulting timer, if armed (-1 = none), removed on unload.
static TIMER: AtomicI32 = AtomicI32::new(-1);

fn init() -> i32 {
    match LOCK.create("crashtest") {
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

extern "C" fn ioctl(_aux: u64, cmd: u64, _arg: u64) -> i64 {
    if cmd >= IOC_PANIC {
        klog!("crashtest: crash kind {} requested", cmd);
    }
    match cmd {
        IOC_PING => PING_REPLY,
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
        IOC_TRIPLE_FAULT => faults::triple_fault(),
        IOC_EMULATION_FAILURE => faults::emulation_failure(),
        IOC_DOUBLE_FAULT => faults::double_fault(),
        IOC_LIST_CORRUPTION => faults::list_corruption(),
        IOC_TIMER_FAULT => {
            if TIMER.load(Ordering::Acquire) >= 0 {
                return -EBUSY;
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

declare_extension! {
    name: "crashtest",
    device: "crashtest",
    init: init,
    exit: exit,
    open: None,
    read: None,
    write: None,
    ioctl: Some(ioctl),
    close: None,
}
