//! Capturing a crashed guest: its registers and the memory a dump needs,
//! taken while it is stopped (or at the crash, for a resurrected one).

use std::sync::Arc;

use kvm_bindings::{kvm_regs, kvm_sregs};
use lazarus_abi::root::{CRASH_OOPS, CRASH_PANIC, CRASH_SOFT_LOCKUP, CrashRecord, KernelRoot};
use lazarus_dump::{CrashNote, VcpuState};
use lazarus_guestmem::read_root;
use lazarus_resurrect::{MemSnapshot, Recovery};
use lazarus_vmm::memory::GuestRam;
use lazarus_vmm::{CrashInfo, CrashKind, Vm};

use crate::note::{BuildIds, NoteInput, to_regs};

/// Guest memory for a dump.
pub enum RamSource {
    /// The crashed VM's RAM itself (not a copy): nothing runs in it any
    /// more, and holding it costs nothing while a new VM boots.
    Shared(Arc<GuestRam>, usize),
    /// A crash-time snapshot of kernel memory (the guest was resurrected
    /// and runs on).
    Snapshot(MemSnapshot),
    /// A copy of all guest RAM taken while the guest was paused (an
    /// on-demand dump; the guest runs on).
    Copy(Vec<u8>),
}

/// Everything needed to write a dump.
pub struct Captured {
    /// The crash note.
    pub note: CrashNote,
    /// The memory.
    pub ram: RamSource,
    /// What was done about the crash (`resurrect`, `halt`, `reboot`, ...).
    pub action: &'static str,
    /// Why resurrection fell back to a reboot, if it did
    /// (`lazarus_resurrect::Fallback::code`).
    pub fallback: Option<&'static str>,
}

/// One line: what happened (the kernel's own account when it gave one),
/// which process, which vCPU, where.
pub fn crash_summary(info: &CrashInfo, record: Option<&CrashRecord>) -> String {
    let mut details = Vec::new();
    let mut s = match (&info.kind, record) {
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
    details.push(format!("vCPU {}", info.vcpu));
    if let Some(regs) = &info.regs {
        details.push(format!("rip {:#x}", regs.rip));
    }
    s.push_str(&format!(" ({})", details.join(", ")));
    s
}

/// The kernel's crash message (length clamped, NUL-terminated, lossy UTF-8).
fn record_message(rec: &CrashRecord) -> String {
    let len = (rec.msg_len as usize).min(rec.message.len());
    let raw = &rec.message[..len];
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).trim().to_string()
}

/// Name of a kernel-reported crash kind.
fn guest_kind_name(kind: u32) -> &'static str {
    match kind {
        CRASH_PANIC => "panic",
        CRASH_OOPS => "oops",
        CRASH_SOFT_LOCKUP => "soft lockup",
        _ => "crash",
    }
}

/// The kernel's state root in `vm`'s RAM, if it registered a sound one.
fn vm_root(vm: &Vm) -> Option<Box<KernelRoot>> {
    read_root(vm.memory(), vm.root_gpa()?).ok()
}

/// The kernel's own crash record, for a crash it reported itself.
fn record_of<'a>(info: &CrashInfo, root: Option<&'a KernelRoot>) -> Option<&'a CrashRecord> {
    matches!(info.kind, CrashKind::GuestPanic { .. })
        .then_some(root)
        .flatten()
        .map(|r| &r.crash)
}

