//! Processes: creation from ELF files in the initramfs, the heap break,
//! exit, reaping, killing, and faults in user mode.

use crate::elf::{ET_EXEC, Elf, PF_W, PF_X, PT_LOAD};
use crate::mm::paging::{self, NX, U, W};
use crate::mm::{self, frame, phys_to_virt};
use crate::state::{current, current_pid, k, proc_by_pid};
use crate::uaccess::KResult;
use crate::{reclaim, sched, wait};
use lazarus_abi::layout::*;
use lazarus_abi::root::*;
use lazarus_abi::syscall::errno::*;
use lazarus_abi::syscall::{ARGS_MAX, EXIT_KILLED};
use lazarus_abi::trap::TrapFrame;

unsafe extern "C" {
    fn trap_return();
}

fn alloc_pid() -> Option<u32> {
    for attempt in 0..2 {
        let r = k();
        for _ in 0..MAX_PROCS * 4 {
            let pid = r.next_pid.max(1);
            r.next_pid = pid.wrapping_add(1).max(1);
            if r.procs[KernelRoot::slot_of(pid)].state == PS_FREE {
                return Some(pid);
            }
        }
        // The table is full: free reaped processes now rather than later.
        if attempt == 0 {
            while reclaim::reclaim_one() {}
        }
    }
    None
}

/// Loads one ELF segment's pages into `pml4`.
fn load_segment(pml4: u64, elf: &Elf, s: &crate::elf::Segment) -> KResult<u64> {
    let (start, end) = (s.vaddr, s.vaddr + s.memsz);
    if start < USER_IMAGE_BASE || end > USER_HEAP_LIMIT {
        return Err(ENOEXEC);
    }
    let file = elf.bytes(s);
    let mut flags = U;
    if s.flags & PF_W != 0 {
        flags |= W;
    }
    if s.flags & PF_X == 0 {
        flags |= NX;
    }
    let mut pages = 0;
    let mut page = start & !(PAGE_SIZE - 1);
    while page < end {
        let frame = match paging::translate(pml4, page) {
            Some((pa, old)) => {
                // Shared with the previous segment: the union of both
                // segments' permissions (executable if either is).
                let mut merged = (old | flags) & (U | W);
                if old & NX != 0 && flags & NX != 0 {
                    merged |= NX;
                }
                paging::map(pml4, page, pa, merged).map_err(|_| ENOMEM)?;
                pa
            }
            None => {
                let f = frame::alloc_zeroed().ok_or(ENOMEM)?;
                paging::map(pml4, page, f, flags).map_err(|_| ENOMEM)?;
                pages += 1;
                f
            }
        };
        // Copy the part of the file image that falls in this page.
        let lo = page.max(start);
        let hi = (page + PAGE_SIZE).min(start + s.filesz);
        if lo < hi {
            let src = &file[(lo - start) as usize..(hi - start) as usize];
            // SAFETY: `frame` is a user frame we own, reached via the physmap.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    src.as_ptr(),
                    phys_to_virt(frame + (lo - page)) as *mut u8,
                    src.len(),
                );
            }
        }
        page += PAGE_SIZE;
    }
    Ok(pages)
}

pub struct SpawnArgs<'a> {
    pub path: &'a [u8],
    pub args: &'a [u8],
    /// Objects for the child's fds 0 and 1 (taken from the parent).
    pub fds: [Fd; 2],
}

