//! What the hypervisor knows about a crash, stored as JSON in the core's
//! `LAZARUS` note. The same types are the writer's input, so the VMM and
//! the offline tools cannot disagree about a field.

use lazarus_abi::root::CrashRecord;
use lazarus_abi::trap::TrapFrame;
use serde::{Deserialize, Serialize};

/// The `CrashNote::format_version` this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// x86-64 registers of one vCPU (a superset of gdb's `user_regs_struct`
/// plus the control registers the diagnoser needs). Segment fields hold
/// selectors; `fs_base`/`gs_base` the segment bases. A register the source
/// did not have (a trap frame has no control registers) is 0.
// Every field is named after the register it holds (JSON keys too).
#[allow(missing_docs)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub rsp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cs: u64,
    pub ss: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

impl From<&TrapFrame> for Regs {
    /// The registers the kernel's trap entry saved; segment bases and
    /// control registers are not in a trap frame and stay zero.
    fn from(f: &TrapFrame) -> Self {
        Regs {
            rax: f.rax,
            rbx: f.rbx,
            rcx: f.rcx,
            rdx: f.rdx,
            rsi: f.rsi,
            rdi: f.rdi,
            rbp: f.rbp,
            rsp: f.rsp,
            r8: f.r8,
            r9: f.r9,
            r10: f.r10,
            r11: f.r11,
            r12: f.r12,
            r13: f.r13,
            r14: f.r14,
            r15: f.r15,
            rip: f.rip,
            rflags: f.rflags,
            cs: f.cs,
            ss: f.ss,
            ..Regs::default()
        }
    }
}

/// One vCPU's registers at the exit that ended the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuState {
    /// vCPU index.
    pub id: u32,
    /// Its registers as KVM reported them.
    pub regs: Regs,
}

/// A kernel extension that was loaded when the guest crashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtLoad {
    /// Extension slot in the kernel.
    pub slot: u32,
    /// Module name, as loaded (`ramdisk`).
    pub name: String,
    /// Virtual load base and mapped size.
    pub base: u64,
    /// See `base`.
    pub size: u64,
    /// Executable range (virtual).
    pub text_start: u64,
    /// See `text_start` (exclusive end).
    pub text_end: u64,
    /// GNU build id of the module's ELF, lowercase hex.
    pub build_id: Option<String>,
}

/// The crash as the hypervisor saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashNote {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Version of the lazarus that wrote the dump.
    pub lazarus_version: String,
    /// When the dump was written, in milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// Random per VM boot.
    pub boot_id: String,
    /// "pvpanic" | "triple-fault" | "watchdog" | "kvm-internal-error" |
    /// "entry-failure" | "other", or "on-demand" for a dump taken on
    /// request (the control API) that is not a crash.
    pub detector: String,
    /// One-line human summary from the hypervisor.
    pub detail: String,
    /// Index of the vCPU that crashed (see `vcpus`).
    pub crashed_vcpu: u32,
    /// Guest-physical address of `lazarus_abi::root::KernelRoot`, if the
    /// kernel registered it.
    pub root_gpa: Option<u64>,
    /// GNU build id of the kernel ELF (lowercase hex), to find its symbols.
    pub kernel_build_id: Option<String>,
    /// Live extensions at crash time.
    pub extensions: Vec<ExtLoad>,
    /// The kernel's own crash record, when it reported the crash (pvpanic).
    pub guest_record: Option<GuestRecord>,
    /// The real vCPU registers at the exit.
    pub vcpus: Vec<VcpuState>,
}

/// What memory a dump holds (the `LAZARUS` memory note, since dumps are
/// sized to their content). Dumps without it hold all of guest RAM, every
/// segment pointing into one copy of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryNote {
    /// Bytes of RAM the guest had (guest-physical `0..ram_size`).
    pub ram_size: u64,
    /// Whether all of RAM was captured (a stopped guest), or only some
    /// ranges (a crash-time snapshot of kernel memory). All-zero pages of
    /// what was captured are not stored either way; they read as zero.
    pub all_ram: bool,
    /// Bytes of guest memory stored in the file.
    pub stored_bytes: u64,
}

