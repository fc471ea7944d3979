//! The diagnosis, as data (serde) and as text for people.

use std::fmt::Write as _;

use lazarus_dump::Regs;
use serde::{Deserialize, Serialize};

/// Version of the report's JSON shape.
pub const REPORT_VERSION: u32 = 1;

/// What kind of crash this was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrashKind {
    /// An explicit kernel panic (`panic!` or the extension API's panic).
    Panic,
    /// A page fault below 4 KiB: a null pointer dereference.
    NullDeref,
    /// A page fault on a write to an unmapped address.
    WildWrite,
    /// Any other page fault in the kernel.
    PageFault,
    /// A general-protection fault (e.g. a non-canonical address).
    GeneralProtection,
    /// An invalid opcode (`ud2`) in ring 0.
    InvalidOpcode,
    /// A divide error.
    DivideError,
    /// A double fault caused by running into a kernel stack's guard page.
    StackOverflow,
    /// Any other double fault.
    DoubleFault,
    /// The watchdog saw the heartbeat stop (interrupts off in a loop).
    HardLockup,
    /// The kernel found a path running too long without scheduling.
    SoftLockup,
    /// A lockup while the offender spins on a lock that a live process
    /// (possibly itself) holds.
    Deadlock,
    /// A kernel list failed its integrity checks (often a use after free).
    ListCorruption,
    /// A CPU exception in interrupt context (e.g. a timer callback); the
    /// interrupted process is not blamed.
    IrqFault,
    /// The vCPU triple-faulted; the kernel could not report anything.
    TripleFault,
    /// KVM could not run the guest (e.g. an instruction it cannot emulate).
    KvmInternalError,
    /// Not a crash of the kernel: an extension broke its contract or a
    /// client reported it failed; the process it failed is its victim.
    ExtensionFailure,
    /// A sleeping process's saved state was corrupted; caught before it
    /// ran on it.
    ContextCorruption,
    /// Not a crash: a dump taken on request (the control API's
    /// `PUT /dump`) of a healthy, paused guest.
    OnDemand,
    /// Neither the detector nor the kernel's record says which kind.
    Unknown,
}

impl CrashKind {
    /// Every kind, in order.
    pub const ALL: [CrashKind; 20] = [
        CrashKind::Panic,
        CrashKind::NullDeref,
        CrashKind::WildWrite,
        CrashKind::PageFault,
        CrashKind::GeneralProtection,
        CrashKind::InvalidOpcode,
        CrashKind::DivideError,
        CrashKind::StackOverflow,
        CrashKind::DoubleFault,
        CrashKind::HardLockup,
        CrashKind::SoftLockup,
        CrashKind::Deadlock,
        CrashKind::ListCorruption,
        CrashKind::IrqFault,
        CrashKind::TripleFault,
        CrashKind::KvmInternalError,
        CrashKind::ExtensionFailure,
        CrashKind::ContextCorruption,
        CrashKind::OnDemand,
        CrashKind::Unknown,
    ];

    /// The repair ABI's number for this kind (`lazarus_abi::repair::KIND_*`,
    /// what the repair program diagnoses); `None` for an on-demand dump,
    /// which is not a crash.
    pub const fn code(self) -> Option<u32> {
        use lazarus_abi::repair::*;
        Some(match self {
            CrashKind::Panic => KIND_PANIC,
            CrashKind::NullDeref => KIND_NULL_DEREF,
            CrashKind::WildWrite => KIND_WILD_WRITE,
            CrashKind::PageFault => KIND_PAGE_FAULT,
            CrashKind::GeneralProtection => KIND_GP,
            CrashKind::InvalidOpcode => KIND_INVALID_OPCODE,
            CrashKind::DivideError => KIND_DIVIDE,
            CrashKind::StackOverflow => KIND_STACK_OVERFLOW,
            CrashKind::DoubleFault => KIND_DOUBLE_FAULT,
            CrashKind::HardLockup => KIND_HARD_LOCKUP,
            CrashKind::SoftLockup => KIND_SOFT_LOCKUP,
            CrashKind::Deadlock => KIND_DEADLOCK,
            CrashKind::ListCorruption => KIND_LIST_CORRUPTION,
            CrashKind::IrqFault => KIND_IRQ_FAULT,
            CrashKind::TripleFault => KIND_TRIPLE_FAULT,
            CrashKind::KvmInternalError => KIND_KVM_INTERNAL,
            CrashKind::ExtensionFailure => KIND_EXT_FAILED,
            CrashKind::ContextCorruption => KIND_CONTEXT_CORRUPT,
            CrashKind::Unknown => KIND_UNKNOWN,
            CrashKind::OnDemand => return None,
        })
    }

