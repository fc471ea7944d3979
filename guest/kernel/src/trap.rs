//! Where every exception and interrupt lands.
//!
//! Interrupts are acknowledged at once, before the big kernel lock is
//! taken: a CPU waiting for the lock halts with interrupts on, and must
//! still receive the wake-up IPI and its own ticks meanwhile.

use crate::arch::{apic, percpu};
use crate::{bkl, console, crash, irq, proc, smp, syscall, tick};
use core::sync::atomic::{AtomicBool, Ordering};
use lazarus_abi::layout::{
    PAGE_SIZE, USER_IMAGE_BASE, USER_STACK_TOP, VEC_COM1, VEC_RESCHED, VEC_SPURIOUS, VEC_STOP,
    VEC_TIMER, VEC_TLB,
};
use lazarus_abi::syscall::SYSCALL_INSN;
use lazarus_abi::trap::{TrapFrame, VEC_INVALID_OPCODE, VEC_PAGE_FAULT};

/// Console input arrived while its CPU waited for the lock.
static CONSOLE_PENDING: AtomicBool = AtomicBool::new(false);

/// Whether the #UD in `tf` (from ring 3) is the system-call instruction.
fn is_syscall(tf: &TrapFrame) -> bool {
    let rip = tf.rip;
    if rip & (PAGE_SIZE - 1) <= PAGE_SIZE - 2 && (USER_IMAGE_BASE..USER_STACK_TOP).contains(&rip) {
        // The CPU just fetched the faulting instruction from this page in
        // ring 3, so it is mapped and user, and both bytes lie on it: no
        // page-table walk (one per system call, in emulated ring 0).
        // SAFETY: see above; nothing unmaps a process's pages while it is
        // inside the kernel on this CPU, as its own system calls alone do.
        let b = unsafe { core::ptr::read_unaligned(rip as *const [u8; 2]) };
        return b == SYSCALL_INSN;
    }
    crate::uaccess::slice(rip, 2).is_ok_and(|b| b == SYSCALL_INSN)
}

#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(tf: &mut TrapFrame) {
    let v = tf.vector;
    if v == VEC_INVALID_OPCODE && tf.from_user() {
        // The system call (and user #UD) entry, the hottest one, with
        // none of the interrupt cases' tests in its way. From user mode
        // this CPU never holds the lock already.
        let me = percpu::id();
        bkl::lock_on(me);
        proc::kill_requested(me);
        pending_input();
        if is_syscall(tf) {
            tf.rip += 2;
            syscall::dispatch(tf, me);
        } else {
            proc::user_fault(tf);
        }
        crate::sched::preempt_for_woken();
        return;
    }
    if v >= 32 && v != VEC_SPURIOUS as u64 {
        apic::eoi();
    }
    if v == VEC_STOP as u64 {
        smp::on_stop_ipi();
    }
    if v == VEC_TLB as u64 {
        // Needs no lock: the sender holds it and waits for us.
        crate::arch::tlb::on_ipi();
        return;
    }
    if v == VEC_PAGE_FAULT && !tf.from_user() && crate::uaccess::fixup(tf) {
        // A user copy touched a new page or a bad address; this CPU holds
        // the lock already (it is in a system call).
        return;
    }
    let me = percpu::id();
    if percpu::of(me).waiting_bkl != 0 {
        // Halted inside `bkl::lock`: note what came and go back to wait.
        if v == VEC_TIMER as u64 {
            tick::beat_only();
        } else if v == VEC_COM1 as u64 {
            CONSOLE_PENDING.store(true, Ordering::SeqCst);
        } else if let Some(i) = irq::index_of(v) {
            irq::defer(i);
        } else if v < 32 {
            crash::oops(tf);
        }
        return;
    }
    let took = !bkl::held_by(me);
    if took && crate::sched::halted_idle(me) {
        // An application processor's idle tick needs no lock; anything
        // else may leave work for the idle loop to look at.
        if v == VEC_TIMER as u64 && me != 0 && !crate::timer::due_on(me, crate::state::now() + 1) {
            tick::idle_tick(me);
            return;
        }
        percpu::of(me).idle_work = 1;
    }
    if took {
        bkl::lock_on(me);
    }
    if tf.from_user() {
        proc::kill_requested(me);
    }
    if v == VEC_COM1 as u64 {
        console::on_interrupt();
    }
    pending_input();
    if v == VEC_TIMER as u64 {
        tick::tick(tf);
    } else if v == VEC_COM1 as u64 {
        // Drained above.
    } else if v == VEC_RESCHED as u64 {
        crate::sched::on_resched(tf.from_user());
    } else if let Some(i) = irq::index_of(v) {
        irq::dispatch(i);
    } else if v == VEC_SPURIOUS as u64 {
        // Spurious: no EOI.
    } else if v < 32 {
        if tf.from_user() {
            proc::user_fault(tf);
        } else {
            crash::oops(tf);
        }
    }
    // Back to user mode, `trap_return` drops the lock (`exit_to_user`);
    // back into kernel code (the idle halt), drop it here.
    if tf.from_user() {
        // (The process may have slept and woken on another CPU meanwhile.)
        crate::sched::preempt_for_woken();
    } else if took {
        bkl::unlock_on(me);
    }
}

/// Input that arrived while a CPU waited for the lock, deferred device
/// interrupts, and a Ctrl-C for the foreground job (ended here, where
/// ending the current process is safe: it may be one of the job's).
#[inline(always)]
fn pending_input() {
    // A plain load first: an atomic exchange on every kernel entry is
    // emulated memory traffic for nothing.
    if CONSOLE_PENDING.load(Ordering::Relaxed) && CONSOLE_PENDING.swap(false, Ordering::SeqCst) {
        console::on_interrupt();
    }
    irq::run_deferred();
    if let Some(job) = console::take_interrupt() {
        proc::end_job(&job, lazarus_abi::syscall::EXIT_INTERRUPTED);
    }
}

/// Called by `trap_return` on every return to user mode, including a new
/// or restarted process's first: the first one after a repair ends the
/// resurrection, and the CPU leaves the kernel.
#[unsafe(no_mangle)]
extern "C" fn exit_to_user() {
    crate::sched::note_user_return();
    // The CPU may differ from the entry's: the process may have slept and
    // been resumed on another one.
    let me = percpu::id();
    if bkl::held_by(me) {
        bkl::unlock_on(me);
    }
}
