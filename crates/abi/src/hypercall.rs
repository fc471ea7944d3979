//! The hypercall interface.
//!
//! The kernel fills a [`Hypercall`] block and writes its guest-physical
//! address (32-bit) to [`crate::layout::PORT_HYPERCALL`]. The hypervisor
//! validates the address and every argument, runs the call and stores the
//! result in `ret` (>= 0 success, < 0 a negated [`crate::syscall::errno`]).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// [`RootHeader::magic`]: "LZRSROOT".
pub const ROOT_MAGIC: u64 = u64::from_le_bytes(*b"LZRSROOT");
/// Version of every layout in this crate, checked at boot
/// ([`crate::boot::BootInfo`]) and at root registration; bump it on any
/// layout change.
pub const ABI_VERSION: u32 = 7;
/// Extension slots: `HC_EXT_EVENT` names one, and the kernel's state root
/// has one entry per slot.
pub const MAX_EXTS: usize = 8;

/// One hypercall, filled by the kernel; the hypervisor writes only `ret`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Hypercall {
    /// The call, an `HC_*` number.
    pub nr: u64,
    /// Its arguments, as listed at each `HC_*`; unused ones are ignored.
    pub args: [u64; 5],
    /// Written by the hypervisor: >= 0 success, < 0 a negated errno.
    pub ret: i64,
}

/// The start of the block registered with [`HC_REGISTER_ROOT`], and the
/// only part of it the hypervisor reads (as KVM's guests register a clock
/// page): it checks the header and watches the heartbeat, and knows
/// nothing of what follows, the guest OS's own state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RootHeader {
    /// [`crate::root::ROOT_MAGIC`].
    pub magic: u64,
    /// [`crate::root::ABI_VERSION`].
    pub abi_version: u32,
    /// Bytes registered, header included.
    pub root_size: u32,
    /// Timer ticks since boot (the boot CPU's); the hypervisor's
    /// watchdog watches it move.
    pub heartbeat: u64,
    /// Per-CPU heartbeats, indexed by vCPU; one that stops while others
    /// move is a lockup of that CPU alone. 0 for a CPU not started.
    pub cpu_heartbeat: [u64; crate::boot::MAX_CPUS],
}

/// args: [gpa of the state root, its size, ABI version]. The root starts
/// with a [`RootHeader`].
pub const HC_REGISTER_ROOT: u64 = 1;
/// args: [exit status]
pub const HC_POWEROFF: u64 = 2;
/// args: none. The hypervisor restarts the VM from the boot image.
pub const HC_REBOOT: u64 = 3;
/// args: [0 = loaded / 1 = unloaded, extension slot]. Lets the hypervisor
/// refresh its repair image whenever kernel code changes.
pub const HC_EXT_EVENT: u64 = 4;
/// args: [gpa, len]. Console output in one exit instead of one per byte.
pub const HC_CONSOLE_WRITE: u64 = 5;
/// args: `[milestone]`. Marks boot progress for measurement.
pub const HC_MILESTONE: u64 = 6;

/// args: [recovery count]. The kernel is about to return to a user
/// process for the first time since a repair (or goes idle with nothing
/// runnable): resurrection latency ends.
pub const HC_RECOVERED: u64 = 7;

/// args: [vCPU index, rip, rsp, rdi, cr3]. Starts a vCPU that has not
/// run yet in 64-bit mode with the boot CPU's segments and control
/// registers, these registers and interrupts off: the paravirtual
/// equivalent of INIT-SIPI-SIPI (as PSCI's CPU_ON or Xen's VCPUOP_up).
/// Fails with EINVAL for a bad index, address or page table, and EBUSY
/// for a vCPU already started.
pub const HC_CPU_ON: u64 = 8;

/// Largest single [`HC_CONSOLE_WRITE`].
pub const CONSOLE_WRITE_MAX: u64 = 64 * 1024;

/// [`HC_MILESTONE`]: the kernel is initialised and has spawned `/init`.
pub const MILESTONE_KERNEL_READY: u64 = 1;
/// [`HC_MILESTONE`]: a process first waits for console input (the system
/// is interactive); the boot benchmarks stop here.
pub const MILESTONE_SHELL_PROMPT: u64 = 2;

/// [`HC_EXT_EVENT`] first argument: an extension was loaded.
pub const EXT_EVENT_LOADED: u64 = 0;
/// [`HC_EXT_EVENT`] first argument: an extension was unloaded.
pub const EXT_EVENT_UNLOADED: u64 = 1;
