//! The state root the guest registers (`HC_REGISTER_ROOT`), as far as the
//! hypervisor is concerned: its [`RootHeader`]. What follows the header is
//! the guest OS's own state, which only OS-specific code reads (the
//! resurrection crate, through `lazarus-guestmem`'s state-root reader).
//!
//! The guest registers the root's guest-physical address once; the header
//! is still guest-controlled data, so it is re-checked on every read.

use lazarus_abi::hypercall::RootHeader;
use lazarus_abi::root::{ABI_VERSION, ROOT_MAGIC};

use crate::memory::{GuestRam, ram_size, range_in_ram, read_obj};

/// Size of the header, the least a registration can declare.
pub const HEADER_SIZE: u64 = size_of::<RootHeader>() as u64;
/// The most a registration can declare: the root is read whole on a crash.
pub const MAX_ROOT_SIZE: u64 = 1 << 20;

/// Why a root registration or the header it points at is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RootError {
    /// Nothing was registered yet.
    #[error("the guest has not registered a state root")]
    NotRegistered,
    /// The address is not 8-byte aligned.
    #[error("root address {0:#x} is not 8-byte aligned")]
    Unaligned(u64),
    /// The root does not lie inside guest RAM.
    #[error("root [{gpa:#x}, +{size:#x}) is not inside guest RAM")]
    OutsideRam {
        /// Where it was said to be.
        gpa: u64,
        /// Its declared size.
        size: u64,
    },
    /// The declared size is too small, too large, or not the header's.
    #[error("root size {got} is not acceptable (the header says {header})")]
    WrongSize {
        /// Declared by the registration.
        got: u64,
        /// Written in the header (0 when not read yet).
        header: u64,
    },
    /// The guest speaks another version of the interface.
    #[error("root ABI version {got} does not match the hypervisor's {expected}")]
    WrongVersion {
        /// The guest's.
        got: u64,
        /// The hypervisor's.
        expected: u32,
    },
    /// The header's magic is wrong: nothing was written there.
    #[error("root magic {0:#x} is wrong")]
    BadMagic(u64),
    /// Guest memory could not be read.
    #[error("reading the root header from guest memory failed")]
    Read,
}

/// Checks a root registration: the declared size and version, the address,
/// and the header the guest wrote there. Returns the header.
pub fn validate_root(
    mem: &GuestRam,
    gpa: u64,
    size: u64,
    version: u64,
) -> Result<RootHeader, RootError> {
    if !(HEADER_SIZE..=MAX_ROOT_SIZE).contains(&size) {
        return Err(RootError::WrongSize {
            got: size,
            header: 0,
        });
    }
    if version != u64::from(ABI_VERSION) {
        return Err(RootError::WrongVersion {
            got: version,
            expected: ABI_VERSION,
        });
    }
    let header = read_header(mem, gpa, size)?;
    if u64::from(header.root_size) != size {
        return Err(RootError::WrongSize {
            got: size,
            header: u64::from(header.root_size),
        });
    }
    Ok(header)
}

/// Reads and checks the header of a root of `size` bytes at `gpa`.
pub fn read_header(mem: &GuestRam, gpa: u64, size: u64) -> Result<RootHeader, RootError> {
    if !gpa.is_multiple_of(8) {
        return Err(RootError::Unaligned(gpa));
    }
    if !range_in_ram(ram_size(mem), gpa, size.max(HEADER_SIZE)) {
        return Err(RootError::OutsideRam { gpa, size });
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
    Ok(header)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::memory::{create_guest_ram, write_obj};

    /// A root size the tests register.
    pub(crate) const ROOT_SIZE: u64 = 4096;

    /// Writes a valid root header at `gpa`.
    pub(crate) fn plant_root(mem: &GuestRam, gpa: u64) {
        let header = RootHeader {
            magic: ROOT_MAGIC,
            abi_version: ABI_VERSION,
            root_size: ROOT_SIZE as u32,
            heartbeat: 42,
        };
        write_obj(mem, gpa, &header).unwrap();
    }

    #[test]
    fn header_checks() {
        let mem = create_guest_ram(16 << 20).unwrap();
        let v = u64::from(ABI_VERSION);
        plant_root(&mem, 0x10_0000);
        let h = validate_root(&mem, 0x10_0000, ROOT_SIZE, v).unwrap();
        assert_eq!(h.heartbeat, 42);
        assert!(matches!(
            validate_root(&mem, 0x10_0000, ROOT_SIZE + 8, v),
            Err(RootError::WrongSize { .. })
        ));
        assert!(matches!(
            validate_root(&mem, 0x10_0000, HEADER_SIZE - 1, v),
            Err(RootError::WrongSize { .. })
        ));
        assert!(matches!(
            validate_root(&mem, 0x10_0000, MAX_ROOT_SIZE + 8, v),
            Err(RootError::WrongSize { .. })
        ));
        assert!(matches!(
            validate_root(&mem, 0x10_0000, ROOT_SIZE, v + 1),
            Err(RootError::WrongVersion { .. })
        ));
        assert_eq!(
            validate_root(&mem, 0x10_0004, ROOT_SIZE, v).err(),
            Some(RootError::Unaligned(0x10_0004))
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
            validate_root(&mem, 0x40_0000, ROOT_SIZE, v).err(),
            Some(RootError::BadMagic(0))
        );
        // Correct magic, wrong embedded version / size.
        plant_root(&mem, 0x40_0000);
        write_obj(&mem, 0x40_0008, &(ABI_VERSION + 1)).unwrap();
        assert!(matches!(
            read_header(&mem, 0x40_0000, ROOT_SIZE),
            Err(RootError::WrongVersion { .. })
        ));
        write_obj(&mem, 0x40_0008, &ABI_VERSION).unwrap();
        write_obj(&mem, 0x40_000c, &7u32).unwrap();
        assert!(matches!(
            validate_root(&mem, 0x40_0000, ROOT_SIZE, v),
            Err(RootError::WrongSize { header: 7, .. })
        ));
    }
}
