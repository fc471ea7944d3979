//! Controlling a running VM from other threads (the control API): pause
//! and resume, and read-only views of its state and memory use.
//!
//! Pausing is a hold count shared with the vCPU threads. While any hold
//! exists, each vCPU thread, at the top of its loop (never in the middle of
//! an exit or a repair), records its registers and parks on a condition
//! variable; it runs no guest code until the last hold is released. The
//! pausing thread kicks the vCPU threads out of KVM_RUN with the same
//! signal as [`crate::kick::kick`] and waits until every vCPU of the run is
//! parked. The watchdog ignores the frozen heartbeat while a hold exists.
//!
//! A vCPU that crashes while another vCPU's crash is handled (or while a
//! hold is being taken) parks the same way, with the registers of its crash
//! and the crash itself recorded ([`VcpuRegs::crash`]): it counts as
//! stopped at once, and its own crash goes to the handler after the hold.
//!
//! After a crash the handler resumed from, the same state times the way
//! back: when the crashed vCPU and every vCPU parked for it re-entered
//! KVM_RUN ([`CrashResume`]), as the hypervisor sees it, whatever the
//! guest does next.
//!
//! A [`VmControl`] is cloneable and does not keep the VM alive: it shares
//! guest RAM and the counters, never the vCPU or VM file descriptors.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_sregs};

use crate::console::lock;
use crate::cpu::Vcpu;
use crate::crash::{CrashInfo, CrashKind};
use crate::hypercall::Hypercalls;
use crate::kick::kick_signal;
use crate::loader::GuestLayout;
use crate::memory::GuestRam;
use crate::stats::{ExitCounts, ExitStats};
use crate::usage::MemoryUsage;

/// How often a parked vCPU re-checks the VM's stop flag on its own (the
/// VM also wakes it when it stops).
const PARK_POLL: Duration = Duration::from_millis(50);
/// How often a pause in progress re-kicks vCPUs that have not parked yet.
const REKICK: Duration = Duration::from_millis(10);

/// Why a control operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("the VM is not running (it is stopped, booting or rebooting)")]
    /// No vCPU thread is running.
    NotRunning,
    #[error("only {parked} of {running} vCPUs stopped within {waited:?}")]
    /// Some vCPUs did not stop in time; the hold was released.
    PauseTimeout {
        /// vCPUs that parked.
        parked: usize,
        /// vCPUs of the run.
        running: usize,
        /// How long the pause waited.
        waited: Duration,
    },
}

/// Registers of a vCPU, as it recorded them when it parked.
#[derive(Clone, Debug)]
pub struct VcpuRegs {
    /// The vCPU.
    pub id: u32,
    /// Its general-purpose registers (`None` if KVM refused them).
    pub regs: Option<kvm_regs>,
    /// Its segment and control registers, likewise.
    pub sregs: Option<kvm_sregs>,
    /// A crash of its own, waiting for the handler: the vCPU crashed while
    /// another crash was handled, and these are its registers at that
    /// crash. Its turn comes after the current handler's verdict, so a
    /// handler may cover both in one repair. `None` for a vCPU stopped in
    /// the ordinary way.
    pub crash: Option<CrashKind>,
}

/// What the VM is doing, as the control API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Guest code runs (a pause may be in progress).
    Running,
    /// Every vCPU is parked.
    Paused,
    /// The repair image is running on a crashed vCPU.
    Repairing,
    /// No vCPU thread is running (before, between or after runs).
    Stopped,
}

impl RunState {
    /// The state's name in the control API.
    pub const fn name(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Repairing => "repairing",
            RunState::Stopped => "stopped",
        }
    }
}

/// How the vCPUs ran again after a crash the handler resumed from: the
/// crash's exit, and when the crashed vCPU and the last of the vCPUs
/// parked for it re-entered KVM_RUN. The time from the exit to
/// `all_running_at` is the whole machine's downtime, which the guest
/// cannot observe itself while its CPUs are stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashResume {
    /// The crashed vCPU.
    pub vcpu: u32,
    /// When the crash exit was seen (`CrashInfo::detected_at`).
    pub detected_at: Instant,
    /// When the crashed vCPU re-entered KVM_RUN.
    pub crashed_running_at: Instant,
    /// When the last vCPU re-entered KVM_RUN: every vCPU runs again.
    pub all_running_at: Instant,
    /// vCPUs that re-entered: the crashed one and those parked for it.
    pub vcpus: usize,
}

