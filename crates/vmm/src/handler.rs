//! The narrow interface between this OS-agnostic hypervisor and the code
//! that knows the guest OS (resurrection, in `lazarus-resurrect`).
//!
//! On a crash, the vCPU thread that saw it stops every other vCPU (they
//! park, as for a pause, and record their registers) and hands the stopped
//! machine to the [`CrashHandler`] on its own thread. The handler may run
//! code on the crashed vCPU and change memory slots; it answers with a
//! [`Verdict`], which the hypervisor applies: resume the crashed vCPU with
//! the registers given, or stop the run with a crash outcome (to reboot
//! or to halt). The other vCPUs resume when the handler returns.
//!
//! Crashes are handled one at a time. A vCPU that crashes while the
//! handler is busy parks like the others, listed in [`StoppedVm::others`]
//! with its pending crash ([`VcpuRegs::crash`]), so the handler still has
//! the whole machine stopped; once the verdict is applied that vCPU takes
//! the handler for its own crash, unless the verdict ended the run.
//!
//! The hypervisor also forwards the guest's notifications meant for the
//! handler ([`Notification`]): kernel code changed, and a repair finished.

use std::any::Any;
use std::sync::Arc;

use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::VmFd;

use crate::control::VcpuRegs;
use crate::cpu::Vcpu;
use crate::crash::CrashInfo;
use crate::hypercall::ExtEvent;
use crate::loader::GuestLayout;
use crate::memory::GuestRam;

// Defined with the other errors (`crash.rs` and `error.rs` need it too, and
// import nothing above them); still reachable at this path.
pub use crate::error::HandlerError;

/// What a handler's builder gets once the VM exists.
pub struct HandlerSetup<'a> {
    /// For memory slots the handler registers at boot.
    pub vm_fd: &'a VmFd,
    /// Guest RAM.
    pub mem: &'a GuestRam,
    /// Where the kernel and initramfs were loaded.
    pub layout: &'a GuestLayout,
    /// The kernel ELF the VM boots.
    pub kernel: &'a [u8],
    /// The initramfs the VM boots.
    pub initramfs: &'a [u8],
}

/// Builds a handler for a new VM (handlers need the VM's file descriptor
/// and layout, which exist only inside [`crate::Vm::new`]).
pub trait CrashHandlerBuilder: Send + std::fmt::Debug {
    /// Builds the handler; an error fails [`crate::Vm::new`].
    fn build(
        self: Box<Self>,
        setup: &HandlerSetup<'_>,
    ) -> Result<Box<dyn CrashHandler>, HandlerError>;
}

/// The stopped machine, as a handler sees it.
pub struct StoppedVm<'a> {
    /// The VM, for memory slots.
    pub vm_fd: &'a Arc<VmFd>,
    /// Guest RAM.
    pub mem: &'a GuestRam,
    /// The crashed vCPU; the handler may run it (KVM_RUN) meanwhile.
    pub vcpu: &'a mut Vcpu,
    /// Every other vCPU of the run, stopped, with the registers it
    /// recorded when it stopped. One with a `crash` crashed too and is
    /// handled next (the handler may cover it in the same repair).
    pub others: Vec<VcpuRegs>,
    /// Whether every other vCPU stopped. When one did not (it kept
    /// running past the deadline), guest memory may change under the
    /// handler, which must then leave the guest alone.
    pub all_stopped: bool,
    /// The state root the guest registered, if it did.
    pub root_gpa: Option<u64>,
    /// The virtio devices, paused: a handler whose repair dropped a
    /// driver resets its device here (`VirtioBus::reset_at`).
    pub virtio: &'a crate::virtio::VirtioBus,
}

/// Registers to resume a vCPU with.
#[derive(Clone, Copy, Debug)]
pub struct ResumeState {
    /// General-purpose registers.
    pub regs: kvm_regs,
    /// Segment and control registers.
    pub sregs: kvm_sregs,
}

/// What the handler decided.
#[derive(Debug)]
pub enum Verdict {
    /// Resume the crashed vCPU with these registers.
    Resume(Box<ResumeState>),
    /// Resume the crashed vCPU, and also the other vCPUs listed, whose own
    /// pending crash (`VcpuRegs::crash`) the handler dealt with in the
    /// same repair: each resumes with its registers here instead of
    /// coming to the handler in turn. A vCPU listed that had no pending
    /// crash is left as it is.
    ResumeCovering {
        /// The crashed vCPU's registers.
        state: Box<ResumeState>,
        /// (vCPU index, its registers) for each covered crash.
        covered: Vec<(u32, ResumeState)>,
    },
    /// Not yet: another vCPU is inside something the handler must not act
    /// under (the reason). The crashed vCPU waits while the others run
    /// briefly, then the crash is presented again, unless another vCPU's
    /// verdict covered it meanwhile. After a few waits in vain, the
    /// hypervisor treats this as [`Verdict::Reboot`] with the reason.
    Wait(HandlerError),
    /// Not safe to resume: end the run with a crash outcome carrying the
    /// reason (the caller dumps and reboots).
    Reboot(HandlerError),
    /// Nothing to do: end the run with a plain crash outcome.
    Halt,
}

/// A guest notification for the handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notification {
    /// Kernel code changed (an extension was loaded or unloaded).
    CodeChanged(ExtEvent),
    /// The kernel is about to run user code again after a repair (its
    /// count of repairs).
    Recovered(u64),
}

/// What a notification is handled with.
pub struct NotifyContext<'a> {
    /// Guest RAM.
    pub mem: &'a GuestRam,
    /// The registered state root.
    pub root_gpa: Option<u64>,
}

/// Handles crashes for the hypervisor. `Any` so that callers who built it
/// can reach their concrete type through [`crate::Vm::crash_handler`].
pub trait CrashHandler: Send + Any {
    /// Decides what to do about `crash`, with every vCPU stopped.
    fn on_crash(&mut self, vm: StoppedVm<'_>, crash: &CrashInfo) -> Verdict;

    /// Handles a notification. `Ok(Some(line))` is printed on the guest's
    /// console; an error stops the run (the guest must not run on).
    fn on_notification(
        &mut self,
        cx: NotifyContext<'_>,
        n: Notification,
    ) -> Result<Option<String>, HandlerError>;
}
