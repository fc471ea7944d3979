//! The kernel's state root ([`KernelRoot`]) in guest memory.
//!
//! The kernel registers the root's guest-physical address once; what is
//! there is still guest data, and after a crash possibly garbage, so every
//! read re-checks the address and the header (magic, ABI version, size)
//! before trusting the layout.

use core::mem::offset_of;

use lazarus_abi::root::{ABI_VERSION, CrashRecord, KernelRoot, ROOT_MAGIC, RootHeader};
use zerocopy::{FromBytes, IntoBytes};

use crate::phys::{MemError, PhysMemory, check_range, read_obj};

/// Size of the root as this crate was built.
pub const ROOT_SIZE: u64 = size_of::<KernelRoot>() as u64;

/// Why a root address or its contents are not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    /// The root address is 0: the kernel never registered one.
    #[error("the kernel has not registered a state root")]
    NotRegistered,
    /// The address is not 8-byte aligned.
    #[error("root address {0:#x} is not 8-byte aligned")]
    Unaligned(u64),
    /// `[gpa, gpa + size)` is not inside guest memory.
    #[error("root [{gpa:#x}, +{size:#x}) is not inside guest RAM")]
    OutsideRam {
        /// The root address.
        gpa: u64,
        /// The size checked.
        size: u64,
    },
    /// The declared or embedded size is not [`ROOT_SIZE`].
    #[error("root size {got} does not match the expected {expected}")]
    WrongSize {
        /// The size found.
        got: u64,
        /// [`ROOT_SIZE`].
        expected: u64,
    },
    /// The declared or embedded ABI version is not [`ABI_VERSION`].
    #[error("root ABI version {got} does not match the expected {expected}")]
    WrongVersion {
        /// The version found.
        got: u64,
        /// [`ABI_VERSION`].
        expected: u32,
    },
    /// The magic is not [`ROOT_MAGIC`]: not a root, or overwritten.
    #[error("bad magic {0:#x} (not a kernel state root)")]
    BadMagic(u64),
    /// No host memory for a copy of the root.
    #[error("out of host memory reading the root")]
    NoMemory,
    /// Guest memory inside RAM could not be read.
    #[error("reading the root from guest memory failed")]
    Read,
    /// [`read_root_field`]: the field does not lie inside the root.
    #[error("field [{offset:#x}, +{size:#x}) is not inside the root")]
    NotAField {
        /// Offset asked for.
        offset: u64,
        /// Size of the field type.
        size: u64,
    },
}

/// A failed read of the root at `gpa` (after its header was checked, so
/// only an inconsistent [`PhysMemory`] reports it outside memory).
fn read_err(gpa: u64) -> impl Fn(MemError) -> RootError {
    move |e| match e {
        MemError::OutsideMemory { .. } => RootError::OutsideRam {
            gpa,
            size: ROOT_SIZE,
        },
        MemError::Unreadable { .. } => RootError::Read,
    }
}

/// Checks a root registration: the size and version the kernel declared
/// match this build's, and the address holds a valid header.
pub fn validate_root<M: PhysMemory + ?Sized>(
    mem: &M,
    gpa: u64,
    size: u64,
    version: u64,
) -> Result<(), RootError> {
    if size != ROOT_SIZE {
        return Err(RootError::WrongSize {
            got: size,
            expected: ROOT_SIZE,
        });
    }
    if version != u64::from(ABI_VERSION) {
        return Err(RootError::WrongVersion {
            got: version,
            expected: ABI_VERSION,
        });
    }
    check_header(mem, gpa)
}

/// Checks that a root at `gpa` may be read: registered (not 0), 8-byte
/// aligned, wholly inside memory, with this build's magic, ABI version and
/// size in its header.
pub fn check_root_header<M: PhysMemory + ?Sized>(mem: &M, gpa: u64) -> Result<(), RootError> {
    if gpa == 0 {
        return Err(RootError::NotRegistered);
    }
    check_header(mem, gpa)
}

/// Reads the header of a root said to be `size` bytes at `gpa`: aligned,
/// wholly inside memory, with this build's magic and ABI version. The
/// hypervisor, which knows nothing past the header, checks registrations
/// with this; readers of the whole root use [`check_root_header`].
pub fn read_header<M: PhysMemory + ?Sized>(
    mem: &M,
    gpa: u64,
    size: u64,
) -> Result<RootHeader, RootError> {
    if !gpa.is_multiple_of(8) {
        return Err(RootError::Unaligned(gpa));
    }
    let span = size.max(size_of::<RootHeader>() as u64);
    check_range(mem.size(), gpa, span).map_err(|_| RootError::OutsideRam { gpa, size })?;
    let header: RootHeader = read_obj(mem, gpa).map_err(|_| RootError::Read)?;
    if header.magic != ROOT_MAGIC {
        return Err(RootError::BadMagic(header.magic));
    }
    if header.abi_version != ABI_VERSION {
        return Err(RootError::WrongVersion {
            got: u64::from(header.abi_version),
            expected: ABI_VERSION,
        });
    }
    Ok(header)
}

fn check_header<M: PhysMemory + ?Sized>(mem: &M, gpa: u64) -> Result<(), RootError> {
    let header = read_header(mem, gpa, ROOT_SIZE)?;
    if u64::from(header.root_size) != ROOT_SIZE {
        return Err(RootError::WrongSize {
            got: u64::from(header.root_size),
            expected: ROOT_SIZE,
        });
    }
    Ok(())
}

/// Copies the checked root at `gpa` into `root` (no allocation; the root
/// is a few hundred KiB, so `root` should not live on a small stack).
pub fn read_root_into<M: PhysMemory + ?Sized>(
    mem: &M,
    gpa: u64,
    root: &mut KernelRoot,
) -> Result<(), RootError> {
    check_root_header(mem, gpa)?;
    mem.read(gpa, root.as_mut_bytes()).map_err(read_err(gpa))
}

/// Copies the checked root at `gpa` into a new zeroed heap allocation.
#[cfg(feature = "alloc")]
pub fn read_root<M: PhysMemory + ?Sized>(
    mem: &M,
    gpa: u64,
) -> Result<alloc::boxed::Box<KernelRoot>, RootError> {
    use zerocopy::FromZeros;
    check_root_header(mem, gpa)?;
    let mut root = KernelRoot::new_box_zeroed().map_err(|_| RootError::NoMemory)?;
    mem.read(gpa, root.as_mut_bytes()).map_err(read_err(gpa))?;
    Ok(root)
}

/// Reads one field at `offset` (e.g. `offset_of!(KernelRoot, crash)`) of
/// the checked root at `gpa`, without copying the rest of the root.
pub fn read_root_field<T: FromBytes + IntoBytes, M: PhysMemory + ?Sized>(
    mem: &M,
    gpa: u64,
    offset: usize,
) -> Result<T, RootError> {
    let offset = offset as u64;
    let size = size_of::<T>() as u64;
    if offset.checked_add(size).is_none_or(|end| end > ROOT_SIZE) {
        return Err(RootError::NotAField { offset, size });
    }
    check_root_header(mem, gpa)?;
    // No overflow: the root is inside memory and the field inside it.
    read_obj(mem, gpa + offset).map_err(read_err(gpa))
}

/// The kernel's crash record, read straight from the checked root.
pub fn read_crash_record<M: PhysMemory + ?Sized>(
    mem: &M,
    gpa: u64,
) -> Result<CrashRecord, RootError> {
    read_root_field(mem, gpa, offset_of!(KernelRoot, crash))
}

#[cfg(test)]
mod tests;