impl CrashResume {
    /// From the crash exit until every vCPU runs again.
    pub fn all_running_after(&self) -> Duration {
        self.all_running_at
            .saturating_duration_since(self.detected_at)
    }

    /// From the crash exit until the crashed vCPU runs again.
    pub fn crashed_running_after(&self) -> Duration {
        self.crashed_running_at
            .saturating_duration_since(self.detected_at)
    }
}

/// A resumption being timed: the vCPUs that have not re-entered yet.
#[derive(Debug)]
struct ResumeWatch {
    vcpu: u32,
    detected_at: Instant,
    waiting: Vec<u32>,
    crashed_running_at: Option<Instant>,
    vcpus: usize,
}

#[derive(Debug, Default)]
struct PauseState {
    /// Outstanding [`PauseGuard`]s.
    holds: u32,
    /// Live vCPU threads, for kicks. A thread removes itself (under the
    /// lock) before it ends, so every entry names a live thread.
    threads: Vec<(u32, libc::pthread_t)>,
    /// vCPUs the current run started (0 between runs).
    running: usize,
    /// vCPUs parked now.
    parked: Vec<VcpuRegs>,
    /// Parked vCPUs whose pending crash the last verdict covered, with the
    /// registers they resume with (`cover`).
    covered: Vec<(u32, Box<(kvm_regs, kvm_sregs)>)>,
    /// When the current hold period started, and all earlier ones' total.
    paused_since: Option<Instant>,
    paused_total: Duration,
    /// The resumption after a crash being timed, and the last one timed.
    resume_watch: Option<ResumeWatch>,
    last_resume: Option<CrashResume>,
}

/// Pause state shared by the VM, its vCPU threads and [`VmControl`]s.
#[derive(Debug, Default)]
pub struct ControlShared {
    /// Mirrors `holds > 0`, so the vCPU loop checks it without a lock.
    requested: AtomicBool,
    /// Mirrors `resume_watch.is_some()`, likewise.
    resume_watched: AtomicBool,
    state: Mutex<PauseState>,
    changed: Condvar,
}

