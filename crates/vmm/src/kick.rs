//! Kicking vCPU threads out of KVM_RUN.
//!
//! A vCPU thread is stopped by setting a flag it checks and sending it the
//! kick signal (`SIGRTMIN`). The signal handler sets `immediate_exit` in
//! that thread's `kvm_run`, so a kick that lands just before KVM_RUN is not
//! lost: KVM_RUN then returns EINTR at once and the loop sees the flag.

use std::cell::Cell;
use std::sync::OnceLock;
use std::thread::JoinHandle;

use kvm_bindings::kvm_run;
use libc::{c_int, c_void, siginfo_t};
use tracing::debug;
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::error::{Error, Result};

thread_local! {
    /// This thread's `kvm_run`, for the kick signal handler.
    pub(crate) static KVM_RUN_PTR: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn handle_kick(_: c_int, _: *mut siginfo_t, _: *mut c_void) {
    // `try_with` on a const-initialised Cell without destructor never
    // allocates or panics, so this is async-signal-safe.
    let _ = KVM_RUN_PTR.try_with(|cell| {
        let run = cell.get();
        if !run.is_null() {
            // SAFETY: the pointer is set by this thread to its VcpuFd's
            // mapped kvm_run and cleared before that VcpuFd can move or be
            // dropped; a volatile byte store is what KVM expects here.
            unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
        }
    });
}

/// The signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> c_int {
    SIGRTMIN()
}

/// Installs the kick handler once per process.
pub fn install_kick_handler() -> Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            register_signal_handler(kick_signal(), handle_kick)
                .map_err(|e| format!("installing the vCPU kick signal handler: {e}"))
        })
        .clone()
        .map_err(Error::Setup)
}

/// Kicks a vCPU thread out of KVM_RUN (it must check its stop flag next).
pub fn kick<T>(handle: &JoinHandle<T>) {
    if handle.is_finished() {
        return;
    }
    if let Err(e) = handle.kill(kick_signal()) {
        debug!("kicking a vCPU thread: {e}");
    }
}
