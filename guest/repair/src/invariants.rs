//! The kernel's invariants, checked after the repairs: process table, run
//! queue, locks, pipes, messages, timers, the frame allocator, the
//! extension list. What can be repaired is (each fix is counted in the
//! plan); what cannot makes the repair fail, and the hypervisor reboots
//! rather than resume a kernel whose invariants do not hold.

use crate::fix::{Fixer, alive};
use lazarus_abi::layout::{KSTACK_REGION, KSTACK_STRIDE, PHYSMAP_BASE};
use lazarus_abi::root::*;

pub fn check_and_repair(fx: &mut Fixer) -> Result<(), &'static str> {
    processes(fx)?;
    locks(fx);
    pipes(fx);
    files(fx);
    messages_and_timers(fx);
    lost_wakeups(fx);
    run_queue(fx);
    frames(fx)?;
    heap(fx);
    ext_list(fx);
    let ci = &mut fx.r.console_in;
    if ci.len > CONSOLE_BUF as u64 || ci.head >= CONSOLE_BUF as u64 {
        ci.len = 0;
        ci.head = 0;
        fx.plan.invariant_fixes += 1;
    }
    Ok(())
}

fn processes(fx: &mut Fixer) -> Result<(), &'static str> {
    let size = fx.m.size;
    for i in 0..MAX_PROCS {
        let p = &fx.r.procs[i];
        if p.state == PS_FREE {
            continue;
        }
        if KernelRoot::slot_of(p.pid) != i || p.pid == 0 || p.state > PS_RECLAIM {
            return Err("the process table is corrupt");
        }
        if p.kstack_top != KSTACK_REGION + i as u64 * KSTACK_STRIDE + KSTACK_STRIDE {
            return Err("a process's kernel stack pointer is corrupt");
        }
        if !p.cr3.is_multiple_of(4096) || p.cr3 >= size {
            return Err("a process's page table pointer is corrupt");
        }
    }
    let init = &fx.r.procs[1];
    if init.pid != 1 || !alive(init) {
        return Err("init is gone");
    }
    for i in 0..MAX_PROCS {
        let parent = fx.r.procs[i].parent;
        if fx.r.procs[i].state == PS_FREE || parent == 0 {
            continue;
        }
        let ok = fx.r.procs[KernelRoot::slot_of(parent)].pid == parent
            && fx.r.procs[KernelRoot::slot_of(parent)].state != PS_FREE;
        if !ok && fx.r.procs[i].pid != 1 {
            fx.r.procs[i].parent = 1;
            fx.plan.invariant_fixes += 1;
        }
        // The crashed CPU is between contexts: only what another CPU is
        // running (in user mode: it does not hold the kernel) runs.
        let pid = fx.r.procs[i].pid;
        if fx.r.procs[i].state == PS_RUNNING && !running_elsewhere(fx, pid) {
            fx.r.procs[i].state = PS_RUNNABLE;
        }
    }
    Ok(())
}

/// Whether `pid` is the current process of an online CPU other than the
/// crashed one.
fn running_elsewhere(fx: &Fixer, pid: u32) -> bool {
    fx.r.cpus
        .iter()
        .enumerate()
        .any(|(c, cpu)| c as u32 != fx.vcpu && cpu.online != 0 && cpu.current == pid)
}

fn owner_alive(fx: &Fixer, pid: u32) -> bool {
    let p = &fx.r.procs[KernelRoot::slot_of(pid)];
    pid != 0 && p.pid == pid && alive(p)
}

fn locks(fx: &mut Fixer) {
    for id in 0..MAX_LOCKS {
        let l = fx.r.locks[id];
        if l.state == LOCK_HELD && !owner_alive(fx, l.owner) {
            fx.free_lock(id);
            fx.plan.invariant_fixes += 1;
        } else if l.state > LOCK_HELD {
            fx.r.locks[id] = KLock::default();
            fx.plan.invariant_fixes += 1;
        }
    }
}

