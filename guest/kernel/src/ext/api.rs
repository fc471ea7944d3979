//! The API table extensions call the kernel through: logging, memory,
//! locks, timers, user copies, interrupts and lists.

use crate::mm::paging::{self, W};
use crate::mm::phys_to_virt;
use crate::state::{current_pid, k};
use crate::uaccess;
use lazarus_abi::ext::*;
use lazarus_abi::layout::PAGE_SIZE;
use lazarus_abi::root::*;
use lazarus_abi::syscall::errno::*;

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
    if crate::state::this_cpu().in_irq > 0 {
        0
    } else {
        current_pid()
    }
}

extern "C" fn api_ticks() -> u64 {
    crate::state::now()
}

extern "C" fn api_sleep_ticks(t: u64) {
    if crate::state::this_cpu().in_irq == 0 {
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
    if len == 0 {
        return 0;
    }
    if src.is_null() {
        return -EFAULT;
    }
    // SAFETY: the extension's own buffer of `len` bytes (not null).
    let s = unsafe { core::slice::from_raw_parts(src, len) };
    uaccess::copy_to(dst, s).map_or_else(|e| -e, |_| 0)
}

extern "C" fn api_copy_from_user(dst: *mut u8, src: u64, len: usize) -> i64 {
    if len == 0 {
        return 0;
    }
    if dst.is_null() {
        return -EFAULT;
    }
    // SAFETY: the extension's own buffer of `len` bytes (not null).
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
    t ^ (t << 21) ^ crate::state::now().rotate_left(17) ^ phys_to_virt(0)
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

extern "C" fn api_cpu_id() -> u32 {
    crate::arch::percpu::id() as u32
}

extern "C" fn api_ioremap(phys: u64, len: u64) -> u64 {
    use lazarus_abi::layout::{IOREMAP_REGION, IOREMAP_SIZE};
    let first = phys & !(PAGE_SIZE - 1);
    let Some(end) = phys.checked_add(len.max(1)) else {
        return 0;
    };
    let pages = (end - first).div_ceil(PAGE_SIZE);
    // SAFETY: the big kernel lock is held.
    let va = unsafe { IOREMAP_NEXT };
    if pages == 0 || end > 1 << 46 || va + pages * PAGE_SIZE > IOREMAP_REGION + IOREMAP_SIZE {
        return 0;
    }
    note_device(phys);
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

/// Records that the calling extension drives the platform device whose
/// register window holds `phys`, so that the repair resets the device
/// with the extension.
fn note_device(phys: u64) {
    let Some(e) = k().exts.get_mut(caller_ext() as usize) else {
        return;
    };
    let Some(base) = (0..8)
        .filter_map(crate::platform::device)
        .find(|d| (d.base..d.base + d.size).contains(&phys))
        .map(|d| d.base)
    else {
        return;
    };
    if !e.devices.contains(&base)
        && let Some(free) = e.devices.iter_mut().find(|b| **b == 0)
    {
        *free = base;
    }
}

extern "C" fn api_keep(size: usize, align: usize) -> *mut u8 {
    let Some(e) = k().exts.get_mut(caller_ext() as usize) else {
        return core::ptr::null_mut();
    };
    if e.kept != 0 {
        return if e.kept_size == size as u64 {
            e.kept as *mut u8
        } else {
            core::ptr::null_mut()
        };
    }
    // Owned by the kernel, so that the repair does not free it with the
    // extension's own memory; the slot frees it at unload.
    let p = crate::mm::heap::alloc(size, align, HEAP_OWNER_KERNEL);
    if !p.is_null() {
        // SAFETY: `alloc` just gave us `size` bytes at `p`.
        unsafe { core::ptr::write_bytes(p, 0, size) };
        e.kept = p as u64;
        e.kept_size = size as u64;
    }
    p
}

extern "C" fn api_failed(msg: *const u8, len: usize) -> ! {
    let m = if msg.is_null() {
        &b"failed"[..]
    } else {
        // SAFETY: the extension's own buffer.
        unsafe { core::slice::from_raw_parts(msg, len.min(96)) }
    };
    let why = core::str::from_utf8(m).unwrap_or("failed");
    let ext = caller_ext();
    if crate::state::this_cpu().in_irq > 0 || (ext as usize) >= MAX_EXTS {
        // No call to replay: a crash of the extension, in interrupt
        // context.
        crate::crash::report(CRASH_EXT_FAILED, &crate::crash::here(), m)
    }
    // The call keeps the `CALL_*` it entered the extension with.
    let call = crate::state::current().map_or(CALL_INTERRUPT, |p| p.ext_call);
    super::dev::failed(ext as usize, call, why)
}

extern "C" fn api_dma_alloc(size: usize, align: usize, phys: *mut u64) -> *mut u8 {
    if phys.is_null() {
        return core::ptr::null_mut();
    }
    let p = api_alloc(size, align);
    if p.is_null() {
        return p;
    }
    // SAFETY: `alloc` just gave us `size` bytes at `p`.
    unsafe { core::ptr::write_bytes(p, 0, size) };
    // The heap is one contiguous physical range in the physmap.
    // SAFETY: the extension passes a place for the address.
    unsafe { *phys = p as u64 - phys_to_virt(0) };
    p
}

extern "C" fn api_user_dma(
    user_buf: u64,
    len: usize,
    device_writes: u32,
    segs: *mut DmaSeg,
    max: usize,
) -> i64 {
    let out: &mut [DmaSeg] = if max == 0 {
        &mut []
    } else if segs.is_null() {
        return -EFAULT;
    } else {
        // SAFETY: the extension's own array of `max` segments (not null).
        unsafe { core::slice::from_raw_parts_mut(segs, max) }
    };
    uaccess::dma_segments(user_buf, len as u64, device_writes != 0, out)
        .map_or_else(|e| -e, |n| n as i64)
}

extern "C" fn api_device_info(index: u32, out: *mut DeviceInfo) -> i32 {
    match crate::platform::device(index as usize) {
        Some(d) if !out.is_null() => {
            // SAFETY: the extension passes a place for the description.
            unsafe { *out = d };
            0
        }
        Some(_) => -(EFAULT as i32),
        None => -(ENODEV as i32),
    }
}

extern "C" fn api_irq_register(gsi: u32, handler: extern "C" fn(u64), arg: u64) -> i32 {
    crate::irq::register(caller_ext(), gsi, handler as usize as u64, arg)
        .unwrap_or_else(|e| -(e as i32))
}

extern "C" fn api_irq_unregister(id: i32) -> i32 {
    crate::irq::unregister(id).map_or_else(|e| -(e as i32), |_| 0)
}

pub static API: ExtApi = ExtApi {
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
    cpu_id: api_cpu_id,
    dma_alloc: api_dma_alloc,
    user_dma: api_user_dma,
    device_info: api_device_info,
    irq_register: api_irq_register,
    irq_unregister: api_irq_unregister,
    keep: api_keep,
    failed: api_failed,
};
