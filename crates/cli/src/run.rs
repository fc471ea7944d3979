//! `lazarus run`: boot the guest with its console on stdin/stdout.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use lazarus_vmm::{ConsoleInput, ConsoleOutput, Vm, VmOutcome};

use crate::cli::RunArgs;
use crate::exit::{BAD_INPUT, CRASHED, INTERNAL, failure};
use crate::image::BootImage;

/// Runs the guest; returns the process exit code.
pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let image = BootImage::load(&args.image)?;
    let timeout = match args.timeout {
        None => None,
        Some(secs) => Some(
            Duration::try_from_secs_f64(secs)
                .map_err(|_| failure(BAD_INPUT, format!("invalid --timeout {secs}")))?,
        ),
    };
    // One input queue for the whole session, so that input not yet read
    // by the guest survives a reboot.
    let input = ConsoleInput::stdin();
    let mut boots = 0u64;
    loop {
        boots += 1;
        let mut config = image.config(&args.image);
        config.vcpus = args.vcpus;
        config.console_out = ConsoleOutput::Stdout;
        config.console_in = input.clone();
        config.timeout = timeout;
        let mut vm = Vm::new(config).map_err(|e| image.explain(e))?;
        let outcome = vm.run().context("running the guest")?;
        // Make sure everything the guest printed is out before we talk.
        let _ = std::io::stdout().flush();
        tracing::info!(
            exits = vm.exit_counts().total(),
            ?outcome,
            "guest run {boots} ended"
        );
        match outcome {
            VmOutcome::PowerOff(status) => return Ok(exit_status(status)),
            VmOutcome::RebootRequested => {
                eprintln!("lazarus: the guest asked for a reboot; restarting it");
            }
            VmOutcome::Crash(info) => {
                return Err(failure(
                    CRASHED,
                    format!("the guest crashed: {}", info.summary()),
                ));
            }
            VmOutcome::TimedOut => {
                return Err(failure(
                    INTERNAL,
                    format!(
                        "the guest did not finish within --timeout ({})",
                        where_is_the_guest(&vm)
                    ),
                ));
            }
            VmOutcome::MilestoneReached(_) | VmOutcome::Stopped => {
                return Err(failure(INTERNAL, "the VM stopped unexpectedly"));
            }
        }
    }
}

/// The process exit code for a guest power-off status: the low 8 bits,
/// except that a nonzero status never becomes a (successful) 0.
fn exit_status(status: i32) -> u8 {
    match (status & 0xff) as u8 {
        0 if status != 0 => 1,
        code => code,
    }
}

/// A short description of a stuck guest: where vCPU 0 is, whether the
/// kernel's timer still ticks, and how many exits it made.
fn where_is_the_guest(vm: &Vm) -> String {
    let mut parts = Vec::new();
    if let Some(regs) = vm.vcpu_fd(0).and_then(|fd| fd.get_regs().ok()) {
        parts.push(format!("vCPU 0 at rip {:#x}", regs.rip));
    }
    match vm.kernel_root() {
        Ok(root) => parts.push(format!("kernel heartbeat {}", root.heartbeat)),
        Err(e) => parts.push(e.to_string()),
    }
    parts.push(format!("{} guest exits", vm.exit_counts().total()));
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::exit_status;

    #[test]
    fn power_off_status_maps_to_exit_code() {
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(7), 7);
        assert_eq!(exit_status(-1), 255);
        assert_eq!(exit_status(256), 1);
    }
}
