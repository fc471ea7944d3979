//! Page-table entries: their bits, the levels and page sizes, how an
//! entry decodes (a table, a leaf, or an error), and the walker's errors.

use core::fmt;

use crate::phys::{MemError, PhysMemory, check_range};

/// Physical-address bits of a page-table entry and of CR3 (51:12).
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
pub(crate) const PRESENT: u64 = 1;
pub(crate) const WRITABLE: u64 = 1 << 1;
pub(crate) const USER: u64 = 1 << 2;
/// Page size: a 1 GiB (PDPT) or 2 MiB (PD) leaf; reserved in a PML4 entry.
pub(crate) const PS: u64 = 1 << 7;
/// Bit 12 of a large-page entry is PAT, not an address bit.
pub(crate) const LARGE_PAT: u64 = 1 << 12;
pub(crate) const NX: u64 = 1 << 63;
pub(crate) const TABLE_BYTES: u64 = 4096;
pub(crate) const ENTRIES: u64 = 512;

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

    pub(crate) const fn shift(self) -> u32 {
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

    pub(crate) const fn depth(self) -> usize {
        match self {
            Level::Pml4 => 0,
            Level::Pdpt => 1,
            Level::Pd => 2,
            Level::Pt => 3,
        }
    }

    pub(crate) const fn below(self) -> Option<Level> {
        match self {
            Level::Pml4 => Some(Level::Pdpt),
            Level::Pdpt => Some(Level::Pd),
            Level::Pd => Some(Level::Pt),
            Level::Pt => None,
        }
    }

    pub(crate) const fn index(self, va: u64) -> u64 {
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
    /// The walk met more tables or leaves than its [`Limits`](super::Limits) allow.
    #[error("page-table walk exceeded its budget")]
    Budget,
    /// A range given to [`translate_range`](super::translate_range) is empty or wraps around.
    #[error("bad virtual range {va:#x}+{len:#x}")]
    BadRange {
        /// Start of the range.
        va: u64,
        /// Its length.
        len: u64,
    },
    /// [`translate_range`](super::translate_range): the page at `va` is not physically contiguous
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
pub(crate) const fn canonicalize(va: u64) -> u64 {
    (((va << 16) as i64) >> 16) as u64
}

/// Effective permissions so far down a path.
#[derive(Clone, Copy)]
pub(crate) struct Perms {
    pub(crate) writable: bool,
    pub(crate) user: bool,
    pub(crate) executable: bool,
}

impl Perms {
    pub(crate) const ALL: Perms = Perms {
        writable: true,
        user: true,
        executable: true,
    };

    pub(crate) const fn and(self, entry: u64) -> Perms {
        Perms {
            writable: self.writable && entry & WRITABLE != 0,
            user: self.user && entry & USER != 0,
            executable: self.executable && entry & NX == 0,
        }
    }
}

/// What a present entry means.
pub(crate) enum Entry {
    Table(u64),
    Page { frame: u64, size: PageSize },
}

/// Decodes a present entry of a table at `level`.
pub(crate) fn decode(level: Level, entry: u64) -> Result<Entry, WalkError> {
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
pub(crate) fn check_table<M: PhysMemory + ?Sized>(
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
