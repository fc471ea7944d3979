//! Loading an extension: mapping and relocating its ELF image in its slot
//! of the extension region, running its init, resetting and unloading it.

use super::api::API;
use super::slot::{descriptor, in_ext};
use crate::elf::{self, ET_DYN, Elf, PF_X, PT_LOAD, R_X86_64_RELATIVE};
use crate::mm::frame;
use crate::mm::paging::{self, W};
use crate::state::k;
use crate::uaccess::{self, KResult};
use lazarus_abi::ext::*;
use lazarus_abi::hypercall::{EXT_EVENT_LOADED, EXT_EVENT_UNLOADED, HC_EXT_EVENT};
use lazarus_abi::layout::{EXT_REGION, EXT_SLOT_SIZE, PAGE_SIZE};
use lazarus_abi::root::*;
use lazarus_abi::syscall::errno::*;

fn slot_base(slot: usize) -> u64 {
    EXT_REGION + slot as u64 * EXT_SLOT_SIZE
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
        e.devices = [0; MAX_EXT_DEVICES];
        if e.kept != 0 {
            crate::mm::heap::free(e.kept as *mut u8, e.kept_size as usize);
            (e.kept, e.kept_size) = (0, 0);
        }
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
    let desc = in_ext(slot, CALL_INTERRUPT, || entry());
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
    let rc = in_ext(slot, CALL_INTERRUPT, || (d.init)(&API));
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
    // Its clients' opens, handed back (a disabled one breaks them).
    let (reopened, broken) = super::dev::reopen_all(slot);
    let log = &mut k().recovery;
    if let Some(last) = log.count.checked_sub(1) {
        let r = &mut log.records[(last % MAX_RECOVERIES as u64) as usize];
        if r.ext == slot as u32 {
            r.files_reopened += reopened;
            r.files_broken += broken;
        }
    }
}

fn cleanup_ext_objects(slot: usize) {
    crate::timer::remove_for_ext(slot as u32);
    crate::irq::remove_for_ext(slot as u32);
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
        in_ext(slot, CALL_INTERRUPT, || exit());
    }
    cleanup_ext_objects(slot);
    unmap_image(slot, e.size);
    if e.kept != 0 {
        crate::mm::heap::free(e.kept as *mut u8, e.kept_size as usize);
    }
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
