//! How one fault ended, and its record in the report.

use serde::Serialize;

/// How one fault ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Nothing happened within the activation window and every survivor
    /// is intact; the injected bytes were put back.
    NotActivated,
    /// Resurrected, the offender quarantined, survivors intact.
    Recovered,
    /// The hypervisor fell back to a reboot.
    RecoveredByReboot,
    /// The shell stopped answering (the VM is rebooted).
    Hung,
    /// `kv check` lost keys, a worker found its state corrupt, or
    /// extclient read back wrong data.
    SilentCorruption,
    /// Activated without crashing the kernel: the extension returned
    /// errors or stopped serving its client (a fail-silent driver).
    /// Survivors' data intact; the campaign removes the fault.
    ExtensionFailed,
}

impl Outcome {
    /// Every outcome, in the order of the report's columns.
    pub const ALL: [Outcome; 6] = [
        Outcome::NotActivated,
        Outcome::Recovered,
        Outcome::RecoveredByReboot,
        Outcome::Hung,
        Outcome::SilentCorruption,
        Outcome::ExtensionFailed,
    ];

    /// The outcome's name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::NotActivated => "not-activated",
            Outcome::Recovered => "recovered",
            Outcome::RecoveredByReboot => "recovered-by-reboot",
            Outcome::Hung => "hung",
            Outcome::SilentCorruption => "silent-corruption",
            Outcome::ExtensionFailed => "extension-failed",
        }
    }

    /// Whether the VM must be rebooted before the next fault: a reboot
    /// fallback lost the guest's state, a hang needs a new guest, and
    /// after corruption the survivors' data can no longer be trusted.
    pub fn needs_new_vm(self) -> bool {
        matches!(
            self,
            Outcome::Hung | Outcome::RecoveredByReboot | Outcome::SilentCorruption
        )
    }
}

/// One injected fault and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    /// 1-based number of the fault in the campaign.
    pub n: u64,
    /// Its fault type.
    pub fault: String,
    /// What it hit (a code address, a kernel structure, a crash kind).
    pub target: String,
    /// The injector's description of the change.
    pub detail: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Recovery latency, when resurrected.
    pub latency_ms: Option<f64>,
    /// What the hypervisor said (recovery line, fallback reason, hang).
    pub note: String,
}

impl FaultRecord {
    /// A fault of type `fault` that has not shown itself (yet).
    pub(crate) fn new(n: u64, fault: &str) -> FaultRecord {
        FaultRecord {
            n,
            fault: fault.to_string(),
            target: String::new(),
            detail: String::new(),
            outcome: Outcome::NotActivated,
            latency_ms: None,
            note: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_json_names() {
        for o in Outcome::ALL {
            let json = serde_json::to_value(o).expect("json");
            assert_eq!(json, o.name());
        }
    }
}