    /// The kind's name: the repair ABI's (`kind_name`), the one table of
    /// crash-kind names that the console line, the reports and the crash
    /// database share.
    pub const fn as_str(self) -> &'static str {
        match self.code() {
            Some(code) => lazarus_abi::repair::kind_name(code),
            None => "on-demand",
        }
    }

    /// Lockups are sampled at an arbitrary point of a loop, so only the
    /// looping code (not the exact instruction) identifies them.
    pub const fn is_lockup(self) -> bool {
        matches!(
            self,
            CrashKind::HardLockup | CrashKind::SoftLockup | CrashKind::Deadlock
        )
    }
}

impl std::fmt::Display for CrashKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The instruction at the faulting address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    /// Its virtual address (the faulting RIP).
    pub address: u64,
    /// The instruction's bytes, lowercase hex.
    pub bytes: String,
    /// Intel syntax, or "(bad)" when the bytes do not decode.
    pub disassembly: String,
    /// Where it is: `module!function+0xoff` (`module+0xoff` without
    /// symbols); `None` outside known code.
    pub symbol: Option<String>,
}

/// One frame of the backtrace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Position in the backtrace, 0 for the faulting instruction.
    pub index: usize,
    /// The faulting RIP for frame 0, a return address for the others.
    pub address: u64,
    /// "kernel" or the extension's name; `None` outside any known code.
    pub module: Option<String>,
    /// The (demangled) function containing `address`, when symbols are
    /// known.
    pub function: Option<String>,
    /// Offset of `address` from the function's start.
    pub offset: Option<u64>,
    /// Offset of `address` from the module's load base (stable across
    /// boots even without symbols).
    pub module_offset: Option<u64>,
    /// Source file of `address`, from the debug info.
    pub file: Option<String>,
    /// Source line in `file`.
    pub line: Option<u32>,
    /// Functions inlined at this address, innermost first.
    pub inlined: Vec<String>,
}

impl Frame {
    /// `module!function` (or `module+0xoffset` without symbols): the part
    /// of a frame that identifies code independently of where it was
    /// loaded.
    pub fn location(&self) -> String {
        match (&self.module, &self.function, self.module_offset) {
            (Some(m), Some(f), _) => format!("{m}!{f}"),
            (Some(m), None, Some(off)) => format!("{m}+{off:#x}"),
            _ => "?".to_string(),
        }
    }

    /// `module!function+0xoff (file:line)`.
    pub fn display(&self) -> String {
        let mut s = match (&self.function, self.offset) {
            (Some(_), Some(off)) => format!("{}+{off:#x}", self.location()),
            _ if self.module.is_some() => self.location(),
            _ => format!("{:#x}", self.address),
        };
        if !self.inlined.is_empty() {
            let _ = write!(s, " [inlined: {}]", self.inlined.join(" <- "));
        }
        if let Some(file) = &self.file {
            match self.line {
                Some(line) => {
                    let _ = write!(s, " ({file}:{line})");
                }
                None => {
                    let _ = write!(s, " ({file})");
                }
            }
        }
        s
    }
}

/// A process from the kernel's process table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Program name.
    pub name: String,
    /// Its state at the crash as `ps` names it ("running", "blocked", ...).
    pub state: String,
    /// Extension slot executing on its behalf.
    pub cur_ext: Option<u32>,
    /// System call in progress.
    pub syscall: Option<u64>,
    /// Lock it spins on.
    pub spinning_on: Option<u32>,
}

