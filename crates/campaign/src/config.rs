//! What a campaign does: how many faults of which types, into which
//! extension, how the survivors are checked, and for how long.

use std::borrow::Cow;
use std::time::Duration;

use lazarus_inject::FaultType;

/// The pseudo fault type that runs one of the guest's crash-test kinds
/// (typed into the shell as `crash KIND`) instead of a host-side fault.
pub const CRASH_TEST: &str = "crash-test";

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
    /// Extension whose code faults are injected into.
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
