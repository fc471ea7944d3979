//! vCPU threads: one per vCPU, each looping on KVM_RUN and handing exits
//! to the devices, Firecracker style. A crash stops the other vCPUs and
//! goes to the crash handler on the crashed vCPU's own thread (no hand-off
//! on the critical path); see [`crate::handler`]. Crashes are handled one
//! at a time: a vCPU that crashes meanwhile parks with its crash pending
//! and takes the handler when it is free.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_bindings::kvm_run;
use kvm_ioctls::VcpuExit;
use tracing::{error, info, warn};
use vmm_sys_util::signal::unblock_signal;

use crate::control::ControlShared;
pub use crate::cpu::Vcpu;
use crate::crash::{CrashInfo, CrashKind};
use crate::devices::{Devices, PioAction};
use crate::error::{Error, Result};
use crate::handler::{CrashHandler, Notification};
use crate::hypercall::HcAction;
use crate::kick::{KVM_RUN_PTR, kick_signal};
use crate::stats::ExitKind;
use crate::watchdog::{PendingHangs, Stall};

mod handler_turn;
use handler_turn::{handle_crash, notify};

/// Bound on the KVM_RUN rounds that finish one vCPU's pending I/O.
const MAX_COMPLETION_ROUNDS: usize = 64;

// KVM_SYSTEM_EVENT_* types.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const SYSTEM_EVENT_RESET: u32 = 2;
const SYSTEM_EVENT_CRASH: u32 = 3;

/// What a vCPU reports to the VM's control loop.
#[derive(Debug)]
pub enum VcpuEvent {
    /// The guest powered off with this status.
    PowerOff(i32),
    /// The guest asked for a reboot.
    Reboot,
    /// The configured stop milestone was reached.
    Milestone(u64),
    /// A crash the handler did not resume from (or no handler).
    Crash(Box<CrashInfo>),
    /// KVM_RUN failed.
    Failed(Error),
    /// Someone asked the VM to stop (not from a vCPU).
    StopRequested,
    /// The watchdog found the guest hung (not from a vCPU).
    Hang(Stall),
}

/// An event and the vCPU it came from (`None`: from outside).
#[derive(Debug)]
pub struct Report {
    /// The vCPU (`None`: the control loop or a stop handle).
    pub vcpu: Option<u32>,
    /// What happened.
    pub event: VcpuEvent,
}

/// State shared by all vCPU threads of a VM.
pub struct VcpuContext {
    /// The devices exits are routed to.
    pub devices: Devices,
    /// Set to make every vCPU thread leave its loop.
    pub stop: Arc<AtomicBool>,
    /// Set when the guest reports any milestone (it is up; input may flow).
    pub guest_ready: Arc<AtomicBool>,
    /// Leave the loop when this milestone is reached (0: none). Atomic so
    /// that it can change between runs of the same VM.
    pub stop_at_milestone: std::sync::atomic::AtomicU64,
    /// What crashes go to (`None`: every crash ends the run).
    pub handler: Option<Mutex<Box<dyn CrashHandler>>>,
    /// Set (before the other vCPUs are let go) when a crash verdict ends
    /// the run: a vCPU whose own crash still waits must not take the
    /// handler then, e.g. to repair memory the caller is about to dump.
    /// Cleared when a run starts.
    pub crash_ended_run: AtomicBool,
    /// Memory slots are added and removed from the vCPU thread.
    pub vm_fd: Arc<kvm_ioctls::VmFd>,
    /// Hangs the watchdog found, per vCPU: it kicks the hung vCPU's
    /// thread, which alone turns its hang into a crash.
    pub hang: PendingHangs,
    /// Which vCPU's thread runs the crash handler, since when (the control
    /// thread kicks it when it runs long, and keeps the watchdog quiet
    /// meanwhile). Shared with [`crate::control::VmControl`].
    pub handling: Arc<Mutex<Option<(u32, Instant)>>>,
    /// Pause and resume from the control API (see `crate::control`).
    pub control: Arc<ControlShared>,
}

/// Starts the thread that runs `vcpu`; it returns the vCPU when it stops.
pub fn spawn(
    vcpu: Vcpu,
    ctx: Arc<VcpuContext>,
    events: Sender<Report>,
) -> Result<JoinHandle<Vcpu>> {
    std::thread::Builder::new()
        .name(format!("vcpu{}", vcpu.id))
        .spawn(move || thread_main(vcpu, &ctx, &events))
        .map_err(Error::io("spawning a vCPU thread"))
}

fn thread_main(mut vcpu: Vcpu, ctx: &VcpuContext, events: &Sender<Report>) -> Vcpu {
    // The spawning thread's signal mask is inherited; kicks must get through.
    if let Err(e) = unblock_signal(kick_signal()) {
        warn!(vcpu = vcpu.id, "cannot unblock the kick signal: {e}");
    }
    let run: *mut kvm_run = vcpu.fd.get_kvm_run();
    KVM_RUN_PTR.with(|cell| cell.set(run));
    // Registered only while the kick handler can find this kvm_run.
    ctx.control.register_thread(vcpu.id);
    let event = run_loop(&mut vcpu, ctx);
    ctx.control.unregister_thread(vcpu.id);
    KVM_RUN_PTR.with(|cell| cell.set(std::ptr::null_mut()));
    vcpu.fd.set_kvm_immediate_exit(0);
    if let Some(event) = event {
        // The receiver lives as long as the VM's run(); if it is gone the
        // VM is being torn down and nobody needs the event.
        let _ = events.send(Report {
            vcpu: Some(vcpu.id),
            event,
        });
    }
    vcpu
}

