//! A vCPU's turn at the crash handler: taking it one vCPU at a time
//! (parked, counted as stopped, whenever another holds the machine),
//! stopping the others, applying the verdict, and waiting while a handler
//! says `Verdict::Wait`. Notifications take the same turns.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Vcpu, VcpuContext, VcpuEvent};
use crate::console::lock;
use crate::crash::{CrashInfo, CrashKind};
use crate::error::Error;
use crate::handler::{
    CrashHandler, HandlerError, Notification, NotifyContext, ResumeState, StoppedVm, Verdict,
};

/// How long a crashed vCPU waits for the others to stop before the crash
/// handler is told it cannot have the whole machine.
const STOP_OTHERS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a crashed vCPU waits before it tries the busy crash handler
/// again, when no hold asks it to park (the holder is about to take one,
/// or a notification has the handler).
const HANDLER_RETRY: Duration = Duration::from_micros(200);
/// How long a crash whose handler said `Verdict::Wait` lets the other
/// vCPUs run before it is presented again, and how many times. Ring-0
/// code runs about 1 µs an instruction here: a critical section of a few
/// thousand instructions ends well inside one wait.
const CRASH_WAIT: Duration = Duration::from_millis(20);
const MAX_CRASH_WAITS: u32 = 5;

/// Hands a crash to the handler, if there is one, with every other vCPU
/// stopped. `None`: the vCPU is set to resume the guest.
pub(super) fn handle_crash(
    vcpu: &mut Vcpu,
    ctx: &VcpuContext,
    crash: CrashInfo,
) -> Option<VcpuEvent> {
    let Some(handler) = &ctx.handler else {
        return Some(VcpuEvent::Crash(Box::new(crash)));
    };
    let park = || ctx.control.park_crashed(&crash, &ctx.stop);
    let mut waits = 0;
    loop {
        let handler = match take_handler(handler, ctx, vcpu.id, park) {
            Taken::Handler(h) => h,
            Taken::Covered(state) => return resume_covered(vcpu, state, crash),
            // The run is ending; another event decides its outcome.
            Taken::Stopping => return Some(VcpuEvent::Crash(Box::new(crash))),
            Taken::Retry => continue,
        };
        match run_handler(vcpu, ctx, handler, &crash, waits < MAX_CRASH_WAITS) {
            Handled::Event(event) => return event,
            Handled::Wait(why) => {
                waits += 1;
                info!(
                    vcpu = vcpu.id,
                    wait = waits,
                    "crash handling waits while the other vCPUs run: {why}"
                );
                match wait_for_turn(ctx, vcpu.id, park, CRASH_WAIT) {
                    Taken::Covered(state) => return resume_covered(vcpu, state, crash),
                    Taken::Stopping => return Some(VcpuEvent::Crash(Box::new(crash))),
                    Taken::Handler(_) | Taken::Retry => {}
                }
            }
        }
    }
}

fn resume_covered(vcpu: &mut Vcpu, state: Box<ResumeState>, crash: CrashInfo) -> Option<VcpuEvent> {
    // Another vCPU's repair dealt with this crash too.
    // It resumes where it stopped; an interrupt its triple fault cut
    // short is taken again.
    if crash.kind == CrashKind::TripleFault {
        match vcpu.requeue_lost_interrupt() {
            Ok(Some(v)) => info!(vcpu = vcpu.id, vector = v, "interrupt requeued"),
            Ok(None) => {}
            Err(e) => warn!(vcpu = vcpu.id, "cannot requeue its lost interrupt: {e}"),
        }
    }
    info!(
        vcpu = vcpu.id,
        "the crash was covered by another vCPU's repair; resuming"
    );
    apply_verdict(vcpu, Verdict::Resume(state), crash)
}

/// What one turn of the handler came to.
enum Handled {
    /// The verdict was applied (`None`: the vCPU resumes).
    Event(Option<VcpuEvent>),
    /// The handler asked to wait (`Verdict::Wait`); the others run again.
    Wait(HandlerError),
}

