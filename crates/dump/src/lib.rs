//! Crash dumps of a lazarus guest as ELF core files.
//!
//! A dump is what a vendor's support team gets: `gdb kernel.elf dump.core`
//! opens it with symbols (registers in `NT_PRSTATUS` notes, guest memory
//! in `PT_LOAD` segments at kernel virtual addresses), and the `LAZARUS`
//! note carries the hypervisor's account of the crash as JSON
//! ([`CrashNote`]) for offline diagnosis without the live VM. A dump holds
//! the memory it captured, not a file of guest-RAM size ([`MemoryNote`]);
//! the reader also reads the older dumps that held all of RAM.
//!
//! [`write_core`] writes one; [`Dump::open`] (or [`Dump::from_bytes`]) reads
//! it back and validates it (a malformed or truncated file is a typed
//! [`DumpError`], never a panic).

mod error;
mod note;
mod prstatus;
mod reader;
mod writer;

pub use error::DumpError;
pub use note::{CrashNote, ExtLoad, FORMAT_VERSION, GuestRecord, MemoryNote, Regs, VcpuState};
pub use reader::{Dump, IN_MEMORY_PATH, Segment};
pub use writer::{DumpInput, MAX_SEGMENTS, Memory, write_core};

/// Owner name of the register notes, as Linux writes them.
pub const NOTE_NAME_CORE: &[u8] = b"CORE";
/// Owner name of lazarus's own note.
pub const NOTE_NAME_LAZARUS: &[u8] = b"LAZARUS";
/// Note type of the JSON [`CrashNote`] ("LZ" 0x0001).
pub const NT_LAZARUS_CRASH: u32 = 0x4c5a_0001;
/// Note type of the JSON [`MemoryNote`] ("LZ" 0x0002).
pub const NT_LAZARUS_MEMORY: u32 = 0x4c5a_0002;

#[cfg(test)]
mod tests;
