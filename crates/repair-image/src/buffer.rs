//! Host memory for the repair image, and the window through which the
//! guest sees it during a repair.
//!
//! The image lives in a memfd, mapped once for the hypervisor's own reads
//! and writes ([`SlotBuffer`]). A [`SlotWindow`] is a second, fixed range
//! of host addresses that backs the repair memory slot: during a repair it
//! maps the same memfd (the guest sees the image), otherwise it maps fresh
//! anonymous memory (the guest sees zeros, and whatever it writes there is
//! thrown away at the next swap). Swapping the mapping under a resident
//! slot costs a few microseconds and invalidates only that range in KVM,
//! where adding and deleting a memory slot costs hundreds of microseconds
//! on nested KVM (two SRCU grace periods each).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The image's host memory: a memfd mapped once (shared, populated) for
/// the hypervisor; [`SlotWindow::show`] maps the same memfd for the guest.
pub struct SlotBuffer {
    fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is plain memory owned by this value; access goes
// through &self / &mut self.
unsafe impl Send for SlotBuffer {}
// SAFETY: shared references only read.
unsafe impl Sync for SlotBuffer {}

fn map(addr: *mut u8, len: usize, flags: libc::c_int, fd: libc::c_int) -> std::io::Result<*mut u8> {
    // SAFETY: callers pass either no address hint or a range they own
    // (MAP_FIXED over their own reservation); the result is checked.
    let ptr = unsafe {
        libc::mmap(
            addr.cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ptr.cast())
}

impl SlotBuffer {
    /// A zeroed buffer of `len` bytes (the repair slot's size), populated
    /// up front so that the repair path never faults it in.
    pub fn new(len: usize) -> std::io::Result<Self> {
        // SAFETY: the name is a NUL-terminated literal; the result is
        // checked before use.
        let raw =
            unsafe { libc::memfd_create(c"lazarus-repair-image".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we just created and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size =
            libc::off_t::try_from(len).map_err(|_| std::io::Error::other("image too large"))?;
        // SAFETY: plain ftruncate on our own memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Populated up front: docs/PLATFORM.md measured fresh memory at ~25x
        // slower to write, which would land on the repair path.
        let ptr = map(
            std::ptr::null_mut(),
            len,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd.as_raw_fd(),
        )?;
        let mut b = Self { fd, ptr, len };
        b.fill(0, len, 0);
        Ok(b)
    }

    /// Host address of the mapping (what a fresh repair slot registers as
    /// its `userspace_addr`).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the size is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, off: u64, len: usize) -> usize {
        let off = usize::try_from(off).unwrap_or(usize::MAX);
        assert!(
            off.checked_add(len).is_some_and(|e| e <= self.len),
            "slot buffer access out of range"
        );
        off
    }

    /// Writes at a fixed offset. Offsets come from the image layout, never
    /// from the guest; an out-of-range write is a bug in this crate.
    pub fn write(&mut self, off: u64, data: &[u8]) {
        let off = self.check(off, data.len());
        // SAFETY: in range (checked) of our own mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off), data.len()) };
    }

    /// Sets `len` bytes at `off` to `v`; in range, like [`Self::write`].
    pub fn fill(&mut self, off: u64, len: usize, v: u8) {
        let off = self.check(off, len);
        // SAFETY: in range (checked) of our own mapping.
        unsafe { std::ptr::write_bytes(self.ptr.add(off), v, len) };
    }

    /// The `len` bytes at `off`; in range, like [`Self::write`]. Not to be
    /// called while the guest can write the image.
    pub fn read(&self, off: u64, len: usize) -> &[u8] {
        let off = self.check(off, len);
        // SAFETY: in range (checked); the guest can only write the image
        // while it is shown in a slot, during which we do not read it.
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) }
    }
}

impl Drop for SlotBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Host addresses that back a resident repair slot: the image during a
/// repair, a decoy of fresh anonymous memory otherwise.
pub struct SlotWindow {
    ptr: *mut u8,
    len: usize,
    shown: bool,
}

// SAFETY: the window is an address range owned by this value; the guest
// reaches it only through KVM.
unsafe impl Send for SlotWindow {}
// SAFETY: shared references only hand out the address.
unsafe impl Sync for SlotWindow {}

impl SlotWindow {
    /// Reserves `len` bytes of host address space, showing the decoy.
    pub fn new(len: usize) -> std::io::Result<Self> {
        let ptr = map(
            std::ptr::null_mut(),
            len,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
        )?;
        Ok(Self {
            ptr,
            len,
            shown: false,
        })
    }

    /// Host address to register as the slot's `userspace_addr`.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the size is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maps the image into the window.
    pub fn show(&mut self, image: &SlotBuffer) -> std::io::Result<()> {
        if image.len != self.len {
            return Err(std::io::Error::other("image and window sizes differ"));
        }
        map(
            self.ptr,
            self.len,
            libc::MAP_SHARED | libc::MAP_FIXED,
            image.fd.as_raw_fd(),
        )?;
        self.shown = true;
        Ok(())
    }

    /// Replaces the image with a fresh decoy (the old mapping, and with it
    /// KVM's mappings of the image, go away).
    pub fn hide(&mut self) -> std::io::Result<()> {
        map(
            self.ptr,
            self.len,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
        )?;
        self.shown = false;
        Ok(())
    }

    /// Whether the image (not the decoy) is mapped.
    pub fn shown(&self) -> bool {
        self.shown
    }
}

impl Drop for SlotWindow {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the range reserved in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
