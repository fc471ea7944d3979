//! Guest memory as lazarus's tools see it: one physical-memory trait, one
//! x86-64 page-table walker and one reader of the kernel's state root.
//!
//! The hypervisor's RAM, a crash dump and the repair program's window onto
//! a crashed guest all hold the same bytes, and everything in them is
//! guest-controlled: page-table entries may point anywhere, tables may
//! point back at themselves, the root may be garbage. Having one walker
//! and one root check means one place where that is handled right.
//!
//! - [`PhysMemory`] is guest-physical memory `[0, size)`; implemented here
//!   for a RAM image (`[u8]`) and, with the `vm-memory` feature, for
//!   `vm_memory::GuestMemoryMmap<()>`.
//! - [`translate`], [`translate_range`] and [`walk_range`] walk 4-level
//!   page tables (4 KiB, 2 MiB and 1 GiB pages); with `alloc`,
//!   [`mappings`] collects a range's mappings as coalesced runs.
//! - [`check_root_header`], [`validate_root`], [`read_root_into`],
//!   [`read_root_field`] (and with `alloc`, [`read_root`]) read the
//!   [`KernelRoot`](lazarus_abi::root::KernelRoot) after checking its
//!   address and header.
//!
//! The crate is `no_std` (the repair program runs in the guest without an
//! allocator) and never panics on guest data.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

mod paging;
mod phys;
mod root;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;

pub use paging::{
    ADDR_MASK, Leaf, Level, Limits, PageSize, Translation, Visit, VisitControl, WalkError,
    is_canonical, translate, translate_range, walk_range,
};
#[cfg(feature = "alloc")]
pub use paging::{Mappings, Run, mappings, mappings_with};
pub use phys::{MemError, PhysMemory, check_range, read_obj};
#[cfg(feature = "alloc")]
pub use root::read_root;
pub use root::{
    ROOT_SIZE, RootError, check_root_header, read_crash_record, read_header, read_root_field,
    read_root_into, validate_root,
};
