//! What a device driver needs from the kernel: the platform's devices,
//! memory a device can reach, the caller's buffers as device segments,
//! register access, and interrupt handlers.

use core::ptr::NonNull;

use lazarus_abi::ext::{DeviceInfo, DmaSeg};

/// Platform device `index`, if there is one.
pub fn device(index: u32) -> Option<DeviceInfo> {
    let mut d = DeviceInfo::default();
    ((crate::api().device_info)(index, &mut d) == 0).then_some(d)
}

/// Kernel memory a device can reach: zeroed, physically contiguous.
#[derive(Debug)]
pub struct DmaBuf {
    ptr: NonNull<u8>,
    phys: u64,
    size: usize,
    align: usize,
}

impl DmaBuf {
    /// Allocates `size` bytes aligned to `align` (a power of two ≤ 4096).
    pub fn new(size: usize, align: usize) -> Option<DmaBuf> {
        let mut phys = 0;
        let ptr = NonNull::new((crate::api().dma_alloc)(size, align, &mut phys))?;
        Some(DmaBuf {
            ptr,
            phys,
            size,
            align,
        })
    }

    /// Kernel virtual address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Guest-physical address, for the device.
    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Returns the memory to the kernel.
    ///
    /// # Safety
    /// Neither the driver nor the device may use it afterwards.
    pub unsafe fn free(self) {
        (crate::api().free)(self.ptr.as_ptr(), self.size, self.align);
    }
}

/// The calling process's buffer as device segments (see
/// `ExtApi::user_dma`); `Err(-errno)` on a bad range or too many segments.
pub fn user_segments(
    user_buf: u64,
    len: usize,
    device_writes: bool,
    segs: &mut [DmaSeg],
) -> Result<usize, i64> {
    let n = (crate::api().user_dma)(
        user_buf,
        len,
        u32::from(device_writes),
        segs.as_mut_ptr(),
        segs.len(),
    );
    if n < 0 { Err(n) } else { Ok(n as usize) }
}

/// A device's register window, mapped uncached.
#[derive(Clone, Copy, Debug)]
pub struct Mmio {
    base: u64,
    size: u64,
}

impl Mmio {
    /// Maps `size` bytes of device registers at guest-physical `phys`.
    pub fn map(phys: u64, size: u64) -> Option<Mmio> {
        let base = (crate::api().ioremap)(phys, size);
        (base != 0).then_some(Mmio { base, size })
    }

    /// Reads the 32-bit register at `offset` (all-ones outside the window).
    pub fn read32(&self, offset: u64) -> u32 {
        if offset.saturating_add(4) > self.size {
            return u32::MAX;
        }
        // SAFETY: `ioremap` mapped the whole window; the offset is inside.
        unsafe { ((self.base + offset) as *const u32).read_volatile() }
    }

    /// Writes the 32-bit register at `offset` (ignored outside the window).
    pub fn write32(&self, offset: u64, value: u32) {
        if offset.saturating_add(4) > self.size {
            return;
        }
        // SAFETY: as in `read32`.
        unsafe { ((self.base + offset) as *mut u32).write_volatile(value) }
    }
}

/// Registers `handler(arg)` for I/O APIC pin `gsi`; returns its id or a
/// negative errno.
pub fn irq_register(gsi: u32, handler: extern "C" fn(u64), arg: u64) -> Result<i32, i32> {
    let id = (crate::api().irq_register)(gsi, handler, arg);
    if id < 0 { Err(id) } else { Ok(id) }
}

/// Removes interrupt handler `id`.
pub fn irq_unregister(id: i32) {
    let _ = (crate::api().irq_unregister)(id);
}
