//! What happened, who did it, in which extension. The same rules as the
//! offline diagnoser (crates/diagnose), applied to live state.

use crate::mem::Mem;
use lazarus_abi::layout::{KSTACK_REGION, KSTACK_SIZE, KSTACK_STRIDE};
use lazarus_abi::repair::*;
use lazarus_abi::root::*;

pub struct Diagnosis {
    pub kind: u32,
    /// Pid to quarantine (0: none).
    pub offender: u32,
    /// Pid interrupted in interrupt context, or the victim of a
    /// fail-silent extension (continues), or 0.
    pub interrupted: u32,
    /// The interrupted process's system call returns `EINTR` (else what
    /// the kernel put in its frame).
    pub interrupted_eintr: bool,
    /// Faulty extension slot or NONE.
    pub ext: u32,
    /// Where the crash happened (the faulting instruction when the kernel
    /// recorded one, else where the vCPU stopped).
    pub rip: u64,
}

fn ext_at(r: &KernelRoot, rip: u64) -> Option<u32> {
    r.exts
        .iter()
        .position(|e| e.state != EXT_FREE && e.size != 0 && rip >= e.base && rip < e.base + e.size)
        .map(|i| i as u32)
}

fn in_guard(rsp: u64) -> bool {
    if rsp < KSTACK_REGION {
        return false;
    }
    let off = rsp - KSTACK_REGION;
    let slot = off / KSTACK_STRIDE;
    slot < MAX_PROCS as u64 && off % KSTACK_STRIDE < KSTACK_STRIDE - KSTACK_SIZE
}

/// Process `pid` spins on a lock someone else holds.
fn deadlocked(r: &KernelRoot, pid: u32) -> bool {
    let Some(p) = r
        .procs
        .get(KernelRoot::slot_of(pid))
        .filter(|p| p.pid == pid && pid != 0)
    else {
        return false;
    };
    let Some(l) = r.locks.get(p.spinning_on as usize) else {
        return false;
    };
    l.state == LOCK_HELD && l.owner != 0 && l.owner != pid
}

/// The extension to blame: the one the kernel's record names, the one an
/// interrupt was running, the one whose code the vCPU stopped in, or the
/// one the current process was inside.
fn blamed_ext(
    r: &KernelRoot,
    record: Option<&CrashRecord>,
    in_irq: bool,
    cpu: &Cpu,
    faulting_rip: u64,
    rip: u64,
    current: u32,
) -> u32 {
    record
        .map(|c| c.ext)
        .filter(|&e| (e as usize) < MAX_EXTS)
        .or_else(|| (in_irq && (cpu.irq_ext as usize) < MAX_EXTS).then_some(cpu.irq_ext))
        .or_else(|| ext_at(r, faulting_rip))
        .or_else(|| ext_at(r, rip))
        .or_else(|| {
            r.procs
                .get(KernelRoot::slot_of(current))
                .filter(|p| p.pid == current && (p.cur_ext as usize) < MAX_EXTS)
                .map(|p| p.cur_ext)
        })
        .unwrap_or(NONE)
}

pub fn diagnose(_m: &Mem, r: &KernelRoot, inp: &RepairInput) -> Diagnosis {
    let cpu = r.cpus.get(inp.vcpu as usize).copied().unwrap_or_default();
    let record = (inp.detector == DETECT_PANIC).then_some(&r.crash);
    let in_irq = match record {
        Some(c) => c.in_irq != 0,
        None => cpu.in_irq != 0 || cpu.irq_ext != NONE,
    };
    let current = record.map_or(cpu.current, |c| c.pid);
    let kind = match (inp.detector, record) {
        (DETECT_TRIPLE_FAULT, _) => KIND_TRIPLE_FAULT,
        (DETECT_INTERNAL_ERROR, _) => KIND_KVM_INTERNAL,
        (DETECT_HANG, _) if deadlocked(r, current) => KIND_DEADLOCK,
        (DETECT_HANG, _) => KIND_HARD_LOCKUP,
        (_, Some(c)) => match c.kind {
            CRASH_PANIC => KIND_PANIC,
            CRASH_LIST_CORRUPTION => KIND_LIST_CORRUPTION,
            CRASH_EXT_FAILED => KIND_EXT_FAILED,
            CRASH_CONTEXT_CORRUPT => KIND_CONTEXT_CORRUPT,
            CRASH_SOFT_LOCKUP if deadlocked(r, current) => KIND_DEADLOCK,
            CRASH_SOFT_LOCKUP => KIND_SOFT_LOCKUP,
            CRASH_OOPS if c.in_irq != 0 => KIND_IRQ_FAULT,
            CRASH_OOPS => match c.vector {
                14 if c.cr2 < 0x1000 => KIND_NULL_DEREF,
                14 if c.error_code & 2 != 0 => KIND_WILD_WRITE,
                14 => KIND_PAGE_FAULT,
                13 => KIND_GP,
                6 => KIND_INVALID_OPCODE,
                0 => KIND_DIVIDE,
                8 if in_guard(c.frame.rsp) => KIND_STACK_OVERFLOW,
                8 => KIND_DOUBLE_FAULT,
                _ => KIND_UNKNOWN,
            },
            _ => KIND_UNKNOWN,
        },
        _ => KIND_UNKNOWN,
    };
    let faulting_rip = record.map_or(inp.rip, |c| c.frame.rip);
    // A corrupted saved context says nothing about the extension its
    // process was blocked in.
    let ext = if kind == KIND_CONTEXT_CORRUPT {
        NONE
    } else {
        blamed_ext(r, record, in_irq, &cpu, faulting_rip, inp.rip, current)
    };
    // A failed extension's caller is its victim: only the extension is
    // to blame (and reset), and the caller's system call completes with
    // the result the kernel chose.
    let victim = kind == KIND_EXT_FAILED && ext != NONE;
    let (offender, interrupted) = if in_irq || victim {
        (0, current)
    } else {
        (current, 0)
    };
    Diagnosis {
        kind,
        offender,
        interrupted,
        interrupted_eintr: !victim,
        ext,
        rip: faulting_rip,
    }
}