/// Creates a process from `/path` in the initramfs. Returns its pid.
pub fn spawn(a: &SpawnArgs) -> KResult<u32> {
    let name_in_archive = a.path.strip_prefix(b"/").unwrap_or(a.path);
    let data = crate::initramfs::find(name_in_archive).ok_or(ENOENT)?;
    let elf = Elf::parse(data).ok_or(ENOEXEC)?;
    if elf.kind != ET_EXEC {
        return Err(ENOEXEC);
    }
    if a.args.len() > ARGS_MAX {
        return Err(E2BIG);
    }
    let pid = alloc_pid().ok_or(EAGAIN)?;
    let slot = KernelRoot::slot_of(pid);
    let kstack_top = reclaim::ensure_kstack(slot)?;
    let master = k().master_pml4;
    let pml4 = paging::new_address_space(master).map_err(|_| ENOMEM)?;

    let result = (|| -> KResult<(u64, u64)> {
        let mut image_end = 0;
        let mut pages = 0;
        for s in elf.segments() {
            let s = s.ok_or(ENOEXEC)?;
            if s.kind != PT_LOAD || s.memsz == 0 {
                continue;
            }
            pages += load_segment(pml4, &elf, &s)?;
            image_end = image_end.max(s.vaddr + s.memsz);
        }
        if elf.entry < USER_IMAGE_BASE || elf.entry >= image_end {
            return Err(ENOEXEC);
        }
        // The top stack page holds the arguments.
        let top_page = USER_STACK_TOP - PAGE_SIZE;
        let f = frame::alloc_zeroed().ok_or(ENOMEM)?;
        paging::map(pml4, top_page, f, U | W | NX).map_err(|_| ENOMEM)?;
        let args_off = (PAGE_SIZE - a.args.len() as u64) & !15;
        // SAFETY: `f` is a fresh frame of ours; args fit (<= ARGS_MAX).
        unsafe {
            core::ptr::copy_nonoverlapping(
                a.args.as_ptr(),
                phys_to_virt(f + args_off) as *mut u8,
                a.args.len(),
            );
        }
        Ok((image_end, pages + 1))
    })();
    let (image_end, pages) = match result {
        Ok(v) => v,
        Err(e) => {
            paging::free_user_half(pml4);
            frame::free(pml4);
            return Err(e);
        }
    };
    let args_va = USER_STACK_TOP - PAGE_SIZE + ((PAGE_SIZE - a.args.len() as u64) & !15);

    // Initial kernel stack: a user trap frame, and below it a context that
    // switch_context "returns" into trap_return.
    let tf_addr = kstack_top - core::mem::size_of::<TrapFrame>() as u64;
    let tf = TrapFrame {
        rip: elf.entry,
        cs: SEL_USER_CS as u64,
        rflags: 0x202,
        rsp: (args_va - 64) & !15,
        ss: SEL_USER_DS as u64,
        rdi: args_va,
        rsi: a.args.len() as u64,
        ..TrapFrame::default()
    };
    let ctx = tf_addr - 7 * 8;
    // SAFETY: the kernel stack of this slot is mapped and unused (the slot
    // is free), and both writes stay below its top.
    unsafe {
        (tf_addr as *mut TrapFrame).write(tf);
        let c = ctx as *mut u64;
        for i in 0..6 {
            c.add(i).write(0);
        }
        c.add(6).write(trap_return as *const () as u64);
    }

    let parent = current_pid();
    let p = &mut k().procs[slot];
    *p = Proc::default();
    p.pid = pid;
    p.parent = parent;
    p.cr3 = pml4;
    p.kstack_top = kstack_top;
    p.kctx_rsp = ctx;
    p.brk_base = (image_end + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    p.brk = p.brk_base;
    p.mem_pages = pages;
    p.syscall_nr = u64::MAX;
    p.cur_ext = NONE;
    p.spinning_on = NONE;
    let base = a.path.rsplit(|&c| c == b'/').next().unwrap_or(a.path);
    let n = base.len().min(16);
    p.name[..n].copy_from_slice(&base[..n]);
    p.fds[0] = a.fds[0];
    p.fds[1] = a.fds[1];
    p.fds[2] = Fd {
        kind: FD_CONSOLE,
        obj: 0,
    };
    for fd in &a.fds {
        crate::fd::retain(fd);
    }
    p.state = PS_RUNNABLE;
    sched::runq_push(pid);
    Ok(pid)
}

/// Grows (or shrinks) the heap; returns the previous break.
pub fn sbrk(incr: i64) -> KResult<u64> {
    let p = current().ok_or(ESRCH)?;
    let old = p.brk;
    let new = old.checked_add_signed(incr).ok_or(ENOMEM)?;
    if new < p.brk_base || new > USER_HEAP_LIMIT {
        return Err(ENOMEM);
    }
    if new < old {
        let cr3 = p.cr3;
        let mut page = (new + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
        while page < old {
            if let Some(f) = paging::unmap(cr3, page) {
                frame::free(f);
                p.mem_pages -= 1;
            }
            page += PAGE_SIZE;
        }
    }
    p.brk = new;
    Ok(old)
}

/// Releases everything a dead process holds except its table entry and
/// PML4 (kept until reaped): memory, fds, locks; orphans go to init.
fn release(pid: u32) {
    let Some(p) = proc_by_pid(pid) else { return };
    let cr3 = p.cr3;
    let fds = p.fds;
    p.fds = [Fd::default(); MAX_FDS];
    for fd in &fds {
        crate::fd::release(fd);
    }
    crate::lock::release_all(pid);
    crate::ipc::drop_for(pid);
    paging::free_user_half(cr3);
    if let Some(p) = proc_by_pid(pid) {
        p.mem_pages = 0;
    }
    for i in 0..MAX_PROCS {
        let c = &mut k().procs[i];
        if c.state != PS_FREE && c.parent == pid {
            c.parent = 1;
            if c.state == PS_ZOMBIE {
                wait::wake_pid(1, W_CHILD);
            }
        }
    }
}

/// Ends `pid` with `status`. If it is the current process, never returns.
pub fn exit(pid: u32, status: i32) {
    let Some(p) = proc_by_pid(pid) else { return };
    if matches!(p.state, PS_ZOMBIE | PS_QUARANTINED | PS_RECLAIM) {
        return;
    }
    // Nothing can take init's place, and a kernel without it serves no
    // one: a crash (as Linux's "Attempted to kill init!"), which the
    // hypervisor then sees, instead of a guest idling forever.
    if pid == 1 {
        crate::crash::panic_with(b"init exited");
    }
    let parent = p.parent;
    sched::runq_remove(pid);
    release(pid);
    if let Some(p) = proc_by_pid(pid) {
        p.state = PS_ZOMBIE;
        p.exit_status = status;
        p.wait_reason = W_NONE;
    }
    wait::wake_pid(parent, W_CHILD);
    if pid == current_pid() {
        sched::schedule();
        // A zombie is never scheduled again.
        crate::crash::panic_with(b"zombie process was scheduled");
    }
}

/// Waits for a child (`pid` or any if -1) to end; returns (pid, status),
/// or `None` at once with `nohang` if none has ended yet.
pub fn wait(pid: i64, nohang: bool) -> KResult<Option<(u32, i32)>> {
    let me = current_pid();
    loop {
        let mut have_child = false;
        for i in 0..MAX_PROCS {
            let c = &k().procs[i];
            if c.state == PS_FREE || c.parent != me || (pid > 0 && c.pid as i64 != pid) {
                continue;
            }
            have_child = true;
            if c.state == PS_QUARANTINED {
                // Its memory was kept for inspection until now; it is
                // freed when the CPU is idle (see `reclaim::reclaim_one`).
                let (cpid, status) = (c.pid, c.exit_status);
                reclaim::later(i);
                return Ok(Some((cpid, status)));
            }
            if c.state == PS_ZOMBIE {
                let (cpid, status) = (c.pid, c.exit_status);
                let cr3 = c.cr3;
                frame::free(cr3);
                reclaim::free_kstack(i);
                k().procs[i] = Proc::default();
                return Ok(Some((cpid, status)));
            }
        }
        if !have_child {
            return Err(ECHILD);
        }
        if nohang {
            return Ok(None);
        }
        wait::block(W_CHILD, 0);
    }
}

pub fn kill(pid: u32) -> KResult<()> {
    kill_with(pid, EXIT_KILLED)
}

/// Ends `pid` with `status`. A process running on another CPU (in user
/// mode, or waiting for the big lock to enter the kernel) cannot have its
/// memory freed under it: that CPU is asked to end it (`kill_requested`)
/// and interrupted, and ends it as it next enters the kernel, as Linux
/// delivers a fatal signal on the way back to user mode.
pub fn kill_with(pid: u32, status: i32) -> KResult<()> {
    let p = proc_by_pid(pid).ok_or(ESRCH)?;
    if matches!(p.state, PS_ZOMBIE | PS_QUARANTINED | PS_RECLAIM) {
        return Err(ESRCH);
    }
    if pid == 1 {
        return Err(EPERM);
    }
    let cpu = p.last_cpu as usize;
    let me = crate::arch::percpu::id();
    if p.state == PS_RUNNING && pid != current_pid() && cpu != me && cpu < k().cpus.len() {
        let pc = crate::arch::percpu::of(cpu);
        pc.kill_pid = pid;
        pc.kill_status = status;
        crate::arch::apic::send_ipi(cpu, lazarus_abi::layout::VEC_RESCHED);
        return Ok(());
    }
    exit(pid, status);
    Ok(())
}

/// Ends the processes of a job (a Ctrl-C's; 0s are free slots), the
/// current process last: it does not come back from that.
pub fn end_job(pids: &[u32], status: i32) {
    let me = current_pid();
    for &pid in pids.iter().filter(|&&p| p != 0 && p != me) {
        let _ = kill_with(pid, status);
    }
    if pids.contains(&me) && me != 0 {
        let _ = kill_with(me, status);
    }
}

/// Ends this CPU's current process if another CPU asked (`kill_with`);
/// called with the big lock held on every entry from user mode.
pub fn kill_requested(me: usize) {
    let pc = crate::arch::percpu::of(me);
    if pc.kill_pid == 0 {
        return;
    }
    let (pid, status) = (core::mem::take(&mut pc.kill_pid), pc.kill_status);
    if pid == current_pid() {
        exit(pid, status);
    }
}

/// A fault in ring 3: demand-page or kill the process.
pub fn user_fault(frame: &TrapFrame) {
    if frame.vector == lazarus_abi::trap::VEC_PAGE_FAULT && frame.error_code & 1 == 0 {
        let addr = crate::arch::cpu::read_cr2();
        if mm::user::demand_map(addr) {
            return;
        }
    }
    let pid = current_pid();
    if let Some(p) = current() {
        crate::klog::kprintln!(
            "[kernel] pid {} ({}): {} at {:#x}, killed",
            pid,
            lazarus_abi::name_str(&p.name),
            lazarus_abi::trap::exception_name(frame.vector),
            frame.rip
        );
    }
    exit(pid, EXIT_KILLED);
}
