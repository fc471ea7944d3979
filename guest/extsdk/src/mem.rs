//! Kernel heap memory.

use core::ptr::NonNull;

/// A block from the kernel heap, freed explicitly (extensions release
/// everything in `exit`, so ownership is tracked by the extension).
#[derive(Clone, Copy, Debug)]
pub struct KAlloc {
    ptr: NonNull<u8>,
    size: usize,
    align: usize,
}

impl KAlloc {
    /// Allocates `size` bytes aligned to `align` (a power of two).
    pub fn new(size: usize, align: usize) -> Option<KAlloc> {
        let ptr = NonNull::new((crate::api().alloc)(size, align))?;
        Some(KAlloc { ptr, size, align })
    }

    /// Kernel virtual address of the block.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes asked for (the kernel rounds up to its 256-byte blocks).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Returns the block to the kernel.
    ///
    /// # Safety
    /// No reference into the block may be used afterwards, and it must not
    /// be freed twice.
    pub unsafe fn free(self) {
        (crate::api().free)(self.ptr.as_ptr(), self.size, self.align);
    }
}

/// Memory that outlives a reset of this extension (`ExtApi::keep`): zeroed
/// the first time, the same bytes after every reset. For what a device
/// holds across a driver reload. The kernel frees it at unload.
pub fn keep(size: usize, align: usize) -> Option<NonNull<u8>> {
    NonNull::new((crate::api().keep)(size, align))
}
