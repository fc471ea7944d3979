//! The x86-64 4-level page-table walker.
//!
//! Every entry is guest data, possibly from a kernel that just crashed: it
//! may point past memory, set reserved bits, point back at a table above
//! it, or share one table among many entries. The walker follows what the
//! CPU would, reports everything else as a typed [`WalkError`] instead of
//! following it, and bounds its work ([`Limits`]) without allocating.
//!
//! Long mode with 4-level paging and EFER.NXE is assumed (what lazarus
//! runs): 48-bit canonical virtual addresses, physical addresses in entry
//! bits 51:12, NX in bit 63. Bits 62:52 and 11:9 are ignored, as the CPU
//! ignores them for addressing.

use core::fmt;
use core::ops::Range;

use crate::phys::{MemError, PhysMemory, check_range};

/// Physical-address bits of a page-table entry and of CR3 (51:12).
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
/// Page size: a 1 GiB (PDPT) or 2 MiB (PD) leaf; reserved in a PML4 entry.
const PS: u64 = 1 << 7;
/// Bit 12 of a large-page entry is PAT, not an address bit.
const LARGE_PAT: u64 = 1 << 12;
const NX: u64 = 1 << 63;
const TABLE_BYTES: u64 = 4096;
const ENTRIES: u64 = 512;

/// A level of the 4-level page-table tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The top table, at CR3.
    Pml4,
    /// Page-directory-pointer table (1 GiB entries).
    Pdpt,
    /// Page directory (2 MiB entries).
    Pd,
    /// Page table (4 KiB entries).
    Pt,
}

impl Level {
    /// The levels from the top.
    pub const ALL: [Level; 4] = [Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt];

    const fn shift(self) -> u32 {
        match self {
            Level::Pml4 => 39,
            Level::Pdpt => 30,
            Level::Pd => 21,
            Level::Pt => 12,
        }
    }

    /// Bytes of virtual address space one entry of a table at this level
    /// maps.
    pub const fn entry_span(self) -> u64 {
        1 << self.shift()
    }

    const fn depth(self) -> usize {
        match self {
            Level::Pml4 => 0,
            Level::Pdpt => 1,
            Level::Pd => 2,
            Level::Pt => 3,
        }
    }

    const fn below(self) -> Option<Level> {
        match self {
            Level::Pml4 => Some(Level::Pdpt),
            Level::Pdpt => Some(Level::Pd),
            Level::Pd => Some(Level::Pt),
            Level::Pt => None,
        }
    }

    const fn index(self, va: u64) -> u64 {
        (va >> self.shift()) & (ENTRIES - 1)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Pml4 => "PML4",
            Level::Pdpt => "PDPT",
            Level::Pd => "PD",
            Level::Pt => "PT",
        })
    }
}

/// Size of a mapped page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB, mapped by a PT entry.
    Size4K,
    /// 2 MiB, a PD entry with PS set.
    Size2M,
    /// 1 GiB, a PDPT entry with PS set.
    Size1G,
}

impl PageSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
            PageSize::Size1G => 1 << 30,
        }
    }
}

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

/// Why a virtual address does not translate, or why a walk ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// Bits 63:47 of the address are not all equal.
    #[error("virtual address {va:#x} is not canonical")]
    NonCanonical {
        /// The address.
        va: u64,
    },
    /// The entry at this level has its present bit clear.
    #[error("not mapped: the {level} entry is not present")]
    NotPresent {
        /// Level of the table holding the entry.
        level: Level,
    },
    /// A table, page or byte the tables lead to is outside memory.
    #[error("page tables point at {pa:#x}, outside guest memory")]
    OutsideMemory {
        /// The physical address (of the table, the page or the byte).
        pa: u64,
    },
    /// Memory that should be there could not be read (a dump's I/O error,
    /// a snapshot without that frame).
    #[error("guest memory at {pa:#x} could not be read")]
    Unreadable {
        /// The physical address.
        pa: u64,
    },
    /// A reserved bit is set: PS in a PML4 entry, or frame bits below the
    /// page size in a large-page entry. The CPU would fault.
    #[error("reserved bits set in {level} entry {entry:#x}")]
    ReservedBit {
        /// Level of the table holding the entry.
        level: Level,
        /// The entry.
        entry: u64,
    },
    /// An entry points at a table above it on the same path (a recursive
    /// mapping). Lazarus never builds one, so it is corruption; refusing it
    /// also bounds the walk.
    #[error("page table at {table:#x} is its own ancestor")]
    Cycle {
        /// The table.
        table: u64,
    },
    /// The walk met more tables or leaves than its [`Limits`] allow.
    #[error("page-table walk exceeded its budget")]
    Budget,
    /// A range given to [`translate_range`] is empty or wraps around.
    #[error("bad virtual range {va:#x}+{len:#x}")]
    BadRange {
        /// Start of the range.
        va: u64,
        /// Its length.
        len: u64,
    },
    /// [`translate_range`]: the page at `va` is not physically contiguous
    /// with the start of the range.
    #[error("virtual range is not physically contiguous at {va:#x}")]
    Discontiguous {
        /// Start of the first page that breaks contiguity.
        va: u64,
    },
}

