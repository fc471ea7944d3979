//! Running the VM: the vCPU threads, and the control loop that waits for
//! the event that ends a run while it watches the kernel's heartbeats.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::{Vm, VmOutcome};
use crate::crash::{CrashInfo, CrashKind};
use crate::error::{Error, Result};
use crate::kick::kick;
use crate::serial::spawn_feeder;
use crate::vcpu::{Vcpu, VcpuEvent, complete_pending_io, spawn};
use crate::watchdog::{Watchdog, thread_cpu_time};

/// A crash handler running longer than this is kicked (KVM_RUN returns,
/// and the handler checks its own time budget).
const HANDLER_KICK_AFTER: Duration = Duration::from_millis(50);
/// How often the control loop checks that vCPU threads are still alive.
const LIVENESS_POLL: Duration = Duration::from_millis(100);

impl Vm {
    /// Runs the guest until it powers off, crashes, asks for a reboot,
    /// reaches the stop milestone, times out or is stopped.
    ///
    /// All vCPU threads have stopped when this returns. The vCPUs keep
    /// their state, so `run` may be called again to resume the guest.
    pub fn run(&mut self) -> Result<VmOutcome> {
        if self.vcpus.is_empty() {
            return Err(Error::Setup("the VM has no runnable vCPU left".into()));
        }
        let deadline = self.timeout.map(|t| Instant::now() + t);
        self.ctx.stop.store(false, Ordering::Release);
        self.ctx.crash_ended_run.store(false, Ordering::Release);

        let mut handles: Vec<(u32, JoinHandle<Vcpu>)> = Vec::new();
        let mut spawn_error = None;
        // Counted before the threads start: a vCPU that crashes at once
        // must find the run started, or its handler could not stop the
        // others (corrected below if a thread fails to start).
        self.ctx.control.run_started(self.vcpus.len());
        let mut idle = std::mem::take(&mut self.vcpus).into_iter();
        for vcpu in idle.by_ref() {
            let id = vcpu.id;
            match spawn(vcpu, self.ctx.clone(), self.events_tx.clone()) {
                Ok(h) => handles.push((id, h)),
                Err(e) => {
                    // That vCPU is lost with the thread that never started.
                    spawn_error = Some(e);
                    break;
                }
            }
        }
        self.vcpus.extend(idle);
        self.ctx.control.run_started(handles.len());
        let feeder_stop = Arc::new(AtomicBool::new(false));
        let feeder = match spawn_error {
            Some(_) => None,
            None => match spawn_feeder(
                self.ctx.devices.serial.clone(),
                self.console_in.clone(),
                feeder_stop.clone(),
                self.ctx.guest_ready.clone(),
            ) {
                Ok(f) => Some(f),
                Err(e) => {
                    spawn_error = Some(e);
                    None
                }
            },
        };

        let result = match spawn_error {
            Some(e) => Err(e),
            None => self.wait_for_event(&handles, deadline),
        };

        // Stop everything, whatever happened (paused vCPUs too).
        self.ctx.stop.store(true, Ordering::Release);
        self.ctx.control.wake_all();
        feeder_stop.store(true, Ordering::Release);
        let mut join_error = None;
        for (id, handle) in handles {
            while !handle.is_finished() {
                kick(&handle);
                std::thread::sleep(Duration::from_micros(200));
            }
            match handle.join() {
                Ok(vcpu) => self.vcpus.push(vcpu),
                Err(_) => join_error = Some(Error::VcpuPanicked(id)),
            }
        }
        self.ctx.control.run_ended();
        self.vcpus.sort_by_key(|v| v.id);
        // Between runs the vCPU state must be complete (snapshots read it).
        complete_pending_io(&mut self.vcpus, &self.ctx.devices);
        if let Some(f) = feeder
            && f.join().is_err()
        {
            warn!("the serial input thread panicked");
        }
        // Later events (e.g. a second vCPU crashing) are superseded.
        while let Ok(extra) = self.events_rx.try_recv() {
            debug!(?extra.vcpu, "dropping a superseded VM event");
        }

        let event = result?;
        if let Some(e) = join_error {
            return Err(e);
        }
        self.outcome(event)
    }

