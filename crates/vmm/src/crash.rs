//! What the hypervisor knows about a guest crash: how it showed (the
//! exit or the watchdog), which vCPU, and its registers at that moment.
//! What the guest OS itself recorded is for OS-specific code to read.

use kvm_bindings::{kvm_regs, kvm_sregs};

use crate::error::HandlerError;

/// How the guest crashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrashKind {
    /// The kernel wrote to the pvpanic port (it panicked and filled its
    /// crash record first). `code` is the value written.
    GuestPanic {
        /// The byte written.
        code: u8,
    },
    /// A triple fault (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// KVM could not run or emulate the guest (KVM_EXIT_INTERNAL_ERROR).
    InternalError {
        /// KVM's suberror (1: emulation failure, ...).
        suberror: u32,
        /// KVM's extra data words.
        data: Vec<u64>,
    },
    /// VM entry failed (KVM_EXIT_FAIL_ENTRY).
    EntryFailure {
        /// The hardware's entry-failure reason.
        reason: u64,
    },
    /// KVM reported a guest crash system event.
    SystemEvent {
        /// KVM_SYSTEM_EVENT_* type.
        kind: u32,
    },
    /// An exit the VMM does not know how to continue from.
    UnhandledExit {
        /// The exit, as KVM described it.
        reason: String,
    },
    /// The watchdog saw a CPU's heartbeat stop (a hard lockup): that
    /// vCPU was kicked out of the guest and its state captured.
    Hang {
        /// The heartbeat value that stopped moving.
        heartbeat: u64,
        /// How long it had not moved.
        stalled_ms: u64,
        /// CPU time the vCPU thread burned meanwhile (a spinning guest,
        /// not a starved host), where the host could tell.
        cpu_ms: Option<u64>,
    },
}

impl std::fmt::Display for CrashKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CrashKind::GuestPanic { code } => write!(f, "kernel panic (pvpanic {code:#x})"),
            CrashKind::TripleFault => f.write_str("triple fault"),
            CrashKind::InternalError { suberror, .. } => {
                let what = match suberror {
                    1 => "emulation failure",
                    2 => "simultaneous exceptions",
                    3 => "delivery event failure",
                    _ => "internal error",
                };
                write!(f, "KVM {what} (suberror {suberror})")
            }
            CrashKind::EntryFailure { reason } => {
                write!(f, "VM entry failure (reason {reason:#x})")
            }
            CrashKind::SystemEvent { kind } => write!(f, "crash system event {kind}"),
            CrashKind::UnhandledExit { reason } => write!(f, "unhandled exit: {reason}"),
            CrashKind::Hang { stalled_ms, .. } => {
                write!(f, "hang: no kernel heartbeat for {stalled_ms} ms")
            }
        }
    }
}

/// A crash as reported by [`crate::Vm::run`].
#[derive(Clone, Debug)]
pub struct CrashInfo {
    /// How it showed.
    pub kind: CrashKind,
    /// The vCPU that crashed.
    pub vcpu: u32,
    /// Its registers, if KVM could still provide them.
    pub regs: Option<kvm_regs>,
    /// Its segment and control registers, likewise.
    pub sregs: Option<kvm_sregs>,
    /// When the hypervisor detected it (downtime is measured from here).
    pub detected_at: std::time::Instant,
    /// Set when the crash handler found a resurrection unsafe: why (its
    /// own typed error; `lazarus-resurrect` downcasts it).
    pub fallback: Option<HandlerError>,
}

impl CrashInfo {
    /// One line: what happened, on which vCPU, where.
    pub fn summary(&self) -> String {
        let mut s = self.kind.to_string();
        s.push_str(&format!(" (vCPU {}", self.vcpu));
        if let Some(regs) = &self.regs {
            s.push_str(&format!(", rip {:#x}", regs.rip));
        }
        s.push(')');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_kind_vcpu_and_rip() {
        let info = CrashInfo {
            kind: CrashKind::GuestPanic { code: 1 },
            vcpu: 1,
            regs: Some(kvm_regs {
                rip: 0x1234,
                ..Default::default()
            }),
            sregs: None,
            detected_at: std::time::Instant::now(),
            fallback: None,
        };
        let s = info.summary();
        assert!(s.contains("panic"), "{s}");
        assert!(s.contains("vCPU 1"), "{s}");
        assert!(s.contains("0x1234"), "{s}");
    }
}
