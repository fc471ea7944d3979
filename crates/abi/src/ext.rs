//! The kernel-extension ABI.
//!
//! An extension is a position-independent ELF (`ET_DYN`, only
//! `R_X86_64_RELATIVE` relocations) whose entry point returns a pointer to
//! its [`ExtDescriptor`]. It never links against the kernel: every call into
//! the kernel goes through the [`ExtApi`] table handed to `init`. That keeps
//! the boundary narrow enough for the repair image to reason about.

/// [`ExtDescriptor::magic`]: "LZRSEXT1"; the loader refuses an extension
/// without it (`ENOEXEC`).
pub const EXT_MAGIC: u64 = u64::from_le_bytes(*b"LZRSEXT1");
/// The [`ExtApi`] version; an extension built for another one is refused.
pub const EXT_API_VERSION: u32 = 4;

/// Functions the kernel offers to extensions. All may be called from
/// process context; those marked "irq-safe" also from timer callbacks.
#[repr(C)]
pub struct ExtApi {
    /// [`EXT_API_VERSION`] of the kernel that filled the table.
    pub version: u32,
    /// Writes to the kernel log (console). irq-safe.
    pub log: extern "C" fn(msg: *const u8, len: usize),
    /// Kernel heap allocation; null on failure.
    pub alloc: extern "C" fn(size: usize, align: usize) -> *mut u8,
    /// Frees what `alloc` returned, with the same size; null is ignored.
    pub free: extern "C" fn(ptr: *mut u8, size: usize, align: usize),
    /// Creates a kernel lock owned by the calling extension; returns its id
    /// or a negative errno.
    pub lock_create: extern "C" fn(name: *const u8, len: usize) -> i32,
    /// Acquires a lock; blocks (schedules) while another process holds it.
    pub lock_acquire: extern "C" fn(id: i32) -> i32,
    /// Releases a lock the calling process holds and wakes its waiters;
    /// 0, or -EPERM if the caller does not hold it.
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
    /// Removes a timer `timer_add` returned; 0 or -EINVAL.
    pub timer_remove: extern "C" fn(id: i32) -> i32,
    /// Copies between kernel and the current process's memory after
    /// checking the user range; returns 0 or a negative errno.
    pub copy_to_user: extern "C" fn(dst: u64, src: *const u8, len: usize) -> i64,
    /// The other direction of `copy_to_user`, with the same checks.
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
    /// The CPU the caller runs on (Linux's `smp_processor_id`); only
    /// stable while the caller does not sleep.
    pub cpu_id: extern "C" fn() -> u32,
    /// Allocates `size` zeroed bytes of kernel memory a device can reach
    /// (physically contiguous, aligned to `align` ≤ 4096), owned by the
    /// caller like `alloc`'s and freed with `free`; writes the
    /// guest-physical address to `*phys`. Null when there is none.
    pub dma_alloc: extern "C" fn(size: usize, align: usize, phys: *mut u64) -> *mut u8,
    /// The current process's buffer `[user_buf, user_buf + len)` as
    /// guest-physical segments a device can read (`device_writes` 0) or
    /// write (1), merged where contiguous: its pages are mapped on demand
    /// and checked to be the process's (and writable, if the device
    /// writes them). Fills at most `max` entries of `segs` and returns how
    /// many, `-EFAULT`, or `-E2BIG` when more are needed. The pages stay
    /// the process's until its system call returns, so a driver lets the
    /// device use them only until then (Linux's `get_user_pages`, without
    /// the copy a ring-0 loop would cost here).
    pub user_dma: extern "C" fn(
        user_buf: u64,
        len: usize,
        device_writes: u32,
        segs: *mut DmaSeg,
        max: usize,
    ) -> i64,
    /// Describes platform device `index` (the hypervisor names them on the
    /// kernel command line): fills `*out` and returns 0, or `-ENODEV`
    /// past the last one.
    pub device_info: extern "C" fn(index: u32, out: *mut DeviceInfo) -> i32,
    /// Routes I/O APIC pin `gsi` to `handler(arg)`, which then runs in
    /// interrupt context (the irq-safe calls only) with the big kernel
    /// lock held, once per edge. One handler per pin. Returns an id, or
    /// `-EINVAL` (no such device pin), `-EBUSY` or `-ENOSPC`. The repair
    /// removes a reset extension's handlers with the rest of its state.
    pub irq_register: extern "C" fn(gsi: u32, handler: extern "C" fn(u64), arg: u64) -> i32,
    /// Removes handler `id` and masks its pin.
    pub irq_unregister: extern "C" fn(id: i32) -> i32,
    /// Memory that outlives a reset of the calling extension: zeroed at
    /// the first call, and the same memory, as the crash left it, at the
    /// first call of every init after a reset (of the same size; another
    /// size gets null). What a device keeps across a driver reload, such
    /// as a ramdisk's disk. Freed when the extension is unloaded.
    pub keep: extern "C" fn(size: usize, align: usize) -> *mut u8,
    /// The extension found itself broken (a device that stopped
    /// answering, a ring it cannot trust): the kernel has it reset, as
    /// after a crash, and the system call in progress is issued again
    /// afterwards if the extension declared it replayable (else it fails
    /// with `EIO`). Process context only. Never returns.
    pub failed: extern "C" fn(msg: *const u8, len: usize) -> !,
}

