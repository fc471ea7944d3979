//! What the hypervisor knows about a guest crash.
//!
//! For now this is the kind of crash, the vCPU's registers at that moment
//! and, for a crash the kernel reported itself, its own crash record.

use kvm_bindings::{kvm_regs, kvm_sregs};
use lazarus_abi::root::{CRASH_OOPS, CRASH_PANIC, CRASH_SOFT_LOCKUP, CrashRecord};

/// How the guest crashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrashKind {
    /// The kernel wrote to the pvpanic port (it panicked and filled its
    /// crash record first). `code` is the value written.
    GuestPanic { code: u8 },
    /// A triple fault (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// KVM could not run or emulate the guest (KVM_EXIT_INTERNAL_ERROR).
    InternalError { suberror: u32, data: Vec<u64> },
    /// VM entry failed (KVM_EXIT_FAIL_ENTRY).
    EntryFailure { reason: u64 },
    /// KVM reported a guest crash system event.
    SystemEvent { kind: u32 },
    /// An exit the VMM does not know how to continue from.
    UnhandledExit { reason: String },
    /// The watchdog saw the kernel's heartbeat stop (a hard lockup): the
    /// vCPU was kicked out of the guest and its state captured.
    Hang {
        heartbeat: u64,
        stalled_ms: u64,
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
    pub kind: CrashKind,
    /// The vCPU that crashed.
    pub vcpu: u32,
    /// Its registers, if KVM could still provide them.
    pub regs: Option<kvm_regs>,
    pub sregs: Option<kvm_sregs>,
    /// The kernel's own crash record (pvpanic crashes with a registered root).
    pub guest_record: Option<CrashRecord>,
    /// When the hypervisor detected it (downtime is measured from here).
    pub detected_at: std::time::Instant,
    /// Set when a resurrection was tried and was not safe: why.
    pub fallback: Option<String>,
}

impl CrashInfo {
    /// One line: what happened (the kernel's own account when it gave
    /// one), which process, which vCPU, where.
    pub fn summary(&self) -> String {
        let mut details = Vec::new();
        let mut s = match (&self.kind, &self.guest_record) {
            (CrashKind::GuestPanic { .. }, Some(rec)) => {
                if rec.pid != 0 {
                    details.push(format!("pid {}", rec.pid));
                }
                format!(
                    "kernel {}: \"{}\"",
                    guest_kind_name(rec.kind),
                    record_message(rec)
                )
            }
            (kind, _) => kind.to_string(),
        };
        details.push(format!("vCPU {}", self.vcpu));
        if let Some(regs) = &self.regs {
            details.push(format!("rip {:#x}", regs.rip));
        }
        s.push_str(&format!(" ({})", details.join(", ")));
        s
    }
}

/// The kernel's crash message (length clamped, NUL-terminated, lossy UTF-8).
pub fn record_message(rec: &CrashRecord) -> String {
    let len = (rec.msg_len as usize).min(rec.message.len());
    let raw = &rec.message[..len];
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).trim().to_string()
}

/// Name of a kernel-reported crash kind.
pub fn guest_kind_name(kind: u32) -> &'static str {
    match kind {
        CRASH_PANIC => "panic",
        CRASH_OOPS => "oops",
        CRASH_SOFT_LOCKUP => "soft lockup",
        _ => "crash",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn summary_includes_guest_details() {
        let mut rec = CrashRecord::new_zeroed();
        rec.kind = CRASH_OOPS;
        rec.pid = 7;
        rec.message[..5].copy_from_slice(b"boom!");
        rec.msg_len = 5000; // hostile length is clamped
        let info = CrashInfo {
            kind: CrashKind::GuestPanic { code: 1 },
            vcpu: 0,
            regs: Some(kvm_regs {
                rip: 0x1234,
                ..Default::default()
            }),
            sregs: None,
            guest_record: Some(rec),
            detected_at: std::time::Instant::now(),
            fallback: None,
        };
        let s = info.summary();
        assert!(s.contains("oops"), "{s}");
        assert!(s.contains("boom!"), "{s}");
        assert!(s.contains("pid 7"), "{s}");
        assert!(s.contains("0x1234"), "{s}");
    }
}