/// An extension slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionInfo {
    /// Extension slot in the kernel.
    pub slot: u32,
    /// Module name ("slot N" when the kernel's table has none).
    pub name: String,
    /// Load address; `None` when the dump does not locate the module.
    pub base: Option<u64>,
    /// GNU build id of its ELF (lowercase hex), to find its symbols.
    pub build_id: Option<String>,
}

/// A kernel lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The lock's index in the kernel's lock table.
    pub id: u32,
    /// The name given at creation.
    pub name: String,
    /// Holding pid (0 = free).
    pub owner: u32,
    /// The extension that created it, or `None` for the core kernel.
    pub extension: Option<String>,
}

/// The lock a process spins on and who holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockWait {
    /// The lock.
    pub lock: LockInfo,
    /// The process holding it.
    pub owner_pid: u32,
    /// That process's name.
    pub owner_name: Option<String>,
    /// The spinning process holds the lock itself (AA deadlock).
    pub recursive: bool,
}

/// The diagnosis of one dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub report_version: u32,
    /// What kind of crash.
    pub kind: CrashKind,
    /// One line: the kind and where.
    pub title: String,
    /// Short stable id of the bug: the same for the same bug across runs
    /// and boots, different for different bugs.
    pub signature: String,
    /// How the hypervisor detected it (the dump note's `detector`:
    /// "pvpanic", "watchdog", ..., or "on-demand").
    pub detector: String,
    /// The hypervisor's one-line summary.
    pub detail: String,
    /// The CPU exception's name, for an oops.
    pub exception: Option<String>,
    /// The exception vector, for an oops.
    pub vector: Option<u64>,
    /// The CPU's error code, for an oops.
    pub error_code: Option<u64>,
    /// The faulting address of a page fault.
    pub fault_address: Option<u64>,
    /// The kernel's own message, or the hypervisor's summary.
    pub message: String,
    /// The vCPU that crashed.
    pub crashed_vcpu: u32,
    /// Whether the crash happened in interrupt context.
    pub in_irq: bool,
    /// The VM boot that crashed (the dump note's `boot_id`).
    pub boot_id: String,
    /// When the dump was written, in milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// The lazarus that wrote the dump.
    pub lazarus_version: String,
    /// GNU build id of the kernel (lowercase hex).
    pub kernel_build_id: Option<String>,
    /// The instruction at the faulting RIP, if the dump holds it.
    pub faulting_instruction: Option<Instruction>,
    /// Frame-pointer backtrace from the faulting RIP, at most
    /// [`crate::MAX_FRAMES`] frames.
    pub backtrace: Vec<Frame>,
    /// The process the crash is blamed on (`None` in interrupt context).
    pub process: Option<ProcessInfo>,
    /// For a crash in interrupt context: the process it interrupted; for
    /// an extension failure: the process it failed.
    pub interrupted_process: Option<ProcessInfo>,
    /// The extension the crash is blamed on: the one executing (from the
    /// kernel's record or the faulting RIP) or the one reported failing.
    pub extension: Option<ExtensionInfo>,
    /// Kernel locks the blamed process held.
    pub locks_held: Vec<LockInfo>,
    /// For a deadlock: the lock the offender spins on and its holder.
    pub spinning_on: Option<LockWait>,
    /// Registers at the faulting instruction.
    pub registers: Option<Regs>,
    /// What could not be determined, and why.
    pub notes: Vec<String>,
}

fn process_line(p: &ProcessInfo) -> String {
    let mut s = format!("pid {} \"{}\" ({})", p.pid, p.name, p.state);
    if let Some(nr) = p.syscall {
        let _ = write!(s, ", in system call {nr}");
    }
    s
}