/// Stops the other vCPUs, asks the handler and applies its verdict. A
/// `Wait` verdict is returned as such when `may_wait`, else it ends the
/// run like `Reboot`.
fn run_handler(
    vcpu: &mut Vcpu,
    ctx: &VcpuContext,
    mut handler: MutexGuard<'_, Box<dyn CrashHandler>>,
    crash: &CrashInfo,
    may_wait: bool,
) -> Handled {
    let stopped = ctx
        .control
        .stop_others(vcpu.id, STOP_OTHERS_TIMEOUT, &ctx.stop);
    *lock(&ctx.handling) = Some((vcpu.id, Instant::now()));
    let (others, all_stopped, hold) = match stopped {
        Ok((others, hold)) => (others, true, Some(hold)),
        Err(e) => {
            warn!(
                vcpu = vcpu.id,
                "cannot stop the other vCPUs for the crash handler: {e}"
            );
            (Vec::new(), false, None)
        }
    };
    let parked: Vec<u32> = others.iter().map(|o| o.id).collect();
    // Quiesce I/O, as ALDR's hypervisor does before its repair image
    // runs: no device touches guest memory or interrupts while the
    // handler snapshots and repairs it.
    ctx.devices.virtio.pause();
    let mut verdict = handler.on_crash(
        StoppedVm {
            vm_fd: &ctx.vm_fd,
            mem: &ctx.devices.mem,
            vcpu,
            others,
            all_stopped,
            root_gpa: ctx.devices.hypercalls.root_gpa(),
            virtio: &ctx.devices.virtio,
        },
        crash,
    );
    *lock(&ctx.handling) = None;
    match verdict {
        Verdict::Wait(why) if may_wait => {
            // Nothing changed: the others run on as if never stopped.
            ctx.devices.virtio.resume();
            drop(handler);
            drop(hold);
            return Handled::Wait(why);
        }
        Verdict::Wait(why) => {
            warn!(
                vcpu = vcpu.id,
                "the crash handler still waits after {MAX_CRASH_WAITS} waits; giving up"
            );
            verdict = Verdict::Reboot(why);
        }
        Verdict::ResumeCovering { state, covered } => {
            for (id, st) in covered {
                if !ctx.control.cover(id, st.regs, st.sregs) {
                    warn!(
                        vcpu = id,
                        "the verdict covers a crash this vCPU does not have pending"
                    );
                }
            }
            verdict = Verdict::Resume(state);
        }
        _ => {}
    }
    let detected_at = crash.detected_at;
    let event = apply_verdict(vcpu, verdict, crash.clone());
    if event.is_none() {
        // A hang the watchdog left for a vCPU while it was stopped predates
        // the repair, which may have freed it: the watchdog starts afresh
        // after a handled crash, and finds it again if it is still hung.
        ctx.hang.clear();
        // Timed from here: the hold goes and they all run.
        ctx.control.watch_resume(vcpu.id, detected_at, &parked);
        // The devices restart before any vCPU runs: what the guest
        // notified while they were paused is done, once.
        ctx.devices.virtio.resume();
    } else {
        ctx.crash_ended_run.store(true, Ordering::Release);
    }
    // The handler before the hold: a vCPU parked with a crash of its own
    // finds the handler free when the hold's release wakes it.
    drop(handler);
    drop(hold);
    Handled::Event(event)
}

/// What the crashed vCPU got while it waited for the handler.
enum Taken<'h> {
    Handler(MutexGuard<'h, Box<dyn CrashHandler>>),
    /// Its crash was covered while it was parked: resume with these.
    Covered(Box<ResumeState>),
    /// The VM is stopping, or a crash verdict ended the run.
    Stopping,
    /// A wait for the handler's turn is over: ask it again.
    Retry,
}

/// Takes the crash handler for the calling vCPU, one user at a time,
/// never blocking on its lock: a vCPU blocked there would not stop, and a
/// crash handler's stop would time out. While the handler is busy the
/// vCPU parks (with `park`) whenever a hold asks it to, counted as
/// stopped, else retries shortly (the holder is taking its hold, or a
/// notification has the handler).
fn take_handler<'h>(
    handler: &'h Mutex<Box<dyn CrashHandler>>,
    ctx: &VcpuContext,
    id: u32,
    park: impl Fn(),
) -> Taken<'h> {
    park_until(ctx, id, park, || {
        if ctx.crash_ended_run.load(Ordering::Acquire) {
            return None;
        }
        match handler.try_lock() {
            Ok(guard) => Some(Taken::Handler(guard)),
            Err(TryLockError::Poisoned(p)) => Some(Taken::Handler(p.into_inner())),
            Err(TryLockError::WouldBlock) => None,
        }
    })
}