/// What to do after one exit.
enum Flow {
    Continue,
    Event(VcpuEvent),
    /// For the handler, once the exit is over (the vCPU may have to park
    /// while it waits for the handler).
    Notify(Notification),
    Crash(CrashKind),
    InternalError,
}

fn run_loop(vcpu: &mut Vcpu, ctx: &VcpuContext) -> Option<VcpuEvent> {
    let stats = &ctx.devices.stats;
    loop {
        if ctx.stop.load(Ordering::Acquire) {
            return None;
        }
        // Paused from the control API: no guest code runs until resumed.
        if ctx.control.pause_requested() {
            ctx.control.park(vcpu, &ctx.stop);
            continue;
        }
        if let Some(start) = ctx.devices.hypercalls.take_cpu_start(vcpu.id)
            && let Err(e) = crate::cpu::start_cpu(&vcpu.fd, &start)
        {
            // The guest asked for it; the vCPU stays where it was.
            warn!(vcpu = vcpu.id, "cannot start the vCPU: {e}");
        }
        ctx.control.entering_run(vcpu.id);
        let flow = match vcpu.fd.run() {
            Ok(exit) => handle_exit(exit, ctx, vcpu.id),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                stats.record(ExitKind::Interrupted);
                vcpu.fd.set_kvm_immediate_exit(0);
                // A kick from the watchdog: this CPU is hung.
                match ctx.hang.take(vcpu.id) {
                    Some(stall) => Flow::Crash(CrashKind::Hang {
                        heartbeat: stall.heartbeat,
                        stalled_ms: stall.wall.as_millis() as u64,
                        cpu_ms: stall.cpu.map(|c| c.as_millis() as u64),
                    }),
                    None => Flow::Continue,
                }
            }
            Err(e) => {
                error!(vcpu = vcpu.id, "KVM_RUN failed: {e}");
                return Some(VcpuEvent::Failed(Error::Kvm {
                    op: "KVM_RUN",
                    source: e,
                }));
            }
        };
        let crash = match flow {
            Flow::Continue => continue,
            Flow::Event(event) => return Some(event),
            Flow::Notify(n) => match notify(vcpu, ctx, n) {
                Some(event) => return Some(event),
                None => continue,
            },
            Flow::Crash(kind) => crash_info(vcpu, kind),
            Flow::InternalError => {
                let kind = internal_error(vcpu);
                crash_info(vcpu, kind)
            }
        };
        if let Some(event) = handle_crash(vcpu, ctx, crash) {
            return Some(event);
        }
    }
}

fn handle_exit(exit: VcpuExit<'_>, ctx: &VcpuContext, id: u32) -> Flow {
    let dev = &ctx.devices;
    let stats = &dev.stats;
    match exit {
        VcpuExit::IoOut(port, data) => match dev.pio_out(port, data) {
            PioAction::Continue => Flow::Continue,
            PioAction::Panic(code) => {
                info!(vcpu = id, code, "guest reported a panic through pvpanic");
                Flow::Crash(CrashKind::GuestPanic { code })
            }
            PioAction::Hypercall(action) => hypercall_flow(action, ctx),
        },
        VcpuExit::IoIn(port, data) => {
            dev.pio_in(port, data);
            Flow::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            dev.mmio_read(addr, data);
            Flow::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            dev.mmio_write(addr, data);
            Flow::Continue
        }
        VcpuExit::Hlt => {
            stats.record(ExitKind::Hlt);
            Flow::Continue
        }
        VcpuExit::Shutdown => {
            stats.record(ExitKind::Shutdown);
            info!(vcpu = id, "guest triple-faulted");
            Flow::Crash(CrashKind::TripleFault)
        }
        VcpuExit::InternalError => {
            stats.record(ExitKind::InternalError);
            Flow::InternalError
        }
        VcpuExit::FailEntry(reason, cpu) => {
            stats.record(ExitKind::FailEntry);
            warn!(vcpu = id, cpu, reason, "VM entry failed");
            Flow::Crash(CrashKind::EntryFailure { reason })
        }
        VcpuExit::SystemEvent(kind, _) => {
            stats.record(ExitKind::SystemEvent);
            match kind {
                SYSTEM_EVENT_SHUTDOWN => Flow::Event(VcpuEvent::PowerOff(0)),
                SYSTEM_EVENT_RESET => Flow::Event(VcpuEvent::Reboot),
                SYSTEM_EVENT_CRASH => Flow::Crash(CrashKind::SystemEvent { kind }),
                other => {
                    warn!(vcpu = id, kind = other, "ignoring a system event");
                    Flow::Continue
                }
            }
        }
        VcpuExit::IoapicEoi(_) | VcpuExit::IrqWindowOpen | VcpuExit::Intr => {
            stats.record(ExitKind::Other);
            Flow::Continue
        }
        other => {
            stats.record(ExitKind::Other);
            let reason = format!("{other:?}");
            warn!(vcpu = id, reason, "unexpected vCPU exit");
            Flow::Crash(CrashKind::UnhandledExit { reason })
        }
    }
}

