//! The state root the guest registers (`HC_REGISTER_ROOT`), as far as the
//! hypervisor is concerned: its [`RootHeader`]. What follows the header is
//! the guest OS's own state, which only OS-specific code reads (the
//! resurrection crate, through `lazarus-guestmem`'s state-root reader).
//!
//! The guest registers the root's guest-physical address once; the header
//! is still guest-controlled data, so it is re-checked on every read.

use lazarus_abi::hypercall::ABI_VERSION;
use lazarus_abi::hypercall::RootHeader;

use crate::memory::GuestRam;

/// Size of the header, the least a registration can declare.
pub const HEADER_SIZE: u64 = size_of::<RootHeader>() as u64;
/// The most a registration can declare: the root is read whole on a crash.
pub const MAX_ROOT_SIZE: u64 = 1 << 20;

pub use lazarus_guestmem::RootError;

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
            expected: 0,
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
            expected: u64::from(header.root_size),
        });
    }
    Ok(header)
}

/// Reads and checks the header of a root of `size` bytes at `gpa`
/// (`lazarus-guestmem`'s one state-root reader, header only).
pub fn read_header(mem: &GuestRam, gpa: u64, size: u64) -> Result<RootHeader, RootError> {
    lazarus_guestmem::read_header(mem, gpa, size)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::memory::{create_guest_ram, write_obj};
    use lazarus_abi::hypercall::ROOT_MAGIC;

    /// A root size the tests register.
    pub(crate) const ROOT_SIZE: u64 = 4096;

    /// Writes a valid root header at `gpa`.
    pub(crate) fn plant_root(mem: &GuestRam, gpa: u64) {
        let header = RootHeader {
            magic: ROOT_MAGIC,
            abi_version: ABI_VERSION,
            root_size: ROOT_SIZE as u32,
            heartbeat: 42,
            ..RootHeader::default()
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
            Err(RootError::WrongSize { expected: 7, .. })
        ));
    }
}