/// Waits `wait` while the other vCPUs run, parked with the crash pending
/// whenever one of them stops the machine (its repair may cover this
/// crash). `Taken::Retry`: the wait is over; the crash goes to the
/// handler again.
fn wait_for_turn<'h>(ctx: &VcpuContext, id: u32, park: impl Fn(), wait: Duration) -> Taken<'h> {
    let deadline = Instant::now() + wait;
    park_until(ctx, id, park, || {
        if ctx.crash_ended_run.load(Ordering::Acquire) {
            Some(Taken::Stopping)
        } else {
            (Instant::now() >= deadline).then_some(Taken::Retry)
        }
    })
}

/// Parks whenever a hold asks (never with the handler held: whoever holds
/// the hold must be able to take the handler or release it), until the
/// crash is covered, the VM stops, or `ready` has an answer.
fn park_until<'h>(
    ctx: &VcpuContext,
    id: u32,
    park: impl Fn(),
    mut ready: impl FnMut() -> Option<Taken<'h>>,
) -> Taken<'h> {
    loop {
        if ctx.stop.load(Ordering::Acquire) {
            return Taken::Stopping;
        }
        if ctx.control.pause_requested() {
            park();
            if let Some((regs, sregs)) = ctx.control.take_covered(id) {
                return Taken::Covered(Box::new(ResumeState { regs, sregs }));
            }
            continue;
        }
        if let Some(t) = ready() {
            return t;
        }
        std::thread::sleep(HANDLER_RETRY);
    }
}

/// Applies the handler's verdict to the crashed vCPU. `None`: it resumes.
fn apply_verdict(vcpu: &mut Vcpu, verdict: Verdict, mut crash: CrashInfo) -> Option<VcpuEvent> {
    match verdict {
        Verdict::Resume(state) => {
            let set = vcpu
                .fd
                .set_sregs(&state.sregs)
                .and_then(|()| vcpu.fd.set_regs(&state.regs));
            match set {
                Ok(()) => None,
                // The guest cannot be resumed: a crash outcome with the
                // reason, so that the caller dumps and reboots.
                Err(e) => {
                    warn!(vcpu = vcpu.id, "cannot resume the vCPU: {e}");
                    crash.fallback = Some(Arc::new(Error::Kvm {
                        op: "KVM_SET_REGS (resume)",
                        source: e,
                    }));
                    Some(VcpuEvent::Crash(Box::new(crash)))
                }
            }
        }
        Verdict::ResumeCovering { state, .. } => apply_verdict(vcpu, Verdict::Resume(state), crash),
        Verdict::Reboot(why) => {
            warn!(
                vcpu = vcpu.id,
                "resurrection not possible, falling back: {why}"
            );
            crash.fallback = Some(why);
            Some(VcpuEvent::Crash(Box::new(crash)))
        }
        Verdict::Halt => Some(VcpuEvent::Crash(Box::new(crash))),
        // `run_handler` turns a wait it does not grant into a reboot.
        Verdict::Wait(why) => apply_verdict(vcpu, Verdict::Reboot(why), crash),
    }
}

/// Forwards a notification to the crash handler, if there is one; waits
/// for a busy handler like a crash does (parked while a hold asks).
/// `None`: the guest runs on.
pub(super) fn notify(vcpu: &Vcpu, ctx: &VcpuContext, n: Notification) -> Option<VcpuEvent> {
    let handler = ctx.handler.as_ref()?;
    let park = || ctx.control.park(vcpu, &ctx.stop);
    // The run is ending: nobody needs the notification any more. (Only a
    // vCPU parked with a crash can have it covered, never this one.)
    let Taken::Handler(mut handler) = take_handler(handler, ctx, vcpu.id, park) else {
        return None;
    };
    let cx = NotifyContext {
        mem: &ctx.devices.mem,
        root_gpa: ctx.devices.hypercalls.root_gpa(),
    };
    match handler.on_notification(cx, n) {
        Ok(Some(line)) => {
            drop(handler);
            let msg = format!("[lazarus] {line}\n");
            let mut serial = lock(&ctx.devices.serial);
            let _ = serial.write_console(msg.as_bytes());
            None
        }
        Ok(None) => None,
        // E.g. the repair image may still be mapped: the guest must not
        // run on.
        Err(why) => Some(VcpuEvent::Failed(Error::CrashHandler(why))),
    }
}
