//! Scheduling: one round-robin run queue in the state root shared by every
//! CPU, the context switch and the per-CPU idle loops. Blocking and waking
//! are in `wait`, the timer tick in `tick`.
//!
//! One global queue rather than per-CPU queues with balancing: every
//! kernel path holds the big kernel lock anyway, so a shared queue costs
//! no extra locking, balances by construction, and keeps the repair's view
//! of "who is runnable" in one place. A process made runnable while some
//! CPU idles wakes that CPU with an IPI, so it starts at once instead of
//! at that CPU's next tick. A receiver woken by a sender that blocks right
//! after (a request and its reply) skips the queue: the sender hands it
//! its CPU (`wake_for_handoff`, `hand_off`).
//!
//! The kernel is not preemptible: a process is only switched out when it
//! blocks, exits, or when the timer interrupts it in user mode. That makes
//! "the process that was running on the crashed CPU" a well-defined
//! answer after a crash.

use crate::arch::{apic, cpu, gdt, percpu};
use crate::state::{current, current_pid, k, proc_by_pid};
use core::arch::global_asm;
use lazarus_abi::hypercall::HC_RECOVERED;
use lazarus_abi::layout::VEC_RESCHED;
use lazarus_abi::root::{CRASH_CONTEXT_CORRUPT, Proc};
use lazarus_abi::root::{MAX_PROCS, PS_RUNNABLE, PS_RUNNING, W_NONE};
use lazarus_abi::trap::{SWITCH_CONTEXT_WORDS, TRAP_FRAME_WORDS, seal};

global_asm!(
    r#"
.global switch_context
// switch_context(save: *mut u64 (rdi), load: u64 (rsi),
//                prev: *mut Proc (rdx), next: *const Proc (rcx))
switch_context:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov [rdi], rsp
    // Seal what was just saved and check what is about to be loaded,
    // still on the old stack (below what it saved; aligned for the call).
    mov r12, rsi
    mov rdi, rdx
    mov rsi, rcx
    and rsp, -16
    call context_check
    mov rsp, r12
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
"#
);

unsafe extern "C" {
    fn switch_context(save: *mut u64, load: u64, prev: *mut Proc, next: *const Proc);
}

/// The saved state `trap::seal` covers: the switch context at `kctx_rsp`
/// and the user trap frame at the top of the kernel stack.
fn saved_seal(p: &Proc) -> u64 {
    // SAFETY: both ranges lie on the process's own kernel stack, mapped
    // for as long as the process exists: the context `switch_context`
    // saved (or a spawn or repair built) and the trap frame every process
    // has at its top. A corrupted `kctx_rsp` faults here, as the switch
    // itself would.
    unsafe {
        let ctx = &*(p.kctx_rsp as *const [u64; SWITCH_CONTEXT_WORDS]);
        let frame =
            &*((p.kstack_top - 8 * TRAP_FRAME_WORDS as u64) as *const [u64; TRAP_FRAME_WORDS]);
        seal(ctx, frame)
    }
}

/// Runs inside `switch_context` once `prev`'s context is saved: seals it,
/// and checks that `next` (the current process by now) finds its saved
/// state as it left it. A sleeping process's state corrupted meanwhile is
/// a crash blamed on that process, which the repair quarantines before
/// anything runs on it.
#[unsafe(no_mangle)]
extern "C" fn context_check(prev: *mut Proc, next: *const Proc) {
    if !crate::config::seals() {
        // SAFETY: as below; an unsealed context is never checked.
        if let Some(p) = unsafe { prev.as_mut() } {
            p.ctx_seal = 0;
        }
        return;
    }
    // SAFETY: `switch_to` passes entries of the process table or null.
    if let Some(p) = unsafe { prev.as_mut() } {
        p.ctx_seal = saved_seal(p);
    }
    // SAFETY: as above.
    let Some(n) = (unsafe { next.as_ref() }) else {
        return;
    };
    if n.ctx_seal != 0 && saved_seal(n) != n.ctx_seal {
        corrupted(n.pid);
    }
}

/// Out of line, so that the check's hot path needs no stack frame for
/// the report.
#[cold]
#[inline(never)]
fn corrupted(pid: u32) -> ! {
    // Whatever extension the process was inside is not to blame.
    crate::crash::report_fmt(
        CRASH_CONTEXT_CORRUPT,
        lazarus_abi::root::NONE,
        &crate::crash::here(),
        format_args!("the saved state of pid {pid} was corrupted while it was switched out"),
    )
}

pub fn runq_push(pid: u32) {
    let r = k();
    if r.runq_len as usize >= MAX_PROCS {
        return;
    }
    let tail = (r.runq_head + r.runq_len) as usize % MAX_PROCS;
    r.runq[tail] = pid;
    r.runq_len += 1;
}

