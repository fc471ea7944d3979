//! Guest-physical memory: the one trait every walker and reader uses.

use zerocopy::{FromBytes, IntoBytes};

/// Why guest-physical memory could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// The range is not inside `[0, size)` (or its end overflows).
    #[error("[{pa:#x}, +{len:#x}) is not inside guest memory")]
    OutsideMemory {
        /// Start of the range.
        pa: u64,
        /// Its length in bytes.
        len: u64,
    },
    /// The range is inside memory but the backing store could not be read
    /// (an I/O error on a dump file, a hole between memory regions).
    #[error("guest memory at {pa:#x} could not be read")]
    Unreadable {
        /// Start of the failed read.
        pa: u64,
    },
}

/// Read access to guest-physical memory `[0, size)`.
///
/// Implemented for a RAM image from guest-physical 0 (`[u8]`), for the
/// hypervisor's `GuestMemoryMmap<()>` (feature `vm-memory`), and outside
/// this crate for a dump file, the repair program's RAM window and crash
/// snapshots. Implementations must fail (never panic) for any range not
/// inside `[0, size)`; [`check_range`] does that check without overflow.
pub trait PhysMemory {
    /// Bytes of memory from guest-physical 0.
    fn size(&self) -> u64;

    /// Fills `buf` from guest-physical `pa`.
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError>;

    /// The little-endian quadword at `pa` (a page-table entry).
    fn read_u64(&self, pa: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Checks that `[pa, pa + len)` lies inside memory of `size` bytes, with
/// no overflow however large `pa` and `len` are.
pub fn check_range(size: u64, pa: u64, len: u64) -> Result<(), MemError> {
    match pa.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(MemError::OutsideMemory { pa, len }),
    }
}

/// Reads a plain-data value at `pa` (any bit pattern is a valid `T`).
pub fn read_obj<T: FromBytes + IntoBytes, M: PhysMemory + ?Sized>(
    mem: &M,
    pa: u64,
) -> Result<T, MemError> {
    let mut value = T::new_zeroed();
    let buf = value.as_mut_bytes();
    check_range(mem.size(), pa, buf.len() as u64)?;
    mem.read(pa, buf)?;
    Ok(value)
}

/// A RAM image: byte `i` is guest-physical address `i`.
impl PhysMemory for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let outside = MemError::OutsideMemory {
            pa,
            len: buf.len() as u64,
        };
        let start = usize::try_from(pa).map_err(|_| outside)?;
        let end = start.checked_add(buf.len()).ok_or(outside)?;
        buf.copy_from_slice(self.get(start..end).ok_or(outside)?);
        Ok(())
    }
}

/// The hypervisor's guest RAM: one region from guest-physical 0, so its
/// size is one past the last address. Holes between regions (which
/// lazarus does not make) read as [`MemError::Unreadable`].
#[cfg(feature = "vm-memory")]
impl PhysMemory for vm_memory::GuestMemoryMmap<()> {
    fn size(&self) -> u64 {
        use vm_memory::GuestMemoryBackend;
        if self.num_regions() == 0 {
            0
        } else {
            self.last_addr().0.saturating_add(1)
        }
    }

    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        check_range(self.size(), pa, buf.len() as u64)?;
        vm_memory::Bytes::read_slice(self, buf, vm_memory::GuestAddress(pa))
            .map_err(|_| MemError::Unreadable { pa })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_bounds() {
        let ram: std::vec::Vec<u8> = (0..64u8).collect();
        let mem = &ram[..];
        assert_eq!(mem.size(), 64);
        assert_eq!(
            mem.read_u64(56),
            Ok(u64::from_le_bytes([56, 57, 58, 59, 60, 61, 62, 63]))
        );
        assert!(mem.read_u64(57).is_err());
        assert!(mem.read_u64(u64::MAX - 3).is_err());
        assert!(mem.read_u64(u64::MAX).is_err());
        let mut empty = [0u8; 0];
        assert_eq!(mem.read(64, &mut empty), Ok(()));
        assert!(mem.read(65, &mut empty).is_err());
        assert_eq!(read_obj::<u32, _>(mem, 4), Ok(0x0706_0504));
        assert!(read_obj::<[u64; 9], _>(mem, 0).is_err());
    }

    #[test]
    fn range_checks_do_not_overflow() {
        assert_eq!(check_range(100, 0, 100), Ok(()));
        assert_eq!(check_range(100, 100, 0), Ok(()));
        assert!(check_range(100, 100, 1).is_err());
        assert!(check_range(100, 1, 100).is_err());
        assert!(check_range(u64::MAX, u64::MAX, 1).is_err());
        assert!(check_range(u64::MAX, 1, u64::MAX).is_err());
        assert_eq!(check_range(u64::MAX, u64::MAX - 1, 1), Ok(()));
    }

    #[cfg(feature = "vm-memory")]
    #[test]
    fn guest_memory_mmap() {
        use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap();
        mem.write_slice(&0x1122_3344_5566_7788u64.to_le_bytes(), GuestAddress(0x100))
            .unwrap();
        assert_eq!(PhysMemory::size(&mem), 1 << 16);
        assert_eq!(mem.read_u64(0x100), Ok(0x1122_3344_5566_7788));
        assert!(mem.read_u64((1 << 16) - 4).is_err());
        assert!(mem.read_u64(u64::MAX - 2).is_err());
    }
}
