//! The hidden repair image: its memory map and the mailbox through which
//! the hypervisor and the repair program talk.
//!
//! The image lives in host memory. Only while a crash is being repaired is
//! it mapped into the VM, at [`SLOT_GPA`] (a slot whose host memory is
//! swapped from a zeroed decoy to the image, or a fresh slot); the
//! repair program then runs on the crashed vCPU in ring 3 (native speed on
//! the emulated-ring-0 hosts of PLATFORM.md) with the image's own page
//! tables, which map the image and all of guest RAM. It diagnoses and
//! repairs the kernel through its state root, writes a [`ResumePlan`] into
//! the mailbox and rings the doorbell (a write to [`DOORBELL_VA`], which
//! has no memory behind it, so the hypervisor sees an MMIO exit).

use crate::root::NONE;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Guest-physical address where the image is mapped during a repair:
/// above the largest RAM and the 32-bit MMIO hole, so it can never alias
/// guest memory.
pub const SLOT_GPA: u64 = 0x1_0000_0000;
/// Size of the slot (the image must fit).
pub const SLOT_SIZE: u64 = 4 * 1024 * 1024;
/// Guest-physical address of the doorbell page (no memory slot).
pub const DOORBELL_GPA: u64 = SLOT_GPA + SLOT_SIZE;

/// Virtual address of the image in the repair program's address space.
pub const IMAGE_VA: u64 = 0x1000_0000;
/// Virtual address of the doorbell.
pub const DOORBELL_VA: u64 = 0x0fff_0000;
/// All guest RAM appears here in the repair program's address space.
pub const RAM_VA: u64 = 0x0000_0080_0000_0000;
/// Where the repair program is linked.
pub const PROGRAM_VA: u64 = IMAGE_VA + PROGRAM_OFFSET;

// Offsets inside the image.
/// [`RepairHeader`] then [`RepairInput`] then [`ResumePlan`].
pub const MAILBOX_OFFSET: u64 = 0;
pub const INPUT_OFFSET: u64 = 0x100;
pub const PLAN_OFFSET: u64 = 0x800;
/// Page tables built by the hypervisor.
pub const PAGE_TABLES_OFFSET: u64 = 0x1000;
pub const PAGE_TABLES_SIZE: u64 = 0x8000;
/// The repair program's stack (grows down from its end).
pub const STACK_OFFSET: u64 = 0x9000;
pub const STACK_SIZE: u64 = 0x10000;
/// The repair program's ELF segments.
pub const PROGRAM_OFFSET: u64 = 0x20000;
pub const PROGRAM_MAX: u64 = 0x60000;
/// Pristine code copies and their table of contents.
pub const PRISTINE_OFFSET: u64 = 0x80000;

pub const HEADER_MAGIC: u64 = u64::from_le_bytes(*b"LZRSREPR");
pub const REPAIR_VERSION: u32 = 2;
pub const MAX_PRISTINE: usize = 1 + crate::root::MAX_EXTS;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RepairHeader {
    pub magic: u64,
    pub version: u32,
    pub pristine_count: u32,
    /// Bytes of the image in use.
    pub image_size: u64,
    /// Incremented every time the image is rebuilt (code changed).
    pub generation: u64,
    /// The symbol table: `symbol_count` [`ImageSymbol`]s sorted by address
    /// at `symbols_offset`, their names (NUL-free, not terminated) in
    /// `names_len` bytes at `names_offset`. Offsets are in the image.
    pub symbols_offset: u64,
    pub names_offset: u64,
    pub symbol_count: u32,
    pub names_len: u32,
}

/// One function of the kernel or of a loaded extension, at the address it
/// runs at, so the repair program can name the code that crashed without
/// the ELF files (which are not in the guest).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ImageSymbol {
    pub addr: u64,
    pub size: u32,
    /// Offset of the name in the names area; the name runs to the next
    /// symbol's name (or `name_len` bytes): see `name_len`.
    pub name_off: u32,
    pub name_len: u32,
    pub _pad: u32,
}

