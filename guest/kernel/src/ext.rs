//! Kernel extensions: loading position-independent ELF modules into ring 0,
//! the API table they call the kernel through, and their devices.

use crate::elf::{self, ET_DYN, Elf, PF_X, PT_LOAD, R_X86_64_RELATIVE};
use crate::mm::paging::{self, W};
use crate::mm::{frame, phys_to_virt};
use crate::state::{current, current_pid, k};
use crate::uaccess::{self, KResult};
use lazarus_abi::ext::*;
use lazarus_abi::hypercall::{EXT_EVENT_LOADED, EXT_EVENT_UNLOADED, HC_EXT_EVENT};
use lazarus_abi::layout::{EXT_REGION, EXT_SLOT_SIZE, PAGE_SIZE};
use lazarus_abi::root::*;
use lazarus_abi::syscall::errno::*;

fn slot_base(slot: usize) -> u64 {
    EXT_REGION + slot as u64 * EXT_SLOT_SIZE
}

fn descriptor(slot: usize) -> Option<&'static ExtDescriptor> {
    let s = &k().exts[slot];
    if s.state != EXT_LIVE && s.state != EXT_LOADING {
        return None;
    }
    descriptor_unchecked(s)
}

/// Device operations need a live extension: not one being loaded, reset
/// (waiting for its init to run again) or disabled.
fn live_descriptor(slot: usize) -> Option<&'static ExtDescriptor> {
    let s = &k().exts[slot];
    if s.state != EXT_LIVE {
        return None;
    }
    descriptor_unchecked(s)
}

fn descriptor_unchecked(s: &ExtSlot) -> Option<&'static ExtDescriptor> {
    if s.descriptor == 0 {
        return None;
    }
    // SAFETY: the loader validated that the descriptor lies inside the
    // module image and carries the right magic; the image stays mapped
    // while the slot is in use.
    Some(unsafe { &*(s.descriptor as *const ExtDescriptor) })
}

/// Runs `f` with the current process marked as executing in `slot`, so a
/// crash inside is attributed to the extension.
fn in_ext<R>(slot: usize, f: impl FnOnce() -> R) -> R {
    let prev = current().map(|p| core::mem::replace(&mut p.cur_ext, slot as u32));
    let r = f();
    if let (Some(p), Some(prev)) = (current(), prev) {
        p.cur_ext = prev;
    }
    r
}

fn unmap_image(slot: usize, size: u64) {
    let master = k().master_pml4;
    let base = slot_base(slot);
    let mut va = base;
    while va < base + size {
        if let Some(f) = paging::unmap(master, va) {
            frame::free(f);
        }
        va += PAGE_SIZE;
    }
}

fn find_by_name(name: &[u8]) -> Option<usize> {
    k().exts.iter().position(|e| {
        e.state != EXT_FREE
            && e.name
                .iter()
                .position(|&c| c == 0)
                .map_or(&e.name[..], |n| &e.name[..n])
                == name
    })
}

