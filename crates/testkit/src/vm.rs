//! The default guest, booted in-process with `lazarus-vmm`.

use std::time::Duration;

use lazarus_abi::hypercall::MILESTONE_SHELL_PROMPT;
use lazarus_vmm::{CaptureBuffer, ConsoleInput, ConsoleOutput, ErrorKind, Vm, VmConfig, VmOutcome};

use crate::require_kvm;

/// The built-in kernel and initramfs with console capture and manual
/// input, stopping at the shell prompt, with a generous timeout.
pub fn default_config(input: &ConsoleInput, console: &CaptureBuffer) -> VmConfig {
    let mut config = VmConfig::new(lazarus_image::KERNEL_ELF, lazarus_image::INITRAMFS);
    config.console_in = input.clone();
    config.console_out = ConsoleOutput::Capture(console.clone());
    config.stop_at_milestone = Some(MILESTONE_SHELL_PROMPT);
    config.timeout = Some(Duration::from_secs(120));
    config
}

/// Builds a VM; fails the test (never skips) when KVM is not usable.
pub fn boot_vm(config: VmConfig) -> Vm {
    require_kvm();
    match Vm::new(config) {
        Ok(vm) => vm,
        Err(e) if e.kind() == ErrorKind::KvmUnavailable => {
            panic!("/dev/kvm is required for this test and is not usable: {e}")
        }
        Err(e) => panic!("Vm::new: {e}"),
    }
}

/// The default guest in-process, at its shell prompt.
pub struct VmGuest {
    /// The VM (stopped at the prompt milestone; call `run` to go on).
    pub vm: Vm,
    /// Its console input.
    pub input: ConsoleInput,
    /// Its console output.
    pub console: CaptureBuffer,
}

impl VmGuest {
    /// Boots `config` (see [`default_config`]) to the shell prompt and
    /// clears the stop milestone, so that the next `run` goes on.
    pub fn boot(config: VmConfig, input: ConsoleInput, console: CaptureBuffer) -> VmGuest {
        let mut vm = boot_vm(config);
        match vm.run().expect("run to the prompt") {
            VmOutcome::MilestoneReached(m) if m == MILESTONE_SHELL_PROMPT => {}
            other => panic!(
                "expected the shell prompt, got {other:?}; console:\n{}",
                console.text()
            ),
        }
        vm.set_stop_milestone(None);
        VmGuest { vm, input, console }
    }
}
