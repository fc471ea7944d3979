//! The dump reader ([`Dump::from_bytes`], the same checks as
//! `Dump::open` on a file), then what `lazarus diagnose` does with a dump
//! it opened: reads through its segments, walks the page tables its
//! registers name, and reads the kernel's state root.

use lazarus_abi::layout::{KERNEL_VIRT_BASE, PHYSMAP_BASE};
use lazarus_dump::{Dump, Regs};
use lazarus_guestmem::{Limits, mappings, read_crash_record, read_root};

/// Segments looked at per input (a dump may declare 65535; the reader
/// checked each already).
const MAX_SEGMENTS: usize = 16;
/// Address spaces walked per input.
const MAX_SPACES: usize = 2;
/// A page walk's bounds: enough to reach every level, small enough that a
/// table pointing at itself costs little.
const WALK: Limits = Limits {
    max_tables: 8,
    max_leaves: 64,
};

/// Runs one input.
pub fn run(data: &[u8]) {
    let dump = match Dump::from_bytes(data.to_vec()) {
        Ok(dump) => dump,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let mut buf = [0u8; 64];
    for s in dump.segments().iter().take(MAX_SEGMENTS) {
        let last = s.memsz.saturating_sub(1);
        for va in [
            s.vaddr,
            s.vaddr.wrapping_add(s.filesz),
            s.vaddr.wrapping_add(last),
        ] {
            let _ = dump.read_virt(va, &mut buf);
        }
        for pa in [s.paddr, s.paddr.wrapping_add(s.filesz).wrapping_sub(8)] {
            let _ = dump.read_phys(pa, &mut buf);
        }
    }
    let note = dump.note();
    let mut regs: Vec<&Regs> = note.vcpus.iter().map(|v| &v.regs).collect();
    if let Some(record) = &note.guest_record {
        regs.push(&record.frame);
    }
    let prstatus: Vec<Regs> = (0..4).filter_map(|v| dump.prstatus(v)).collect();
    regs.extend(prstatus.iter());
    for r in regs.iter().take(MAX_SPACES) {
        let _ = dump.read_u64_virt(r.rsp);
        for va in [r.rip, r.rsp, KERNEL_VIRT_BASE, PHYSMAP_BASE] {
            let _ = dump.translate(r.cr3, va);
        }
        let _ = mappings(&dump, r.cr3, 0..u64::MAX, WALK);
    }
    if let Some(root) = note.root_gpa {
        let _ = read_root(&dump, root);
        let _ = read_crash_record(&dump, root);
    }
}
