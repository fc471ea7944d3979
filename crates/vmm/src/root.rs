//! Access to the kernel state root ([`KernelRoot`]) in guest memory.
//!
//! The guest registers the root's guest-physical address once; everything
//! read from there is still guest-controlled data, so the header is
//! re-checked on every read.

use lazarus_abi::root::{ABI_VERSION, KernelRoot, ROOT_MAGIC};
use vm_memory::{Bytes, GuestAddress};
use zerocopy::{FromZeros, IntoBytes};

use crate::memory::{GuestRam, ram_size, range_in_ram, read_obj};

/// Size of the root as this hypervisor was built.
pub const ROOT_SIZE: u64 = size_of::<KernelRoot>() as u64;

/// Why a root address or its contents are not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RootError {
    #[error("the kernel has not registered a state root")]
    NotRegistered,
    #[error("root address {0:#x} is not 8-byte aligned")]
    Unaligned(u64),
    #[error("root [{gpa:#x}, +{size:#x}) is not inside guest RAM")]
    OutsideRam { gpa: u64, size: u64 },
    #[error("root size {got} does not match the hypervisor's {expected}")]
    WrongSize { got: u64, expected: u64 },
    #[error("root ABI version {got} does not match the hypervisor's {expected}")]
    WrongVersion { got: u64, expected: u32 },
    #[error("root magic {0:#x} is wrong")]
    BadMagic(u64),
    #[error("out of host memory reading the root")]
    NoMemory,
    #[error("reading the root from guest memory failed")]
    Read,
}

/// The fixed header fields at the start of [`KernelRoot`].
#[derive(Clone, Copy, Debug, Default, zerocopy::FromBytes, zerocopy::IntoBytes)]
#[repr(C)]
struct RootHeader {
    magic: u64,
    abi_version: u32,
    root_size: u32,
}

/// Checks a root registration: the declared size and version, the address,
/// and the header the guest wrote there.
pub fn validate_root(mem: &GuestRam, gpa: u64, size: u64, version: u64) -> Result<(), RootError> {
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

pub(crate) fn check_header(mem: &GuestRam, gpa: u64) -> Result<(), RootError> {
    if !gpa.is_multiple_of(8) {
        return Err(RootError::Unaligned(gpa));
    }
    if !range_in_ram(ram_size(mem), gpa, ROOT_SIZE) {
        return Err(RootError::OutsideRam {
            gpa,
            size: ROOT_SIZE,
        });
    }
    let header: RootHeader = read_obj(mem, gpa).ok_or(RootError::Read)?;
    if header.magic != ROOT_MAGIC {
        return Err(RootError::BadMagic(header.magic));
    }
    if header.abi_version != ABI_VERSION {
        return Err(RootError::WrongVersion {
            got: u64::from(header.abi_version),
            expected: ABI_VERSION,
        });
    }
    if u64::from(header.root_size) != ROOT_SIZE {
        return Err(RootError::WrongSize {
            got: u64::from(header.root_size),
            expected: ROOT_SIZE,
        });
    }
    Ok(())
}

/// Copies the whole root out of guest memory, re-checking its header.
pub fn read_root(mem: &GuestRam, gpa: u64) -> Result<Box<KernelRoot>, RootError> {
    check_header(mem, gpa)?;
    let mut root = KernelRoot::new_box_zeroed().map_err(|_| RootError::NoMemory)?;
    mem.read_slice(root.as_mut_bytes(), GuestAddress(gpa))
        .map_err(|_| RootError::Read)?;
    Ok(root)
}

/// The kernel's crash record, read straight from the registered root.
pub fn read_crash_record(mem: &GuestRam, gpa: u64) -> Option<lazarus_abi::root::CrashRecord> {
    check_header(mem, gpa).ok()?;
    let at = gpa + std::mem::offset_of!(KernelRoot, crash) as u64;
    let mut rec = <lazarus_abi::root::CrashRecord as zerocopy::FromZeros>::new_zeroed();
    mem.read_slice(rec.as_mut_bytes(), GuestAddress(at)).ok()?;
    Some(rec)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::memory::{create_guest_ram, write_obj};

    /// Writes a valid root header at `gpa`.
    pub(crate) fn plant_root(mem: &GuestRam, gpa: u64) {
        let mut root = KernelRoot::new_box_zeroed().unwrap();
        root.magic = ROOT_MAGIC;
        root.abi_version = ABI_VERSION;
        root.root_size = ROOT_SIZE as u32;
        root.heartbeat = 42;
        write_obj(mem, gpa, &*root).unwrap();
    }

    #[test]
    fn header_checks() {
        let mem = create_guest_ram(16 << 20).unwrap();
        let v = u64::from(ABI_VERSION);
        plant_root(&mem, 0x10_0000);
        assert_eq!(validate_root(&mem, 0x10_0000, ROOT_SIZE, v), Ok(()));
        assert_eq!(read_root(&mem, 0x10_0000).unwrap().heartbeat, 42);
        assert!(matches!(
            validate_root(&mem, 0x10_0000, ROOT_SIZE + 8, v),
            Err(RootError::WrongSize { .. })
        ));
        assert!(matches!(
            validate_root(&mem, 0x10_0000, ROOT_SIZE, v + 1),
            Err(RootError::WrongVersion { .. })
        ));
        assert_eq!(
            validate_root(&mem, 0x10_0004, ROOT_SIZE, v),
            Err(RootError::Unaligned(0x10_0004))
        );
        assert!(matches!(
            validate_root(&mem, (16 << 20) - 8, ROOT_SIZE, v),
            Err(RootError::OutsideRam { .. })
        ));
        assert!(matches!(
            validate_root(&mem, u64::MAX - 7, ROOT_SIZE, v),
            Err(RootError::OutsideRam { .. })
        ));
        // No root written here: magic is zero.
        assert_eq!(
            validate_root(&mem, 0x40_0000, ROOT_SIZE, v),
            Err(RootError::BadMagic(0))
        );
        // Correct magic, wrong embedded version / size.
        plant_root(&mem, 0x40_0000);
        write_obj(&mem, 0x40_0008, &(ABI_VERSION + 1)).unwrap();
        assert!(matches!(
            read_root(&mem, 0x40_0000),
            Err(RootError::WrongVersion { .. })
        ));
        write_obj(&mem, 0x40_0008, &ABI_VERSION).unwrap();
        write_obj(&mem, 0x40_000c, &7u32).unwrap();
        assert!(matches!(
            read_root(&mem, 0x40_0000),
            Err(RootError::WrongSize { got: 7, .. })
        ));
    }
}