impl Report {
    /// The report for people.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: &str| {
            let _ = writeln!(s, "  {k:<13}{v}");
        };
        line("crash", &self.title);
        line("kind", self.kind.as_str());
        line("signature", &self.signature);
        line("detector", &format!("{} ({})", self.detector, self.detail));
        if let Some(e) = &self.exception {
            let mut v = e.clone();
            if let Some(vec) = self.vector {
                let _ = write!(v, ", vector {vec}");
            }
            if let Some(err) = self.error_code {
                let _ = write!(v, ", error code {err:#x}");
            }
            if let Some(a) = self.fault_address {
                let _ = write!(v, ", address {a:#x}");
            }
            line("exception", &v);
        }
        line("message", &self.message);
        line(
            "context",
            &format!(
                "vCPU {}{}",
                self.crashed_vcpu,
                if self.in_irq { ", interrupt" } else { "" }
            ),
        );
        match (&self.process, &self.interrupted_process) {
            (Some(p), _) => line("process", &process_line(p)),
            (None, Some(p)) => line(
                "process",
                &format!("none (interrupted {})", process_line(p)),
            ),
            (None, None) => line("process", "none"),
        }
        match &self.extension {
            Some(e) => line("extension", &format!("{} (slot {})", e.name, e.slot)),
            None => line("extension", "none (core kernel)"),
        }
        if self.locks_held.is_empty() {
            line("locks held", "none");
        } else {
            let locks: Vec<String> = self
                .locks_held
                .iter()
                .map(|l| {
                    format!(
                        "#{} \"{}\" ({})",
                        l.id,
                        l.name,
                        l.extension.as_deref().unwrap_or("kernel")
                    )
                })
                .collect();
            line("locks held", &locks.join(", "));
        }
        if let Some(w) = &self.spinning_on {
            line(
                "spinning on",
                &format!(
                    "lock #{} \"{}\" held by pid {}{}{}",
                    w.lock.id,
                    w.lock.name,
                    w.owner_pid,
                    w.owner_name
                        .as_ref()
                        .map_or(String::new(), |n| format!(" \"{n}\"")),
                    if w.recursive { " (itself)" } else { "" }
                ),
            );
        }
        line(
            "boot",
            &format!(
                "{} at {} ms (lazarus {})",
                self.boot_id, self.time_unix_ms, self.lazarus_version
            ),
        );
        if let Some(i) = &self.faulting_instruction {
            let _ = writeln!(s, "\nfaulting instruction:");
            let _ = writeln!(
                s,
                "  {:#x}: {:<24} {}{}",
                i.address,
                i.bytes,
                i.disassembly,
                i.symbol
                    .as_ref()
                    .map_or(String::new(), |sym| format!("    <{sym}>"))
            );
        }
        if !self.backtrace.is_empty() {
            let _ = writeln!(s, "\nbacktrace:");
            for f in &self.backtrace {
                let _ = writeln!(s, "  #{:<2} {:#018x} {}", f.index, f.address, f.display());
            }
        }
        if let Some(r) = &self.registers {
            let _ = writeln!(s, "\nregisters:");
            let regs = [
                ("rip", r.rip),
                ("rsp", r.rsp),
                ("rbp", r.rbp),
                ("rflags", r.rflags),
                ("rax", r.rax),
                ("rbx", r.rbx),
                ("rcx", r.rcx),
                ("rdx", r.rdx),
                ("rsi", r.rsi),
                ("rdi", r.rdi),
                ("r8", r.r8),
                ("r9", r.r9),
                ("r10", r.r10),
                ("r11", r.r11),
                ("r12", r.r12),
                ("r13", r.r13),
                ("r14", r.r14),
                ("r15", r.r15),
                ("cs", r.cs),
                ("ss", r.ss),
                ("cr2", r.cr2),
                ("cr3", r.cr3),
            ];
            for row in regs.chunks(4) {
                let cells: Vec<String> = row
                    .iter()
                    .map(|(n, v)| format!("{n:>6} {v:#018x}"))
                    .collect();
                let _ = writeln!(s, " {}", cells.join(" "));
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\nnotes:");
            for n in &self.notes {
                let _ = writeln!(s, "  - {n}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::CrashKind;

    /// The JSON name (serde's kebab-case) is the one name table's.
    #[test]
    fn serialized_names_are_the_abi_names() {
        for k in CrashKind::ALL {
            let json = serde_json::to_string(&k).expect("serialize");
            assert_eq!(json, format!("\"{}\"", k.as_str()), "{k:?}");
        }
        let mut codes: Vec<u32> = CrashKind::ALL.iter().filter_map(|k| k.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), CrashKind::ALL.len() - 1, "codes are unique");
    }
}
