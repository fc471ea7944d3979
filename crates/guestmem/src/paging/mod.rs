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
//!
//! `entry` decodes entries, `translate` follows one address, `walk` a
//! whole range, and `runs` coalesces what a walk finds (with `alloc`).

mod entry;
#[cfg(feature = "alloc")]
mod runs;
mod translate;
mod walk;

pub use entry::{ADDR_MASK, Level, PageSize, WalkError, is_canonical};
#[cfg(feature = "alloc")]
pub use runs::{Mappings, Run, mappings, mappings_with};
pub use translate::{Translation, translate, translate_range};
pub use walk::{Leaf, Limits, Visit, VisitControl, walk_range};

#[cfg(test)]
mod tests;
