//! Host-side fault injection into a running lazarus guest.
//!
//! The fault models are those of Rio (Ng & Chen, the Rio file cache) and
//! Nooks (Swift et al., "Improving the reliability of commodity operating
//! systems"): corrupted extension code (bit flips, replaced instructions,
//! wrong registers, deleted branches), wild writes into kernel data and
//! corrupted kernel stacks. The guest does not cooperate: the injector
//! finds its targets through the kernel state root and the kernel's own
//! page tables and writes guest memory directly, as a real memory error or
//! a stray store from another driver would.
//!
//! Everything is deterministic: an [`Injector`] made from a seed, applied
//! to the same guest memory with the same [`FaultSpec`]s, makes the same
//! [`Injection`]s, so a campaign run can be replayed exactly. Instructions
//! are decoded with iced-x86, so instruction boundaries, branches and
//! register operands are real ones.
//!
//! ```no_run
//! # fn demo(mem: &lazarus_vmm::memory::GuestRam, root_gpa: u64) -> Result<(), lazarus_inject::InjectError> {
//! use lazarus_inject::{FaultSpec, FaultType, Injector};
//! let mut injector = Injector::new(42);
//! let spec = FaultSpec::new(FaultType::DeleteBranch).with_ext("crashtest");
//! let injection = injector.inject(mem, root_gpa, &spec)?;
//! println!("{}: {}", injection.target, injection.detail);
//! injection.revert(mem)?;
//! # Ok(()) }
//! ```

use core::fmt;
use core::str::FromStr;

use lazarus_abi::root::KernelRoot;
use lazarus_guestmem::{RootError, read_root};
use lazarus_vmm::memory::{GuestRam, read_bytes, write_bytes};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

mod code;
mod data;
mod fields;

/// The kinds of fault the injector can apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultType {
    /// Flip one or two random bits of a random instruction of an extension.
    BitFlip,
    /// Overwrite a random instruction of an extension with random bytes of
    /// the same length.
    ReplaceInstruction,
    /// Change the source or destination register of an instruction with a
    /// ModRM register operand.
    CorruptRegister,
    /// Replace a conditional or unconditional jump with NOPs.
    DeleteBranch,
    /// Eight random bytes at a random word of live kernel data (the state
    /// root or an allocated heap block).
    WildWriteKernel,
    /// Eight random bytes at a random word of one kernel table.
    WildWriteStruct,
    /// Random bytes over a random saved word of a live process's kernel
    /// stack.
    CorruptStack,
}

impl FaultType {
    /// Every fault type, in a fixed order.
    pub const ALL: [FaultType; 7] = [
        FaultType::BitFlip,
        FaultType::ReplaceInstruction,
        FaultType::CorruptRegister,
        FaultType::DeleteBranch,
        FaultType::WildWriteKernel,
        FaultType::WildWriteStruct,
        FaultType::CorruptStack,
    ];

    /// The kebab-case name used on the command line and in JSON.
    pub const fn name(self) -> &'static str {
        match self {
            FaultType::BitFlip => "bit-flip",
            FaultType::ReplaceInstruction => "replace-instruction",
            FaultType::CorruptRegister => "corrupt-register",
            FaultType::DeleteBranch => "delete-branch",
            FaultType::WildWriteKernel => "wild-write-kernel",
            FaultType::WildWriteStruct => "wild-write-struct",
            FaultType::CorruptStack => "corrupt-stack",
        }
    }

    /// One line on what the fault does, for help texts and reports.
    pub const fn description(self) -> &'static str {
        match self {
            FaultType::BitFlip => "flip 1-2 bits of a random extension instruction",
            FaultType::ReplaceInstruction => {
                "overwrite a random extension instruction with random bytes"
            }
            FaultType::CorruptRegister => {
                "change a register operand (ModRM reg/rm) of an extension instruction"
            }
            FaultType::DeleteBranch => "replace an extension's jump with NOPs",
            FaultType::WildWriteKernel => "write 8 random bytes into live kernel data",
            FaultType::WildWriteStruct => "write 8 random bytes into one kernel table",
            FaultType::CorruptStack => "overwrite a saved word on a process's kernel stack",
        }
    }

    /// Whether the fault targets extension code (and so takes
    /// [`FaultSpec::ext`]).
    pub const fn targets_code(self) -> bool {
        matches!(
            self,
            FaultType::BitFlip
                | FaultType::ReplaceInstruction
                | FaultType::CorruptRegister
                | FaultType::DeleteBranch
        )
    }
}

impl fmt::Display for FaultType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultType {
    type Err = InjectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultType::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| InjectError::UnknownFault(s.to_string()))
    }
}

/// The kernel tables a [`FaultType::WildWriteStruct`] can hit: fields of
/// the state root ([`KernelRoot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Structure {
    /// The process table.
    Procs,
    /// The run queue ring.
    Runq,
    /// The lock table.
    Locks,
    /// Pipes and their buffers.
    Pipes,
    /// Extension timers.
    Timers,
    /// IPC messages.
    Msgs,
    /// The extension table.
    Exts,
    /// The kernel heap's allocation map.
    Heap,
}

