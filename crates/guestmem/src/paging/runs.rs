//! Coalesced runs of mappings, for dump writers (allocates).

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::ops::Range;

use super::entry::WalkError;
use super::walk::{Leaf, Limits, Visit, VisitControl, walk_range};
use crate::phys::PhysMemory;

/// Virtual pages mapped to contiguous physical memory with the same
/// permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Virtual start.
    pub va: u64,
    /// Guest-physical start.
    pub pa: u64,
    /// Length in bytes.
    pub len: u64,
    /// Effective write permission.
    pub writable: bool,
    /// Effective user permission.
    pub user: bool,
    /// No NX bit on the path.
    pub executable: bool,
}

/// What [`mappings`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mappings {
    /// The mappings in address order, coalesced into runs contiguous
    /// both virtually and physically.
    pub runs: Vec<Run>,
    /// Every page-table page read, each once, in the order read.
    pub tables: Vec<u64>,
    /// Why the walk ended early, if it did (`runs` and `tables` hold
    /// what was found until then).
    pub error: Option<WalkError>,
}

fn push(runs: &mut Vec<Run>, l: &Leaf) {
    let len = l.size.bytes();
    if let Some(last) = runs.last_mut()
        && last.va.wrapping_add(last.len) == l.va
        && last.pa.wrapping_add(last.len) == l.pa
        && (last.writable, last.user, last.executable) == (l.writable, l.user, l.executable)
    {
        last.len += len;
        return;
    }
    runs.push(Run {
        va: l.va,
        pa: l.pa,
        len,
        writable: l.writable,
        user: l.user,
        executable: l.executable,
    });
}

/// Every present mapping of `cr3` overlapping `range` (see
/// [`walk_range`]), as coalesced runs. Each table is read at most once:
/// a table reached again through another entry is not walked again,
/// so aliased mappings appear under their first address only.
pub fn mappings<M: PhysMemory + ?Sized>(
    mem: &M,
    cr3: u64,
    range: Range<u64>,
    limits: Limits,
) -> Mappings {
    mappings_with(mem, cr3, range, limits, |_| true)
}

/// [`mappings`] of only the leaves `keep` accepts (the others still
/// count towards `limits.max_leaves`).
pub fn mappings_with<M: PhysMemory + ?Sized>(
    mem: &M,
    cr3: u64,
    range: Range<u64>,
    limits: Limits,
    mut keep: impl FnMut(&Leaf) -> bool,
) -> Mappings {
    let mut seen = BTreeSet::new();
    let mut out = Mappings::default();
    let result = walk_range(mem, cr3, range, limits, |v| match v {
        Visit::Table { pa, .. } => {
            if seen.insert(pa) {
                out.tables.push(pa);
                VisitControl::Continue
            } else {
                VisitControl::Skip
            }
        }
        Visit::Leaf(l) => {
            if keep(&l) {
                push(&mut out.runs, &l);
            }
            VisitControl::Continue
        }
        Visit::Skipped { .. } => VisitControl::Continue,
    });
    out.error = result.err();
    out
}
