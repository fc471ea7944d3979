//! The kernel-extension ABI.
//!
//! An extension is a position-independent ELF (`ET_DYN`, only
//! `R_X86_64_RELATIVE` relocations) whose entry point returns a pointer to
//! its [`ExtDescriptor`]. It never links against the kernel: every call into
//! the kernel goes through the [`ExtApi`] table handed to `init`. That keeps
//! the boundary narrow enough for the repair image to reason about.

pub const EXT_MAGIC: u64 = u64::from_le_bytes(*b"LZRSEXT1");
pub const EXT_API_VERSION: u32 = 1;

/// Functions the kernel offers to extensions. All may be called from
/// process context; those marked "irq-safe" also from timer callbacks.
#[repr(C)]
pub struct ExtApi {
    pub version: u32,
    /// Writes to the kernel log (console). irq-safe.
    pub log: extern "C" fn(msg: *const u8, len: usize),
    /// Kernel heap allocation; null on failure.
    pub alloc: extern "C" fn(size: usize, align: usize) -> *mut u8,
    pub free: extern "C" fn(ptr: *mut u8, size: usize, align: usize),
    /// Creates a kernel lock owned by the calling extension; returns its id
    /// or a negative errno.
    pub lock_create: extern "C" fn(name: *const u8, len: usize) -> i32,
    /// Acquires a lock; blocks (schedules) while another process holds it.
    pub lock_acquire: extern "C" fn(id: i32) -> i32,
    pub lock_release: extern "C" fn(id: i32) -> i32,
    /// Pid of the process the kernel is running on behalf of (0 in irq).
    pub current_pid: extern "C" fn() -> u32,
    /// Timer ticks since boot. irq-safe.
    pub ticks: extern "C" fn() -> u64,
    /// Blocks the calling process for `ticks` timer ticks.
    pub sleep_ticks: extern "C" fn(ticks: u64),
    /// Calls `callback(arg)` from the timer interrupt every `period` ticks.
    /// Returns a timer id or a negative errno.
    pub timer_add: extern "C" fn(callback: extern "C" fn(u64), arg: u64, period: u64) -> i32,
    pub timer_remove: extern "C" fn(id: i32) -> i32,
    /// Copies between kernel and the current process's memory after
    /// checking the user range; returns 0 or a negative errno.
    pub copy_to_user: extern "C" fn(dst: u64, src: *const u8, len: usize) -> i64,
    pub copy_from_user: extern "C" fn(dst: *mut u8, src: u64, len: usize) -> i64,
    /// Reports a fatal kernel error (like Linux's `BUG()`/`panic()`).
    pub panic: extern "C" fn(msg: *const u8, len: usize) -> !,
    /// Disables interrupts, returning whether they were enabled. irq-safe.
    pub irq_disable: extern "C" fn() -> u64,
    /// Restores the interrupt state returned by `irq_disable`. irq-safe.
    pub irq_restore: extern "C" fn(state: u64),
    /// A random 64-bit value from the CPU (rdrand/rdtsc mix). irq-safe.
    pub entropy: extern "C" fn() -> u64,
    /// Takes a lock without blocking: 0 if acquired, -EBUSY if another
    /// process holds it. A caller that spins on this is recorded as
    /// waiting for the lock (`Proc::spinning_on`).
    pub lock_try_acquire: extern "C" fn(id: i32) -> i32,
    /// Adds a node (kernel heap memory of the extension) to the kernel's
    /// extension list, checking the list's integrity first.
    pub list_add: extern "C" fn(node: *mut crate::root::ListNode) -> i32,
    /// Removes a node from that list, checking its neighbours first.
    pub list_del: extern "C" fn(node: *mut crate::root::ListNode) -> i32,
    /// Maps `len` bytes of guest-physical address space (device memory)
    /// uncached into the kernel, like Linux's `ioremap`; returns the
    /// virtual address or 0.
    pub ioremap: extern "C" fn(phys: u64, len: u64) -> u64,
}

/// Device operations; any may be absent (null). Each returns a value or
/// a negative errno in `-4095..=-1`; `read` and `write` return at most
/// `len` bytes. The kernel checks this contract on every reply: a broken
/// one is an extension failure (`CRASH_EXT_FAILED`) and the extension is
/// reset.
pub type DevOpen = extern "C" fn(pid: u32) -> i64;
pub type DevRead = extern "C" fn(aux: u64, user_buf: u64, len: usize) -> i64;
pub type DevWrite = extern "C" fn(aux: u64, user_buf: u64, len: usize) -> i64;
pub type DevIoctl = extern "C" fn(aux: u64, cmd: u64, arg: u64) -> i64;
pub type DevClose = extern "C" fn(aux: u64);

#[repr(C)]
pub struct ExtDescriptor {
    pub magic: u64,
    pub api_version: u32,
    pub _pad: u32,
    pub name: [u8; 16],
    /// The device appears as `/dev/<dev_name>`.
    pub dev_name: [u8; 16],
    /// Returns 0 or a negative errno; on error the module is unloaded.
    pub init: extern "C" fn(api: &'static ExtApi) -> i32,
    /// Called before unload. Must release everything init acquired.
    pub exit: extern "C" fn(),
    pub open: Option<DevOpen>,
    pub read: Option<DevRead>,
    pub write: Option<DevWrite>,
    pub ioctl: Option<DevIoctl>,
    pub close: Option<DevClose>,
}

// SAFETY: the descriptor only holds function pointers and plain data, all
// immutable after link time.
unsafe impl Sync for ExtDescriptor {}
