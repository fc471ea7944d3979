//! Why a resurrection was not possible: the caller falls back to a dump
//! and a reboot, and says why. One enum, so that the CLI, the control API
//! and the crash database can match on the reason.

use std::time::Duration;

/// Why a resurrection was not possible.
#[derive(Debug, thiserror::Error)]
pub enum Fallback {
    /// The kernel never registered its state root.
    #[error("the kernel never registered its state root")]
    NoStateRoot,
    /// The kernel crashed again before getting back to user mode.
    #[error("the kernel crashed again while recovering")]
    CrashedWhileRecovering,
    /// Another vCPU could not be stopped: repairing under it is unsafe.
    #[error("another vCPU could not be stopped for the repair")]
    OthersRunning,
    /// KVM could not give the crashed vCPU's registers.
    #[error("the crashed vCPU's registers are unavailable")]
    NoRegisters,
    /// The state root fails its header checks or cannot be read.
    #[error("the kernel state root is unreadable: {0}")]
    RootUnreadable(#[from] lazarus_guestmem::RootError),
    /// The repair program looked and declined (its reason).
    #[error("the repair program refused: {0}")]
    Refused(String),
    /// The repair program must wait for another CPU to leave a critical
    /// section (a `Verdict::Wait`; a reboot once the waits run out).
    #[error("the repair program must wait: {0}")]
    Busy(String),
    /// The repair program's plan failed the hypervisor's checks.
    #[error("resume plan: {0}")]
    BadPlan(#[from] PlanError),
    /// The repair program took an exception (no IDT: a triple fault).
    #[error("the repair program faulted (triple fault)")]
    ProgramFaulted,
    /// The repair program ran out of time.
    #[error("the repair program ran past its {0:?} budget")]
    OverBudget(Duration),
    /// The vCPU left the repair program some other way.
    #[error("unexpected exit while repairing: {0}")]
    UnexpectedExit(String),
    /// The repair image could not be put into the guest or taken out.
    #[error("{0}")]
    Slot(#[from] SlotError),
    /// A KVM call on the crashed vCPU failed.
    #[error("{op} failed: {source}")]
    Kvm {
        /// The operation.
        op: &'static str,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Repair failed, and then taking the image out failed too.
    #[error("{first}; {then}")]
    Twice {
        /// The first failure.
        first: Box<Fallback>,
        /// Removing the image's slot afterwards.
        then: SlotError,
    },
}

impl Fallback {
    /// A short stable name, for logs, metrics and the crash database.
    pub fn code(&self) -> &'static str {
        match self {
            Fallback::NoStateRoot => "no-state-root",
            Fallback::CrashedWhileRecovering => "crashed-while-recovering",
            Fallback::OthersRunning => "others-running",
            Fallback::NoRegisters => "no-registers",
            Fallback::RootUnreadable(_) => "root-unreadable",
            Fallback::Refused(_) => "refused",
            Fallback::Busy(_) => "busy",
            Fallback::BadPlan(_) => "bad-plan",
            Fallback::ProgramFaulted => "program-faulted",
            Fallback::OverBudget(_) => "over-budget",
            Fallback::UnexpectedExit(_) => "unexpected-exit",
            Fallback::Slot(_) => "slot",
            Fallback::Kvm { .. } => "kvm",
            Fallback::Twice { first, .. } => first.code(),
        }
    }

    /// The fallback of a crash outcome, if resurrection was tried and
    /// refused (the hypervisor carries it as an opaque error).
    pub fn of(info: &lazarus_vmm::CrashInfo) -> Option<&Fallback> {
        info.fallback.as_deref()?.downcast_ref::<Fallback>()
    }
}

/// What is wrong with a resume plan.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The entry point is outside the kernel's code.
    #[error("entry {0:#x} is not kernel code")]
    EntryNotKernelCode(u64),
    /// The stack is outside the kernel image or misaligned.
    #[error("stack {0:#x} is not in the kernel image")]
    StackNotInKernel(u64),
    /// The page table is not the kernel's.
    #[error("page table {0:#x} is not the kernel's")]
    NotKernelPageTable(u64),
    /// The extension slot named does not exist.
    #[error("bad extension slot {0}")]
    BadExtensionSlot(u32),
}

/// Putting the repair image into the guest's address space or taking it
/// out again.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SlotError {
    /// Swapping the resident slot's memory to the image failed.
    #[error("showing the repair image: {0}")]
    Show(String),
    /// Swapping the decoy back failed: the image may still be visible.
    #[error("hiding the repair image: {0}")]
    Hide(String),
    /// Adding the fresh slot failed.
    #[error("mapping the repair image: {0}")]
    Map(String),
    /// Deleting the fresh slot failed.
    #[error("removing the repair slot: {0}")]
    Remove(String),
    /// The thread that deletes slots died.
    #[error("the slot reaper thread died")]
    ReaperGone,
}

/// Why the repair image could not be built for a VM.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The kernel ELF cannot be used for pristine copies or symbols.
    #[error("kernel ELF: {0}")]
    KernelElf(String),
    /// Building the image failed.
    #[error("repair image: {0}")]
    Image(#[from] lazarus_repair_image::ImageError),
    /// Reserving or registering the resident slot failed.
    #[error("registering the repair slot: {0}")]
    Slot(String),
}

impl SetupError {
    /// Whether the caller's input is at fault (a kernel ELF that cannot be
    /// read), rather than the host: callers report the two differently.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, SetupError::KernelElf(_))
    }
}
