//! Fault-injection campaigns against a running lazarus guest, in the
//! manner of Rio, Nooks and MINIX 3's driver fault injection
//! (`lazarus campaign`).
//!
//! One VM runs the standard workload: the kv store with verified keys, two
//! workers that check their own memory, and `extclient`, which keeps using
//! the target extension's device (`/dev/ramdisk`, or `/dev/vda` on a
//! temporary disk of the campaign's own for `virtblk`) so that faults
//! injected into its code are activated. Faults are injected one after
//! another from the host (no guest cooperation, see `lazarus-inject`) or
//! by a crash-test kind typed into the shell. After every fault the
//! survivors are verified and the outcome classified ([`Outcome`]): not
//! activated (the injected bytes are put back), recovered, recovered by
//! reboot, hung, silent corruption, or extension failed.
//!
//! Unlike `lazarus run`, a campaign writes no crash dumps: a thousand
//! faults would fill the disk with cores nobody reads.
//!
//! - [`run`] runs a campaign from a [`CampaignConfig`] and returns its
//!   [`Report`] (serde: the JSON of `lazarus campaign --json`);
//! - [`plot::draw`] draws a report as SVG;
//! - [`driver`] is the console driver that types into the guest's shell
//!   (also used by `lazarus demo` and `lazarus bench recovery`);
//! - [`stats`] holds the median/p99 every lazarus report uses.
#![deny(missing_docs)]

mod config;
pub mod driver;
mod error;
mod extclient;
mod fault;
mod outcome;
pub mod plot;
mod report;
mod run;
mod session;
mod soak;
pub mod stats;

pub use config::{CRASH_TEST, CampaignConfig, ConfigError, all_fault_types, target_extensions};
pub use error::CampaignError;
pub use outcome::{FaultRecord, Outcome};
pub use report::{LatencySummary, MemorySample, OutcomeCounts, Report};
pub use run::run;