impl From<MemError> for WalkError {
    fn from(e: MemError) -> Self {
        match e {
            MemError::OutsideMemory { pa, .. } => WalkError::OutsideMemory { pa },
            MemError::Unreadable { pa } => WalkError::Unreadable { pa },
        }
    }
}

/// Whether `va` is canonical for 48-bit virtual addresses (bits 63:47
/// all equal).
pub const fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_ffff
}

/// Sign-extends bit 47.
const fn canonicalize(va: u64) -> u64 {
    (((va << 16) as i64) >> 16) as u64
}

/// Effective permissions so far down a path.
#[derive(Clone, Copy)]
struct Perms {
    writable: bool,
    user: bool,
    executable: bool,
}

impl Perms {
    const ALL: Perms = Perms {
        writable: true,
        user: true,
        executable: true,
    };

    const fn and(self, entry: u64) -> Perms {
        Perms {
            writable: self.writable && entry & WRITABLE != 0,
            user: self.user && entry & USER != 0,
            executable: self.executable && entry & NX == 0,
        }
    }
}

/// What a present entry means.
enum Entry {
    Table(u64),
    Page { frame: u64, size: PageSize },
}

/// Decodes a present entry of a table at `level`.
fn decode(level: Level, entry: u64) -> Result<Entry, WalkError> {
    let large = entry & PS != 0;
    let size = match level {
        Level::Pt => PageSize::Size4K,
        Level::Pml4 if large => return Err(WalkError::ReservedBit { level, entry }),
        Level::Pdpt if large => PageSize::Size1G,
        Level::Pd if large => PageSize::Size2M,
        _ => return Ok(Entry::Table(entry & ADDR_MASK)),
    };
    let low = size.bytes() - 1;
    if size != PageSize::Size4K && entry & ADDR_MASK & low & !LARGE_PAT != 0 {
        return Err(WalkError::ReservedBit { level, entry });
    }
    Ok(Entry::Page {
        frame: entry & ADDR_MASK & !low,
        size,
    })
}

/// Checks that a table lies in memory and is not one of `ancestors`.
fn check_table<M: PhysMemory + ?Sized>(
    mem: &M,
    table: u64,
    ancestors: &[u64],
) -> Result<(), WalkError> {
    check_range(mem.size(), table, TABLE_BYTES)
        .map_err(|_| WalkError::OutsideMemory { pa: table })?;
    if ancestors.contains(&table) {
        return Err(WalkError::Cycle { table });
    }
    Ok(())
}

/// Translates `va` through the tables at `cr3` (its low 12 bits, PCID or
/// PCD/PWT, are ignored) as the CPU would, with 4 KiB, 2 MiB and 1 GiB
/// pages, except that a table that is its own ancestor is refused as a
/// [`WalkError::Cycle`] (as [`walk_range`] refuses it). The translated
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

#[cfg(feature = "alloc")]
mod runs {
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;
    use core::ops::Range;

    use super::{Leaf, Limits, Visit, VisitControl, WalkError, walk_range};
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
}

#[cfg(feature = "alloc")]
pub use runs::{Mappings, Run, mappings, mappings_with};

#[cfg(test)]
mod tests;
