//! The repairs: restore code, quarantine the offender, release its locks
//! and wake their waiters, reset or disable the faulty extension, restart
//! interrupted processes, rebuild the IDT.

use crate::diagnose::Diagnosis;
use crate::mem::Mem;
use crate::pristine_bytes;
use lazarus_abi::layout::{SEL_KERNEL_CS, SEL_USER_CS, USER_STACK_TOP};
use lazarus_abi::repair::*;
use lazarus_abi::root::*;
use lazarus_abi::syscall::{EXIT_QUARANTINED, errno};
use lazarus_abi::trap::TrapFrame;

/// Compares kernel code and every live extension's code with the pristine
/// copies and restores what differs.
pub fn restore_code(m: &Mem, r: &KernelRoot, inp: &RepairInput) -> Result<u64, &'static str> {
    let mut fixed = 0;
    for p in inp.pristine.iter().filter(|p| p.len != 0) {
        let bytes = pristine_bytes(p).ok_or("a pristine copy is outside the image")?;
        let code = bytes
            .get(..p.code_len as usize)
            .ok_or("a pristine copy is short")?;
        if fnv1a(code) != p.checksum {
            return Err("a pristine copy in the repair image fails its checksum");
        }
        if !p.kernel() {
            let e = r
                .exts
                .get(p.ext_slot as usize)
                .ok_or("bad extension slot in the image")?;
            if e.state == EXT_FREE || e.base != p.va {
                continue; // unloaded since the image was built
            }
        }
        fixed += m
            .restore(p.va, code)
            .ok_or("kernel code is not mapped where expected")?;
    }
    Ok(fixed)
}

pub struct Fixer<'a> {
    pub m: Mem,
    pub r: &'a mut KernelRoot,
    pub plan: &'a mut ResumePlan,
    /// The crashed CPU, where the kernel resumes.
    pub vcpu: u32,
    /// Process slots whose system call this repair already ended (a bit
    /// each), so that no call is ended twice.
    pub ended: u64,
    /// Open files of a disabled extension, broken by this repair.
    pub files_broken: u32,
}

/// [`Fixer::restart_from_user`]: the system call returns what the kernel
/// already put in its frame.
pub const CALL_RESUME: u32 = u32::MAX;

pub fn alive(p: &Proc) -> bool {
    matches!(p.state, PS_RUNNABLE | PS_RUNNING | PS_BLOCKED)
}

