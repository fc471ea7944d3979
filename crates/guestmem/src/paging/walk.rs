//! Walking every mapping of a virtual range, with the tables read.

use core::ops::Range;

use super::entry::*;
use crate::phys::{PhysMemory, check_range};

/// How much a range walk may do before it gives up with
/// [`WalkError::Budget`]: hostile tables (one table shared by every entry
/// of every level) could otherwise make it visit 512^3 tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Page-table pages read (the root included).
    pub max_tables: usize,
    /// Leaves reported.
    pub max_leaves: usize,
}

impl Limits {
    /// 65536 tables (256 MiB of page tables) and 4 Mi leaves (16 GiB of
    /// 4 KiB pages): far beyond any lazarus address space, small enough to
    /// finish quickly on garbage.
    pub const DEFAULT: Limits = Limits {
        max_tables: 1 << 16,
        max_leaves: 1 << 22,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// A present page mapping met by [`walk_range`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Virtual start of the page (it may begin before the walked range).
    pub va: u64,
    /// Guest-physical start of the page (wholly inside memory).
    pub pa: u64,
    /// Page size.
    pub size: PageSize,
    /// Effective write permission.
    pub writable: bool,
    /// Effective user permission.
    pub user: bool,
    /// No NX bit on the path.
    pub executable: bool,
}

/// One step of a [`walk_range`], handed to its visitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// A page-table page the walk is about to read (wholly inside memory,
    /// not its own ancestor). A crash snapshot keeps these frames.
    Table {
        /// Guest-physical address of the table.
        pa: u64,
        /// Its level.
        level: Level,
        /// First virtual address it maps.
        va: u64,
    },
    /// A present page overlapping the range.
    Leaf(Leaf),
    /// A present entry overlapping the range that the walk does not follow.
    Skipped {
        /// First virtual address the entry maps.
        va: u64,
        /// Level of the table holding the entry.
        level: Level,
        /// Why: outside memory, reserved bits, a cycle, unreadable.
        error: WalkError,
    },
}

/// What the visitor wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisitControl {
    /// Go on (and read the table, for [`Visit::Table`]).
    Continue,
    /// For [`Visit::Table`]: do not read this table (e.g. one already seen
    /// through another entry). Same as `Continue` otherwise.
    Skip,
    /// End the walk now; [`walk_range`] returns `Ok`.
    Stop,
}

/// How a walk ended early.
enum End {
    Stopped,
    Failed(WalkError),
}

struct Walker<'m, M: ?Sized, F> {
    mem: &'m M,
    range: Range<u64>,
    limits: Limits,
    tables: usize,
    leaves: usize,
    ancestors: [u64; 4],
    visit: F,
}

impl<M: PhysMemory + ?Sized, F: FnMut(Visit) -> VisitControl> Walker<'_, M, F> {
    fn call(&mut self, v: Visit) -> Result<VisitControl, End> {
        match (self.visit)(v) {
            VisitControl::Stop => Err(End::Stopped),
            c => Ok(c),
        }
    }

    fn skipped(&mut self, va: u64, level: Level, error: WalkError) -> Result<(), End> {
        self.call(Visit::Skipped { va, level, error }).map(|_| ())
    }

    /// Walks the table at `pa` (in memory, not its own ancestor) at
    /// `level`, mapping virtual addresses from `base`. Recursion depth is
    /// at most four, one frame per level.
    fn table(&mut self, pa: u64, level: Level, base: u64, perms: Perms) -> Result<(), End> {
        if self.tables >= self.limits.max_tables {
            return Err(End::Failed(WalkError::Budget));
        }
        if self.call(Visit::Table {
            pa,
            level,
            va: base,
        })? == VisitControl::Skip
        {
            return Ok(());
        }
        self.tables += 1;
        self.ancestors[level.depth()] = pa;
        let span = level.entry_span();
        for i in 0..ENTRIES {
            // PML4 entries 256.. map the upper half: sign-extend.
            let va = canonicalize(base.wrapping_add(i * span));
            // No overflow: `va` is aligned to `span` and canonical.
            let last = va + (span - 1);
            if va >= self.range.end || last < self.range.start {
                continue;
            }
            let entry = match self.mem.read_u64(pa + i * 8) {
                Ok(e) => e,
                Err(e) => return self.skipped(base, level, e.into()),
            };
            if entry & PRESENT == 0 {
                continue;
            }
            let perms = perms.and(entry);
            match decode(level, entry) {
                Err(error) => self.skipped(va, level, error)?,
                Ok(Entry::Page { frame, size }) => {
                    if check_range(self.mem.size(), frame, size.bytes()).is_err() {
                        self.skipped(va, level, WalkError::OutsideMemory { pa: frame })?;
                        continue;
                    }
                    if self.leaves >= self.limits.max_leaves {
                        return Err(End::Failed(WalkError::Budget));
                    }
                    self.leaves += 1;
                    self.call(Visit::Leaf(Leaf {
                        va,
                        pa: frame,
                        size,
                        writable: perms.writable,
                        user: perms.user,
                        executable: perms.executable,
                    }))?;
                }
                Ok(Entry::Table(next)) => {
                    // Always `Some`: a PT entry decodes to a page.
                    let Some(below) = level.below() else { continue };
                    match check_table(self.mem, next, &self.ancestors[..=level.depth()]) {
                        Ok(()) => self.table(next, below, va, perms)?,
                        Err(error) => self.skipped(va, level, error)?,
                    }
                }
            }
        }
        Ok(())
    }
}

/// Walks every present entry of the tables at `cr3` that maps part of
/// `range`, depth first in address order, telling `visit` about each table
/// it reads, each page it finds and each entry it cannot follow.
///
/// `range` is a set of virtual addresses; its bounds need not be canonical
/// (`0..0x8000_0000_0000` is the lower half, `0..u64::MAX` everything).
/// A table reached again through another entry is walked again (bounded
/// by `limits`); a visitor that only wants each table once answers
/// [`VisitControl::Skip`] for tables it has seen. Returns `Ok` when the
/// walk finished or the visitor stopped it, and an error if the root table
/// is not in memory or the walk exceeded `limits` (having reported
/// everything up to there).
pub fn walk_range<M, F>(
    mem: &M,
    cr3: u64,
    range: Range<u64>,
    limits: Limits,
    visit: F,
) -> Result<(), WalkError>
where
    M: PhysMemory + ?Sized,
    F: FnMut(Visit) -> VisitControl,
{
    let root = cr3 & ADDR_MASK;
    check_table(mem, root, &[])?;
    if range.is_empty() {
        return Ok(());
    }
    let mut w = Walker {
        mem,
        range,
        limits,
        tables: 0,
        leaves: 0,
        ancestors: [0; 4],
        visit,
    };
    match w.table(root, Level::Pml4, 0, Perms::ALL) {
        Ok(()) | Err(End::Stopped) => Ok(()),
        Err(End::Failed(e)) => Err(e),
    }
}
