//! The hidden repair image: its memory map and the mailbox through which
//! the hypervisor and the repair program talk.
//!
//! The image lives in host memory. Only while a crash is being repaired is
//! it mapped into the VM, at [`SLOT_GPA`] (a slot whose host memory is
//! swapped from a zeroed decoy to the image, or a fresh slot); the
//! repair program then runs on the crashed vCPU in ring 3 (native speed on
//! the emulated-ring-0 hosts of docs/PLATFORM.md) with the image's own page
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
/// [`RepairInput`], written by the hypervisor before every run.
pub const INPUT_OFFSET: u64 = 0x100;
/// [`ResumePlan`], zeroed by the hypervisor before every run and written by
/// the repair program.
pub const PLAN_OFFSET: u64 = 0x800;
/// Page tables built by the hypervisor.
pub const PAGE_TABLES_OFFSET: u64 = 0x1000;
/// Bytes reserved for those page tables.
pub const PAGE_TABLES_SIZE: u64 = 0x8000;
/// The repair program's stack (grows down from its end).
pub const STACK_OFFSET: u64 = 0x9000;
/// Bytes of that stack.
pub const STACK_SIZE: u64 = 0x10000;
/// The repair program's ELF segments.
pub const PROGRAM_OFFSET: u64 = 0x20000;
/// Largest program (all segments, `.bss` included), in bytes.
pub const PROGRAM_MAX: u64 = 0x60000;
/// Pristine code copies and their table of contents.
pub const PRISTINE_OFFSET: u64 = 0x80000;

/// [`RepairHeader::magic`]: "LZRSREPR".
pub const HEADER_MAGIC: u64 = u64::from_le_bytes(*b"LZRSREPR");
/// Version of this image layout and mailbox ([`RepairHeader::version`]).
pub const REPAIR_VERSION: u32 = 3;
/// Pristine copies an image holds: the kernel and one per extension slot.
pub const MAX_PRISTINE: usize = 1 + crate::root::MAX_EXTS;

/// The first bytes of the image, written by the hypervisor whenever it
/// (re)builds the image; the repair program finds its symbol table here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RepairHeader {
    /// [`HEADER_MAGIC`].
    pub magic: u64,
    /// [`REPAIR_VERSION`].
    pub version: u32,
    /// Pristine copies in use (entries of [`RepairInput::pristine`] with a
    /// nonzero length).
    pub pristine_count: u32,
    /// Bytes of the image in use.
    pub image_size: u64,
    /// Incremented every time the image is rebuilt (code changed).
    pub generation: u64,
    /// The symbol table: `symbol_count` [`ImageSymbol`]s sorted by address
    /// at `symbols_offset`, their names (NUL-free, not terminated) in
    /// `names_len` bytes at `names_offset`. Offsets are in the image.
    pub symbols_offset: u64,
    /// See `symbols_offset`.
    pub names_offset: u64,
    /// See `symbols_offset`.
    pub symbol_count: u32,
    /// See `symbols_offset`.
    pub names_len: u32,
}

/// One function of the kernel or of a loaded extension, at the address it
/// runs at, so the repair program can name the code that crashed without
/// the ELF files (which are not in the guest).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ImageSymbol {
    /// Kernel virtual address of the function's first byte.
    pub addr: u64,
    /// Bytes of the function (saturated at `u32::MAX`; 0 if unknown).
    pub size: u32,
    /// Offset of the name in the names area (`RepairHeader::names_offset`).
    pub name_off: u32,
    /// Bytes of the name (the image builder cuts long names).
    pub name_len: u32,
    /// Padding; zero.
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
    /// Padding; zero.
    pub _pad: u32,
    /// Kernel virtual address the copy belongs at.
    pub va: u64,
    /// Bytes of the copy; 0 marks an unused entry.
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
    /// Whether this is the kernel's copy (not an extension's).
    pub const fn kernel(&self) -> bool {
        self.ext_slot == NONE
    }
}

