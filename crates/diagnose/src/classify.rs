//! The crash kind, from the detector, the kernel's record and the state.

use lazarus_abi::layout::{KSTACK_REGION, KSTACK_SIZE, KSTACK_STRIDE};
use lazarus_abi::root::{
    CRASH_CONTEXT_CORRUPT, CRASH_EXT_FAILED, CRASH_LIST_CORRUPTION, CRASH_OOPS, CRASH_PANIC,
    CRASH_SOFT_LOCKUP, MAX_PROCS,
};
use lazarus_abi::trap::{VEC_DIVIDE, VEC_DOUBLE_FAULT, VEC_GP, VEC_INVALID_OPCODE, VEC_PAGE_FAULT};
use lazarus_dump::{CrashNote, Regs};

use crate::report::CrashKind;

/// Page-fault error code bit: the access was a write.
const PF_WRITE: u64 = 1 << 1;
/// Addresses below this are "NULL plus a small offset".
const NULL_PAGE: u64 = 0x1000;
/// An exception frame is five or six quadwords: a stack pointer this close
/// above a guard area cannot take an exception either.
const FRAME_SLACK: u64 = 64;

/// Whether `addr` is in the unmapped guard below some process's kernel
/// stack (or so close above it that pushing an exception frame hits it).
pub fn in_stack_guard(addr: u64, slack: u64) -> bool {
    let Some(off) = addr.checked_sub(KSTACK_REGION) else {
        return false;
    };
    let slot = off / KSTACK_STRIDE;
    slot < MAX_PROCS as u64 && off % KSTACK_STRIDE < KSTACK_STRIDE - KSTACK_SIZE + slack
}

/// The kind of crash. `deadlock` is the deadlock condition: the offender
/// spins on a lock that a live process holds.
pub fn kind(
    note: &CrashNote,
    regs: Option<&Regs>,
    exit_cr2: Option<u64>,
    deadlock: bool,
) -> CrashKind {
    use lazarus_abi::repair::{
        DETECT_HANG, DETECT_INTERNAL_ERROR, DETECT_TRIPLE_FAULT, detector_name,
    };
    match note.detector.as_str() {
        d if d == detector_name(DETECT_TRIPLE_FAULT) => return CrashKind::TripleFault,
        d if d == detector_name(DETECT_INTERNAL_ERROR) => return CrashKind::KvmInternalError,
        // The dump writer's detector for a dump nobody's crash caused.
        d if d == CrashKind::OnDemand.as_str() => return CrashKind::OnDemand,
        d if d == detector_name(DETECT_HANG) => {
            return if deadlock {
                CrashKind::Deadlock
            } else {
                CrashKind::HardLockup
            };
        }
        _ => {}
    }
    let Some(r) = &note.guest_record else {
        return CrashKind::Unknown;
    };
    match r.kind {
        CRASH_PANIC => CrashKind::Panic,
        CRASH_LIST_CORRUPTION => CrashKind::ListCorruption,
        CRASH_EXT_FAILED => CrashKind::ExtensionFailure,
        CRASH_CONTEXT_CORRUPT => CrashKind::ContextCorruption,
        CRASH_SOFT_LOCKUP if deadlock => CrashKind::Deadlock,
        CRASH_SOFT_LOCKUP => CrashKind::SoftLockup,
        CRASH_OOPS if r.in_irq != 0 => CrashKind::IrqFault,
        CRASH_OOPS => match r.vector {
            VEC_PAGE_FAULT if r.cr2 < NULL_PAGE => CrashKind::NullDeref,
            VEC_PAGE_FAULT if r.error_code & PF_WRITE != 0 => CrashKind::WildWrite,
            VEC_PAGE_FAULT => CrashKind::PageFault,
            VEC_GP => CrashKind::GeneralProtection,
            VEC_INVALID_OPCODE => CrashKind::InvalidOpcode,
            VEC_DIVIDE => CrashKind::DivideError,
            VEC_DOUBLE_FAULT => {
                // The #DF frame saves the stack pointer of the fault that
                // could not be delivered; CR2 still holds the address of
                // the #PF that started it.
                let rsp = regs.map_or(r.frame.rsp, |g| g.rsp);
                if in_stack_guard(rsp, FRAME_SLACK)
                    || exit_cr2.is_some_and(|a| in_stack_guard(a, 0))
                {
                    CrashKind::StackOverflow
                } else {
                    CrashKind::DoubleFault
                }
            }
            _ => CrashKind::Unknown,
        },
        _ => CrashKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_areas() {
        let guard = KSTACK_REGION + 3 * KSTACK_STRIDE;
        assert!(in_stack_guard(guard, 0));
        assert!(in_stack_guard(guard + KSTACK_STRIDE - KSTACK_SIZE - 8, 0));
        // The lowest stack address itself is not the guard...
        assert!(!in_stack_guard(guard + KSTACK_STRIDE - KSTACK_SIZE, 0));
        // ...but too low to push an exception frame.
        assert!(in_stack_guard(
            guard + KSTACK_STRIDE - KSTACK_SIZE + 40,
            FRAME_SLACK
        ));
        assert!(!in_stack_guard(guard + KSTACK_STRIDE - 8, FRAME_SLACK));
        assert!(!in_stack_guard(KSTACK_REGION - 8, FRAME_SLACK));
        assert!(!in_stack_guard(
            KSTACK_REGION + MAX_PROCS as u64 * KSTACK_STRIDE,
            0
        ));
        assert!(!in_stack_guard(0x0000_0bad_0000_0000, FRAME_SLACK));
    }
}