impl Structure {
    /// Every structure, in a fixed order.
    pub const ALL: [Structure; 8] = [
        Structure::Procs,
        Structure::Runq,
        Structure::Locks,
        Structure::Pipes,
        Structure::Timers,
        Structure::Msgs,
        Structure::Exts,
        Structure::Heap,
    ];

    /// The kebab-case name (also the root field's name).
    pub const fn name(self) -> &'static str {
        match self {
            Structure::Procs => "procs",
            Structure::Runq => "runq",
            Structure::Locks => "locks",
            Structure::Pipes => "pipes",
            Structure::Timers => "timers",
            Structure::Msgs => "msgs",
            Structure::Exts => "exts",
            Structure::Heap => "heap",
        }
    }

    /// Byte range of the structure relative to the start of the root.
    pub fn byte_range(self) -> core::ops::Range<u64> {
        let fields = fields::root_fields();
        // Every Structure names a root field (checked by a test), so the
        // fallback is never taken; it keeps this total without a panic.
        fields
            .iter()
            .find(|f| f.name == self.name())
            .map_or(0..0, |f| f.offset as u64..(f.offset + f.size) as u64)
    }
}

impl fmt::Display for Structure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Structure {
    type Err = InjectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Structure::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| InjectError::UnknownStructure(s.to_string()))
    }
}

/// What to inject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// The kind of fault.
    pub fault: FaultType,
    /// Target extension by name for code faults (any slot in use, even a
    /// disabled one); if `None`, the live extensions are tried in random
    /// order and the first with a suitable instruction is hit.
    pub ext: Option<String>,
    /// Target table for [`FaultType::WildWriteStruct`]; random if `None`.
    pub structure: Option<Structure>,
}

impl FaultSpec {
    /// A fault of type `fault` with every target chosen at random.
    pub fn new(fault: FaultType) -> Self {
        Self {
            fault,
            ext: None,
            structure: None,
        }
    }

    /// Targets the extension called `name`.
    pub fn with_ext(mut self, name: impl Into<String>) -> Self {
        self.ext = Some(name.into());
        self
    }

    /// Targets `structure` (for [`FaultType::WildWriteStruct`]).
    pub fn with_structure(mut self, structure: Structure) -> Self {
        self.structure = Some(structure);
        self
    }
}

/// One applied fault: where, and the bytes before and after, so it can be
/// reported, replayed and reverted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    /// The kind of fault applied.
    pub fault: FaultType,
    /// What was hit: `crashtest+0x1a3`, `root.locks[3]+0x8`,
    /// `pid 2 (shell) kstack top-0x60`.
    pub target: String,
    /// Kernel virtual address of the first changed byte.
    pub va: u64,
    /// Guest-physical address of `before`/`after` (one contiguous range).
    pub gpa: u64,
    /// The bytes at `gpa` before the fault.
    pub before: Vec<u8>,
    /// The bytes written there (as long as `before`).
    pub after: Vec<u8>,
    /// Human-readable account, e.g. the disassembly before → after.
    pub detail: String,
}

impl Injection {
    /// Writes `before` back, but only if memory still holds `after`: a
    /// guest that has since rewritten the bytes (or a repair that already
    /// restored them) must not be clobbered. Memory already holding
    /// `before` counts as reverted.
    pub fn revert(&self, mem: &GuestRam) -> Result<(), InjectError> {
        let len = self.after.len() as u64;
        if self.before.len() != self.after.len() || self.before.is_empty() {
            return Err(InjectError::Malformed);
        }
        let now =
            read_bytes(mem, self.gpa, len).ok_or(InjectError::BadAddress { gpa: self.gpa, len })?;
        if now == self.before {
            return Ok(());
        }
        if now != self.after {
            return Err(InjectError::Changed { gpa: self.gpa, len });
        }
        write_guest(mem, self.gpa, &self.before)
    }

    /// Whether guest memory still holds the injected bytes.
    pub fn is_present(&self, mem: &GuestRam) -> bool {
        read_bytes(mem, self.gpa, self.after.len() as u64).is_some_and(|b| b == self.after)
    }
}