/// A pristine copy of code the kernel runs: the kernel's text and
/// read-only data, or one extension's whole image as loaded and relocated
/// (before its init ran), which is what a reset restores.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Pristine {
    /// Extension slot, or [`NONE`] for the kernel.
    pub ext_slot: u32,
    pub _pad: u32,
    /// Kernel virtual address the copy belongs at.
    pub va: u64,
    pub len: u64,
    /// Offset of the copy in the image.
    pub image_offset: u64,
    /// Part of the copy that is code (compared and restored after every
    /// crash): [va, va + code_len).
    pub code_len: u64,
    /// FNV-1a 64 of the code part, to check the copy itself.
    pub checksum: u64,
}

impl Pristine {
    pub const fn kernel(&self) -> bool {
        self.ext_slot == NONE
    }
}

// How the hypervisor detected the crash.
pub const DETECT_PANIC: u32 = 1;
pub const DETECT_TRIPLE_FAULT: u32 = 2;
pub const DETECT_HANG: u32 = 3;
pub const DETECT_INTERNAL_ERROR: u32 = 4;
pub const DETECT_OTHER: u32 = 5;
pub const DETECT_ENTRY_FAILURE: u32 = 6;

/// The name of a detector, as dumps and the crash database record it.
pub const fn detector_name(d: u32) -> &'static str {
    match d {
        DETECT_PANIC => "pvpanic",
        DETECT_TRIPLE_FAULT => "triple-fault",
        DETECT_HANG => "watchdog",
        DETECT_INTERNAL_ERROR => "kvm-internal-error",
        DETECT_ENTRY_FAILURE => "entry-failure",
        _ => "other",
    }
}

/// What the hypervisor tells the repair program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RepairInput {
    pub detector: u32,
    pub vcpu: u32,
    pub root_gpa: u64,
    pub mem_size: u64,
    /// Registers of the crashed vCPU at the exit.
    pub rip: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rflags: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cs: u64,
    /// Crashes of the same signature in a row so far (loop detection).
    pub repeat: u32,
    /// Disable an extension after this many crashes.
    pub ext_crash_limit: u32,
    /// Nonzero: the hypervisor already compared all code with the pristine
    /// copies (a native-speed memcmp) and found it intact, so the program
    /// skips that pass. Zero: the program compares and restores.
    pub code_verified: u32,
    pub _pad: u32,
    pub pristine: [Pristine; MAX_PRISTINE],
}

// Plan actions.
pub const PLAN_NONE: u32 = 0;
pub const PLAN_RESUME: u32 = 1;
/// Repair is not safe: dump and reboot.
pub const PLAN_FALLBACK: u32 = 2;

// Flags in `ResumePlan::ext_actions[slot]`.
pub const EXT_ACTION_RESET: u32 = 1;
pub const EXT_ACTION_DISABLED: u32 = 2;

/// What the repair program decided and did.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ResumePlan {
    pub action: u32,
    /// Quarantined pid (0: none, e.g. a fault in interrupt context).
    pub quarantined: u32,
    /// Faulty extension slot or [`NONE`].
    pub ext: u32,
    /// A process interrupted (not blamed) that continues, or 0.
    pub interrupted: u32,
    /// Resume: the kernel's recovery entry, a stack for it, its page tables.
    pub entry: u64,
    pub stack_top: u64,
    pub cr3: u64,
    /// Diagnosis.
    pub kind: u32,
    pub locks_released: u32,
    pub waiters_woken: u32,
    pub code_bytes_restored: u32,
    pub invariant_fixes: u32,
    pub _pad: u32,
    pub ext_actions: [u32; crate::root::MAX_EXTS],
    /// TSC when the program started and finished (profiling: the rest of
    /// the run is entry, exits and page-table warm-up).
    pub tsc_start: u64,
    pub tsc_end: u64,
    /// Why, in words (NUL-padded).
    pub reason: [u8; 96],
    /// The quarantined process's name.
    pub name: [u8; 16],
    /// The faulty extension's name.
    pub ext_name: [u8; 16],
    /// The function that crashed, from the image's symbol table, as
    /// `path::to::function+0x1a` (NUL-padded; empty when unknown).
    pub symbol: [u8; 96],
}

