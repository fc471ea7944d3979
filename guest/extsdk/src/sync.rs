//! Kernel locks (owner-recording, so a crash can be answered with "which
//! locks did the offender hold") and interrupt masking.

use core::sync::atomic::{AtomicI32, Ordering};

use lazarus_abi::syscall::errno::EINVAL;

/// A kernel lock created by this extension, stored in a static.
pub struct KLock {
    id: AtomicI32,
}

impl KLock {
    /// A lock not yet created in the kernel (id -1): call
    /// [`KLock::create`] in `init`.
    pub const fn new() -> KLock {
        KLock {
            id: AtomicI32::new(-1),
        }
    }

    /// Creates the kernel lock (call from `init`); returns a negative
    /// errno on failure.
    pub fn create(&self, name: &str) -> Result<(), i32> {
        let id = (crate::api().lock_create)(name.as_ptr(), name.len());
        if id < 0 {
            return Err(id);
        }
        self.id.store(id, Ordering::Release);
        Ok(())
    }

    /// The kernel's id for this lock (-1 before `create`).
    pub fn id(&self) -> i32 {
        self.id.load(Ordering::Acquire)
    }

    /// Acquires the lock, blocking while another process holds it; the
    /// guard releases it.
    pub fn lock(&self) -> Result<KLockGuard<'_>, i32> {
        let id = self.id();
        if id < 0 {
            return Err(-(EINVAL as i32));
        }
        let r = (crate::api().lock_acquire)(id);
        if r < 0 {
            return Err(r);
        }
        Ok(KLockGuard { lock: self })
    }

    /// Acquires without a guard (for code that must leave it held).
    pub fn acquire_raw(&self) -> i32 {
        (crate::api().lock_acquire)(self.id())
    }
}

impl Default for KLock {
    fn default() -> Self {
        Self::new()
    }
}

/// A held [`KLock`]; dropping it releases the lock.
pub struct KLockGuard<'a> {
    lock: &'a KLock,
}

impl Drop for KLockGuard<'_> {
    fn drop(&mut self) {
        (crate::api().lock_release)(self.lock.id());
    }
}

/// Interrupts disabled until dropped (restores the previous state).
pub struct IrqGuard {
    state: u64,
}

impl IrqGuard {
    /// Disables interrupts, remembering whether they were enabled.
    pub fn new() -> IrqGuard {
        IrqGuard {
            state: (crate::api().irq_disable)(),
        }
    }
}

impl Default for IrqGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for IrqGuard {
    fn drop(&mut self) {
        (crate::api().irq_restore)(self.state);
    }
}