// How the hypervisor detected the crash (`RepairInput::detector`).
/// The kernel wrote the pvpanic port (it filled its crash record).
pub const DETECT_PANIC: u32 = 1;
/// The vCPU triple-faulted (shutdown); the kernel could not report.
pub const DETECT_TRIPLE_FAULT: u32 = 2;
/// The watchdog saw the heartbeat stop (a hard lockup).
pub const DETECT_HANG: u32 = 3;
/// KVM reported an internal error (e.g. an emulation failure).
pub const DETECT_INTERNAL_ERROR: u32 = 4;
/// Anything else: a crash system event or an exit the hypervisor cannot
/// continue from.
pub const DETECT_OTHER: u32 = 5;
/// KVM failed to enter the guest (invalid vCPU state).
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

/// Another vCPU as the hypervisor stopped it for the repair.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct StoppedCpu {
    /// Nonzero for an entry that describes a stopped vCPU.
    pub valid: u32,
    /// Its index.
    pub vcpu: u32,
    /// Where it stopped.
    pub rip: u64,
    /// Its stack pointer.
    pub rsp: u64,
    /// Its flags (IF: interrupts on).
    pub rflags: u64,
    /// Its code segment selector (the low two bits: its ring).
    pub cs: u64,
    /// A crash of its own it stopped with (it crashed at nearly the same
    /// moment), as a `DETECT_*`; 0 for none. The registers above are those
    /// at that crash.
    pub crashed: u32,
    /// Padding; zero.
    pub _pad: u32,
}

/// What the hypervisor tells the repair program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RepairInput {
    /// How the crash was detected: a `DETECT_*`.
    pub detector: u32,
    /// Index of the crashed vCPU (the one the program runs on).
    pub vcpu: u32,
    /// Guest-physical address of the kernel's state root.
    pub root_gpa: u64,
    /// Bytes of guest RAM.
    pub mem_size: u64,
    /// Registers of the crashed vCPU at the exit.
    pub rip: u64,
    /// See `rip`.
    pub rsp: u64,
    /// See `rip`.
    pub rbp: u64,
    /// See `rip`.
    pub rflags: u64,
    /// See `rip`.
    pub cr2: u64,
    /// See `rip`.
    pub cr3: u64,
    /// See `rip` (the code segment selector).
    pub cs: u64,
    /// Crashes of the same signature in a row so far (loop detection).
    pub repeat: u32,
    /// Disable an extension after this many crashes.
    pub ext_crash_limit: u32,
    /// Nonzero: the hypervisor already compared all code with the pristine
    /// copies (a native-speed memcmp) and found it intact, so the program
    /// skips that pass. Zero: the program compares and restores.
    pub code_verified: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// The pristine copies in the image, as of this run (unused entries
    /// have `len` 0).
    pub pristine: [Pristine; MAX_PRISTINE],
    /// Every other vCPU, stopped while the program runs (by index; the
    /// crashed one's entry is not valid).
    pub others: [StoppedCpu; crate::boot::MAX_CPUS],
}

// Plan actions (`ResumePlan::action`).
/// The plan as the hypervisor left it (zeroed): the program decided
/// nothing. Anything but [`PLAN_RESUME`] and [`PLAN_WAIT`] falls back.
pub const PLAN_NONE: u32 = 0;
/// Repaired: enter the kernel at `entry` on `stack_top` with `cr3`.
pub const PLAN_RESUME: u32 = 1;
/// Repair is not safe: dump and reboot.
pub const PLAN_FALLBACK: u32 = 2;
/// Not yet: another CPU is inside a critical section the repair must not
/// act under (the reason says which). The program changed nothing; the
/// hypervisor lets the other CPUs run briefly and runs it again.
pub const PLAN_WAIT: u32 = 3;

// Values of `ResumePlan::ext_actions[slot]` (0: nothing done).
/// The extension was restored from its pristine copy and will be
/// initialised again.
pub const EXT_ACTION_RESET: u32 = 1;
/// The extension reached the crash limit and was disabled.
pub const EXT_ACTION_DISABLED: u32 = 2;

/// Devices one repair may have reset.
pub const MAX_RESET_DEVICES: usize = 4;

