//! Raw system calls and the error type of their wrappers.
//!
//! The kernel is entered with `ud2` (docs/PLATFORM.md: `syscall` and `int 0x80`
//! do not work under the development KVM); see `lazarus_abi::syscall`.

use core::arch::asm;
use core::fmt;

use lazarus_abi::syscall::errno;

/// A system-call error: the positive errno the kernel returned negated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(
    /// The errno (positive), a `lazarus_abi::syscall::errno` value.
    pub i64,
);

// The constants mirror `lazarus_abi::syscall::errno`, where each is
// documented; they are numerous and named after the errno they carry.
#[allow(missing_docs)]
impl Errno {
    pub const ENOENT: Errno = Errno(errno::ENOENT);
    pub const ESRCH: Errno = Errno(errno::ESRCH);
    pub const E2BIG: Errno = Errno(errno::E2BIG);
    pub const EBADF: Errno = Errno(errno::EBADF);
    pub const ECHILD: Errno = Errno(errno::ECHILD);
    pub const EAGAIN: Errno = Errno(errno::EAGAIN);
    pub const ENOMEM: Errno = Errno(errno::ENOMEM);
    pub const EIO: Errno = Errno(errno::EIO);
    pub const ENODEV: Errno = Errno(errno::ENODEV);
    pub const EEXIST: Errno = Errno(errno::EEXIST);
    pub const EBUSY: Errno = Errno(errno::EBUSY);
    pub const EINTR: Errno = Errno(errno::EINTR);
    pub const EINVAL: Errno = Errno(errno::EINVAL);
    pub const ENOSPC: Errno = Errno(errno::ENOSPC);
    pub const EPIPE: Errno = Errno(errno::EPIPE);
    pub const ENOTTY: Errno = Errno(errno::ENOTTY);
    pub const ETIMEDOUT: Errno = Errno(errno::ETIMEDOUT);
    pub const EROFS: Errno = Errno(errno::EROFS);

    /// The human name, as printed by every tool.
    pub const fn name(self) -> &'static str {
        errno::name(self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the system-call wrappers return.
pub type Result<T> = core::result::Result<T, Errno>;

/// Turns a raw return value into `Ok(value)` or `Err(errno)`.
#[inline]
pub fn check(ret: i64) -> Result<u64> {
    if ret < 0 {
        Err(Errno(-ret))
    } else {
        Ok(ret as u64)
    }
}

/// Enters the kernel with system call `nr` and six arguments.
///
/// # Safety
/// The arguments must be valid for `nr` (pointers to memory the kernel may
/// read or write for the given lengths).
#[inline(always)]
pub unsafe fn syscall6(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: i64;
    // SAFETY: `ud2` traps to the kernel, which treats it as a system call
    // and resumes after it with the result in RAX; the kernel switches to
    // its own stack (no user stack use). RCX and R11 are declared clobbered
    // in case the kernel's return path uses them. Memory effects are left
    // to the default (the asm may read and write memory), as the caller
    // passes buffers.
    unsafe {
        asm!(
            "ud2",
            inlateout("rax") nr as i64 => ret,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            in("r10") a3,
            in("r8") a4,
            in("r9") a5,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// [`syscall6`] with five arguments.
///
/// # Safety
/// As for [`syscall6`].
#[inline(always)]
pub unsafe fn syscall5(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> i64 {
    // SAFETY: forwarded contract; the unused argument register is zero.
    unsafe { syscall6(nr, a0, a1, a2, a3, a4, 0) }
}

/// [`syscall5`] with fewer arguments.
///
/// # Safety
/// As for [`syscall5`].
#[inline(always)]
pub unsafe fn syscall3(nr: u64, a0: u64, a1: u64, a2: u64) -> i64 {
    // SAFETY: forwarded contract; unused argument registers are zero.
    unsafe { syscall5(nr, a0, a1, a2, 0, 0) }
}

/// [`syscall5`] with one argument.
///
/// # Safety
/// As for [`syscall5`].
#[inline(always)]
pub unsafe fn syscall1(nr: u64, a0: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { syscall5(nr, a0, 0, 0, 0, 0) }
}
