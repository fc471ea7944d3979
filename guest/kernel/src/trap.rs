//! Where every exception and interrupt lands.

use crate::{console, crash, proc, sched, syscall, tick};
use lazarus_abi::layout::{VEC_COM1, VEC_SPURIOUS, VEC_TIMER};
use lazarus_abi::syscall::SYSCALL_INSN;
use lazarus_abi::trap::{TrapFrame, VEC_INVALID_OPCODE};

fn is_syscall(tf: &TrapFrame) -> bool {
    tf.vector == VEC_INVALID_OPCODE
        && crate::uaccess::slice(tf.rip, 2).is_ok_and(|b| b == SYSCALL_INSN)
}

#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(tf: &mut TrapFrame) {
    let v = tf.vector;
    if v == VEC_TIMER as u64 {
        tick::tick(tf);
    } else if v == VEC_COM1 as u64 {
        console::on_interrupt();
        crate::arch::apic::eoi();
    } else if v == VEC_SPURIOUS as u64 {
        // Spurious: no EOI.
    } else if v < 32 {
        if tf.from_user() {
            if is_syscall(tf) {
                tf.rip += 2;
                syscall::dispatch(tf);
            } else {
                proc::user_fault(tf);
            }
        } else {
            crash::oops(tf);
        }
    } else {
        crate::arch::apic::eoi();
    }
    if tf.from_user() {
        sched::note_user_return();
    }
}