fn pipes(fx: &mut Fixer) {
    let mut readers = [0u32; MAX_PIPES];
    let mut writers = [0u32; MAX_PIPES];
    for p in fx.r.procs.iter().filter(|p| alive(p)) {
        for fd in &p.fds {
            match fd.kind {
                FD_PIPE_READ if (fd.obj as usize) < MAX_PIPES => readers[fd.obj as usize] += 1,
                FD_PIPE_WRITE if (fd.obj as usize) < MAX_PIPES => writers[fd.obj as usize] += 1,
                _ => {}
            }
        }
    }
    for i in 0..MAX_PIPES {
        let pipe = &mut fx.r.pipes[i];
        if pipe.in_use == 0 && readers[i] + writers[i] == 0 {
            continue;
        }
        let mut fixed = false;
        if pipe.readers != readers[i] || pipe.writers != writers[i] {
            pipe.readers = readers[i];
            pipe.writers = writers[i];
            fixed = true;
        }
        if pipe.len > PIPE_BUF as u64 || pipe.head >= PIPE_BUF as u64 {
            pipe.len = 0;
            pipe.head = 0;
            fixed = true;
        }
        let in_use = (readers[i] + writers[i] > 0) as u32;
        if pipe.in_use != in_use {
            pipe.in_use = in_use;
            fixed = true;
        }
        if fixed {
            fx.plan.invariant_fixes += 1;
        }
    }
}

fn messages_and_timers(fx: &mut Fixer) {
    for i in 0..MAX_MSGS {
        let m = fx.r.msgs[i];
        if m.in_use != 0 && (!owner_alive(fx, m.dst) || m.len as usize > m.data.len()) {
            fx.r.msgs[i].in_use = 0;
            fx.plan.invariant_fixes += 1;
        }
    }
    // Each process's count of queued messages follows the table: a count
    // too low would leave a receiver blocked with mail waiting.
    let mut queued = [0u32; MAX_PROCS];
    for m in fx.r.msgs.iter().filter(|m| m.in_use != 0) {
        queued[KernelRoot::slot_of(m.dst)] += 1;
    }
    for (p, &n) in fx.r.procs.iter_mut().zip(&queued) {
        if p.state != PS_FREE && p.ipc_pending != n {
            p.ipc_pending = n;
            fx.plan.invariant_fixes += 1;
        }
    }
    // Timers and device interrupt handlers call back into a live
    // extension's code, or go.
    for i in 0..MAX_TIMERS {
        let t = fx.r.timers[i];
        if t.in_use != 0 && !live_callback(fx, t.ext, t.callback) {
            fx.r.timers[i] = Timer::default();
            fx.plan.invariant_fixes += 1;
        }
    }
    for i in 0..MAX_IRQS {
        let h = fx.r.irqs[i];
        if h.in_use != 0 && !live_callback(fx, h.ext, h.callback) {
            fx.r.irqs[i] = IrqHandler::default();
            fx.plan.invariant_fixes += 1;
        }
    }
}

/// Open device files: each counts the descriptors of live processes that
/// refer to it, and each extension its files. A file nobody refers to any
/// more (its holder was quarantined) is left for the kernel to close in a
/// live extension, or freed; a descriptor of a freed or corrupt file gets
/// a broken one, on which every call fails with `EIO`.
fn files(fx: &mut Fixer) {
    let mut refs = [0u32; MAX_FILES];
    for p in fx.r.procs.iter().filter(|p| alive(p)) {
        for fd in p.fds.iter().filter(|fd| fd.kind == FD_DEVICE) {
            if let Some(n) = refs.get_mut(fd.obj as usize) {
                *n += 1;
            }
        }
    }
    let mut open = [0u32; MAX_EXTS];
    for (i, &n) in refs.iter().enumerate() {
        let f = fx.r.files[i];
        let ext = fx.r.exts.get(f.ext as usize).map(|e| e.state);
        let broken = OpenFile {
            state: FILE_BROKEN,
            refs: n,
            ext: if ext.is_some() { f.ext } else { NONE },
            ..OpenFile::default()
        };
        // (new entry, whether the old one was broken rather than merely
        // left behind by a quarantine)
        let fixed = match (f.state, n) {
            (FILE_FREE, 0) => None,
            (FILE_OPEN | FILE_BROKEN | FILE_CLOSING, _) if ext.is_none() => Some((broken, true)),
            (FILE_FREE, _) => Some((broken, true)),
            (FILE_OPEN | FILE_CLOSING, 0) if ext == Some(EXT_LIVE) => {
                fx.r.recovery.pending_close = 1;
                Some((
                    OpenFile {
                        state: FILE_CLOSING,
                        refs: 0,
                        ..f
                    },
                    false,
                ))
            }
            // Its extension is being reset: the kernel drops the file
            // when it hands the others back.
            (FILE_CLOSING, 0) if ext == Some(EXT_LOADING) => None,
            (FILE_OPEN | FILE_BROKEN | FILE_CLOSING, 0) => Some((OpenFile::default(), false)),
            (FILE_CLOSING, _) => Some((
                OpenFile {
                    state: FILE_OPEN,
                    refs: n,
                    ..f
                },
                true,
            )),
            (FILE_OPEN | FILE_BROKEN, _) if f.refs != n => Some((OpenFile { refs: n, ..f }, true)),
            (FILE_OPEN | FILE_BROKEN, _) => None,
            _ => Some((broken, true)),
        };
        if let Some((new, was_broken)) = fixed {
            fx.plan.invariant_fixes += u32::from(was_broken);
            fx.r.files[i] = new;
        }
        let f = fx.r.files[i];
        if f.state != FILE_FREE
            && let Some(c) = open.get_mut(f.ext as usize)
        {
            *c += 1;
        }
    }
    for (e, &n) in fx.r.exts.iter_mut().zip(&open) {
        if e.state != EXT_FREE && e.open_count != n {
            e.open_count = n;
        }
    }
}

