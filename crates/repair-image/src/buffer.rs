//! Page-aligned, pre-faulted host memory for the repair slot.
//!
//! A `Vec` would do for the bytes, but KVM needs page-aligned memory, and
//! touching every page once up front keeps page faults out of the repair
//! path (PLATFORM.md: fresh memory is ~25x slower to write).

pub struct SlotBuffer {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is plain memory owned by this value; access goes
// through &self / &mut self.
unsafe impl Send for SlotBuffer {}
// SAFETY: shared references only read.
unsafe impl Sync for SlotBuffer {}

impl SlotBuffer {
    pub fn new(len: usize) -> std::io::Result<Self> {
        // SAFETY: an anonymous private mapping with no address hint has no
        // preconditions; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let mut b = Self {
            ptr: ptr.cast(),
            len,
        };
        b.fill(0, len, 0);
        Ok(b)
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
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

    pub fn fill(&mut self, off: u64, len: usize, v: u8) {
        let off = self.check(off, len);
        // SAFETY: in range (checked) of our own mapping.
        unsafe { std::ptr::write_bytes(self.ptr.add(off), v, len) };
    }

    pub fn read(&self, off: u64, len: usize) -> &[u8] {
        let off = self.check(off, len);
        // SAFETY: in range (checked); the guest can only write the mapping
        // while it is a memory slot, during which we do not read it.
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) }
    }
}

impl Drop for SlotBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
