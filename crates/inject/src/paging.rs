//! A small walker over the guest kernel's x86-64 page tables.
//!
//! The injector needs guest-physical addresses for kernel virtual ones
//! (extension code, kernel stacks, the heap) and has no guest help; every
//! table entry is guest-controlled, so each read is range-checked and a bad
//! entry reads as "not mapped", never as a host error.

use lazarus_vmm::memory::{GuestRam, ram_size, range_in_ram, read_obj};

const PAGE: u64 = 4096;
/// Physical-address bits of a page-table entry (bits 51:12).
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const PRESENT: u64 = 1;
/// Page-size bit: a 1 GiB (PDPT) or 2 MiB (PD) leaf.
const PS: u64 = 1 << 7;

/// Whether `va` is a canonical 48-bit address (bits 63:47 all equal).
fn canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_ffff
}

/// Guest-physical address of `va` under the PML4 at `pml4`, following
/// 4 KiB, 2 MiB and 1 GiB mappings; `None` if not mapped or not in RAM.
pub(crate) fn translate(mem: &GuestRam, pml4: u64, va: u64) -> Option<u64> {
    if !canonical(va) {
        return None;
    }
    let mut table = pml4 & ADDR_MASK;
    // Level 3 is the PML4, 0 the page table.
    for level in (0..4u32).rev() {
        let shift = 12 + 9 * level;
        let slot = (va >> shift) & 0x1ff;
        let entry: u64 = read_obj(mem, table.checked_add(slot * 8)?)?;
        if entry & PRESENT == 0 {
            return None;
        }
        if (level == 1 || level == 2) && entry & PS != 0 {
            let within = (1u64 << shift) - 1;
            let gpa = (entry & ADDR_MASK & !within) | (va & within);
            return range_in_ram(ram_size(mem), gpa, 1).then_some(gpa);
        }
        table = entry & ADDR_MASK;
    }
    let gpa = table | (va & (PAGE - 1));
    range_in_ram(ram_size(mem), gpa, 1).then_some(gpa)
}

/// Guest-physical start of `[va, va + len)` if the whole range is mapped
/// onto one contiguous range of RAM, so that it can be written (and
/// reverted) as one block.
pub(crate) fn translate_range(mem: &GuestRam, pml4: u64, va: u64, len: u64) -> Option<u64> {
    if len == 0 {
        return None;
    }
    let last = va.checked_add(len - 1)?;
    let gpa = translate(mem, pml4, va)?;
    let mut page = (va & !(PAGE - 1)).checked_add(PAGE)?;
    while page <= last {
        if translate(mem, pml4, page)? != gpa.checked_add(page - va)? {
            return None;
        }
        page = page.checked_add(PAGE)?;
    }
    range_in_ram(ram_size(mem), gpa, len).then_some(gpa)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{Builder, LARGE, PAGE_FLAGS};
    use lazarus_vmm::memory::write_obj;

    #[test]
    fn walks_small_and_large_pages() {
        let mut b = Builder::new();
        let va = 0xffff_ff00_0000_3000;
        b.map_4k(va, 0x0050_7000);
        assert_eq!(translate(&b.mem, b.pml4, va + 0x123), Some(0x0050_7123));
        assert_eq!(translate(&b.mem, b.pml4, va + 0x1000), None);
        let big = 0xffff_8000_0060_0000;
        b.map_2m(big, LARGE);
        assert_eq!(
            translate(&b.mem, b.pml4, big + 0x1_2345),
            Some(LARGE + 0x1_2345)
        );
        assert_eq!(
            translate_range(&b.mem, b.pml4, big + 0xff8, 16),
            Some(LARGE + 0xff8)
        );
        // Non-canonical and hostile entries read as unmapped.
        assert_eq!(translate(&b.mem, b.pml4, 0x0000_8000_0000_0000), None);
        let hostile = 0xffff_ff80_0000_0000;
        let pml4_slot = (hostile >> 39) & 0x1ff;
        write_obj(
            &b.mem,
            b.pml4 + pml4_slot * 8,
            &(0x7fff_ffff_f000u64 | PAGE_FLAGS),
        )
        .unwrap();
        assert_eq!(translate(&b.mem, b.pml4, hostile), None);
    }

    #[test]
    fn ranges_must_be_physically_contiguous() {
        let mut b = Builder::new();
        let va = 0xffff_ff00_0001_0000;
        b.map_4k(va, 0x0050_0000);
        b.map_4k(va + 0x1000, 0x0050_1000);
        b.map_4k(va + 0x2000, 0x0040_0000);
        assert_eq!(
            translate_range(&b.mem, b.pml4, va + 0xffc, 8),
            Some(0x0050_0ffc)
        );
        assert_eq!(translate_range(&b.mem, b.pml4, va + 0x1ffc, 8), None);
        assert_eq!(translate_range(&b.mem, b.pml4, va + 0x2ffc, 8), None);
        assert_eq!(translate_range(&b.mem, b.pml4, va, 0), None);
    }
}
