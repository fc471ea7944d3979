//! vCPU threads: one per vCPU, each looping on KVM_RUN and handing exits
//! to the devices, Firecracker style.
//!
//! A vCPU thread is stopped by setting the shared `stop` flag and sending it
//! the kick signal (`SIGRTMIN`). The signal handler sets `immediate_exit` in
//! that thread's `kvm_run`, so a kick that lands just before KVM_RUN is not
//! lost: KVM_RUN then returns EINTR at once and the loop sees the flag.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use libc::{c_int, c_void, siginfo_t};
use tracing::{debug, error, info, warn};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler, unblock_signal};

use crate::crash::{CrashInfo, CrashKind};
use crate::devices::{Devices, PioAction};
use crate::error::{Error, Result};
use crate::hypercall::HcAction;
use crate::stats::ExitKind;

// KVM_SYSTEM_EVENT_* types.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const SYSTEM_EVENT_RESET: u32 = 2;
const SYSTEM_EVENT_CRASH: u32 = 3;

/// One virtual CPU.
pub struct Vcpu {
    pub id: u32,
    pub fd: VcpuFd,
}

/// What a vCPU reports to the VM's control loop.
#[derive(Debug)]
pub enum VcpuEvent {
    PowerOff(i32),
    Reboot,
    /// The configured stop milestone was reached.
    Milestone(u64),
    Crash(Box<CrashInfo>),
    /// KVM_RUN failed.
    Failed(Error),
    /// Someone asked the VM to stop (not from a vCPU).
    StopRequested,
    /// The watchdog found the guest hung (not from a vCPU).
    Hang(crate::watchdog::Stall),
}

/// An event and the vCPU it came from (`None`: from outside).
#[derive(Debug)]
pub struct Report {
    pub vcpu: Option<u32>,
    pub event: VcpuEvent,
}

/// State shared by all vCPU threads of a VM.
pub struct VcpuContext {
    pub devices: Devices,
    /// Set to make every vCPU thread leave its loop.
    pub stop: Arc<AtomicBool>,
    /// Set when the guest reports any milestone (it is up; input may flow).
    pub guest_ready: Arc<AtomicBool>,
    /// Leave the loop when this milestone is reached (0: none). Atomic so
    /// that it can change between runs of the same VM.
    pub stop_at_milestone: std::sync::atomic::AtomicU64,
    /// The repair image and its machinery, when resurrecting.
    pub resurrector: Option<std::sync::Mutex<crate::recovery::Resurrector>>,
    /// Memory slots are added and removed from the vCPU thread.
    pub vm_fd: Arc<kvm_ioctls::VmFd>,
    /// Set by the watchdog (which then kicks vCPU 0): the guest is hung.
    pub hang: std::sync::Mutex<Option<crate::watchdog::Stall>>,
    /// When the running repair started (the control thread enforces its
    /// time budget and keeps the watchdog quiet meanwhile). Shared with
    /// [`crate::control::VmControl`], which reports it.
    pub repairing_since: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// Pause and resume from the control API (see `crate::control`).
    pub control: Arc<crate::control::ControlShared>,
}

thread_local! {
    /// This thread's `kvm_run`, for the kick signal handler.
    static KVM_RUN_PTR: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
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
pub fn kick(handle: &JoinHandle<Vcpu>) {
    if handle.is_finished() {
        return;
    }
    if let Err(e) = handle.kill(kick_signal()) {
        debug!("kicking a vCPU thread: {e}");
    }
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
        let flow = match vcpu.fd.run() {
            Ok(exit) => handle_exit(exit, ctx, vcpu.id),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                stats.record(ExitKind::Interrupted);
                vcpu.fd.set_kvm_immediate_exit(0);
                // A kick from the watchdog: the kernel is hung.
                match crate::console::lock(&ctx.hang).take() {
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
            Flow::Crash(kind) => crash_info(vcpu, ctx, kind),
            Flow::InternalError => {
                let kind = internal_error(vcpu);
                crash_info(vcpu, ctx, kind)
            }
        };
        if let Some(event) = try_resurrect(vcpu, ctx, crash) {
            return Some(event);
        }
    }
}

/// Hands a crash to the resurrector, if there is one. `None`: the kernel
/// was repaired and the vCPU is set to resume it.
fn try_resurrect(vcpu: &mut Vcpu, ctx: &VcpuContext, crash: CrashInfo) -> Option<VcpuEvent> {
    let Some(res) = &ctx.resurrector else {
        return Some(VcpuEvent::Crash(Box::new(crash)));
    };
    if ctx.stop.load(Ordering::Acquire) {
        return Some(VcpuEvent::Crash(Box::new(crash)));
    }
    let t0 = crash.detected_at;
    *crate::console::lock(&ctx.repairing_since) = Some(std::time::Instant::now());
    let result = crate::console::lock(res).recover(
        vcpu,
        &ctx.vm_fd,
        &ctx.devices.mem,
        ctx.devices.hypercalls.root_gpa(),
        crash,
        t0,
    );
    *crate::console::lock(&ctx.repairing_since) = None;
    match result {
        Ok(()) => None,
        Err((mut crash, why)) => {
            warn!(
                vcpu = vcpu.id,
                "resurrection not possible, falling back: {why}"
            );
            crash.fallback = Some(why);
            Some(VcpuEvent::Crash(crash))
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
        HcAction::ExtEvent(ev) => {
            if let Some(res) = &ctx.resurrector {
                crate::console::lock(res).on_ext_event(
                    &ctx.devices.mem,
                    ctx.devices.hypercalls.root_gpa(),
                    ev,
                );
            }
            Flow::Continue
        }
        HcAction::Recovered(count) => {
            let Some(res) = &ctx.resurrector else {
                return Flow::Continue;
            };
            let done = crate::console::lock(res).on_recovered(&ctx.devices.mem, count);
            match done {
                Ok(Some(line)) => {
                    let msg = format!("[lazarus] {line}\n");
                    let mut serial = crate::console::lock(&ctx.devices.serial);
                    let _ = serial.write_console(msg.as_bytes());
                    Flow::Continue
                }
                Ok(None) => Flow::Continue,
                // The image may still be mapped: the guest must not run on.
                Err(why) => Flow::Event(VcpuEvent::Failed(Error::Repair(why))),
            }
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

/// Captures a crash: the vCPU's registers and, when the kernel reported
/// it, its own crash record (read now, before any repair changes it).
fn crash_info(vcpu: &Vcpu, ctx: &VcpuContext, kind: CrashKind) -> CrashInfo {
    let detected_at = std::time::Instant::now();
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
    let guest_record = match (&kind, ctx.devices.hypercalls.root_gpa()) {
        (CrashKind::GuestPanic { .. }, Some(gpa)) => {
            crate::root::read_crash_record(&ctx.devices.mem, gpa)
        }
        _ => None,
    };
    CrashInfo {
        kind,
        vcpu: vcpu.id,
        regs,
        sregs,
        guest_record,
        detected_at,
        fallback: None,
    }
}