/// Whether `callback` is code of extension `ext`, which is live.
fn live_callback(fx: &Fixer, ext: u32, callback: u64) -> bool {
    fx.r.exts
        .get(ext as usize)
        .is_some_and(|e| e.state == EXT_LIVE && callback >= e.text_start && callback < e.text_end)
}

/// Wakes processes whose wait condition already holds (a crash between
/// "condition became true" and "wake" must not strand them).
fn lost_wakeups(fx: &mut Fixer) {
    for i in 0..MAX_PROCS {
        let p = fx.r.procs[i];
        if p.state != PS_BLOCKED {
            continue;
        }
        let ready = match p.wait_reason {
            W_LOCK => {
                fx.r.locks
                    .get(p.wait_obj as usize)
                    .is_none_or(|l| l.state != LOCK_HELD)
            }
            W_CHILD => {
                fx.r.procs
                    .iter()
                    .any(|c| c.parent == p.pid && matches!(c.state, PS_ZOMBIE | PS_QUARANTINED))
            }
            W_IPC => fx.r.msgs.iter().any(|m| m.in_use != 0 && m.dst == p.pid),
            W_PIPE_READ => {
                fx.r.pipes
                    .get(p.wait_obj as usize)
                    .is_none_or(|q| q.len > 0 || q.writers == 0)
            }
            W_PIPE_WRITE => {
                fx.r.pipes
                    .get(p.wait_obj as usize)
                    .is_none_or(|q| (q.len as usize) < PIPE_BUF || q.readers == 0)
            }
            W_CONSOLE => fx.r.console_in.len > 0,
            W_EXT => {
                fx.r.exts
                    .get(p.wait_obj as usize)
                    .is_none_or(|e| e.state != EXT_LOADING)
            }
            W_SLEEP | W_NONE => false,
            _ => true,
        };
        if ready {
            fx.wake(p.pid);
        }
    }
}

/// Rebuilds the run queue: the runnable processes, those that can go
/// straight back to user mode (preempted there) first, then the others
/// (woken by the repair, with kernel work left to do), each group in its
/// old order.
fn run_queue(fx: &mut Fixer) {
    let mut new = [0u32; MAX_PROCS];
    let mut n = 0;
    let mut seen = [false; MAX_PROCS];
    let (head, len) = (
        fx.r.runq_head as usize % MAX_PROCS,
        (fx.r.runq_len as usize).min(MAX_PROCS),
    );
    for pass in 0..2 {
        let order = (0..len)
            .map(|i| fx.r.runq[(head + i) % MAX_PROCS])
            .chain(fx.r.procs.iter().map(|p| p.pid));
        for pid in order {
            let slot = KernelRoot::slot_of(pid);
            let p = &fx.r.procs[slot];
            let in_user = p.user_frame == 0;
            if pid != 0
                && p.pid == pid
                && p.state == PS_RUNNABLE
                && !seen[slot]
                && (pass == 1 || in_user)
            {
                seen[slot] = true;
                new[n] = pid;
                n += 1;
            }
        }
    }
    let changed =
        fx.r.runq_len as usize != n || (0..n).any(|i| fx.r.runq[(head + i) % MAX_PROCS] != new[i]);
    if changed {
        fx.plan.invariant_fixes += 1;
    }
    fx.r.runq = new;
    fx.r.runq_head = 0;
    fx.r.runq_len = n as u32;
}