/// Takes a stopped VM's memory and state after `info`.
pub fn capture_crash(
    ids: &BuildIds,
    vm: &Vm,
    info: &CrashInfo,
    boot_id: &str,
    action: &'static str,
) -> Captured {
    let root = vm_root(vm);
    let record = record_of(info, root.as_deref());
    let mut vcpus = Vec::new();
    for id in 0..vm.layout().vcpus {
        let (regs, sregs) = match vm.vcpu_fd(id) {
            Some(fd) => (fd.get_regs().ok(), fd.get_sregs().ok()),
            None => (None, None),
        };
        // The crashed vCPU's state was captured at the exit.
        let (regs, sregs) = if id == info.vcpu {
            (info.regs.or(regs), info.sregs.or(sregs))
        } else {
            (regs, sregs)
        };
        vcpus.push(VcpuState {
            id,
            regs: to_regs(regs.as_ref(), sregs.as_ref()),
        });
    }
    let note = ids.note(NoteInput {
        detector: lazarus_resurrect::detector_name(&info.kind),
        crashed_vcpu: info.vcpu,
        boot_id,
        detail: crash_summary(info, record),
        root_gpa: vm.root_gpa(),
        root: root.as_deref(),
        guest_record: record,
        vcpus,
    });
    Captured {
        note,
        ram: RamSource::Shared(vm.memory_arc(), vm.layout().mem_size as usize),
        action,
        fallback: lazarus_resurrect::Fallback::of(info).map(|f| f.code()),
    }
}

/// The dump material of a resurrected crash: its snapshot, which holds
/// the state root as it was at the crash.
pub(crate) fn recovery(ids: &BuildIds, rec: Recovery, boot_id: &str) -> Captured {
    let info = &rec.crash;
    // The snapshot holds the root as it was at the crash.
    let root = read_root(&rec.snapshot, rec.root_gpa).ok();
    let mut detail = crash_summary(info, rec.guest_record.as_ref());
    detail.push_str(&format!("; {}", rec.summary()));
    let vcpus = vec![VcpuState {
        id: info.vcpu,
        regs: to_regs(info.regs.as_ref(), info.sregs.as_ref()),
    }];
    let note = ids.note(NoteInput {
        detector: lazarus_resurrect::detector_name(&info.kind),
        crashed_vcpu: info.vcpu,
        boot_id,
        detail,
        root_gpa: Some(rec.root_gpa),
        root: root.as_deref(),
        guest_record: rec.guest_record.as_ref(),
        vcpus,
    });
    Captured {
        note,
        ram: RamSource::Snapshot(rec.snapshot),
        action: "resurrect",
        fallback: None,
    }
}

/// What an on-demand dump is made of: all guest RAM and every vCPU's
/// registers, copied while the guest was paused.
pub struct OnDemand {
    /// All of guest RAM.
    pub ram: Vec<u8>,
    /// Every vCPU's registers.
    pub vcpus: Vec<(u32, Option<kvm_regs>, Option<kvm_sregs>)>,
    /// The registered state root.
    pub root_gpa: Option<u64>,
    /// Why the operator asked for it.
    pub reason: Option<String>,
}

pub(crate) fn on_demand(ids: &BuildIds, d: OnDemand, boot_id: &str) -> Captured {
    let root = d.root_gpa.and_then(|gpa| read_root(&d.ram[..], gpa).ok());
    let detail = match &d.reason {
        Some(r) => format!("on-demand dump through the control API, not a crash: {r}"),
        None => "on-demand dump through the control API, not a crash".to_string(),
    };
    let note = ids.note(NoteInput {
        detector: lazarus_diagnose::CrashKind::OnDemand.as_str(),
        crashed_vcpu: d.vcpus.first().map_or(0, |v| v.0),
        boot_id,
        detail,
        root_gpa: d.root_gpa,
        root: root.as_deref(),
        guest_record: None,
        vcpus: d
            .vcpus
            .iter()
            .map(|(id, r, s)| VcpuState {
                id: *id,
                regs: to_regs(r.as_ref(), s.as_ref()),
            })
            .collect(),
    });
    Captured {
        note,
        ram: RamSource::Copy(d.ram),
        action: "on-demand",
        fallback: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn summary_includes_the_kernels_own_account() {
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
            detected_at: std::time::Instant::now(),
            fallback: None,
        };
        let s = crash_summary(&info, Some(&rec));
        assert!(s.contains("oops"), "{s}");
        assert!(s.contains("boom!"), "{s}");
        assert!(s.contains("pid 7"), "{s}");
        assert!(s.contains("0x1234"), "{s}");
        let s = crash_summary(&info, None);
        assert!(s.contains("kernel panic"), "{s}");
        assert!(!s.contains("boom!"), "{s}");
    }
}
