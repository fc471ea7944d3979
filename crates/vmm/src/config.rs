//! How to build a VM.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use lazarus_abi::boot::MAX_CPUS;
use lazarus_abi::layout::DEFAULT_MEMORY;

use crate::console::{ConsoleInput, ConsoleOutput};
use crate::handler::CrashHandlerBuilder;
use crate::kvm::DEFAULT_KVM_DEVICE;
use crate::virtio::BoxedDevice;

/// Most vCPUs a VM may have (the kernel root tracks this many CPUs).
pub const MAX_VCPUS: u32 = MAX_CPUS as u32;

/// vCPUs of a VM unless told otherwise: two, so that the kernel's SMP
/// paths are exercised by default. A vCPU the kernel never starts waits
/// in KVM and costs nothing.
pub const DEFAULT_VCPUS: u32 = 2;

/// LAPIC timer input frequency: KVM's APIC bus runs at 1 ns per cycle.
pub const LAPIC_TIMER_HZ: u64 = 1_000_000_000;

/// Everything [`crate::Vm::new`] needs.
pub struct VmConfig {
    /// Guest RAM in bytes: a multiple of 2 MiB in `[MIN_MEMORY, MAX_MEMORY]`.
    pub mem_size: u64,
    /// Number of vCPUs (1..=[`MAX_VCPUS`]); vCPU 0 boots, the others wait
    /// in KVM's "wait for INIT/SIPI" state until the kernel starts them
    /// with `HC_CPU_ON`.
    pub vcpus: u32,
    /// The kernel ELF.
    pub kernel: Cow<'static, [u8]>,
    /// The cpio initramfs.
    pub initramfs: Cow<'static, [u8]>,
    /// Kernel command line (at most 255 bytes, no NUL).
    pub cmdline: String,
    /// Where guest console output goes.
    pub console_out: ConsoleOutput,
    /// Where guest console input comes from.
    pub console_in: ConsoleInput,
    /// Stop [`crate::Vm::run`] as soon as the guest reports this milestone.
    pub stop_at_milestone: Option<u64>,
    /// Give up and return [`crate::VmOutcome::TimedOut`] after this long
    /// (measured per call to `run`).
    pub timeout: Option<Duration>,
    /// The KVM device to open.
    pub kvm_device: PathBuf,
    /// Declare the guest hung when its heartbeat stops for this long
    /// (`None` disables the watchdog).
    pub watchdog: Option<Duration>,
    /// What handles crashes, e.g. resurrection with the hidden repair
    /// image (`None`: every crash ends [`crate::Vm::run`]).
    pub crash_handler: Option<Box<dyn CrashHandlerBuilder>>,
    /// Virtio devices, in bus order (see `crate::virtio`): each gets an
    /// MMIO window, an interrupt pin and a word on the command line.
    pub virtio: Vec<BoxedDevice>,
}

impl std::fmt::Debug for VmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmConfig")
            .field("mem_size", &self.mem_size)
            .field("vcpus", &self.vcpus)
            .field("cmdline", &self.cmdline)
            .field("virtio_devices", &self.virtio.len())
            .finish_non_exhaustive()
    }
}

impl VmConfig {
    /// A configuration with defaults: 128 MiB, [`DEFAULT_VCPUS`] vCPUs,
    /// console on stdout, no input, no stop milestone, no timeout.
    pub fn new(
        kernel: impl Into<Cow<'static, [u8]>>,
        initramfs: impl Into<Cow<'static, [u8]>>,
    ) -> Self {
        Self {
            mem_size: DEFAULT_MEMORY,
            vcpus: DEFAULT_VCPUS,
            kernel: kernel.into(),
            initramfs: initramfs.into(),
            cmdline: String::new(),
            console_out: ConsoleOutput::Stdout,
            console_in: ConsoleInput::none(),
            stop_at_milestone: None,
            timeout: None,
            kvm_device: PathBuf::from(DEFAULT_KVM_DEVICE),
            watchdog: Some(crate::watchdog::DEFAULT_TIMEOUT),
            crash_handler: None,
            virtio: Vec::new(),
        }
    }
}
