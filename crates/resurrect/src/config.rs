//! How to resurrect: the configuration a VM is built with.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use lazarus_vmm::{CrashHandler, CrashHandlerBuilder, HandlerError, HandlerSetup};

use crate::Resurrector;
use crate::recovery::Recovery;

/// How the repair image enters the guest's physical address space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RepairSlot {
    /// A memory slot registered at boot whose host memory is swapped: the
    /// image during a repair, a decoy of fresh zeroed memory otherwise
    /// (see `lazarus_repair_image::SlotWindow`). No memory-slot changes on
    /// the repair path.
    #[default]
    Resident,
    /// A fresh memory slot added for each repair and deleted after it: no
    /// guest-physical memory at all at the image's address between
    /// repairs, at the price of two slot updates per repair (hundreds of
    /// microseconds on nested KVM).
    Fresh,
}

/// How to resurrect. Put it in `VmConfig::crash_handler`: the VM builds a
/// [`Resurrector`] from it.
#[derive(Clone, Debug)]
pub struct ResurrectConfig {
    /// The repair program (`lazarus_image::REPAIR_ELF`).
    pub program: Cow<'static, [u8]>,
    /// Disable an extension after this many crashes.
    pub ext_crash_limit: u32,
    /// Longest the repair program may run before the repair is abandoned.
    pub budget: Duration,
    /// Receives one report per successful resurrection.
    pub listener: Option<Sender<Recovery>>,
    /// How the image enters the guest.
    pub slot: RepairSlot,
}

impl ResurrectConfig {
    /// Defaults: disable an extension after 3 crashes, a 200 ms budget,
    /// no listener, the resident slot.
    pub fn new(program: impl Into<Cow<'static, [u8]>>) -> Self {
        Self {
            program: program.into(),
            ext_crash_limit: 3,
            budget: Duration::from_millis(200),
            listener: None,
            slot: RepairSlot::default(),
        }
    }
}

impl CrashHandlerBuilder for ResurrectConfig {
    fn build(
        self: Box<Self>,
        setup: &HandlerSetup<'_>,
    ) -> Result<Box<dyn CrashHandler>, HandlerError> {
        Resurrector::new(*self, setup)
            .map(|r| Box::new(r) as Box<dyn CrashHandler>)
            .map_err(|e| Arc::new(e) as HandlerError)
    }
}