/// Why an injection could not be made or reverted.
#[derive(thiserror::Error, Debug)]
pub enum InjectError {
    /// The kernel has not registered a state root, or its header is bad.
    #[error("no usable kernel state root at {gpa:#x}: {source}")]
    NoRoot {
        /// The root's guest-physical address (0: not registered).
        gpa: u64,
        /// What is wrong with it.
        #[source]
        source: RootError,
    },
    /// [`FaultSpec::ext`] names no extension slot in use.
    #[error("extension {0:?} is not loaded")]
    ExtNotLoaded(String),
    /// A code fault without a target, and no extension is live.
    #[error("no extension is loaded")]
    NoExtension,
    /// The extension's slot describes an implausible code range (guest
    /// data is not trusted).
    #[error("extension {name:?} (slot {slot}) has an unusable code range: {reason}")]
    BadExtension {
        /// The extension's name.
        name: String,
        /// Its slot.
        slot: usize,
        /// What is wrong with the range.
        reason: String,
    },
    /// The extension's code has no instruction this fault type can change
    /// (e.g. no branch for [`FaultType::DeleteBranch`]).
    #[error("no instruction in {ext} is suitable for {fault}")]
    NoSuitableInstruction {
        /// The fault type.
        fault: FaultType,
        /// The extension's name.
        ext: String,
    },
    /// [`FaultType::CorruptStack`] found no live process with a plausible
    /// saved kernel stack.
    #[error("no live process has a usable kernel stack")]
    NoLiveProcess,
    /// A target's kernel virtual address does not translate.
    #[error("kernel address {va:#x} is not mapped by the master page tables")]
    Unmapped {
        /// The address.
        va: u64,
    },
    /// A guest-physical range outside guest RAM.
    #[error("[{gpa:#x}, +{len:#x}) is not inside guest RAM")]
    BadAddress {
        /// Start of the range.
        gpa: u64,
        /// Its length in bytes.
        len: u64,
    },
    /// Writing guest memory failed.
    #[error("writing guest memory at {gpa:#x} failed: {reason}")]
    Write {
        /// Where.
        gpa: u64,
        /// The memory layer's error.
        reason: String,
    },
    /// Reverting: the guest (or a repair) has rewritten the injected bytes
    /// since; they are left alone.
    #[error("memory at [{gpa:#x}, +{len:#x}) no longer holds the injected bytes; not reverting")]
    Changed {
        /// Start of the range.
        gpa: u64,
        /// Its length in bytes.
        len: u64,
    },
    /// Reverting: `before` and `after` are empty or differ in length.
    #[error("injection record is malformed (before/after empty or of different lengths)")]
    Malformed,
    /// Parsing: not the name of a [`FaultType`].
    #[error("unknown fault type {0:?} (expected one of: {names})", names = fault_names())]
    UnknownFault(String),
    /// Parsing: not the name of a [`Structure`].
    #[error("unknown kernel structure {0:?} (expected one of: {names})", names = structure_names())]
    UnknownStructure(String),
}

fn fault_names() -> String {
    FaultType::ALL.map(FaultType::name).join(", ")
}

fn structure_names() -> String {
    Structure::ALL.map(Structure::name).join(", ")
}

/// Makes deterministic injections from one seed.
#[derive(Clone, Debug)]
pub struct Injector {
    seed: u64,
    rng: ChaCha8Rng,
}

impl Injector {
    /// An injector whose choices all follow from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The seed this injector was made with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Applies one fault; returns what was changed so it can be reported
    /// and reverted. Nothing is written when an error is returned.
    ///
    /// The guest should be paused (or at least not changing the target)
    /// while this runs: it reads the state root and then writes.
    pub fn inject(
        &mut self,
        mem: &GuestRam,
        root_gpa: u64,
        spec: &FaultSpec,
    ) -> Result<Injection, InjectError> {
        let root = load_root(mem, root_gpa)?;
        let guest = Guest {
            mem,
            root: &root,
            root_gpa,
        };
        let injection = match spec.fault {
            FaultType::BitFlip
            | FaultType::ReplaceInstruction
            | FaultType::CorruptRegister
            | FaultType::DeleteBranch => {
                let mut result = Err(InjectError::NoExtension);
                for slot in code::ExtCode::slots(&guest, spec.ext.as_deref(), &mut self.rng)? {
                    result = code::ExtCode::read(&guest, slot)
                        .and_then(|ext| code::plan(&ext, spec.fault, &mut self.rng));
                    if result.is_ok() {
                        break;
                    }
                }
                result?
            }
            FaultType::WildWriteKernel => data::wild_write_kernel(&guest, &mut self.rng)?,
            FaultType::WildWriteStruct => {
                data::wild_write_struct(&guest, spec.structure, &mut self.rng)?
            }
            FaultType::CorruptStack => data::corrupt_stack(&guest, &mut self.rng)?,
        };
        write_guest(mem, injection.gpa, &injection.after)?;
        Ok(injection)
    }
}

/// What the planners need: memory and a private copy of the root.
pub(crate) struct Guest<'a> {
    pub mem: &'a GuestRam,
    pub root: &'a KernelRoot,
    pub root_gpa: u64,
}

/// The root at `gpa` (0: not registered), header checked.
fn load_root(mem: &GuestRam, gpa: u64) -> Result<Box<KernelRoot>, InjectError> {
    read_root(mem, gpa).map_err(|source| InjectError::NoRoot { gpa, source })
}

fn write_guest(mem: &GuestRam, gpa: u64, bytes: &[u8]) -> Result<(), InjectError> {
    write_bytes(mem, gpa, bytes).map_err(|e| InjectError::Write {
        gpa,
        reason: e.to_string(),
    })
}

/// The name of extension slot `slot`, without its NUL padding.
pub(crate) fn ext_name(root: &KernelRoot, slot: usize) -> String {
    root.exts
        .get(slot)
        .map(|e| cstr(&e.name))
        .unwrap_or_default()
}

/// A NUL-padded name field as text (lossy: names are guest data).
pub(crate) fn cstr(bytes: &[u8]) -> String {
    let n = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..n]).into_owned()
}

/// `bytes` as space-separated hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