fn runq_pop() -> Option<u32> {
    let r = k();
    while r.runq_len > 0 {
        let pid = r.runq[r.runq_head as usize];
        r.runq_head = (r.runq_head + 1) % MAX_PROCS as u32;
        r.runq_len -= 1;
        if proc_by_pid(pid).is_some_and(|p| p.state == PS_RUNNABLE) {
            return Some(pid);
        }
    }
    None
}

/// Drops `pid` from the run queue (used when a process dies elsewhere).
pub fn runq_remove(pid: u32) {
    let r = k();
    let (head, len) = (r.runq_head as usize, r.runq_len as usize);
    let mut kept = 0;
    for i in 0..len {
        let p = r.runq[(head + i) % MAX_PROCS];
        if p != pid {
            r.runq[(head + kept) % MAX_PROCS] = p;
            kept += 1;
        }
    }
    r.runq_len = kept as u32;
}

/// Queues `pid` at the head of the run queue.
fn runq_push_front(pid: u32) {
    let r = k();
    if r.runq_len as usize >= MAX_PROCS {
        return;
    }
    r.runq_head = (r.runq_head + MAX_PROCS as u32 - 1) % MAX_PROCS as u32;
    r.runq[r.runq_head as usize] = pid;
    r.runq_len += 1;
}

/// Wakes a process from a wait. It goes to the head of the queue (it
/// slept, so it has used little CPU: a server answering a request must
/// not wait behind every CPU-bound process), and runs at once: on an idle
/// CPU woken by a reschedule IPI, else here, where the waker gives up the
/// CPU on its way back to user mode (wake-up preemption; a waker that
/// blocks first, as a client waiting for its answer does, just switches).
pub fn make_runnable(pid: u32) {
    if let Some(p) = proc_by_pid(pid) {
        wake(p);
    }
}

/// [`make_runnable`] for a process in hand.
pub fn wake(p: &mut Proc) {
    enqueue_woken(p);
    let me = percpu::id();
    if !kick_idle_cpu(me) {
        percpu::of(me).woke = 1;
    }
}

/// A wake-up from a process that blocks right after it (a request sent
/// and its reply awaited; Linux's sync wake-up, L4's direct process
/// switch): the woken process is not queued, the waker gives it its CPU
/// with [`hand_off`] when it blocks. No IPI to another CPU, no run-queue
/// round trip, no preemption on the way out.
pub fn wake_for_handoff(p: &mut Proc) {
    p.state = PS_RUNNABLE;
    p.wait_reason = W_NONE;
}

/// Gives this CPU to `pid`, woken by [`wake_for_handoff`]; the caller has
/// blocked. (A repair meanwhile finds `pid` runnable and queues it.)
pub fn hand_off(pid: u32) {
    switch_to(Some(pid));
}

fn enqueue_woken(p: &mut Proc) {
    p.state = PS_RUNNABLE;
    p.wait_reason = W_NONE;
    runq_push_front(p.pid);
}

/// Sends the reschedule IPI to an idle CPU, if there is one.
fn kick_idle_cpu(me: usize) -> bool {
    let mut others = percpu::online_mask() & !(1 << me);
    let r = k();
    while others != 0 {
        let cpu = others.trailing_zeros() as usize;
        others &= others - 1;
        if r.cpus.get(cpu).is_some_and(|c| c.current == 0) {
            apic::send_ipi(cpu, VEC_RESCHED);
            return true;
        }
    }
    false
}

/// On the way back to user mode: if this kernel entry woke a process that
/// no idle CPU took, let it run now. The waker goes right behind it, not
/// to the back: it was not preempted for using up its time, and a client
/// that just sent a request must get the answer before every CPU-bound
/// process has had a time slice.
#[inline(always)]
pub fn preempt_for_woken() {
    let pc = percpu::this();
    if pc.woke != 0 {
        pc.woke = 0;
        step_aside();
    }
}

fn step_aside() {
    if k().runq_len > 0
        && let Some(p) = current()
    {
        p.state = PS_RUNNABLE;
        runq_push_front(p.pid);
        let r = k();
        if r.runq_len >= 2 {
            let (a, b) = (r.runq_head as usize, (r.runq_head as usize + 1) % MAX_PROCS);
            r.runq.swap(a, b);
        }
        schedule();
    }
}

/// The reschedule IPI arrived in user mode: give the CPU to the process
/// that was woken, if it has not been picked up elsewhere meanwhile.
pub fn on_resched(from_user: bool) {
    if from_user && k().runq_len > 0 && current_pid() != 0 {
        yield_now();
    }
}

