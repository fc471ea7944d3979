//! Why a campaign (or one of its steps) failed.

use crate::config::ConfigError;
use crate::driver::DriverError;

/// A campaign error. Errors while injecting one fault end that fault as
/// hung (with the error as its note); errors while booting end the
/// campaign.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// The settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The VM could not be created from its configuration.
    #[error(transparent)]
    Vm(lazarus_vmm::Error),
    /// No temporary directory for the disk of a VM whose target needs
    /// one.
    #[error("cannot make a temporary directory for the campaign's disk")]
    DiskDir(#[source] std::io::Error),
    /// The disk image of a VM whose target needs one could not be made.
    #[error("cannot make the campaign's disk image")]
    Disk(#[source] lazarus_virtio_blk::DiskError),
    /// The freshly booted guest never showed its prompt.
    #[error("the guest did not reach its shell")]
    NoShell(#[source] DriverError),
    /// A shell command did not answer.
    #[error(transparent)]
    Shell(#[from] DriverError),
    /// A background job was started but the shell printed no pid for it.
    #[error("{command:?} printed no pid: {output:?}")]
    NoPid {
        /// The command typed.
        command: String,
        /// What the shell answered.
        output: String,
    },
    /// A host-side fault needs the kernel's state root.
    #[error("the kernel has not registered its state root")]
    NoStateRoot,
    /// The fault type is not one `lazarus-inject` knows.
    #[error(transparent)]
    FaultType(lazarus_inject::InjectError),
}

/// `e` and its causes on one line, `outer: inner`.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn chain_names_every_cause() {
        let e = CampaignError::NoShell(DriverError::Timeout {
            pattern: "lazarus> ".into(),
            timeout: Duration::from_secs(60),
        });
        assert_eq!(
            chain(&e),
            "the guest did not reach its shell: the guest did not print \"lazarus> \" within 60s"
        );
        assert_eq!(
            chain(&CampaignError::NoStateRoot),
            "the kernel has not registered its state root"
        );
    }
}