    /// Waits for the first event that ends this run, watching the
    /// kernel's heartbeats meanwhile.
    fn wait_for_event(
        &self,
        handles: &[(u32, JoinHandle<Vcpu>)],
        deadline: Option<Instant>,
    ) -> Result<Option<VcpuEvent>> {
        use std::os::unix::thread::JoinHandleExt;
        let mut watchdog = self.watchdog.map(Watchdog::new);
        // Each vCPU with its thread's CPU time, refilled at every check.
        let mut cpu_times: Vec<(u32, Option<Duration>)> = Vec::with_capacity(handles.len());
        let poll = watchdog
            .as_ref()
            .map_or(LIVENESS_POLL, |w| w.poll_interval().min(LIVENESS_POLL));
        loop {
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    left.min(poll)
                }
                None => poll,
            };
            match self.events_rx.recv_timeout(wait) {
                Ok(report) => {
                    debug!(vcpu = ?report.vcpu, event = ?report.event, "VM event");
                    return Ok(Some(report.event));
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some((id, _)) = handles.iter().find(|(_, h)| h.is_finished()) {
                        // A vCPU thread ended without reporting: it panicked
                        // (events are sent before a thread returns, so check
                        // the queue once more first).
                        if let Ok(report) = self.events_rx.try_recv() {
                            return Ok(Some(report.event));
                        }
                        return Err(Error::VcpuPanicked(*id));
                    }
                    // Paused from the control API: the heartbeat is frozen
                    // on purpose; stalls before the resume do not count.
                    if self.ctx.control.pause_requested() {
                        if let Some(w) = watchdog.as_mut() {
                            w.reset();
                        }
                        continue;
                    }
                    // A crash being handled: the heartbeat is frozen on
                    // purpose, but the handler has a time budget.
                    let handling = *crate::console::lock(&self.ctx.handling);
                    if let Some((vcpu, since)) = handling {
                        if let Some(w) = watchdog.as_mut() {
                            w.reset();
                        }
                        if since.elapsed() > HANDLER_KICK_AFTER
                            && let Some((_, h)) = handles.iter().find(|(id, _)| *id == vcpu)
                        {
                            kick(h);
                        }
                        continue;
                    }
                    if let Some(w) = watchdog.as_mut() {
                        cpu_times.clear();
                        cpu_times.extend(
                            handles
                                .iter()
                                .map(|(id, h)| (*id, thread_cpu_time(h.as_pthread_t()))),
                        );
                        if let Some(stall) = w.check(&self.mem, self.root_gpa(), &cpu_times) {
                            warn!(
                                vcpu = stall.vcpu,
                                ?stall,
                                "watchdog: a kernel heartbeat stopped"
                            );
                            if self.ctx.handler.is_none() {
                                return Ok(Some(VcpuEvent::Hang(stall)));
                            }
                            // The hang goes to the hung vCPU's own thread:
                            // it alone has that CPU's registers.
                            let Some((_, h)) = handles.iter().find(|(id, _)| *id == stall.vcpu)
                            else {
                                return Ok(Some(VcpuEvent::Hang(stall)));
                            };
                            if !self.ctx.hang.post(stall.clone()) {
                                // That vCPU never picked its last hang up.
                                self.ctx.hang.take(stall.vcpu);
                                return Ok(Some(VcpuEvent::Hang(stall)));
                            }
                            w.reset_vcpu(stall.vcpu);
                            kick(h);
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err(Error::NoOutcome),
            }
        }
    }

    fn outcome(&self, event: Option<VcpuEvent>) -> Result<VmOutcome> {
        Ok(match event {
            None => VmOutcome::TimedOut,
            Some(VcpuEvent::PowerOff(status)) => VmOutcome::PowerOff(status),
            Some(VcpuEvent::Reboot) => VmOutcome::RebootRequested,
            Some(VcpuEvent::Milestone(m)) => VmOutcome::MilestoneReached(m),
            Some(VcpuEvent::StopRequested) => VmOutcome::Stopped,
            Some(VcpuEvent::Failed(e)) => return Err(e),
            Some(VcpuEvent::Hang(stall)) => {
                // The vCPU threads are stopped: the hung vCPU's state is
                // the hang's.
                let fd = self.vcpu_fd(stall.vcpu);
                VmOutcome::Crash(Box::new(CrashInfo {
                    kind: CrashKind::Hang {
                        heartbeat: stall.heartbeat,
                        stalled_ms: stall.wall.as_millis() as u64,
                        cpu_ms: stall.cpu.map(|c| c.as_millis() as u64),
                    },
                    vcpu: stall.vcpu,
                    regs: fd.and_then(|f| f.get_regs().ok()),
                    sregs: fd.and_then(|f| f.get_sregs().ok()),
                    detected_at: std::time::Instant::now(),
                    fallback: None,
                }))
            }
            Some(VcpuEvent::Crash(info)) => VmOutcome::Crash(info),
        })
    }
}
