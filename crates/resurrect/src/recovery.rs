//! The report of one resurrection.

use std::time::Duration;

use lazarus_abi::repair::{
    EXT_ACTION_DISABLED, EXT_ACTION_RESET, KIND_EXT_FAILED, ResumePlan, kind_name,
};
use lazarus_abi::root::{CrashRecord, NONE};
use lazarus_vmm::CrashInfo;

use crate::snapshot::MemSnapshot;

/// One resurrection.
#[derive(Debug)]
pub struct Recovery {
    /// 0-based count of recoveries in this boot.
    pub seq: u64,
    /// The crash, as the hypervisor saw it.
    pub crash: CrashInfo,
    /// The kernel's own crash record, read before the repair, when the
    /// kernel reported the crash itself.
    pub guest_record: Option<CrashRecord>,
    /// What the repair program did and where the kernel resumed.
    pub plan: ResumePlan,
    /// Crash exit to the kernel's return to a user process.
    pub latency: Duration,
    /// Of which: taking the kernel-memory snapshot for the dump,
    pub snapshot_time: Duration,
    /// the repair program's run (slot mapped to doorbell),
    pub repair_time: Duration,
    /// removing the slot (overlaps the resume),
    pub unmap_time: Duration,
    /// and the kernel's recovery entry up to its return to user mode.
    pub resume_time: Duration,
    /// Kernel memory at the crash, for the dump.
    pub snapshot: MemSnapshot,
    /// Where the kernel's state root is.
    pub root_gpa: u64,
    /// Other vCPUs that were stopped while the image ran.
    pub others_stopped: usize,
}

impl Recovery {
    /// The crash kind the repair program diagnosed.
    pub fn kind(&self) -> &'static str {
        kind_name(self.plan.kind)
    }

    /// One line for the console and the log.
    pub fn summary(&self) -> String {
        let name = lazarus_abi::name_str(&self.plan.name);
        let who = if self.plan.quarantined != 0 {
            format!("quarantined pid {} ({name})", self.plan.quarantined)
        } else if self.plan.interrupted != 0 && self.plan.kind == KIND_EXT_FAILED {
            format!(
                "no process to blame (the extension failed its caller); pid {} continues",
                self.plan.interrupted
            )
        } else if self.plan.interrupted != 0 {
            format!(
                "no process to blame (interrupt context); pid {} continues",
                self.plan.interrupted
            )
        } else {
            "no process to blame".to_string()
        };
        let ext = if self.plan.ext != NONE {
            let action = match self.plan.ext_actions.get(self.plan.ext as usize) {
                Some(&EXT_ACTION_DISABLED) => ", disabled",
                Some(&EXT_ACTION_RESET) => ", reset",
                _ => "",
            };
            let ext_name = match lazarus_abi::name_str(&self.plan.ext_name) {
                "" => "an extension".to_string(),
                n => format!("extension {n}"),
            };
            format!(" in {ext_name} (slot {}{action})", self.plan.ext)
        } else {
            String::new()
        };
        let at = match lazarus_abi::name_str(&self.plan.symbol) {
            "" => String::new(),
            f => format!(" at {f}"),
        };
        // On SMP: which CPU crashed, and that the others were stopped too.
        let mut cpu = match self.others_stopped {
            0 => String::new(),
            n => format!(" on vCPU {} of {}", self.crash.vcpu, n + 1),
        };
        // Other CPUs' crashes of the same moment this repair covered.
        let covered: Vec<String> = (0..32)
            .filter(|i| self.plan.covered_cpus & (1 << i) != 0)
            .map(|i: u32| i.to_string())
            .collect();
        if !covered.is_empty() {
            cpu.push_str(&format!(
                " (and the crash of vCPU {} at the same moment)",
                covered.join(", ")
            ));
        }
        let mut code = match self.plan.code_bytes_restored {
            0 => String::new(),
            n => format!("; restored {n} bytes of corrupted code"),
        };
        // Shadow-driver recovery: what happened to calls in the driver.
        match (self.plan.calls_replayed, self.plan.calls_failed) {
            (0, 0) => {}
            (r, 0) => code.push_str(&format!("; {r} device call(s) replayed")),
            (r, f) => code.push_str(&format!(
                "; {r} device call(s) replayed, {f} failed with EIO (not replayable)"
            )),
        }
        format!(
            "resurrected after {}{ext}{at}{cpu}: {who}{code}; {:.3} ms",
            self.kind(),
            self.latency.as_secs_f64() * 1e3
        )
    }
}