/// The kernel's [`CrashRecord`], in host-friendly form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRecord {
    /// The kernel's crash count (`CrashRecord::seq`).
    pub seq: u64,
    /// `lazarus_abi::root::CRASH_*` kind.
    pub kind: u32,
    /// Exception vector of an oops.
    pub vector: u64,
    /// CPU error code of an oops.
    pub error_code: u64,
    /// Faulting address of a page fault, else 0.
    pub cr2: u64,
    /// Offending pid (0: none).
    pub pid: u32,
    /// Executing extension slot, or `lazarus_abi::root::NONE`.
    pub ext: u32,
    /// Nonzero if it crashed in interrupt context.
    pub in_irq: u32,
    /// The kernel's message (lossy UTF-8, up to the first NUL).
    pub message: String,
    /// Registers at the faulting instruction, from the trap frame (control
    /// registers zero).
    pub frame: Regs,
}

impl From<&CrashRecord> for GuestRecord {
    fn from(r: &CrashRecord) -> Self {
        // The guest wrote these fields: clamp the length, stop at a NUL.
        let len = (r.msg_len as usize).min(r.message.len());
        let raw = &r.message[..len];
        let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
        GuestRecord {
            seq: r.seq,
            kind: r.kind,
            vector: r.vector,
            error_code: r.error_code,
            cr2: r.cr2,
            pid: r.pid,
            ext: r.ext,
            in_irq: r.in_irq,
            message: String::from_utf8_lossy(&raw[..end]).into_owned(),
            frame: Regs::from(&r.frame),
        }
    }
}

impl CrashNote {
    /// Exit-time registers of vCPU `id`, if recorded.
    pub fn vcpu(&self, id: u32) -> Option<&Regs> {
        self.vcpus.iter().find(|v| v.id == id).map(|v| &v.regs)
    }

    /// The registers at the faulting instruction: the kernel's trap frame
    /// when it reported the crash, else the crashed vCPU at the exit. The
    /// frame lacks segment bases and control registers; those come from
    /// the exit-time state (the kernel does not change them on its crash
    /// path).
    pub fn crash_regs(&self) -> Option<Regs> {
        let exit = self.vcpu(self.crashed_vcpu);
        match (&self.guest_record, exit) {
            (Some(rec), exit) => {
                let mut r = rec.frame.clone();
                if let Some(e) = exit {
                    r.ds = e.ds;
                    r.es = e.es;
                    r.fs = e.fs;
                    r.gs = e.gs;
                    r.fs_base = e.fs_base;
                    r.gs_base = e.gs_base;
                    r.cr0 = e.cr0;
                    r.cr2 = e.cr2;
                    r.cr3 = e.cr3;
                    r.cr4 = e.cr4;
                    r.efer = e.efer;
                }
                Some(r)
            }
            (None, Some(e)) => Some(e.clone()),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn guest_record_from_crash_record_clamps_the_message() {
        let mut rec = CrashRecord::new_zeroed();
        rec.kind = lazarus_abi::root::CRASH_OOPS;
        rec.pid = 3;
        rec.frame.rip = 0x1234;
        rec.frame.rbp = 0x55;
        rec.message[..4].copy_from_slice(b"oops");
        rec.msg_len = 9999;
        let g = GuestRecord::from(&rec);
        assert_eq!(g.message, "oops");
        assert_eq!(g.frame.rip, 0x1234);
        assert_eq!(g.frame.rbp, 0x55);
        assert_eq!(g.pid, 3);
        rec.message = [0xff; 128];
        rec.msg_len = 2;
        assert_eq!(GuestRecord::from(&rec).message, "\u{fffd}\u{fffd}");
    }
}