pub fn yield_now() {
    if let Some(p) = current() {
        p.state = PS_RUNNABLE;
        runq_push(p.pid);
    }
    schedule();
}

/// Gives the CPU to the next runnable process (or the idle loop). Returns
/// when the caller is scheduled again; never returns for a dead process.
pub fn schedule() {
    let next = runq_pop();
    switch_to(next);
}

fn switch_to(next: Option<u32>) {
    let prev = current();
    let cur = prev.as_ref().map_or(0, |p| p.pid);
    if next == Some(cur)
        && let Some(p) = prev
    {
        p.state = PS_RUNNING;
        return;
    }
    let me = percpu::id();
    let (save, prev): (*mut u64, *mut Proc) = match prev {
        Some(p) => (&raw mut p.kctx_rsp, p),
        None => (&raw mut percpu::of(me).idle_rsp, core::ptr::null_mut()),
    };
    let r = k();
    r.cpus[me].context_switches += 1;
    match next.and_then(proc_by_pid) {
        Some(n) => {
            let next: *const Proc = n;
            n.state = PS_RUNNING;
            n.last_cpu = me as u32;
            percpu::note_running(lazarus_abi::root::KernelRoot::slot_of(n.pid), me);
            if n.kernel_entry_tick != 0 {
                n.kernel_entry_tick = crate::state::now().max(1);
            }
            let (pid, top, cr3, rsp) = (n.pid, n.kstack_top, n.cr3, n.kctx_rsp);
            r.cpus[me].current = pid;
            gdt::set_kernel_stack(me, top);
            if cpu::read_cr3() != cr3 {
                // SAFETY: every process PML4 shares the kernel half.
                unsafe { cpu::write_cr3(cr3) };
            }
            // SAFETY: `rsp` is the saved context of a process that is not
            // running (the big kernel lock keeps other CPUs from switching
            // to it meanwhile); `save` outlives the switch (state root /
            // per-CPU data).
            unsafe { switch_context(save, rsp, prev, next) };
        }
        None => {
            if cur == 0 {
                return; // already idle
            }
            r.cpus[me].current = 0;
            let master = r.master_pml4;
            let idle = percpu::of(me).idle_rsp;
            // SAFETY: the master PML4 maps the whole kernel; switching to it
            // lets the previous process's page tables be freed.
            unsafe {
                cpu::write_cr3(master);
                switch_context(save, idle, prev, core::ptr::null());
            }
        }
    }
}

/// A CPU's idle loop, entered with the big kernel lock held: runs
/// whatever is runnable, else drops the lock and halts until an interrupt.
pub fn idle_loop() -> ! {
    crate::state::this_cpu().current = 0;
    loop {
        match runq_pop() {
            Some(pid) => switch_to(Some(pid)),
            None => {
                // Nothing to run: the kernel is back in service all the
                // same (a repair's latency must not include idle time
                // waiting for, say, console input).
                note_user_return();
                if !crate::reclaim::reclaim_one() {
                    crate::bkl::unlock();
                    halt_until_work();
                    crate::bkl::lock();
                }
            }
        }
    }
}

/// Whether CPU `me` is halted in its idle loop (no process, the lock not
/// held): where an interrupt needs no lock unless it brings work.
pub fn halted_idle(me: usize) -> bool {
    percpu::of(me).idle_halt != 0
}

/// Halts, with interrupts enabled only inside the halt, until there may be
/// work: on the boot CPU after any interrupt (its tick serves the kernel's
/// timers), on the others once a process is queued or an interrupt took
/// the lock (and so may have left work behind), not at every idle tick.
fn halt_until_work() {
    let me = percpu::id();
    let pc = percpu::of(me);
    loop {
        pc.idle_halt = 1;
        cpu::sti_hlt();
        cpu::cli();
        pc.idle_halt = 0;
        // Read without the lock: a waker queues before it sends the IPI.
        // SAFETY: a plain aligned u32 in the state root.
        let queued = unsafe { (&raw const k().runq_len).read_volatile() } != 0;
        if me == 0 || queued || core::mem::take(&mut pc.idle_work) != 0 {
            return;
        }
    }
}

/// Called on the way back to a user process, or when the CPU goes idle
/// with nothing to run: the first time after a repair, tells the
/// hypervisor (resurrection latency ends here).
#[inline(always)]
pub fn note_user_return() {
    let r = &mut k().recovery;
    if r.awaiting_user != 0 {
        r.awaiting_user = 0;
        let count = r.count;
        crate::hypercall::call(HC_RECOVERED, [count, 0, 0, 0, 0]);
    }
}
