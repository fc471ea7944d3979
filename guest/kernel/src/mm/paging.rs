//! 4-level page tables. Every process has its own PML4 whose kernel half
//! (entries 256..512) points at the same tables as the master PML4, so
//! kernel mappings made once are seen by all address spaces.

use super::{frame, phys_to_virt};
use lazarus_abi::layout::PAGE_SIZE;

pub const P: u64 = 1;
pub const W: u64 = 1 << 1;
pub const U: u64 = 1 << 2;
pub const PS: u64 = 1 << 7;
pub const NX: u64 = 1 << 63;
pub const ADDR: u64 = 0x000f_ffff_ffff_f000;

#[derive(Debug, Clone, Copy)]
pub struct NoMemory;

fn table(phys: u64) -> &'static mut [u64; 512] {
    // SAFETY: page-table frames are RAM reached through the physmap and are
    // only modified with interrupts disabled on this CPU.
    unsafe { &mut *(phys_to_virt(phys) as *mut [u64; 512]) }
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 0x1ff) as usize
}

/// Returns the page table (level 0) covering `va`, creating tables on the way.
fn walk_create(pml4: u64, va: u64) -> Result<&'static mut [u64; 512], NoMemory> {
    let user = va < 0x0000_8000_0000_0000;
    let mut t = table(pml4);
    for level in (1..4).rev() {
        let e = &mut t[index(va, level)];
        if *e & P == 0 {
            let f = frame::alloc_zeroed().ok_or(NoMemory)?;
            *e = f | P | W | if user { U } else { 0 };
        }
        t = table(*e & ADDR);
    }
    Ok(t)
}

pub fn map(pml4: u64, va: u64, pa: u64, flags: u64) -> Result<(), NoMemory> {
    let t = walk_create(pml4, va)?;
    t[index(va, 0)] = (pa & ADDR) | flags | P;
    Ok(())
}

/// Removes a 4 KiB mapping, returning the frame it mapped.
pub fn unmap(pml4: u64, va: u64) -> Option<u64> {
    let mut t = table(pml4);
    for level in (1..4).rev() {
        let e = t[index(va, level)];
        if e & P == 0 || e & PS != 0 {
            return None;
        }
        t = table(e & ADDR);
    }
    let e = &mut t[index(va, 0)];
    if *e & P == 0 {
        return None;
    }
    let pa = *e & ADDR;
    *e = 0;
    crate::arch::cpu::invlpg(va);
    if va >= lazarus_abi::layout::PHYSMAP_BASE {
        // Kernel mappings are shared by every CPU's address space.
        crate::arch::tlb::shootdown();
    }
    Some(pa)
}

/// Physical address and leaf flags for `va`.
pub fn translate(pml4: u64, va: u64) -> Option<(u64, u64)> {
    let mut t = table(pml4);
    for level in (1..4).rev() {
        let e = t[index(va, level)];
        if e & P == 0 {
            return None;
        }
        if e & PS != 0 {
            let size = 1u64 << (12 + 9 * level);
            return Some(((e & ADDR & !(size - 1)) + (va & (size - 1)), e));
        }
        t = table(e & ADDR);
    }
    let e = t[index(va, 0)];
    if e & P == 0 {
        return None;
    }
    Some(((e & ADDR) + (va & (PAGE_SIZE - 1)), e))
}

/// A new address space sharing the kernel half of `master`.
pub fn new_address_space(master: u64) -> Result<u64, NoMemory> {
    let f = frame::alloc().ok_or(NoMemory)?;
    let (dst, src) = (table(f), table(master));
    dst[..256].fill(0);
    dst[256..].copy_from_slice(&src[256..]);
    Ok(f)
}

/// Frees every user page and user page table of `pml4` (not the PML4).
/// Returns the number of data pages freed.
pub fn free_user_half(pml4: u64) -> u64 {
    let mut freed = 0;
    let top = table(pml4);
    for e4 in top[..256].iter_mut() {
        if *e4 & P == 0 {
            continue;
        }
        let pdpt = *e4 & ADDR;
        for e3 in table(pdpt).iter() {
            if *e3 & P == 0 {
                continue;
            }
            let pd = *e3 & ADDR;
            for e2 in table(pd).iter() {
                if *e2 & P == 0 {
                    continue;
                }
                let pt = *e2 & ADDR;
                for e1 in table(pt).iter() {
                    if *e1 & P != 0 {
                        frame::free(*e1 & ADDR);
                        freed += 1;
                    }
                }
                frame::free(pt);
            }
            frame::free(pd);
        }
        frame::free(pdpt);
        *e4 = 0;
    }
    freed
}
