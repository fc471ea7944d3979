//! What a campaign does: how many faults of which types, into which
//! extension, how the survivors are checked, and for how long.

use std::borrow::Cow;
use std::time::Duration;

use lazarus_abi::dev::{ramdisk, virtblk};
use lazarus_inject::FaultType;

/// The pseudo fault type that runs one of the guest's crash-test kinds
/// (typed into the shell as `crash KIND`) instead of a host-side fault.
pub const CRASH_TEST: &str = "crash-test";

/// An extension a campaign can target: one whose device `extclient`
/// drives, so that faults in its code are activated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// The extension's name (`--ext`).
    pub(crate) ext: &'static str,
    /// The device extclient drives (its first argument).
    pub(crate) dev: &'static str,
    /// The VM needs a disk; init then loads the extension at boot, so the
    /// campaign does not `insmod` it.
    pub(crate) disk: bool,
}

/// Every extension a campaign can target.
const TARGETS: &[Target] = &[
    Target {
        ext: "ramdisk",
        dev: ramdisk::DEV,
        disk: false,
    },
    Target {
        ext: "virtblk",
        dev: virtblk::DEV,
        disk: true,
    },
];

/// The extensions a campaign can target, in the order of the docs.
pub fn target_extensions() -> Vec<&'static str> {
    TARGETS.iter().map(|t| t.ext).collect()
}

/// A campaign's settings.
#[derive(Clone, Debug)]
pub struct CampaignConfig {
    /// Faults to inject (ignored with `soak`); at least 1.
    pub faults: u64,
    /// The same seed on the same image gives the same faults.
    pub seed: u64,
    /// Fault types to draw from: `lazarus-inject` names and
    /// [`CRASH_TEST`]; empty means all of them.
    pub types: Vec<String>,
    /// Extension whose code faults are injected into (one of
    /// [`target_extensions`]).
    pub ext: String,
    /// kv keys written at boot and verified after every fault; at least 1.
    pub keys: u64,
    /// How long a fault has to show itself before it counts as not
    /// activated; not zero.
    pub window: Duration,
    /// Keep injecting for this long instead of `faults`.
    pub soak: Option<Duration>,
    /// The repair program (`lazarus_image::REPAIR_ELF`).
    pub repair_program: Cow<'static, [u8]>,
}

/// A setting a campaign cannot run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A fault type that neither `lazarus-inject` nor the crash tests know.
    #[error("unknown fault type {name:?}; known: {known}")]
    UnknownFaultType {
        /// The type asked for.
        name: String,
        /// Every known type, comma-separated.
        known: String,
    },
    /// An extension no workload drives (see [`target_extensions`]).
    #[error("cannot target extension {name:?}; a campaign targets: {known}")]
    UnknownExt {
        /// The extension asked for.
        name: String,
        /// Every extension a campaign can target, comma-separated.
        known: String,
    },
    /// `faults` is 0 without a soak duration.
    #[error("a campaign needs at least one fault")]
    NoFaults,
    /// `keys` is 0: nothing would tell intact survivors from lost ones.
    #[error("a campaign needs at least one kv key")]
    NoKeys,
    /// `window` is zero: no fault could ever show itself.
    #[error("the activation window must not be zero")]
    NoWindow,
}

/// Every fault type a campaign can draw, in the order of the report.
pub fn all_fault_types() -> Vec<String> {
    FaultType::ALL
        .iter()
        .map(|t| t.name().to_string())
        .chain([CRASH_TEST.to_string()])
        .collect()
}

impl CampaignConfig {
    /// Checks the settings; returns the fault types to draw from.
    pub fn validate(&self) -> Result<Vec<String>, ConfigError> {
        let types = self.fault_types()?;
        self.target()?;
        if self.soak.is_none() && self.faults == 0 {
            return Err(ConfigError::NoFaults);
        }
        if self.keys == 0 {
            return Err(ConfigError::NoKeys);
        }
        if self.window.is_zero() {
            return Err(ConfigError::NoWindow);
        }
        Ok(types)
    }

    /// The targeted extension and how its workload runs.
    pub(crate) fn target(&self) -> Result<Target, ConfigError> {
        TARGETS
            .iter()
            .find(|t| t.ext == self.ext)
            .copied()
            .ok_or_else(|| ConfigError::UnknownExt {
                name: self.ext.clone(),
                known: target_extensions().join(", "),
            })
    }

    /// The fault types to draw from: `types`, or all of them.
    fn fault_types(&self) -> Result<Vec<String>, ConfigError> {
        let all = all_fault_types();
        if self.types.is_empty() {
            return Ok(all);
        }
        if let Some(t) = self.types.iter().find(|t| !all.contains(t)) {
            return Err(ConfigError::UnknownFaultType {
                name: t.clone(),
                known: all.join(", "),
            });
        }
        Ok(self.types.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CampaignConfig {
        CampaignConfig {
            faults: 10,
            seed: 1,
            types: Vec::new(),
            ext: "ramdisk".into(),
            keys: 16,
            window: Duration::from_millis(300),
            soak: None,
            repair_program: Cow::Borrowed(&[]),
        }
    }

    #[test]
    fn empty_types_mean_all() {
        let types = config().validate().expect("valid");
        assert_eq!(types, all_fault_types());
        assert!(types.iter().any(|t| t == CRASH_TEST));
        assert!(types.iter().any(|t| t == "bit-flip"));
    }

    #[test]
    fn unknown_type_is_refused_with_the_known_ones() {
        let mut c = config();
        c.types = vec!["bit-flip".into(), "cosmic-ray".into()];
        let e = c.validate().unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("unknown fault type \"cosmic-ray\"; known: "),
            "{text}"
        );
        assert!(text.contains("crash-test"), "{text}");
    }

    #[test]
    fn targets_are_ramdisk_and_virtblk_and_nothing_else() {
        let mut c = config();
        assert_eq!(c.target().map(|t| (t.dev, t.disk)), Ok(("ramdisk", false)));
        c.ext = "virtblk".into();
        assert_eq!(c.target().map(|t| (t.dev, t.disk)), Ok(("vda", true)));
        c.ext = "crashtest".into();
        let e = c.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot target extension \"crashtest\"; a campaign targets: ramdisk, virtblk"
        );
    }

    #[test]
    fn checks_in_order() {
        let mut c = config();
        c.faults = 0;
        c.keys = 0;
        assert_eq!(c.validate(), Err(ConfigError::NoFaults));
        c.soak = Some(Duration::from_secs(1));
        assert_eq!(c.validate(), Err(ConfigError::NoKeys));
        c.keys = 1;
        c.window = Duration::ZERO;
        assert_eq!(c.validate(), Err(ConfigError::NoWindow));
    }
}
