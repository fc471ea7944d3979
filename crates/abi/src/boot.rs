//! What the hypervisor tells the kernel at entry (RDI = physmap address of
//! [`BootInfo`]).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Most vCPUs a guest may have (`BootInfo::num_cpus`); the kernel's state
/// root has one entry per CPU.
pub const MAX_CPUS: usize = 8;

/// [`BootInfo::magic`]: "LZRSBOOT"; without it the kernel panics at entry.
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"LZRSBOOT");

/// Written by the hypervisor at [`crate::layout::BOOT_INFO_GPA`] before the
/// first instruction; the kernel reads it once at entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct BootInfo {
    /// [`BOOT_MAGIC`].
    pub magic: u64,
    /// [`crate::root::ABI_VERSION`] the hypervisor was built with; the
    /// kernel panics at entry on a mismatch.
    pub abi_version: u32,
    /// vCPUs the VM was created with.
    pub num_cpus: u32,
    /// Bytes of RAM, contiguous from guest-physical 0.
    pub mem_size: u64,
    /// Physical extent of the loaded kernel image (including .bss).
    pub kernel_phys_start: u64,
    /// End (exclusive) of that extent.
    pub kernel_phys_end: u64,
    /// Physical location of the cpio (newc) initramfs.
    pub initramfs_phys: u64,
    /// Its length in bytes.
    pub initramfs_len: u64,
    /// Local APIC timer input frequency in Hz (divide-by-1).
    pub lapic_timer_hz: u64,
    /// Kernel command line, NUL-padded.
    pub cmdline: [u8; 256],
}
