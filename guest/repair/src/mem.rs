//! Guest memory as the repair program sees it: all of RAM at `RAM_VA`.
//!
//! Everything here comes from a crashed kernel, so every address is
//! bounds-checked against the RAM size before it is touched: a wild
//! pointer in the kernel must make the repair give up cleanly, never fault.

use lazarus_abi::layout::{KERNEL_VIRT_BASE, PAGE_SIZE, PHYSMAP_BASE};
use lazarus_abi::repair::RAM_VA;
use lazarus_guestmem::{MemError, PhysMemory};

#[derive(Clone, Copy)]
pub struct Mem {
    pub size: u64,
    /// Physical address of the kernel's master PML4.
    pub pml4: u64,
}

impl Mem {
    /// Pointer to `len` bytes at physical `pa`, if inside RAM.
    pub fn ptr(&self, pa: u64, len: u64) -> Option<*mut u8> {
        let end = pa.checked_add(len)?;
        (end <= self.size).then_some((RAM_VA + pa) as *mut u8)
    }

    pub fn read<T: Copy>(&self, pa: u64) -> Option<T> {
        let p = self.ptr(pa, core::mem::size_of::<T>() as u64)?;
        // SAFETY: inside RAM (checked), which the image's page tables map;
        // unaligned reads are fine for plain data.
        Some(unsafe { (p as *const T).read_unaligned() })
    }

    pub fn write<T: Copy>(&self, pa: u64, v: T) -> Option<()> {
        let p = self.ptr(pa, core::mem::size_of::<T>() as u64)?;
        // SAFETY: as in read; the kernel is stopped.
        unsafe { (p as *mut T).write_unaligned(v) };
        Some(())
    }

    pub fn bytes(&self, pa: u64, len: u64) -> Option<&'static mut [u8]> {
        let p = self.ptr(pa, len)?;
        // SAFETY: inside RAM (checked); the kernel is stopped, so nothing
        // else uses this memory while the slice lives.
        Some(unsafe { core::slice::from_raw_parts_mut(p, len as usize) })
    }

    /// Physical address of a kernel virtual address: the two linear
    /// windows by arithmetic (the hypervisor's boot tables map them so,
    /// and the kernel never changes them), anything else by walking the
    /// master page tables (kernel stacks, extensions).
    pub fn kva(&self, va: u64) -> Option<u64> {
        if (KERNEL_VIRT_BASE..KERNEL_VIRT_BASE + (1 << 30)).contains(&va) {
            let pa = va - KERNEL_VIRT_BASE;
            return (pa < self.size).then_some(pa);
        }
        if (PHYSMAP_BASE..PHYSMAP_BASE + self.size).contains(&va) {
            return Some(va - PHYSMAP_BASE);
        }
        lazarus_guestmem::translate(self, self.pml4, va)
            .ok()
            .map(|t| t.pa)
    }

    pub fn kread<T: Copy>(&self, va: u64) -> Option<T> {
        // Objects we read never straddle pages except in the linear windows.
        self.read(self.kva(va)?)
    }

    pub fn kwrite<T: Copy>(&self, va: u64, v: T) -> Option<()> {
        self.write(self.kva(va)?, v)
    }

    /// Compares `[va, va+len)` with `pristine` page by page and copies the
    /// pristine bytes over any difference. Returns bytes that differed.
    pub fn restore(&self, va: u64, pristine: &[u8]) -> Option<u64> {
        let mut fixed = 0;
        let mut off = 0u64;
        let len = pristine.len() as u64;
        while off < len {
            let chunk = (PAGE_SIZE - ((va + off) & (PAGE_SIZE - 1))).min(len - off);
            let pa = self.kva(va + off)?;
            let live = self.bytes(pa, chunk)?;
            let want = &pristine[off as usize..(off + chunk) as usize];
            if live != want {
                fixed += live.iter().zip(want).filter(|(a, b)| a != b).count() as u64;
                live.copy_from_slice(want);
            }
            off += chunk;
        }
        Some(fixed)
    }
}

/// Guest RAM through the window, for the page walker and the root check.
impl PhysMemory for Mem {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let len = buf.len() as u64;
        let p = self
            .ptr(pa, len)
            .ok_or(MemError::OutsideMemory { pa, len })?;
        // SAFETY: `[pa, pa + len)` is inside RAM (checked), which the
        // image's page tables map at RAM_VA; `copy` allows `buf` to overlap
        // it; the kernel is stopped.
        unsafe { core::ptr::copy(p as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
}
