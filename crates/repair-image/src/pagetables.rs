//! The repair program's page tables: the image at IMAGE_VA (two 2 MiB
//! pages), the doorbell page at DOORBELL_VA (4 KiB, no memory behind it),
//! and all guest RAM at RAM_VA (2 MiB pages). Everything user-accessible:
//! the program runs in ring 3.

use crate::buffer::SlotBuffer;
use lazarus_abi::layout::{LARGE_PAGE_SIZE, MAX_MEMORY, PAGE_SIZE};
use lazarus_abi::repair::*;

const P: u64 = 1;
const W: u64 = 2;
const U: u64 = 4;
const PS: u64 = 1 << 7;

const PML4: u64 = 0;
const PDPT_LOW: u64 = 1;
const PD_LOW: u64 = 2;
const PT_DOORBELL: u64 = 3;
const PDPT_RAM: u64 = 4;
const PD_RAM: u64 = 5; // three of them: up to 3 GiB

fn table_gpa(i: u64) -> u64 {
    SLOT_GPA + PAGE_TABLES_OFFSET + i * PAGE_SIZE
}

fn set(buf: &mut SlotBuffer, table: u64, index: u64, entry: u64) {
    buf.write(
        PAGE_TABLES_OFFSET + table * PAGE_SIZE + index * 8,
        &entry.to_le_bytes(),
    );
}

fn idx(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * level)) & 0x1ff
}

pub fn build(buf: &mut SlotBuffer, mem_size: u64) -> Option<()> {
    if mem_size == 0 || mem_size > MAX_MEMORY || !mem_size.is_multiple_of(LARGE_PAGE_SIZE) {
        return None;
    }
    buf.fill(PAGE_TABLES_OFFSET, PAGE_TABLES_SIZE as usize, 0);
    let f = P | W | U;
    // Low 512 GiB: image and doorbell share one PDPT and one PD.
    set(buf, PML4, idx(IMAGE_VA, 3), table_gpa(PDPT_LOW) | f);
    set(buf, PDPT_LOW, idx(IMAGE_VA, 2), table_gpa(PD_LOW) | f);
    if idx(DOORBELL_VA, 3) != idx(IMAGE_VA, 3) || idx(DOORBELL_VA, 2) != idx(IMAGE_VA, 2) {
        return None;
    }
    let mut off = 0;
    while off < SLOT_SIZE {
        set(
            buf,
            PD_LOW,
            idx(IMAGE_VA + off, 1),
            (SLOT_GPA + off) | f | PS,
        );
        off += LARGE_PAGE_SIZE;
    }
    set(buf, PD_LOW, idx(DOORBELL_VA, 1), table_gpa(PT_DOORBELL) | f);
    set(buf, PT_DOORBELL, idx(DOORBELL_VA, 0), DOORBELL_GPA | f);
    // Guest RAM.
    set(buf, PML4, idx(RAM_VA, 3), table_gpa(PDPT_RAM) | f);
    let mut pa = 0;
    while pa < mem_size {
        let gib = pa >> 30;
        if pa.is_multiple_of(1 << 30) {
            set(
                buf,
                PDPT_RAM,
                idx(RAM_VA + pa, 2),
                table_gpa(PD_RAM + gib) | f,
            );
        }
        set(buf, PD_RAM + gib, idx(RAM_VA + pa, 1), pa | f | PS);
        pa += LARGE_PAGE_SIZE;
    }
    Some(())
}
