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
    Panic,
    NullDeref,
    WildWrite,
    PageFault,
    GeneralProtection,
    InvalidOpcode,
    DivideError,
    StackOverflow,
    DoubleFault,
    HardLockup,
    SoftLockup,
    Deadlock,
    ListCorruption,
    IrqFault,
    TripleFault,
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
    pub address: u64,
    /// The instruction's bytes, lowercase hex.
    pub bytes: String,
    /// Intel syntax, or "(bad)" when the bytes do not decode.
    pub disassembly: String,
    pub symbol: Option<String>,
}

/// One frame of the backtrace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub index: usize,
    /// The faulting RIP for frame 0, a return address for the others.
    pub address: u64,
    /// "kernel" or the extension's name; `None` outside any known code.
    pub module: Option<String>,
    pub function: Option<String>,
    /// Offset of `address` from the function's start.
    pub offset: Option<u64>,
    /// Offset of `address` from the module's load base (stable across
    /// boots even without symbols).
    pub module_offset: Option<u64>,
    pub file: Option<String>,
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
    pub pid: u32,
    pub name: String,
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
    pub slot: u32,
    pub name: String,
    pub base: Option<u64>,
    pub build_id: Option<String>,
}

/// A kernel lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub id: u32,
    pub name: String,
    /// Holding pid (0 = free).
    pub owner: u32,
    /// The extension that created it, or `None` for the core kernel.
    pub extension: Option<String>,
}

/// The lock a process spins on and who holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockWait {
    pub lock: LockInfo,
    pub owner_pid: u32,
    pub owner_name: Option<String>,
    /// The spinning process holds the lock itself (AA deadlock).
    pub recursive: bool,
}

/// The diagnosis of one dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub report_version: u32,
    pub kind: CrashKind,
    /// One line: the kind and where.
    pub title: String,
    /// Short stable id of the bug: the same for the same bug across runs
    /// and boots, different for different bugs.
    pub signature: String,
    pub detector: String,
    /// The hypervisor's one-line summary.
    pub detail: String,
    /// The CPU exception's name, for an oops.
    pub exception: Option<String>,
    pub vector: Option<u64>,
    pub error_code: Option<u64>,
    /// The faulting address of a page fault.
    pub fault_address: Option<u64>,
    /// The kernel's own message, or the hypervisor's summary.
    pub message: String,
    pub crashed_vcpu: u32,
    pub in_irq: bool,
    pub boot_id: String,
    pub time_unix_ms: u64,
    pub lazarus_version: String,
    pub kernel_build_id: Option<String>,
    pub faulting_instruction: Option<Instruction>,
    pub backtrace: Vec<Frame>,
    /// The process the crash is blamed on (`None` in interrupt context).
    pub process: Option<ProcessInfo>,
    /// For a crash in interrupt context: the process it interrupted; for
    /// an extension failure: the process it failed.
    pub interrupted_process: Option<ProcessInfo>,
    pub extension: Option<ExtensionInfo>,
    pub locks_held: Vec<LockInfo>,
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
