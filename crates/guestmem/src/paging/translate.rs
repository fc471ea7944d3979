//! Translating one virtual address, or one contiguous range.

use super::entry::*;
use crate::phys::{PhysMemory, check_range};

/// Where a virtual address leads, and with what effective permissions
/// (writable and user need the bit at every level; one NX forbids
/// execution).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address of the byte at the virtual address.
    pub pa: u64,
    /// Size of the page that maps it.
    pub size: PageSize,
    /// Writes are allowed (W set at every level).
    pub writable: bool,
    /// User mode may access it.
    pub user: bool,
    /// Instructions may be fetched from it.
    pub executable: bool,
}

impl Translation {
    /// Guest-physical start of the page.
    pub const fn frame(&self) -> u64 {
        self.pa & !(self.size.bytes() - 1)
    }
}

/// Translates `va` through the tables at `cr3` (its low 12 bits, PCID or
/// PCD/PWT, are ignored) as the CPU would, with 4 KiB, 2 MiB and 1 GiB
/// pages, except that a table that is its own ancestor is refused as a
/// [`WalkError::Cycle`] (as [`walk_range`](super::walk_range) refuses it). The translated
/// byte must be inside memory.
pub fn translate<M: PhysMemory + ?Sized>(
    mem: &M,
    cr3: u64,
    va: u64,
) -> Result<Translation, WalkError> {
    if !is_canonical(va) {
        return Err(WalkError::NonCanonical { va });
    }
    let mut ancestors = [0u64; 4];
    let mut table = cr3 & ADDR_MASK;
    let mut perms = Perms::ALL;
    for level in Level::ALL {
        check_table(mem, table, &ancestors[..level.depth()])?;
        ancestors[level.depth()] = table;
        // No overflow: the table is inside memory.
        let entry = mem.read_u64(table + level.index(va) * 8)?;
        if entry & PRESENT == 0 {
            return Err(WalkError::NotPresent { level });
        }
        perms = perms.and(entry);
        match decode(level, entry)? {
            Entry::Table(next) => table = next,
            Entry::Page { frame, size } => {
                let pa = frame | (va & (size.bytes() - 1));
                check_range(mem.size(), pa, 1).map_err(|_| WalkError::OutsideMemory { pa })?;
                return Ok(Translation {
                    pa,
                    size,
                    writable: perms.writable,
                    user: perms.user,
                    executable: perms.executable,
                });
            }
        }
    }
    // Not reached: a PT entry always decodes to a page.
    Err(WalkError::NotPresent { level: Level::Pt })
}

/// Guest-physical start of `[va, va + len)` if the whole range is mapped
/// onto one contiguous block of memory, so that it can be read or written
/// (and reverted) as one piece.
pub fn translate_range<M: PhysMemory + ?Sized>(
    mem: &M,
    cr3: u64,
    va: u64,
    len: u64,
) -> Result<u64, WalkError> {
    let last = len
        .checked_sub(1)
        .and_then(|n| va.checked_add(n))
        .ok_or(WalkError::BadRange { va, len })?;
    let first = translate(mem, cr3, va)?;
    let mut t = first;
    let mut at = va;
    // Step page by page (by each page's own size) up to the last byte.
    while let Some(next) = (at | (t.size.bytes() - 1)).checked_add(1)
        && next <= last
    {
        at = next;
        t = translate(mem, cr3, at)?;
        if first.pa.checked_add(at - va) != Some(t.pa) {
            return Err(WalkError::Discontiguous { va: at });
        }
    }
    check_range(mem.size(), first.pa, len)
        .map_err(|_| WalkError::OutsideMemory { pa: first.pa })?;
    Ok(first.pa)
}