fn hypercall_flow(action: HcAction, ctx: &VcpuContext) -> Flow {
    match action {
        HcAction::Continue => Flow::Continue,
        HcAction::PowerOff(status) => Flow::Event(VcpuEvent::PowerOff(status)),
        HcAction::Reboot => Flow::Event(VcpuEvent::Reboot),
        HcAction::ExtEvent(ev) => Flow::Notify(Notification::CodeChanged(ev)),
        HcAction::Recovered(count) => Flow::Notify(Notification::Recovered(count)),
        HcAction::StartCpu(id) => {
            ctx.control.kick(id);
            Flow::Continue
        }
        HcAction::Milestone(m) => {
            ctx.guest_ready.store(true, Ordering::Release);
            if m != 0 && ctx.stop_at_milestone.load(Ordering::Acquire) == m {
                info!(milestone = m, "stop milestone reached");
                Flow::Event(VcpuEvent::Milestone(m))
            } else {
                Flow::Continue
            }
        }
    }
}

/// Decodes KVM_EXIT_INTERNAL_ERROR details from `kvm_run`.
fn internal_error(vcpu: &mut Vcpu) -> CrashKind {
    let run = vcpu.fd.get_kvm_run();
    // SAFETY: the last exit reason was KVM_EXIT_INTERNAL_ERROR, for which
    // KVM fills the `internal` member of the union.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    let kind = CrashKind::InternalError {
        suberror: internal.suberror,
        data: internal.data[..n].to_vec(),
    };
    warn!(vcpu = vcpu.id, "{kind}");
    kind
}

/// Captures a crash: the vCPU's registers, read at once.
fn crash_info(vcpu: &Vcpu, kind: CrashKind) -> CrashInfo {
    let detected_at = Instant::now();
    let regs = vcpu
        .fd
        .get_regs()
        .inspect_err(|e| warn!(vcpu = vcpu.id, "reading registers after a crash: {e}"))
        .ok();
    let sregs = vcpu
        .fd
        .get_sregs()
        .inspect_err(|e| warn!(vcpu = vcpu.id, "reading sregs after a crash: {e}"))
        .ok();
    CrashInfo {
        kind,
        vcpu: vcpu.id,
        regs,
        sregs,
        detected_at,
        fallback: None,
    }
}

/// Finishes the I/O each vCPU left pending at its last exit.
///
/// KVM completes a port or MMIO access (e.g. moves RIP past an `out`) only
/// when KVM_RUN is entered again, and that pending step is not part of any
/// state userspace can read or write. Entering KVM_RUN with
/// `immediate_exit` set completes it without running guest code, so the
/// state read between runs is the whole truth (KVM API, "KVM_RUN").
pub(crate) fn complete_pending_io(vcpus: &mut [Vcpu], devices: &Devices) {
    for vcpu in vcpus {
        if let Err(e) = complete_vcpu_io(vcpu, devices) {
            warn!(
                vcpu = vcpu.id,
                "cannot complete the vCPU's pending I/O: {e}"
            );
        }
    }
}

fn complete_vcpu_io(vcpu: &mut Vcpu, devices: &Devices) -> Result<()> {
    let id = vcpu.id;
    vcpu.fd.set_kvm_immediate_exit(1);
    let mut result = Err(Error::Setup(format!(
        "vCPU {id} kept exiting while its pending I/O was completed"
    )));
    for _ in 0..MAX_COMPLETION_ROUNDS {
        match vcpu.fd.run() {
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                result = Ok(());
                break;
            }
            Err(e) => {
                result = Err(Error::Kvm {
                    op: "KVM_RUN (completing I/O)",
                    source: e,
                });
                break;
            }
            // The rest of a split access: serve it like the vCPU thread.
            Ok(VcpuExit::IoOut(port, data)) => {
                let action = devices.pio_out(port, data);
                if action != PioAction::Continue {
                    warn!(vcpu = id, ?action, "dropping a port write's action");
                }
            }
            Ok(VcpuExit::IoIn(port, data)) => devices.pio_in(port, data),
            Ok(VcpuExit::MmioRead(addr, data)) => devices.mmio_read(addr, data),
            Ok(VcpuExit::MmioWrite(addr, data)) => devices.mmio_write(addr, data),
            Ok(other) => {
                result = Err(Error::Setup(format!(
                    "vCPU {id}: unexpected exit {other:?} while completing I/O"
                )));
                break;
            }
        }
    }
    vcpu.fd.set_kvm_immediate_exit(0);
    result
}