pub fn load(name: &[u8]) -> KResult<u64> {
    if name.is_empty() || name.len() > 15 || name.contains(&b'/') {
        return Err(EINVAL);
    }
    if find_by_name(name).is_some() {
        return Err(EEXIST);
    }
    let mut path = [0u8; 32];
    let plen = 4 + name.len() + 3;
    path[..4].copy_from_slice(b"ext/");
    path[4..4 + name.len()].copy_from_slice(name);
    path[4 + name.len()..plen].copy_from_slice(b".ko");
    let data = crate::initramfs::find(&path[..plen]).ok_or(ENOENT)?;
    let elf = Elf::parse(data).ok_or(ENOEXEC)?;
    if elf.kind != ET_DYN {
        return Err(ENOEXEC);
    }
    let slot = k()
        .exts
        .iter()
        .position(|e| e.state == EXT_FREE)
        .ok_or(ENOSPC)?;
    let base = slot_base(slot);

    // Size of the image.
    let mut span = 0u64;
    let (mut text_lo, mut text_hi) = (u64::MAX, 0u64);
    for s in elf.segments() {
        let s = s.ok_or(ENOEXEC)?;
        if s.kind == PT_LOAD {
            span = span.max(s.vaddr + s.memsz);
            if s.flags & PF_X != 0 {
                text_lo = text_lo.min(s.vaddr);
                text_hi = text_hi.max(s.vaddr + s.memsz);
            }
        }
    }
    let size = (span + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    if size == 0 || size > EXT_SLOT_SIZE || text_lo >= text_hi {
        return Err(ENOEXEC);
    }
    {
        let e = &mut k().exts[slot];
        *e = ExtSlot {
            state: EXT_LOADING,
            ..*e
        };
        e.size = size;
    }
    let fail = |err: i64| {
        unmap_image(slot, size);
        let e = &mut k().exts[slot];
        let announced = e.base != 0;
        e.state = EXT_FREE;
        e.base = 0;
        if announced {
            crate::hypercall::call(HC_EXT_EVENT, [EXT_EVENT_UNLOADED, slot as u64, 0, 0, 0]);
        }
        err
    };

    // Map zeroed pages, then copy the segments through the new mapping.
    let master = k().master_pml4;
    let mut va = base;
    while va < base + size {
        let f = frame::alloc_zeroed().ok_or(ENOMEM).map_err(fail)?;
        paging::map(master, va, f, W).map_err(|_| fail(ENOMEM))?;
        va += PAGE_SIZE;
    }
    for s in elf.segments().flatten() {
        if s.kind == PT_LOAD {
            let src = elf.bytes(&s);
            // SAFETY: [base+vaddr, +filesz) lies within the mapped image.
            unsafe {
                core::ptr::copy_nonoverlapping(src.as_ptr(), (base + s.vaddr) as *mut u8, src.len())
            };
        }
    }
    // Relocate.
    if let Some((off, count)) = elf.rela().ok_or(ENOEXEC).map_err(fail)? {
        for i in 0..count {
            let o = off + i * 24;
            let (Some(r_off), Some(info), Some(addend)) = (
                elf::u64_at(data, o),
                elf::u64_at(data, o + 8),
                elf::u64_at(data, o + 16),
            ) else {
                return Err(fail(ENOEXEC));
            };
            if info as u32 != R_X86_64_RELATIVE || r_off.checked_add(8).is_none_or(|e| e > size) {
                return Err(fail(ENOEXEC));
            }
            // SAFETY: the target was bounds-checked against the image.
            unsafe { ((base + r_off) as *mut u64).write_unaligned(base.wrapping_add(addend)) };
        }
    }
    if elf.entry >= size {
        return Err(fail(ENOEXEC));
    }
    {
        let e = &mut k().exts[slot];
        e.base = base;
        e.text_start = base + text_lo;
        e.text_end = base + text_hi;
        e.load_count += 1;
        // A fresh load by the user starts a fresh crash count.
        e.crash_count = 0;
        e.last_complaint_tick = 0;
        let n = name.len().min(16);
        e.name = [0; 16];
        e.name[..n].copy_from_slice(&name[..n]);
    }
    k().exts[slot].entry = base + elf.entry;
    // The image is relocated and its init has not run: this is the
    // pristine state a reset restores, so the hypervisor snapshots it now
    // (and refreshes its repair image).
    crate::hypercall::call(HC_EXT_EVENT, [EXT_EVENT_LOADED, slot as u64, 0, 0, 0]);
    // SAFETY: the entry point is inside the image; it is the extension's
    // `extern "C" fn() -> *const ExtDescriptor`.
    let entry: extern "C" fn() -> u64 = unsafe { core::mem::transmute(base + elf.entry) };
    let desc = in_ext(slot, || entry());
    if desc < base
        || desc + core::mem::size_of::<ExtDescriptor>() as u64 > base + size
        || desc % 8 != 0
    {
        return Err(fail(ENOEXEC));
    }
    // SAFETY: bounds and alignment checked just above.
    let d = unsafe { &*(desc as *const ExtDescriptor) };
    if d.magic != EXT_MAGIC || d.api_version != EXT_API_VERSION {
        return Err(fail(ENOEXEC));
    }
    {
        let e = &mut k().exts[slot];
        e.descriptor = desc;
        e.dev_name = d.dev_name;
    }
    let rc = in_ext(slot, || (d.init)(&API));
    if rc != 0 {
        cleanup_ext_objects(slot);
        return Err(fail(if rc < 0 { -(rc as i64) } else { EIO }));
    }
    k().exts[slot].state = EXT_LIVE;
    Ok(slot as u64)
}

/// Runs a reset extension's entry and init again (its image was restored
/// to the pristine, pre-init state by the repair). On failure it stays
/// loaded but disabled.
pub fn reinit(slot: usize) {
    let e = k().exts[slot];
    if e.base == 0 || e.entry < e.base || e.entry >= e.base + e.size {
        return;
    }
    // SAFETY: the entry point was validated at load and the code was just
    // restored from the pristine copy.
    let entry: extern "C" fn() -> u64 = unsafe { core::mem::transmute(e.entry) };
    let desc = entry();
    let ok = desc == e.descriptor && {
        // SAFETY: same descriptor address the loader validated.
        let d = unsafe { &*(desc as *const ExtDescriptor) };
        d.magic == EXT_MAGIC && (d.init)(&API) == 0
    };
    k().exts[slot].state = if ok { EXT_LIVE } else { EXT_DISABLED };
}

fn cleanup_ext_objects(slot: usize) {
    crate::timer::remove_for_ext(slot as u32);
    crate::lock::destroy_for_ext(slot as u32);
}

pub fn unload(name: &[u8]) -> KResult<u64> {
    let slot = find_by_name(name).ok_or(ENOENT)?;
    let e = k().exts[slot];
    if e.open_count > 0 {
        return Err(EBUSY);
    }
    if e.state == EXT_LIVE
        && let Some(d) = descriptor(slot)
    {
        let exit = d.exit;
        in_ext(slot, || exit());
    }
    cleanup_ext_objects(slot);
    unmap_image(slot, e.size);
    let s = &mut k().exts[slot];
    let (loads, crashes) = (s.load_count, s.crash_count);
    *s = ExtSlot {
        load_count: loads,
        crash_count: crashes,
        ..ExtSlot::default()
    };
    crate::hypercall::call(HC_EXT_EVENT, [EXT_EVENT_UNLOADED, slot as u64, 0, 0, 0]);
    Ok(0)
}

pub fn list(buf: u64, max: u64) -> KResult<u64> {
    let mut n = 0u64;
    for (i, e) in k().exts.iter().enumerate() {
        if e.state == EXT_FREE || n >= max {
            continue;
        }
        let info = lazarus_abi::syscall::ExtInfo {
            slot: i as u32,
            state: e.state,
            name: e.name,
            dev_name: e.dev_name,
            base: e.base,
            size: e.size,
            crash_count: e.crash_count,
            load_count: e.load_count,
        };
        uaccess::write_obj(buf + n * core::mem::size_of_val(&info) as u64, &info)?;
        n += 1;
    }
    Ok(n)
}

// ---- devices ----

pub fn dev_open(dev: &[u8], pid: u32) -> KResult<(usize, u64)> {
    let slot = k()
        .exts
        .iter()
        .position(|e| {
            e.state == EXT_LIVE
                && e.dev_name
                    .iter()
                    .position(|&c| c == 0)
                    .map_or(&e.dev_name[..], |n| &e.dev_name[..n])
                    == dev
        })
        .ok_or(ENODEV)?;
    let d = descriptor(slot).ok_or(ENODEV)?;
    let aux = match d.open {
        Some(open) => {
            let r = in_ext(slot, || open(pid));
            if r < 0 {
                return Err(-r);
            }
            r as u64
        }
        None => 0,
    };
    k().exts[slot].open_count += 1;
    Ok((slot, aux))
}

pub fn dev_close(slot: usize, aux: u64) {
    if let Some(d) = live_descriptor(slot)
        && let Some(close) = d.close
    {
        in_ext(slot, || close(aux));
    }
    let e = &mut k().exts[slot];
    e.open_count = e.open_count.saturating_sub(1);
}

/// Highest errno an extension may return (as Linux's `MAX_ERRNO`).
const MAX_ERRNO: i64 = 4095;

/// Checks an extension's reply against its contract, Nooks-style: an
/// error must be an errno and a transfer no longer than asked. A broken
/// contract is a failed extension even though nothing crashed.
fn result(slot: usize, r: i64, max: Option<u64>) -> KResult<u64> {
    if r < -MAX_ERRNO {
        failed(slot, -EIO, "returned an invalid error code")
    } else if r < 0 {
        Err(-r)
    } else if max.is_some_and(|m| r as u64 > m) {
        failed(slot, -EIO, "returned more bytes than asked for")
    } else {
        Ok(r as u64)
    }
}

/// Extension `slot` failed the current process without crashing: hand it
/// to the repair, which resets it, as a `CRASH_EXT_FAILED`. The process is
/// its victim: its system call returns `ret` once the kernel resumes.
fn failed(slot: usize, ret: i64, why: &str) -> ! {
    let pid = current_pid();
    if let Some(p) = current()
        && p.user_frame != 0
    {
        // SAFETY: `user_frame` points at this system call's trap frame on
        // the current process's kernel stack, live until it returns.
        unsafe { (*(p.user_frame as *mut lazarus_abi::trap::TrapFrame)).rax = ret as u64 };
    }
    crate::crash::report_fmt(
        CRASH_EXT_FAILED,
        slot as u32,
        &crate::crash::here(),
        format_args!(
            "extension {} failed pid {pid}: {why}",
            lazarus_abi::name_str(&k().exts[slot].name)
        ),
    )
}

/// `SYS_EXT_COMPLAIN`: a client reports that the extension in `slot`
/// failed it (as drivers' clients complain to MINIX 3's reincarnation
/// server); `fd::complain` checked that it has the device open. Only once
/// per `COMPLAINT_INTERVAL_TICKS` per extension, so that a client cannot
/// hold an extension in reset. Returns 0 after the reset.
pub fn complain(slot: usize, why: &str) -> KResult<u64> {
    use lazarus_abi::syscall::COMPLAINT_INTERVAL_TICKS;
    let now = k().header.heartbeat;
    let e = k().exts.get_mut(slot).ok_or(EBADF)?;
    if e.state != EXT_LIVE {
        return Err(ENODEV);
    }
    if e.last_complaint_tick != 0
        && now.saturating_sub(e.last_complaint_tick) < COMPLAINT_INTERVAL_TICKS
    {
        return Err(EAGAIN);
    }
    e.last_complaint_tick = now.max(1);
    failed(slot, 0, why)
}

pub fn dev_read(slot: usize, aux: u64, buf: u64, len: u64) -> KResult<u64> {
    let d = live_descriptor(slot).ok_or(ENODEV)?;
    let f = d.read.ok_or(ENOTSUP)?;
    result(slot, in_ext(slot, || f(aux, buf, len as usize)), Some(len))
}

pub fn dev_write(slot: usize, aux: u64, buf: u64, len: u64) -> KResult<u64> {
    let d = live_descriptor(slot).ok_or(ENODEV)?;
    let f = d.write.ok_or(ENOTSUP)?;
    result(slot, in_ext(slot, || f(aux, buf, len as usize)), Some(len))
}

pub fn dev_ioctl(slot: usize, aux: u64, cmd: u64, arg: u64) -> KResult<u64> {
    let d = live_descriptor(slot).ok_or(ENODEV)?;
    let f = d.ioctl.ok_or(ENOTSUP)?;
    result(slot, in_ext(slot, || f(aux, cmd, arg)), None)
}

// ---- the API table ----

fn caller_ext() -> u32 {
    crate::state::current_ext()
}

extern "C" fn api_log(msg: *const u8, len: usize) {
    if msg.is_null() {
        return;
    }
    // SAFETY: the extension passes a buffer of its own of `len` bytes.
    let s = unsafe { core::slice::from_raw_parts(msg, len.min(512)) };
    crate::arch::serial::write(s);
}

extern "C" fn api_alloc(size: usize, align: usize) -> *mut u8 {
    let ext = caller_ext();
    let owner = if (ext as usize) < MAX_EXTS {
        ext as u8 + 1
    } else {
        HEAP_OWNER_KERNEL
    };
    crate::mm::heap::alloc(size, align, owner)
}

extern "C" fn api_free(ptr: *mut u8, size: usize, _align: usize) {
    if !ptr.is_null() {
        crate::mm::heap::free(ptr, size);
    }
}

extern "C" fn api_lock_create(name: *const u8, len: usize) -> i32 {
    let n = if name.is_null() {
        &[][..]
    } else {
        // SAFETY: the extension's own buffer.
        unsafe { core::slice::from_raw_parts(name, len.min(24)) }
    };
    crate::lock::create(n, caller_ext()).unwrap_or_else(|e| -(e as i32))
}

extern "C" fn api_lock_acquire(id: i32) -> i32 {
    crate::lock::acquire(id).map_or_else(|e| -(e as i32), |_| 0)
}

extern "C" fn api_lock_release(id: i32) -> i32 {
    crate::lock::release(id).map_or_else(|e| -(e as i32), |_| 0)
}

extern "C" fn api_current_pid() -> u32 {
    if k().cpus[0].in_irq > 0 {
        0
    } else {
        current_pid()
    }
}

extern "C" fn api_ticks() -> u64 {
    k().header.heartbeat
}

extern "C" fn api_sleep_ticks(t: u64) {
    if k().cpus[0].in_irq == 0 {
        crate::wait::sleep_ticks(t);
    }
}

extern "C" fn api_timer_add(cb: extern "C" fn(u64), arg: u64, period: u64) -> i32 {
    crate::timer::add(caller_ext(), cb as usize as u64, arg, period).unwrap_or_else(|e| -(e as i32))
}

extern "C" fn api_timer_remove(id: i32) -> i32 {
    crate::timer::remove(id).map_or_else(|e| -(e as i32), |_| 0)
}

extern "C" fn api_copy_to_user(dst: u64, src: *const u8, len: usize) -> i64 {
    if src.is_null() && len > 0 {
        return -EFAULT;
    }
    // SAFETY: the extension's own buffer of `len` bytes.
    let s = unsafe { core::slice::from_raw_parts(src, len) };
    uaccess::copy_to(dst, s).map_or_else(|e| -e, |_| 0)
}

extern "C" fn api_copy_from_user(dst: *mut u8, src: u64, len: usize) -> i64 {
    if dst.is_null() && len > 0 {
        return -EFAULT;
    }
    // SAFETY: the extension's own buffer of `len` bytes.
    let d = unsafe { core::slice::from_raw_parts_mut(dst, len) };
    uaccess::copy_from(d, src).map_or_else(|e| -e, |_| 0)
}

extern "C" fn api_panic(msg: *const u8, len: usize) -> ! {
    let m = if msg.is_null() {
        &b"extension panic"[..]
    } else {
        // SAFETY: the extension's own buffer.
        unsafe { core::slice::from_raw_parts(msg, len.min(128)) }
    };
    // The caller's frame pointer chain leads back into the extension.
    let mut f = crate::crash::here();
    // SAFETY: frame pointers are forced on for kernel and extensions; the
    // saved return address sits just above the saved rbp.
    unsafe {
        let rbp = f.rbp as *const u64;
        if !rbp.is_null() {
            f.rip = rbp.add(1).read();
        }
    }
    crate::crash::report(CRASH_PANIC, &f, m)
}

extern "C" fn api_irq_disable() -> u64 {
    let was = crate::arch::cpu::interrupts_enabled();
    crate::arch::cpu::cli();
    was as u64
}

extern "C" fn api_irq_restore(state: u64) {
    if state != 0 {
        crate::arch::cpu::sti();
    } else {
        crate::arch::cpu::cli();
    }
}

extern "C" fn api_entropy() -> u64 {
    let t = crate::arch::cpu::rdtsc();
    t ^ (t << 21) ^ k().header.heartbeat.rotate_left(17) ^ phys_to_virt(0)
}

extern "C" fn api_lock_try_acquire(id: i32) -> i32 {
    crate::lock::try_acquire(id).map_or_else(|e| -(e as i32), |_| 0)
}

extern "C" fn api_list_add(node: *mut ListNode) -> i32 {
    crate::klist::add(node)
}

extern "C" fn api_list_del(node: *mut ListNode) -> i32 {
    crate::klist::del(node)
}

static mut IOREMAP_NEXT: u64 = lazarus_abi::layout::IOREMAP_REGION;

extern "C" fn api_ioremap(phys: u64, len: u64) -> u64 {
    use lazarus_abi::layout::{IOREMAP_REGION, IOREMAP_SIZE};
    let first = phys & !(PAGE_SIZE - 1);
    let Some(end) = phys.checked_add(len.max(1)) else {
        return 0;
    };
    let pages = (end - first).div_ceil(PAGE_SIZE);
    // SAFETY: one CPU, interrupts off.
    let va = unsafe { IOREMAP_NEXT };
    if pages == 0 || end > 1 << 46 || va + pages * PAGE_SIZE > IOREMAP_REGION + IOREMAP_SIZE {
        return 0;
    }
    let master = k().master_pml4;
    const PWT: u64 = 1 << 3;
    const PCD: u64 = 1 << 4;
    for i in 0..pages {
        if paging::map(
            master,
            va + i * PAGE_SIZE,
            first + i * PAGE_SIZE,
            W | PCD | PWT,
        )
        .is_err()
        {
            return 0;
        }
    }
    // SAFETY: as above.
    unsafe { IOREMAP_NEXT = va + pages * PAGE_SIZE };
    va + (phys - first)
}

static API: ExtApi = ExtApi {
    version: EXT_API_VERSION,
    log: api_log,
    alloc: api_alloc,
    free: api_free,
    lock_create: api_lock_create,
    lock_acquire: api_lock_acquire,
    lock_release: api_lock_release,
    current_pid: api_current_pid,
    ticks: api_ticks,
    sleep_ticks: api_sleep_ticks,
    timer_add: api_timer_add,
    timer_remove: api_timer_remove,
    copy_to_user: api_copy_to_user,
    copy_from_user: api_copy_from_user,
    panic: api_panic,
    irq_disable: api_irq_disable,
    irq_restore: api_irq_restore,
    entropy: api_entropy,
    lock_try_acquire: api_lock_try_acquire,
    list_add: api_list_add,
    list_del: api_list_del,
    ioremap: api_ioremap,
};