// Diagnosis kinds (names as in the offline diagnosis reports).
pub const KIND_UNKNOWN: u32 = 0;
pub const KIND_PANIC: u32 = 1;
pub const KIND_NULL_DEREF: u32 = 2;
pub const KIND_WILD_WRITE: u32 = 3;
pub const KIND_PAGE_FAULT: u32 = 4;
pub const KIND_GP: u32 = 5;
pub const KIND_INVALID_OPCODE: u32 = 6;
pub const KIND_DIVIDE: u32 = 7;
pub const KIND_STACK_OVERFLOW: u32 = 8;
pub const KIND_DOUBLE_FAULT: u32 = 9;
pub const KIND_HARD_LOCKUP: u32 = 10;
pub const KIND_SOFT_LOCKUP: u32 = 11;
pub const KIND_DEADLOCK: u32 = 12;
pub const KIND_LIST_CORRUPTION: u32 = 13;
pub const KIND_IRQ_FAULT: u32 = 14;
pub const KIND_TRIPLE_FAULT: u32 = 15;
pub const KIND_KVM_INTERNAL: u32 = 16;
/// A fail-silent extension: no crash, but it broke its contract or a
/// client reported it (`CRASH_EXT_FAILED`). Nobody is quarantined.
pub const KIND_EXT_FAILED: u32 = 17;
/// A sleeping process's saved state was corrupted (`CRASH_CONTEXT_CORRUPT`):
/// that process is quarantined before it runs on it.
pub const KIND_CONTEXT_CORRUPT: u32 = 18;

pub const fn kind_name(k: u32) -> &'static str {
    match k {
        KIND_PANIC => "panic",
        KIND_NULL_DEREF => "null-deref",
        KIND_WILD_WRITE => "wild-write",
        KIND_PAGE_FAULT => "page-fault",
        KIND_GP => "general-protection",
        KIND_INVALID_OPCODE => "invalid-opcode",
        KIND_DIVIDE => "divide-error",
        KIND_STACK_OVERFLOW => "stack-overflow",
        KIND_DOUBLE_FAULT => "double-fault",
        KIND_HARD_LOCKUP => "hard-lockup",
        KIND_SOFT_LOCKUP => "soft-lockup",
        KIND_DEADLOCK => "deadlock",
        KIND_LIST_CORRUPTION => "list-corruption",
        KIND_IRQ_FAULT => "irq-fault",
        KIND_TRIPLE_FAULT => "triple-fault",
        KIND_KVM_INTERNAL => "kvm-internal-error",
        KIND_EXT_FAILED => "extension-failure",
        KIND_CONTEXT_CORRUPT => "context-corruption",
        _ => "unknown",
    }
}

/// FNV-1a 64, the checksum of pristine copies (tiny and table-free, so the
/// no_std repair program and the host compute it identically).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_fits() {
        assert!(INPUT_OFFSET as usize >= core::mem::size_of::<RepairHeader>());
        assert!(
            INPUT_OFFSET as usize + core::mem::size_of::<RepairInput>() <= PLAN_OFFSET as usize
        );
        assert!(
            PLAN_OFFSET as usize + core::mem::size_of::<ResumePlan>()
                <= PAGE_TABLES_OFFSET as usize
        );
        const {
            assert!(STACK_OFFSET >= PAGE_TABLES_OFFSET + PAGE_TABLES_SIZE);
            assert!(PROGRAM_OFFSET >= STACK_OFFSET + STACK_SIZE);
            assert!(PRISTINE_OFFSET >= PROGRAM_OFFSET + PROGRAM_MAX);
        }
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