impl Fixer<'_> {
    pub fn proc_mut(&mut self, pid: u32) -> Option<&mut Proc> {
        let p = self.r.procs.get_mut(KernelRoot::slot_of(pid))?;
        (pid != 0 && p.pid == pid && p.state != PS_FREE).then_some(p)
    }

    /// Makes a blocked process runnable (the run queue is rebuilt later).
    pub fn wake(&mut self, pid: u32) {
        if let Some(p) = self.proc_mut(pid)
            && p.state == PS_BLOCKED
        {
            p.state = PS_RUNNABLE;
            p.wait_reason = W_NONE;
            self.plan.waiters_woken += 1;
        }
    }

    pub fn wake_all(&mut self, reason: u32, obj: u32) {
        for i in 0..MAX_PROCS {
            let p = &self.r.procs[i];
            if p.state == PS_BLOCKED && p.wait_reason == reason && p.wait_obj == obj {
                let pid = p.pid;
                self.wake(pid);
            }
        }
    }

    pub fn free_lock(&mut self, id: usize) {
        let l = &mut self.r.locks[id];
        l.state = LOCK_FREE;
        l.owner = 0;
        l.owner_cpu = NONE;
        self.plan.locks_released += 1;
        self.wake_all(W_LOCK, id as u32);
    }

    /// Drops a reference held by a dead or quarantined process.
    fn release_fd(&mut self, fd: Fd) {
        match fd.kind {
            FD_PIPE_READ | FD_PIPE_WRITE => {
                let Some(pipe) = self.r.pipes.get_mut(fd.obj as usize) else {
                    return;
                };
                if fd.kind == FD_PIPE_READ {
                    pipe.readers = pipe.readers.saturating_sub(1);
                } else {
                    pipe.writers = pipe.writers.saturating_sub(1);
                }
                if pipe.readers == 0 && pipe.writers == 0 {
                    pipe.in_use = 0;
                }
                self.wake_all(W_PIPE_READ, fd.obj);
                self.wake_all(W_PIPE_WRITE, fd.obj);
            }
            FD_DEVICE => {
                // A file left without descriptors is closed by the kernel
                // (`invariants::files`).
                if let Some(f) = self.r.files.get_mut(fd.obj as usize) {
                    f.refs = f.refs.saturating_sub(1);
                }
            }
            _ => {}
        }
    }

    /// The offender never runs again. Its memory stays until its parent
    /// reaps it (and sees EXIT_QUARANTINED); everything it held that
    /// others could wait on is released.
    pub fn quarantine(&mut self, pid: u32) -> Result<(), &'static str> {
        let p = self
            .proc_mut(pid)
            .ok_or("the offending process is not in the process table")?;
        let parent = p.parent;
        let fds = p.fds;
        p.state = PS_QUARANTINED;
        p.exit_status = EXIT_QUARANTINED;
        p.wait_reason = W_NONE;
        p.spinning_on = NONE;
        p.cur_ext = NONE;
        p.kernel_entry_tick = 0;
        p.user_frame = 0;
        p.syscall_nr = u64::MAX;
        p.fds = [Fd::default(); MAX_FDS];
        if let Some(name) = self.proc_mut(pid).map(|p| p.name) {
            self.plan.name = name;
        }
        for fd in fds {
            self.release_fd(fd);
        }
        for id in 0..MAX_LOCKS {
            let l = &self.r.locks[id];
            if l.state == LOCK_HELD && l.owner == pid {
                self.free_lock(id);
            }
        }
        for msg in self.r.msgs.iter_mut() {
            if msg.in_use != 0 && msg.dst == pid {
                msg.in_use = 0;
            }
        }
        if let Some(p) = self.proc_mut(pid) {
            p.ipc_pending = 0;
        }
        let mut orphan_done = false;
        for c in self.r.procs.iter_mut() {
            if c.state != PS_FREE && c.parent == pid && c.pid != pid {
                c.parent = 1;
                orphan_done |= matches!(c.state, PS_ZOMBIE | PS_QUARANTINED);
            }
        }
        if orphan_done {
            self.wake_child_waiter(1);
        }
        self.wake_child_waiter(parent);
        Ok(())
    }

    fn wake_child_waiter(&mut self, pid: u32) {
        if self
            .proc_mut(pid)
            .is_some_and(|p| p.state == PS_BLOCKED && p.wait_reason == W_CHILD)
        {
            self.wake(pid);
        }
    }

    /// Restarts `pid` from its user-mode trap frame (at the top of its
    /// kernel stack), abandoning whatever it was doing in the kernel. A
    /// system call in progress ends as `call` says (a `CALL_*` or
    /// [`CALL_RESUME`]): with `EINTR`, issued again, with 0 or with `EIO`.
    /// Returns false (and quarantines it) if that frame is not a sane user
    /// frame.
    pub fn restart_from_user(&mut self, pid: u32, call: u32) -> bool {
        let trap_return = self.r.trap_return;
        let slot = KernelRoot::slot_of(pid);
        if self.ended & (1 << slot) != 0 {
            return true;
        }
        let Some(p) = self.proc_mut(pid) else {
            return false;
        };
        let (top, in_syscall, nr) = (p.kstack_top, p.user_frame != 0, p.syscall_nr);
        let tf_va = top - core::mem::size_of::<TrapFrame>() as u64;
        let m = self.m;
        let ok = (|| {
            let mut tf: TrapFrame = m.kread(tf_va)?;
            if tf.cs != SEL_USER_CS as u64 || tf.rip >= USER_STACK_TOP || tf.rsp > USER_STACK_TOP {
                return None;
            }
            if in_syscall {
                match call {
                    CALL_RESTART if tf.rip >= 2 && nr != u64::MAX => {
                        // Back onto its `ud2`, with the number in RAX and
                        // the arguments untouched in the frame.
                        tf.rip -= 2;
                        tf.rax = nr;
                    }
                    CALL_COMPLETE => tf.rax = 0,
                    CALL_FAIL => tf.rax = (-errno::EIO) as u64,
                    CALL_RESUME => {}
                    _ => tf.rax = (-errno::EINTR) as u64,
                }
                m.kwrite(tf_va, tf)?;
            }
            let ctx = tf_va - 7 * 8;
            for i in 0..6 {
                m.kwrite(ctx + i * 8, 0u64)?;
            }
            m.kwrite(ctx + 48, trap_return)?;
            Some(ctx)
        })();
        self.ended |= 1 << slot;
        let Some(ctx) = ok else {
            let _ = self.quarantine(pid);
            return false;
        };
        if in_syscall {
            match call {
                CALL_RESTART => self.plan.calls_replayed += 1,
                CALL_FAIL => self.plan.calls_failed += 1,
                _ => {}
            }
        }
        if let Some(p) = self.proc_mut(pid) {
            p.kctx_rsp = ctx;
            // Built from scratch: nothing saved to check.
            p.ctx_seal = 0;
            p.state = PS_RUNNABLE;
            p.wait_reason = W_NONE;
            p.cur_ext = NONE;
            p.ext_call = CALL_INTERRUPT;
            p.spinning_on = NONE;
            p.syscall_nr = u64::MAX;
            p.kernel_entry_tick = 0;
            p.user_frame = 0;
        }
        true
    }

    /// The faulty extension: reset to its pristine (pre-init) image, to be
    /// initialised again by the kernel, or disabled after repeated crashes.
    /// Its timers, interrupt handlers and locks go, and the devices it
    /// drives are reset. Calls in progress inside it end as the kernel
    /// marked them (`Proc::ext_call`): most are issued again once it is
    /// back, and the kernel hands it its open files again.
    pub fn handle_extension(
        &mut self,
        slot: usize,
        offender: u32,
        inp: &RepairInput,
    ) -> Result<(), &'static str> {
        let now = self.r.header.heartbeat;
        let e = self.r.exts.get_mut(slot).ok_or("bad extension slot")?;
        if e.state == EXT_FREE {
            return Ok(());
        }
        if now.saturating_sub(e.last_crash_tick) > EXT_CRASH_WINDOW_TICKS {
            e.crash_count = 0;
        }
        e.crash_count += 1;
        e.last_crash_tick = now;
        let (base, disable) = (e.base, e.crash_count >= inp.ext_crash_limit.max(1));
        for t in self.r.timers.iter_mut() {
            if t.in_use != 0 && t.ext == slot as u32 {
                *t = Timer::default();
            }
        }
        // Its device interrupts go too (the kernel masks their pins when
        // it resumes); its init resets the device and registers again.
        for h in self.r.irqs.iter_mut() {
            if h.in_use != 0 && h.ext == slot as u32 {
                *h = IrqHandler::default();
            }
        }
        for id in 0..MAX_LOCKS {
            let l = &self.r.locks[id];
            if l.state != LOCK_UNUSED && l.ext == slot as u32 {
                self.r.locks[id] = KLock::default();
                self.plan.locks_released += 1;
                self.wake_all(W_LOCK, id as u32);
            }
        }
        for i in 0..MAX_PROCS {
            let p = &self.r.procs[i];
            if alive(p) && p.cur_ext == slot as u32 && p.pid != offender {
                let (pid, call) = (p.pid, p.ext_call);
                // A disabled extension will not be back to take it again.
                let call = if disable && call == CALL_RESTART {
                    CALL_FAIL
                } else {
                    call
                };
                self.restart_from_user(pid, call);
            }
        }
        // Its devices stop and forget the rings in its freed memory; its
        // init sets them up again.
        let devices = self.r.exts[slot].devices;
        for base in devices.into_iter().filter(|&b| b != 0) {
            let plan = &mut *self.plan;
            if !plan.reset_devices.contains(&base)
                && let Some(free) = plan.reset_devices.iter_mut().find(|b| **b == 0)
            {
                *free = base;
            }
        }
        // Everything it allocated goes back: its data is being replaced
        // (reset) or will never be used again (disabled).
        let tag = slot as u8 + 1;
        for b in 0..HEAP_BLOCKS {
            if self.r.heap.owner[b] == tag {
                self.r.heap.owner[b] = 0;
                self.r.heap.start[b] = 0;
                self.r.heap.used[b / 64] &= !(1 << (b % 64));
            }
        }
        if disable {
            self.r.exts[slot].state = EXT_DISABLED;
            self.plan.ext_actions[slot] = EXT_ACTION_DISABLED;
            // Nothing will take its open files back.
            for f in self.r.files.iter_mut() {
                if f.state == FILE_OPEN && f.ext == slot as u32 {
                    f.state = FILE_BROKEN;
                    self.files_broken += 1;
                }
            }
            self.wake_all(W_EXT, slot as u32);
            return Ok(());
        }
        let image = inp
            .pristine
            .iter()
            .find(|p| p.ext_slot == slot as u32 && p.va == base && p.len != 0)
            .ok_or("no pristine copy of the faulty extension")?;
        let bytes = pristine_bytes(image).ok_or("a pristine copy is outside the image")?;
        self.m
            .restore(base, bytes)
            .ok_or("the extension's image is not mapped")?;
        self.r.exts[slot].state = EXT_LOADING;
        self.r.recovery.pending_reinit |= 1 << slot;
        self.plan.ext_actions[slot] = EXT_ACTION_RESET;
        Ok(())
    }

    /// Rewrites every IDT gate from the kernel's stub table.
    pub fn rebuild_idt(&mut self) -> Result<(), &'static str> {
        for v in 0..256u64 {
            let h: u64 = self
                .m
                .kread(self.r.isr_table + v * 8)
                .ok_or("the kernel's stub table is unreadable")?;
            let ist = match v {
                8 => 1,
                2 => 2,
                18 => 3,
                _ => 0,
            };
            let low = (h & 0xffff)
                | ((SEL_KERNEL_CS as u64) << 16)
                | (ist << 32)
                | (0x8e << 40)
                | (((h >> 16) & 0xffff) << 48);
            let gate = [low, h >> 32];
            let at = self.r.idt + v * 16;
            let cur: [u64; 2] = self.m.kread(at).ok_or("the IDT is unreadable")?;
            if cur != gate {
                self.m.kwrite(at, gate).ok_or("the IDT is unwritable")?;
                self.plan.invariant_fixes += 1;
            }
        }
        Ok(())
    }

    /// Logs the recovery in the kernel and fills in how to resume.
    pub fn finish(&mut self, inp: &RepairInput, d: &Diagnosis) -> Result<(), &'static str> {
        let cpu = self.r.cpus.get_mut(inp.vcpu as usize).ok_or("bad vCPU")?;
        cpu.current = 0;
        cpu.in_irq = 0;
        cpu.irq_ext = NONE;
        // The crashed CPU restarts on its own idle stack (older kernels
        // had one CPU and only the root's).
        let stack = match cpu.recovery_stack {
            0 => self.r.recovery_stack,
            s => s,
        };
        let (text_lo, text_hi) = (self.r.kernel_text_start, self.r.kernel_text_end);
        if !(text_lo..text_hi).contains(&self.r.recovery_entry) {
            return Err("the kernel's recovery entry is not in its code");
        }
        self.m
            .kva(stack - 8)
            .ok_or("the recovery stack is not mapped")?;
        let ext_name = self
            .r
            .exts
            .get(d.ext as usize)
            .map(|e| e.name)
            .unwrap_or_default();
        let log = &mut self.r.recovery;
        let seq = log.count;
        log.records[(seq % MAX_RECOVERIES as u64) as usize] = RecoveryRecord {
            seq,
            tick: self.r.header.heartbeat,
            latency_ns: 0,
            pid: d.offender,
            ext: d.ext,
            kind: d.kind,
            code_bytes_restored: self.plan.code_bytes_restored,
            name: self.plan.name,
            ext_name,
            calls_replayed: self.plan.calls_replayed,
            calls_failed: self.plan.calls_failed,
            files_reopened: 0,
            files_broken: self.files_broken,
        };
        log.count += 1;
        log.awaiting_user = 1;
        self.plan.entry = self.r.recovery_entry;
        self.plan.stack_top = stack;
        self.plan.cr3 = self.r.master_pml4;
        Ok(())
    }
}