/// What the repair program decided and did.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ResumePlan {
    /// A `PLAN_*`.
    pub action: u32,
    /// Quarantined pid (0: none, e.g. a fault in interrupt context).
    pub quarantined: u32,
    /// Faulty extension slot or [`NONE`].
    pub ext: u32,
    /// A process interrupted (not blamed) that continues, or 0.
    pub interrupted: u32,
    /// Resume: the kernel's recovery entry, a stack for it, its page tables.
    pub entry: u64,
    /// See `entry`; 16-byte aligned, inside the kernel image.
    pub stack_top: u64,
    /// See `entry`; must be the kernel's master PML4.
    pub cr3: u64,
    /// Diagnosis: a `KIND_*`.
    pub kind: u32,
    /// Kernel locks the program freed (held by the offender or the reset
    /// extension).
    pub locks_released: u32,
    /// Blocked processes it made runnable.
    pub waiters_woken: u32,
    /// Bytes of kernel or extension code it restored from pristine copies.
    pub code_bytes_restored: u32,
    /// Kernel invariants it found broken and repaired.
    pub invariant_fixes: u32,
    /// Other vCPUs (a bit each) whose own pending crash this repair also
    /// covers: they resume where they stopped instead of having a repair
    /// of their own.
    pub covered_cpus: u32,
    /// Per extension slot, an `EXT_ACTION_*` or 0.
    pub ext_actions: [u32; crate::root::MAX_EXTS],
    /// Device calls in progress in the reset extension that will be
    /// issued again (`CALL_RESTART`).
    pub calls_replayed: u32,
    /// Device calls that fail with `EIO` instead (`CALL_FAIL`).
    pub calls_failed: u32,
    /// Register windows (guest-physical bases) of the devices the reset
    /// extension drives, 0 = unused: the hypervisor resets them, as it
    /// restarts I/O, before the kernel runs again.
    pub reset_devices: [u64; MAX_RESET_DEVICES],
    /// TSC when the program started and finished (profiling: the rest of
    /// the run is entry, exits and page-table warm-up).
    pub tsc_start: u64,
    /// See `tsc_start`.
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
/// Not classified.
pub const KIND_UNKNOWN: u32 = 0;
/// An explicit kernel panic.
pub const KIND_PANIC: u32 = 1;
/// A page fault below 4 KiB (a null pointer dereference).
pub const KIND_NULL_DEREF: u32 = 2;
/// A page fault on a write to an unmapped address.
pub const KIND_WILD_WRITE: u32 = 3;
/// Any other page fault.
pub const KIND_PAGE_FAULT: u32 = 4;
/// A general-protection fault.
pub const KIND_GP: u32 = 5;
/// An invalid opcode in ring 0.
pub const KIND_INVALID_OPCODE: u32 = 6;
/// A divide error.
pub const KIND_DIVIDE: u32 = 7;
/// A double fault with the stack pointer in a kernel stack's guard page.
pub const KIND_STACK_OVERFLOW: u32 = 8;
/// Any other double fault.
pub const KIND_DOUBLE_FAULT: u32 = 9;
/// The heartbeat stopped (interrupts off in the kernel).
pub const KIND_HARD_LOCKUP: u32 = 10;
/// A kernel path ran too long without scheduling.
pub const KIND_SOFT_LOCKUP: u32 = 11;
/// A lockup while spinning on a kernel lock another process holds.
pub const KIND_DEADLOCK: u32 = 12;
/// A kernel list failed its integrity checks.
pub const KIND_LIST_CORRUPTION: u32 = 13;
/// A CPU exception in interrupt context (e.g. a timer callback).
pub const KIND_IRQ_FAULT: u32 = 14;
/// A triple fault: the kernel could not report the crash itself.
pub const KIND_TRIPLE_FAULT: u32 = 15;
/// A KVM internal error (e.g. an instruction KVM cannot emulate).
pub const KIND_KVM_INTERNAL: u32 = 16;
/// A fail-silent extension: no crash, but it broke its contract or a
/// client reported it (`CRASH_EXT_FAILED`). Nobody is quarantined.
pub const KIND_EXT_FAILED: u32 = 17;
/// A sleeping process's saved state was corrupted (`CRASH_CONTEXT_CORRUPT`):
/// that process is quarantined before it runs on it.
pub const KIND_CONTEXT_CORRUPT: u32 = 18;

/// The name of a diagnosis kind, as reports, dumps and the crash database
/// record it (`"unknown"` for an unknown code).
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