fn frames(fx: &mut Fixer) -> Result<(), &'static str> {
    let ms = fx.r.mem;
    let words = ms.bitmap_words;
    if words == 0 || words.saturating_mul(64) < ms.frames_total {
        return Err("the frame allocator's bitmap is corrupt");
    }
    let bm =
        fx.m.bytes(ms.bitmap_phys, words * 8)
            .ok_or("the frame bitmap is outside RAM")?;
    let mut used = 0u64;
    for (i, w) in bm.chunks_exact(8).enumerate() {
        let mut v = u64::from_le_bytes(w.try_into().unwrap_or([0xff; 8]));
        let first = i as u64 * 64;
        if first + 64 > ms.frames_total {
            let valid = ms.frames_total.saturating_sub(first);
            v &= if valid >= 64 { !0 } else { (1u64 << valid) - 1 };
        }
        used += v.count_ones() as u64;
    }
    let free = ms.frames_total - used.min(ms.frames_total);
    if free != ms.frames_free {
        fx.r.mem.frames_free = free;
        fx.plan.invariant_fixes += 1;
    }
    Ok(())
}

/// The heap map: a block is used exactly when it has an owner, owners are
/// the kernel or a loaded extension, and the usage count matches.
fn heap(fx: &mut Fixer) {
    let h = &mut fx.r.heap;
    let mut used = 0u64;
    let mut fixed = false;
    for b in 0..HEAP_BLOCKS {
        let owner = h.owner[b];
        let ext_ok = owner == HEAP_OWNER_KERNEL
            || (owner as usize)
                .checked_sub(1)
                .is_some_and(|s| s < MAX_EXTS && fx.r.exts[s].state != EXT_FREE);
        let bit = h.used[b / 64] & (1 << (b % 64)) != 0;
        if owner != 0 && !ext_ok {
            h.owner[b] = 0;
            h.start[b] = 0;
            fixed = true;
        }
        let should = h.owner[b] != 0;
        if bit != should {
            if should {
                h.used[b / 64] |= 1 << (b % 64);
            } else {
                h.used[b / 64] &= !(1 << (b % 64));
            }
            fixed = true;
        }
        if should {
            used += HEAP_BLOCK as u64;
        }
    }
    if fx.r.mem.heap_used != used {
        fx.r.mem.heap_used = used;
        fixed = true;
    }
    if fixed {
        fx.plan.invariant_fixes += 1;
    }
}

/// Walks the kernel's extension list with every pointer checked; a broken
/// list (e.g. a node freed while still linked) is reset to empty: its
/// nodes belong to extensions, which register again when reinitialised.
fn ext_list(fx: &mut Fixer) {
    let root_va = lazarus_abi::layout::KERNEL_VIRT_BASE;
    let head_va = {
        let off = core::mem::offset_of!(KernelRoot, ext_list) as u64;
        // The root lives in the kernel image; find its VA from its PA.
        let root_pa = fx.r as *const KernelRoot as u64 - lazarus_abi::repair::RAM_VA;
        root_va + root_pa + off
    };
    let (hs, he) = (
        fx.r.mem.heap_start,
        fx.r.mem.heap_start + fx.r.mem.heap_size,
    );
    let valid = |p: u64| p == head_va || (p >= hs && p + 16 <= he && p.is_multiple_of(8));
    let mut ok = true;
    let mut cur = head_va;
    for _ in 0..4096 {
        let node: Option<ListNode> = if cur == head_va {
            Some(fx.r.ext_list)
        } else {
            fx.m.read(cur - PHYSMAP_BASE)
        };
        let Some(node) = node else {
            ok = false;
            break;
        };
        if !valid(node.next) || !valid(node.prev) {
            ok = false;
            break;
        }
        let next_prev = if node.next == head_va {
            Some(fx.r.ext_list.prev)
        } else {
            fx.m.read::<ListNode>(node.next - PHYSMAP_BASE)
                .map(|n| n.prev)
        };
        if next_prev != Some(cur) {
            ok = false;
            break;
        }
        cur = node.next;
        if cur == head_va {
            break;
        }
    }
    if !ok || cur != head_va {
        fx.r.ext_list = ListNode {
            next: head_va,
            prev: head_va,
        };
        fx.plan.invariant_fixes += 1;
    }
}
