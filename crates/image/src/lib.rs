//! The built-in default boot image: the kernel ELF and the initramfs that
//! this crate's build script produced from the guest crates, and the
//! checks an initramfs must pass to boot ([`check`]).

pub mod check;

pub use check::{InitramfsError, check_initramfs};

/// The kernel ELF, with symbols.
pub const KERNEL_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kernel.elf"));
/// The cpio (newc) initramfs: /init, /bin/*, /ext/*.ko.
pub const INITRAMFS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/initramfs.cpio"));
/// Where the kernel ELF sits on disk, for gdb and symbolization.
pub const KERNEL_ELF_PATH: &str = concat!(env!("OUT_DIR"), "/kernel.elf");
/// Where the initramfs sits on disk.
pub const INITRAMFS_PATH: &str = concat!(env!("OUT_DIR"), "/initramfs.cpio");
/// The repair program of the hidden repair image (a static ring-3 ELF
/// linked at `lazarus_abi::repair::PROGRAM_VA`).
pub const REPAIR_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/repair.elf"));