impl ControlShared {
    /// Whether a pause is held or being taken (vCPUs must park; the
    /// watchdog must not count the frozen heartbeat).
    pub(crate) fn pause_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Called by a vCPU thread before its first KVM_RUN.
    pub(crate) fn register_thread(&self, id: u32) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        lock(&self.state).threads.push((id, me));
    }

    /// Called by a vCPU thread before it ends.
    pub(crate) fn unregister_thread(&self, id: u32) {
        let mut st = lock(&self.state);
        st.threads.retain(|&(i, _)| i != id);
        st.parked.retain(|p| p.id != id);
        // A vCPU that ends never runs again: that resumption has no end.
        if st
            .resume_watch
            .as_ref()
            .is_some_and(|w| w.waiting.contains(&id))
        {
            self.unwatch(&mut st);
        }
        self.changed.notify_all();
    }

    /// Starts timing the resumption after vCPU `vcpu`'s crash (seen at
    /// `detected_at`): it and the vCPUs in `parked` are about to run
    /// again. Called before the hold that parked them is released.
    pub(crate) fn watch_resume(&self, vcpu: u32, detected_at: Instant, parked: &[u32]) {
        let mut waiting = parked.to_vec();
        waiting.retain(|&i| i != vcpu);
        waiting.push(vcpu);
        let mut st = lock(&self.state);
        st.resume_watch = Some(ResumeWatch {
            vcpu,
            detected_at,
            vcpus: waiting.len(),
            waiting,
            crashed_running_at: None,
        });
        self.resume_watched.store(true, Ordering::Release);
    }

    /// Called by vCPU `id`'s thread just before KVM_RUN. Costs one atomic
    /// load unless a resumption is being timed.
    pub(crate) fn entering_run(&self, id: u32) {
        if !self.resume_watched.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let mut st = lock(&self.state);
        let Some(w) = st.resume_watch.as_mut() else {
            return;
        };
        let before = w.waiting.len();
        w.waiting.retain(|&i| i != id);
        if w.waiting.len() == before {
            return;
        }
        if id == w.vcpu {
            w.crashed_running_at = Some(now);
        }
        if w.waiting.is_empty() {
            let done = CrashResume {
                vcpu: w.vcpu,
                detected_at: w.detected_at,
                crashed_running_at: w.crashed_running_at.unwrap_or(now),
                all_running_at: now,
                vcpus: w.vcpus,
            };
            st.last_resume = Some(done);
            self.unwatch(&mut st);
            self.changed.notify_all();
        }
    }

    fn unwatch(&self, st: &mut PauseState) {
        st.resume_watch = None;
        self.resume_watched.store(false, Ordering::Release);
    }

    /// Kicks vCPU `id`'s thread out of (or before) KVM_RUN, if it runs.
    pub(crate) fn kick(&self, id: u32) {
        let st = lock(&self.state);
        for &(i, thread) in &st.threads {
            if i == id {
                // SAFETY: `thread` is a live vCPU thread: threads remove
                // themselves under this lock before ending. The kick
                // handler only sets `immediate_exit`.
                unsafe { libc::pthread_kill(thread, kick_signal()) };
            }
        }
    }

    /// A run of the VM starts `n` vCPU threads.
    pub(crate) fn run_started(&self, n: usize) {
        lock(&self.state).running = n;
        self.changed.notify_all();
    }

    /// The run is over (its threads are joined).
    pub(crate) fn run_ended(&self) {
        let mut st = lock(&self.state);
        st.running = 0;
        st.parked.clear();
        self.unwatch(&mut st);
        self.changed.notify_all();
    }

    /// Wakes parked vCPUs so that they see the VM's stop flag at once.
    pub(crate) fn wake_all(&self) {
        let _st = lock(&self.state);
        self.changed.notify_all();
    }

    /// Parks the calling vCPU thread while a pause is held or until `stop`.
    /// Never panics: a failed register read is recorded as missing.
    pub(crate) fn park(&self, vcpu: &Vcpu, stop: &AtomicBool) {
        self.park_as(
            VcpuRegs {
                id: vcpu.id,
                regs: vcpu.fd.get_regs().ok(),
                sregs: vcpu.fd.get_sregs().ok(),
                crash: None,
            },
            stop,
        );
    }

    /// Marks the pending crash of parked vCPU `id` as dealt with by the
    /// current handler's verdict: when the hold goes, it resumes with
    /// `state` instead of taking its turn. False if `id` is not parked
    /// with a crash pending (nothing to cover).
    pub(crate) fn cover(&self, id: u32, regs: kvm_regs, sregs: kvm_sregs) -> bool {
        let mut st = lock(&self.state);
        if !st.parked.iter().any(|p| p.id == id && p.crash.is_some()) {
            return false;
        }
        st.covered.retain(|c| c.0 != id);
        st.covered.push((id, Box::new((regs, sregs))));
        true
    }

    /// The registers vCPU `id` resumes with if its pending crash was
    /// covered (taken: asked once per crash).
    pub(crate) fn take_covered(&self, id: u32) -> Option<(kvm_regs, kvm_sregs)> {
        let mut st = lock(&self.state);
        let i = st.covered.iter().position(|c| c.0 == id)?;
        Some(*st.covered.swap_remove(i).1)
    }

    /// Parks the thread of a vCPU that crashed (`crash`) and cannot have
    /// the handler now: it is stopped like the others, and the handler
    /// that holds the VM sees its registers and its pending crash.
    pub(crate) fn park_crashed(&self, crash: &CrashInfo, stop: &AtomicBool) {
        self.park_as(
            VcpuRegs {
                id: crash.vcpu,
                regs: crash.regs,
                sregs: crash.sregs,
                crash: Some(crash.kind.clone()),
            },
            stop,
        );
    }

    /// Records `me` as parked and waits while a hold exists, until `stop`.
    /// Returns at once when no hold exists.
    fn park_as(&self, me: VcpuRegs, stop: &AtomicBool) {
        let id = me.id;
        let mut st = lock(&self.state);
        if st.holds == 0 {
            return;
        }
        st.parked.retain(|p| p.id != id);
        st.parked.push(me);
        self.changed.notify_all();
        while st.holds > 0 && !stop.load(Ordering::Acquire) {
            st = self
                .changed
                .wait_timeout(st, PARK_POLL)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        st.parked.retain(|p| p.id != id);
        self.changed.notify_all();
    }

    fn release(&self) {
        let mut st = lock(&self.state);
        st.holds = st.holds.saturating_sub(1);
        if st.holds == 0 {
            self.requested.store(false, Ordering::Release);
            if let Some(t) = st.paused_since.take() {
                st.paused_total += t.elapsed();
            }
        }
        self.changed.notify_all();
    }

    fn pause(self: &Arc<Self>, timeout: Duration) -> Result<PauseGuard, ControlError> {
        self.pause_except(None, timeout, None)
    }

    /// Stops every vCPU but `me` (whose thread calls this, for a crash),
    /// and returns the registers they recorded when they parked. Gives up
    /// as soon as the VM is being stopped (its vCPU threads then leave
    /// rather than park, and the run waits for this thread).
    pub(crate) fn stop_others(
        self: &Arc<Self>,
        me: u32,
        timeout: Duration,
        vm_stop: &AtomicBool,
    ) -> Result<(Vec<VcpuRegs>, PauseGuard), ControlError> {
        if vm_stop.load(Ordering::Acquire) {
            return Err(ControlError::NotRunning);
        }
        let guard = self.pause_except(Some(me), timeout, Some(vm_stop))?;
        let others = guard.vcpus();
        Ok((others, guard))
    }

    fn pause_except(
        self: &Arc<Self>,
        me: Option<u32>,
        timeout: Duration,
        vm_stop: Option<&AtomicBool>,
    ) -> Result<PauseGuard, ControlError> {
        let start = Instant::now();
        let mut st = lock(&self.state);
        if st.running == 0 {
            return Err(ControlError::NotRunning);
        }
        st.holds += 1;
        if st.holds == 1 {
            st.paused_since = Some(start);
        }
        // Set before the kicks: a vCPU that misses the flag at its loop top
        // is then kicked out of (or before) KVM_RUN and sees it next time.
        self.requested.store(true, Ordering::Release);
        let guard = PauseGuard {
            shared: self.clone(),
        };
        let mut last_kick: Option<Instant> = None;
        loop {
            let (parked, running) = (st.parked.len(), st.running);
            let stopping = vm_stop.is_some_and(|s| s.load(Ordering::Acquire));
            if running == 0 || stopping {
                drop(st);
                drop(guard);
                return Err(ControlError::NotRunning);
            }
            // The caller's own vCPU does not park.
            let needed = running - usize::from(me.is_some());
            if parked >= needed {
                return Ok(guard);
            }
            let waited = start.elapsed();
            if waited >= timeout {
                drop(st);
                drop(guard);
                return Err(ControlError::PauseTimeout {
                    parked,
                    running,
                    waited,
                });
            }
            if last_kick.is_none_or(|t| t.elapsed() >= REKICK) {
                for &(id, thread) in &st.threads {
                    if Some(id) != me && st.parked.iter().all(|p| p.id != id) {
                        // SAFETY: `thread` is a live vCPU thread: threads
                        // remove themselves under this lock before ending.
                        // The kick handler only sets `immediate_exit`.
                        unsafe { libc::pthread_kill(thread, kick_signal()) };
                    }
                }
                last_kick = Some(Instant::now());
            }
            let wait = REKICK.min(timeout - waited);
            st = self
                .changed
                .wait_timeout(st, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// Keeps the VM paused while it lives; dropping it releases the hold (the
/// VM resumes when no other hold remains).
#[derive(Debug)]
pub struct PauseGuard {
    shared: Arc<ControlShared>,
}

impl PauseGuard {
    /// The registers every parked vCPU recorded, by vCPU id.
    pub fn vcpus(&self) -> Vec<VcpuRegs> {
        let mut v = lock(&self.shared.state).parked.clone();
        v.sort_by_key(|p| p.id);
        v
    }
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        self.shared.release();
    }
}

/// A cloneable handle on a VM for other threads: pause/resume, state,
/// guest memory and counters. Obtained from [`crate::Vm::control`].
#[derive(Clone)]
pub struct VmControl {
    pub(crate) shared: Arc<ControlShared>,
    pub(crate) mem: Arc<GuestRam>,
    pub(crate) hypercalls: Arc<Hypercalls>,
    pub(crate) stats: Arc<ExitStats>,
    pub(crate) handling: Arc<Mutex<Option<(u32, Instant)>>>,
    pub(crate) layout: GuestLayout,
    pub(crate) created: Instant,
    pub(crate) virtio: Arc<crate::virtio::VirtioBus>,
}

impl std::fmt::Debug for VmControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmControl")
            .field("layout", &self.layout)
            .field("state", &self.state())
            .finish()
    }
}

impl VmControl {
    /// Each virtio device's state, in bus order.
    pub fn virtio_status(&self) -> Vec<crate::virtio::VirtioStatus> {
        self.virtio.statuses()
    }

    /// Stops every vCPU from running guest code and returns once all are
    /// parked (or fails after `timeout`, resuming those that parked). A
    /// vCPU in the middle of a repair parks when the repair is over.
    pub fn pause(&self, timeout: Duration) -> Result<PauseGuard, ControlError> {
        self.shared.pause(timeout)
    }

    /// Whether a pause is held (or being taken).
    pub fn pause_held(&self) -> bool {
        self.shared.pause_requested()
    }

    /// Total time the guest spent paused, including a pause going on now.
    pub fn paused_total(&self) -> Duration {
        let st = lock(&self.shared.state);
        st.paused_total + st.paused_since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// What the VM is doing now.
    pub fn state(&self) -> RunState {
        let st = lock(&self.shared.state);
        if st.running == 0 {
            RunState::Stopped
        } else if st.holds > 0 && st.parked.len() >= st.running {
            RunState::Paused
        } else if lock(&self.handling).is_some() {
            RunState::Repairing
        } else {
            RunState::Running
        }
    }

    /// How the vCPUs ran again after the latest crash the handler
    /// resumed from, once every one of them has.
    pub fn last_crash_resume(&self) -> Option<CrashResume> {
        lock(&self.shared.state).last_resume
    }

    /// Waits up to `timeout` until every vCPU runs again after the crash
    /// seen at `detected_at` (`CrashInfo::detected_at`, e.g. from a
    /// resurrection's report); `None` if that did not happen in time, or
    /// a later crash's resumption came first.
    pub fn wait_crash_resume(
        &self,
        detected_at: Instant,
        timeout: Duration,
    ) -> Option<CrashResume> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        loop {
            if let Some(r) = st.last_resume
                && r.detected_at >= detected_at
            {
                return (r.detected_at == detected_at).then_some(r);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            st = self
                .shared
                .changed
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Guest RAM.
    pub fn memory(&self) -> &GuestRam {
        &self.mem
    }

    /// Guest-physical address of the kernel's state root, once registered.
    pub fn root_gpa(&self) -> Option<u64> {
        self.hypercalls.root_gpa()
    }

    /// Guest exits so far.
    pub fn exit_counts(&self) -> ExitCounts {
        self.stats.snapshot()
    }

    /// Where the kernel and initramfs were placed.
    pub fn layout(&self) -> &GuestLayout {
        &self.layout
    }

    /// When the VM was created.
    pub fn created_at(&self) -> Instant {
        self.created
    }

    /// The hypervisor's resident memory and the guest RAM in it, now.
    pub fn memory_usage(&self) -> MemoryUsage {
        MemoryUsage::sample(&self.mem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resumption is complete when the crashed vCPU and every parked
    /// one have re-entered KVM_RUN, in any order; others do not count.
    #[test]
    fn crash_resume_waits_for_every_parked_vcpu() {
        let shared = Arc::new(ControlShared::default());
        let control_state = || lock(&shared.state).last_resume;
        let crash = Instant::now();
        shared.entering_run(0);
        assert_eq!(control_state(), None);
        shared.watch_resume(1, crash, &[0, 2]);
        shared.entering_run(1);
        shared.entering_run(3);
        shared.entering_run(0);
        assert_eq!(control_state(), None, "vCPU 2 has not run yet");
        shared.entering_run(2);
        let r = control_state().expect("complete");
        assert_eq!((r.vcpu, r.vcpus, r.detected_at), (1, 3, crash));
        assert!(r.crashed_running_at <= r.all_running_at);
        assert!(r.all_running_after() >= r.crashed_running_after());
        assert!(!shared.resume_watched.load(Ordering::Acquire));
        // A vCPU that ends before it runs again leaves no record.
        shared.watch_resume(0, Instant::now(), &[1]);
        shared.unregister_thread(1);
        shared.entering_run(0);
        assert_eq!(control_state(), Some(r));
    }

    #[test]
    fn pause_needs_a_running_vm() {
        let shared = Arc::new(ControlShared::default());
        assert_eq!(
            shared.pause(Duration::from_millis(10)).err(),
            Some(ControlError::NotRunning)
        );
        assert!(!shared.pause_requested());
        // A run with a vCPU that never parks: the pause times out and the
        // hold is released.
        shared.run_started(1);
        let err = shared.pause(Duration::from_millis(30)).err();
        assert!(
            matches!(
                err,
                Some(ControlError::PauseTimeout {
                    parked: 0,
                    running: 1,
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(!shared.pause_requested());
    }

    fn crash_of(vcpu: u32) -> CrashInfo {
        CrashInfo {
            kind: CrashKind::TripleFault,
            vcpu,
            regs: Some(kvm_regs {
                rip: 0x1234,
                ..Default::default()
            }),
            sregs: None,
            detected_at: Instant::now(),
            fallback: None,
        }
    }

    #[test]
    fn a_crashed_vcpu_parks_with_its_crash_and_counts_as_stopped() {
        let shared = Arc::new(ControlShared::default());
        let stop = Arc::new(AtomicBool::new(false));
        shared.run_started(2);
        // No hold: nothing to park for.
        shared.park_crashed(&crash_of(1), &stop);
        let parker = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                while !shared.pause_requested() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                shared.park_crashed(&crash_of(1), &stop);
            })
        };
        let (others, hold) = shared
            .stop_others(0, Duration::from_secs(10), &stop)
            .expect("vCPU 1 parked");
        assert_eq!(others.len(), 1, "{others:?}");
        assert_eq!(others[0].id, 1);
        assert_eq!(others[0].crash, Some(CrashKind::TripleFault));
        assert_eq!(others[0].regs.map(|r| r.rip), Some(0x1234));
        drop(hold);
        parker.join().expect("parker");
        assert!(!shared.pause_requested());
        assert!(lock(&shared.state).parked.is_empty());
    }

    #[test]
    fn the_stop_flag_ends_a_stop_in_progress() {
        let shared = Arc::new(ControlShared::default());
        let stop = Arc::new(AtomicBool::new(false));
        shared.run_started(2);
        let stopper = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                while !shared.pause_requested() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                stop.store(true, Ordering::Release);
                shared.wake_all();
            })
        };
        // Without the flag this would wait out its whole timeout.
        let err = shared.stop_others(0, Duration::from_secs(30), &stop).err();
        stopper.join().expect("stopper");
        assert_eq!(err, Some(ControlError::NotRunning));
        assert!(!shared.pause_requested());
    }
}
