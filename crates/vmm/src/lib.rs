//! The lazarus hypervisor: a small KVM virtual machine monitor built on the
//! rust-vmm crates, in the style of Firecracker and Cloud Hypervisor.
//!
//! It loads the guest kernel ELF and the initramfs, enters 64-bit long mode
//! directly, and provides a 16550 console on COM1, the in-kernel irqchip, a
//! pvpanic port and a hypercall port. The guest is never trusted: every
//! address and argument it hands over is checked before use.
//!
//! It knows no structure of the guest OS beyond the paravirtual interface
//! (the hypercall block and the state root's header). On a crash it stops
//! every vCPU and hands the machine to a [`CrashHandler`] (resurrection
//! lives in `lazarus-resurrect`), then applies its [`Verdict`].
//!
//! ```no_run
//! use lazarus_vmm::{Vm, VmConfig, VmOutcome, ConsoleOutput};
//! # fn demo(kernel: &'static [u8], initramfs: &'static [u8]) -> lazarus_vmm::Result<()> {
//! let mut config = VmConfig::new(kernel, initramfs);
//! config.console_out = ConsoleOutput::Null;
//! let mut vm = Vm::new(config)?;
//! match vm.run()? {
//!     VmOutcome::PowerOff(status) => println!("powered off with {status}"),
//!     VmOutcome::Crash(info) => println!("crashed: {}", info.summary()),
//!     other => println!("{other:?}"),
//! }
//! println!("{} guest exits", vm.exit_counts().total());
//! # Ok(()) }
//! ```
//!
//! Module map: [`config`] (what to build), [`memory`] (guest RAM and
//! checked access), [`loader`] (kernel ELF and initramfs), [`boot`] (page
//! tables, GDT, BootInfo), [`cpu`] (registers, CPUID, MSRs), [`kvm`]
//! (opening KVM), [`console`] and [`serial`] (the console), [`hypercall`]
//! and [`root`] (the paravirtual interface), [`devices`] (exit routing),
//! [`vcpu`] and [`kick`] (vCPU threads), [`watchdog`] (the heartbeat),
//! [`handler`] (the crash handler interface), [`vm`] (building the VM;
//! `vm/run.rs` runs it), [`control`] (pause, resume and metrics for the
//! control API), [`vmsnapshot`] (whole-VM snapshots: taking and restoring,
//! with a file for each part: vCPU state, MSRs, RAM, page map, diffing),
//! [`virtio`] (the virtio devices on the MMIO bus),
//! [`crash`], [`stats`], [`error`] (every error type).
//!
//! Files import each other one way only, never in a circle: [`error`],
//! [`console`] and [`stats`] import nothing of the crate, [`vm`] and
//! [`vmsnapshot`] sit on top. Shared types go to the lowest module that
//! needs them (so `HandlerError` and `LoaderError` live in [`error`]).

pub mod boot;
pub mod config;
pub mod console;
pub mod control;
pub mod cpu;
pub mod crash;
pub mod devices;
pub mod error;
pub mod handler;
pub mod hypercall;
pub mod kick;
pub mod kvm;
pub mod loader;
pub mod memory;
pub mod root;
pub mod serial;
pub mod stats;
pub mod usage;
pub mod vcpu;
pub mod virtio;
pub mod vm;
pub mod vmsnapshot;
pub mod watchdog;

pub use config::{LAPIC_TIMER_HZ, MAX_VCPUS, VmConfig};
pub use console::{CaptureBuffer, ConsoleInput, ConsoleOutput};
pub use control::{ControlError, CrashResume, PauseGuard, RunState, VcpuRegs, VmControl};
pub use crash::{CrashInfo, CrashKind};
pub use error::{Error, ErrorKind, HandlerError, LoaderError, Result};
pub use handler::{
    CrashHandler, CrashHandlerBuilder, HandlerSetup, Notification, NotifyContext, ResumeState,
    StoppedVm, Verdict,
};
pub use hypercall::{ExtEvent, Milestone};
pub use kvm::DEFAULT_KVM_DEVICE;
pub use loader::GuestLayout;
pub use root::RootError;
pub use stats::{ExitCounts, ExitKind};
pub use usage::MemoryUsage;
pub use virtio::{BoxedDevice, VirtioStatus};
pub use vm::{StopHandle, Vm, VmOutcome};
pub use vmsnapshot::VmSnapshot;

/// Re-exported so callers can name register types in [`CrashInfo`].
pub use kvm_bindings;
