//! A guest for the benchmarks that drive its shell: a VM on its own
//! thread, its console wired to a `lazarus_campaign` console driver.

use std::thread::JoinHandle;

use lazarus_campaign::driver::Driver;
use lazarus_vmm::{ConsoleOutput, CrashHandlerBuilder, StopHandle, Vm, VmOutcome};

use crate::cli::ImageArgs;
use crate::exit::{INTERNAL, failure};
use crate::image::BootImage;

/// A VM running on its own thread, driven through its console.
pub struct Session {
    pub d: Driver,
    pub stop: StopHandle,
    thread: JoinHandle<(Vm, anyhow::Result<VmOutcome>)>,
}

impl Session {
    pub fn start(mut vm: Vm, d: Driver) -> Session {
        let stop = vm.stop_handle();
        let thread = std::thread::spawn(move || {
            let r = vm.run().map_err(anyhow::Error::from);
            (vm, r)
        });
        Session { d, stop, thread }
    }

    /// Whether `Vm::run` has returned (the guest stopped or crashed for
    /// good).
    pub fn finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Ends a benchmark whose guest was asked to power off: stops the VM
    /// if `result` failed, waits for it, and hands back `result` if the
    /// guest did power off.
    pub fn finish<T>(self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        if result.is_err() {
            self.stop.stop();
        }
        let joined = self.join();
        let value = result?;
        match joined? {
            (_, VmOutcome::PowerOff(_), _) => Ok(value),
            (_, other, _) => Err(failure(
                INTERNAL,
                format!("the guest did not power off after the benchmark: {other:?}"),
            )),
        }
    }

    pub fn join(self) -> anyhow::Result<(Vm, VmOutcome, Driver)> {
        let (vm, r) = self
            .thread
            .join()
            .map_err(|_| failure(INTERNAL, "a VM thread panicked"))?;
        Ok((vm, r?, self.d))
    }
}

/// A VM of `image` whose console is a driver's (output recorded, not
/// shown), with an optional crash handler.
pub fn new_vm(
    image: &BootImage,
    args: &ImageArgs,
    handler: Option<Box<dyn CrashHandlerBuilder>>,
) -> anyhow::Result<(Vm, Driver)> {
    new_vm_with(image, args, handler, |_| {})
}

/// [`new_vm`], with the configuration adjusted by `tweak` last.
pub fn new_vm_with(
    image: &BootImage,
    args: &ImageArgs,
    handler: Option<Box<dyn CrashHandlerBuilder>>,
    tweak: impl FnOnce(&mut lazarus_vmm::VmConfig),
) -> anyhow::Result<(Vm, Driver)> {
    let (d, input, tee) = Driver::new(None);
    let mut config = image.config(args);
    config.console_in = input;
    config.console_out = ConsoleOutput::Writer(Box::new(tee));
    config.crash_handler = handler;
    tweak(&mut config);
    let vm = Vm::new(config).map_err(|e| image.explain(e))?;
    Ok((vm, d))
}