/// A guest-physical buffer segment for a device (`ExtApi::user_dma`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaSeg {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// [`DeviceInfo::kind`]: a virtio device behind the MMIO transport.
pub const DEVICE_VIRTIO_MMIO: u32 = 1;

/// A platform device (`ExtApi::device_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// What it is: [`DEVICE_VIRTIO_MMIO`].
    pub kind: u32,
    /// Its I/O APIC pin.
    pub gsi: u32,
    /// Guest-physical base of its register window.
    pub base: u64,
    /// Size of the window.
    pub size: u64,
}

/// Device operations; any may be absent (null). Each returns a value or
/// a negative errno in `-4095..=-1`; `read` and `write` return at most
/// `len` bytes. The kernel checks this contract on every reply: a broken
/// one is an extension failure (`CRASH_EXT_FAILED`) and the extension is
/// reset.
///
/// `open` runs for the opening process `pid`; its non-negative result is
/// the per-open value (`aux`) the kernel passes to the other operations of
/// that open file. Without `open`, `aux` is 0.
pub type DevOpen = extern "C" fn(pid: u32) -> i64;
/// Reads into the user buffer at `user_buf` (through
/// `ExtApi::copy_to_user`) from byte position `pos`; returns the bytes
/// read. The kernel keeps the position (`SYS_SEEK`) and advances it by the
/// result, so a read issued again after a reset reads the same bytes.
pub type DevRead = extern "C" fn(aux: u64, user_buf: u64, len: usize, pos: u64) -> i64;
/// Writes from the user buffer at `user_buf` (through
/// `ExtApi::copy_from_user`) at byte position `pos`; returns the bytes
/// written. The position is the kernel's, as for [`DevRead`].
pub type DevWrite = extern "C" fn(aux: u64, user_buf: u64, len: usize, pos: u64) -> i64;
/// A device-defined command (`crate::dev`) with one argument.
pub type DevIoctl = extern "C" fn(aux: u64, cmd: u64, arg: u64) -> i64;
/// Called once the last descriptor of an open file is closed.
pub type DevClose = extern "C" fn(aux: u64);

/// [`ExtDescriptor::replay`]: a read issued again reads the same thing
/// (it has no side effect the device would do twice).
pub const REPLAY_READ: u32 = 1;
/// [`ExtDescriptor::replay`]: a write issued again at the same position
/// leaves the device as one write would (a disk's, not a serial line's).
pub const REPLAY_WRITE: u32 = 2;

/// The bit of ioctl `cmd` in [`ExtDescriptor::replay_ioctls`] and
/// [`ExtDescriptor::config_ioctls`] (commands from 64 up have none).
pub const fn ioctl_bit(cmd: u64) -> u64 {
    if cmd < 64 { 1 << cmd } else { 0 }
}

/// What an extension's entry point returns: identity, lifecycle hooks and
/// device operations. Lives in the extension's image; the kernel checks it
/// lies inside the image and is 8-aligned before reading it.
#[repr(C)]
pub struct ExtDescriptor {
    /// [`EXT_MAGIC`].
    pub magic: u64,
    /// [`EXT_API_VERSION`] the extension was built against.
    pub api_version: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// Module name (NUL-padded), as `lsmod` and crash reports show it.
    pub name: [u8; 16],
    /// The device appears as `/dev/<dev_name>`.
    pub dev_name: [u8; 16],
    /// Returns 0 or a negative errno; on error the module is unloaded.
    pub init: extern "C" fn(api: &'static ExtApi) -> i32,
    /// Called before unload. Must release everything init acquired.
    pub exit: extern "C" fn(),
    /// See [`DevOpen`]; absent: every open succeeds with `aux` 0.
    pub open: Option<DevOpen>,
    /// See [`DevRead`]; absent: reads fail with `ENOTSUP`.
    pub read: Option<DevRead>,
    /// See [`DevWrite`]; absent: writes fail with `ENOTSUP`.
    pub write: Option<DevWrite>,
    /// See [`DevIoctl`]; absent: ioctls fail with `ENOTSUP`.
    pub ioctl: Option<DevIoctl>,
    /// See [`DevClose`].
    pub close: Option<DevClose>,
    /// `REPLAY_*` bits: which device calls in progress when the extension
    /// is reset are issued again once it is back; any other fails with
    /// `EIO` (opens are always issued again, closes complete).
    pub replay: u32,
    /// Padding; zero.
    pub _pad2: u32,
    /// Ioctls (by [`ioctl_bit`]) that may be issued again after a reset:
    /// they only read state, or set it to what the argument says.
    pub replay_ioctls: u64,
    /// Ioctls (by [`ioctl_bit`]) that configure the open file: the kernel
    /// remembers the last argument of each and issues them again when it
    /// reopens the file after a reset. They must be replayable too.
    pub config_ioctls: u64,
}

// SAFETY: the descriptor only holds function pointers and plain data, all
// immutable after link time.
unsafe impl Sync for ExtDescriptor {}
