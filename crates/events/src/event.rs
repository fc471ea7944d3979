//! What one line of the stream says: the envelope ([`Record`]) and the
//! events ([`Event`]).

use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The `"v"` of every line. Bumped when a field changes meaning or goes
/// away; new events and new fields do not bump it (readers ignore what
/// they do not know).
pub const SCHEMA_VERSION: u32 = 1;

/// One line of the stream. As Cloud Hypervisor's event monitor: a
/// timestamp, a source, the event's name and its properties; plus the
/// schema version and the VM boot the event belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// [`SCHEMA_VERSION`].
    pub v: u32,
    /// When it happened, RFC 3339 in UTC with microseconds.
    pub timestamp: String,
    /// The part of lazarus that saw it: `vm`, `resurrect` or `triage`.
    pub source: String,
    /// The random id of the VM boot it concerns (the dump notes and the
    /// crash database carry the same id); `null` when none does.
    pub boot_id: Option<String>,
    /// That boot's number in this `lazarus run`, 1-based.
    pub boot: Option<u64>,
    /// The event's name (`"event"`) and its fields (`"properties"`).
    #[serde(flatten)]
    pub event: Event,
}

impl Record {
    /// `event` of boot `boot` (`boot_id`), happening at `at`.
    pub fn new(at: SystemTime, boot_id: Option<&str>, boot: Option<u64>, event: Event) -> Record {
        Record {
            v: SCHEMA_VERSION,
            timestamp: humantime::format_rfc3339_micros(at).to_string(),
            source: event.source().to_string(),
            boot_id: boot_id.map(str::to_string),
            boot,
            event,
        }
    }
}

/// Every event, named in snake case in `"event"`, its fields in
/// `"properties"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "properties", rename_all = "snake_case")]
pub enum Event {
    /// A VM was created and its kernel starts.
    Boot {
        /// vCPUs.
        vcpus: u32,
        /// Guest RAM in MiB.
        memory_mib: u64,
        /// The `--on-crash` policy.
        on_crash: String,
    },
    /// The guest kernel crashed (every crash, resurrected or not).
    Crash {
        /// How the hypervisor saw it: `pvpanic`, `triple-fault`,
        /// `watchdog`, `kvm-internal-error`, `entry-failure`, `other`.
        detector: String,
        /// The vCPU that crashed.
        vcpu: u32,
        /// Its instruction pointer in hex (`"0xffffffff80101234"`: JSON
        /// numbers lose precision past 2^53), when KVM could still give it.
        rip: Option<String>,
        /// One line: what happened, on which vCPU, where.
        detail: String,
    },
    /// The crash was repaired and the kernel runs on.
    Resurrected {
        /// The repair program's diagnosis, e.g. `null-deref`.
        kind: String,
        /// The vCPU that crashed.
        vcpu: u32,
        /// The quarantined process, if one was blamed.
        pid: Option<u32>,
        /// Its name.
        process: Option<String>,
        /// The faulty extension, if any.
        extension: Option<String>,
        /// What was done to it: `reset` or `disabled`.
        extension_action: Option<String>,
        /// The function that crashed, when the repair image could name it.
        symbol: Option<String>,
        /// Crash to the kernel's return to user mode, in microseconds.
        latency_us: u64,
        /// Part of it: the kernel-memory snapshot for the dump.
        snapshot_us: u64,
        /// Part of it: the repair program's run.
        repair_us: u64,
        /// Part of it: the kernel's recovery entry to user mode.
        resume_us: u64,
        /// Bytes of corrupted kernel code restored.
        code_bytes_restored: u32,
        /// Other vCPUs whose crash at the same moment this repair covered.
        covered_vcpus: Vec<u32>,
        /// The console's `[lazarus] resurrected ...` line.
        summary: String,
    },
    /// Resurrection was not safe; the crash ends this boot.
    Fallback {
        /// A stable code: `refused`, `over-budget`, `no-state-root`, ...
        reason: String,
        /// The reason in words.
        detail: String,
    },
    /// The VM is rebooted.
    Reboot {
        /// `crash` (after a crash) or `requested` (the guest asked).
        cause: String,
    },
    /// The repair reset an extension to its pristine image.
    ExtensionReset {
        /// Its name (`slot N` when it has none).
        extension: String,
        /// Its slot in the kernel's extension table.
        slot: u32,
    },
    /// The repair disabled an extension (it crashed too often).
    ExtensionDisabled {
        /// Its name (`slot N` when it has none).
        extension: String,
        /// Its slot in the kernel's extension table.
        slot: u32,
    },
    /// A crash dump, its diagnosis and its crash-database row are written.
    DumpWritten {
        /// The ELF core.
        dump: PathBuf,
        /// The JSON report (a `.txt` lies beside it).
        report: PathBuf,
        /// The crash signature (its bucket in the crash database).
        signature: String,
        /// The report's one-line title.
        title: String,
        /// A dump taken on request (`PUT /dump`), not a crash.
        on_demand: bool,
    },
    /// `lazarus run` ends.
    Exit {
        /// Its exit code.
        code: u8,
        /// Why, in words.
        reason: String,
    },
}

impl Event {
    /// The event's name, as in `"event"`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Boot { .. } => "boot",
            Event::Crash { .. } => "crash",
            Event::Resurrected { .. } => "resurrected",
            Event::Fallback { .. } => "fallback",
            Event::Reboot { .. } => "reboot",
            Event::ExtensionReset { .. } => "extension_reset",
            Event::ExtensionDisabled { .. } => "extension_disabled",
            Event::DumpWritten { .. } => "dump_written",
            Event::Exit { .. } => "exit",
        }
    }

    /// Which part of lazarus reports it.
    pub fn source(&self) -> &'static str {
        match self {
            Event::Boot { .. }
            | Event::Crash { .. }
            | Event::Reboot { .. }
            | Event::Exit { .. } => "vm",
            Event::Resurrected { .. }
            | Event::Fallback { .. }
            | Event::ExtensionReset { .. }
            | Event::ExtensionDisabled { .. } => "resurrect",
            Event::DumpWritten { .. } => "triage",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_line_has_the_documented_shape() {
        let at = UNIX_EPOCH + Duration::from_micros(1_800_000_000_123_456);
        let r = Record::new(
            at,
            Some("abc"),
            Some(2),
            Event::Fallback {
                reason: "refused".into(),
                detail: "the repair program refused: x".into(),
            },
        );
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "v": 1,
                "timestamp": "2027-01-15T08:00:00.123456Z",
                "source": "resurrect",
                "boot_id": "abc",
                "boot": 2,
                "event": "fallback",
                "properties": {"reason": "refused", "detail": "the repair program refused: x"},
            })
        );
        let back: Record = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        assert_eq!(r.event.name(), "fallback");
    }

    #[test]
    fn names_match_the_serialized_tag() {
        let events = [
            Event::Boot {
                vcpus: 1,
                memory_mib: 64,
                on_crash: "resurrect".into(),
            },
            Event::Reboot {
                cause: "crash".into(),
            },
            Event::ExtensionDisabled {
                extension: "x".into(),
                slot: 1,
            },
            Event::Exit {
                code: 0,
                reason: "poweroff".into(),
            },
        ];
        for e in events {
            let v = serde_json::to_value(&e).unwrap();
            assert_eq!(v["event"], e.name(), "{v}");
        }
    }
}
