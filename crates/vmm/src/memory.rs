//! Guest RAM: one anonymous mapping covering guest-physical `[0, size)`.
//!
//! All guest-controlled addresses are checked here with overflow-safe
//! arithmetic before any access, on top of vm-memory's own bounds checks.

use lazarus_abi::layout::{LARGE_PAGE_SIZE, MAX_MEMORY, MIN_MEMORY};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::error::{Error, Result};

/// The guest's physical memory.
pub type GuestRam = vm_memory::GuestMemoryMmap<()>;

/// Checks that `size` is a usable guest RAM size.
pub fn validate_mem_size(size: u64) -> Result<()> {
    let mib = |b: u64| b / (1024 * 1024);
    let reason = if size < MIN_MEMORY {
        format!("at least {} MiB are needed", mib(MIN_MEMORY))
    } else if size > MAX_MEMORY {
        format!("at most {} MiB are supported", mib(MAX_MEMORY))
    } else if !size.is_multiple_of(LARGE_PAGE_SIZE) {
        "must be a multiple of 2 MiB".to_string()
    } else {
        return Ok(());
    };
    Err(Error::InvalidMemorySize { size, reason })
}

/// Allocates guest RAM of `size` bytes at guest-physical 0.
pub fn create_guest_ram(size: u64) -> Result<GuestRam> {
    validate_mem_size(size)?;
    let len = usize::try_from(size).map_err(|_| Error::InvalidMemorySize {
        size,
        reason: "does not fit the host address space".to_string(),
    })?;
    GuestRam::from_ranges(&[(GuestAddress(0), len)])
        .map_err(|e| Error::GuestMemory(format!("cannot allocate {size} bytes: {e}")))
}

/// Size of guest RAM in bytes.
pub fn ram_size(mem: &GuestRam) -> u64 {
    // RAM is one region starting at 0, so its size is one past the last
    // address (no region means no RAM).
    if mem.num_regions() == 0 {
        0
    } else {
        mem.last_addr().0.saturating_add(1)
    }
}

/// Whether `[gpa, gpa + len)` lies entirely inside RAM (no overflow).
pub fn range_in_ram(mem_size: u64, gpa: u64, len: u64) -> bool {
    match gpa.checked_add(len) {
        Some(end) => end <= mem_size,
        None => false,
    }
}

/// Reads a plain-data object from guest memory after a range check.
pub fn read_obj<T: FromBytes + IntoBytes>(mem: &GuestRam, gpa: u64) -> Option<T> {
    let len = u64::try_from(size_of::<T>()).ok()?;
    if !range_in_ram(ram_size(mem), gpa, len) {
        return None;
    }
    let mut value = T::new_zeroed();
    mem.read_slice(value.as_mut_bytes(), GuestAddress(gpa))
        .ok()?;
    Some(value)
}

/// Reads `len` bytes from guest memory after a range check.
pub fn read_bytes(mem: &GuestRam, gpa: u64, len: u64) -> Option<Vec<u8>> {
    if !range_in_ram(ram_size(mem), gpa, len) {
        return None;
    }
    let mut buf = vec![0u8; usize::try_from(len).ok()?];
    mem.read_slice(&mut buf, GuestAddress(gpa)).ok()?;
    Some(buf)
}

/// Writes a plain-data object to guest memory after a range check.
pub fn write_obj<T: IntoBytes + Immutable>(mem: &GuestRam, gpa: u64, value: &T) -> Result<()> {
    write_bytes(mem, gpa, value.as_bytes())
}

/// Writes bytes to guest memory after a range check.
pub fn write_bytes(mem: &GuestRam, gpa: u64, data: &[u8]) -> Result<()> {
    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
    if !range_in_ram(ram_size(mem), gpa, len) {
        return Err(Error::GuestMemory(format!(
            "write of {len} bytes at {gpa:#x} is outside guest RAM"
        )));
    }
    mem.write_slice(data, GuestAddress(gpa))
        .map_err(|e| Error::GuestMemory(format!("write at {gpa:#x}: {e}")))
}

/// All of guest RAM as one host byte slice, to copy it out at native speed
/// (crash snapshots, dumps); `None` if RAM is not one mapping from 0.
///
/// # Safety
///
/// Nothing may write guest RAM while the slice lives: no vCPU of the VM
/// may run (the guest is stopped, or gone for good).
pub unsafe fn ram_bytes(mem: &GuestRam) -> Option<&[u8]> {
    let size = usize::try_from(ram_size(mem)).ok()?;
    let host = mem.get_host_address(GuestAddress(0)).ok()?;
    mem.check_range(GuestAddress(0), size).then_some(())?;
    // SAFETY: [0, size) is one mapped region of `mem` (checked), kept
    // alive by the borrow; the caller guarantees no one writes it.
    Some(unsafe { std::slice::from_raw_parts(host, size) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn memory_size_limits() {
        assert!(validate_mem_size(16 * MIB).is_ok());
        assert!(validate_mem_size(128 * MIB).is_ok());
        assert!(validate_mem_size(MAX_MEMORY).is_ok());
        for bad in [
            0,
            4 * MIB,
            15 * MIB,
            17 * MIB,
            MAX_MEMORY + 2 * MIB,
            u64::MAX,
        ] {
            assert!(
                matches!(validate_mem_size(bad), Err(Error::InvalidMemorySize { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn ranges_are_overflow_safe() {
        assert!(range_in_ram(100, 0, 100));
        assert!(range_in_ram(100, 100, 0));
        assert!(!range_in_ram(100, 99, 2));
        assert!(!range_in_ram(100, 101, 0));
        assert!(!range_in_ram(100, u64::MAX, 2));
        assert!(!range_in_ram(u64::MAX, u64::MAX - 1, 2));
    }

    #[test]
    fn guest_ram_round_trip() {
        let mem = create_guest_ram(16 * MIB).unwrap();
        assert_eq!(ram_size(&mem), 16 * MIB);
        write_obj(&mem, 0x1000, &0x1122_3344_5566_7788u64).unwrap();
        assert_eq!(read_obj::<u64>(&mem, 0x1000), Some(0x1122_3344_5566_7788));
        assert_eq!(read_obj::<u64>(&mem, 16 * MIB - 4), None);
        assert_eq!(read_obj::<u64>(&mem, u64::MAX - 3), None);
        assert!(read_bytes(&mem, 16 * MIB, 1).is_none());
        assert!(write_bytes(&mem, 16 * MIB - 1, &[1, 2]).is_err());
    }
}
