//! The session `lazarus run` serves: its state across reboots, the VM
//! attached right now, its status, and pausing and resuming it.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lazarus_api::{
    API_VERSION, BackendError, FallbackInfo, RecoveryInfo, RequestedState, Status, Telemetry,
    VmState,
};
use lazarus_crashdb::DataDir;
use lazarus_events::EventLog;
use lazarus_inject::Injector;
use lazarus_resurrect::Fallback;
use lazarus_triage::{Background, unix_ms};
use lazarus_vmm::{ConsoleInput, ControlError, CrashInfo, PauseGuard, RunState, VmControl};

/// Longest wait for every vCPU to stop (a repair in progress finishes
/// first; its budget is far below this).
pub(crate) const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the API knows about this `lazarus run`.
pub struct ApiSession {
    pub(crate) started: Instant,
    pub(crate) on_crash: &'static str,
    pub(crate) vcpus: u32,
    pub(crate) memory_mib: u64,
    pub(crate) data: DataDir,
    pub(crate) dumps: Background,
    pub(crate) console: ConsoleInput,
    pub(crate) state: Mutex<SessionState>,
    /// Serializes the operations that pause the VM.
    pub(crate) ops: Mutex<()>,
    /// The counters and histogram `GET /metrics` gives Prometheus.
    pub(crate) telemetry: Telemetry,
    /// The `--events` stream (on-demand dumps go to it too).
    pub(crate) events: EventLog,
}

/// What changes while the session runs.
pub(crate) struct SessionState {
    pub(crate) boots: u64,
    pub(crate) vm: Option<Attached>,
    /// The pause taken by `PATCH /vm {"state":"Paused"}`.
    pub(crate) user_pause: Option<PauseGuard>,
    pub(crate) recoveries: VecDeque<RecoveryInfo>,
    pub(crate) recovery_total: u64,
    pub(crate) latencies_us: VecDeque<u64>,
    pub(crate) crashes: u64,
    pub(crate) fallbacks: u64,
    pub(crate) last_fallback: Option<FallbackInfo>,
    /// Injections without a seed of their own draw from this one.
    pub(crate) injector: Injector,
    pub(crate) injections: u64,
}

/// The VM of the current boot.
pub(crate) struct Attached {
    pub(crate) control: VmControl,
    pub(crate) boot_id: String,
}

/// Locks `m`, also after a panic elsewhere: the state stays usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ApiSession {
    pub fn new(
        on_crash: &'static str,
        vcpus: u32,
        memory_mib: u64,
        data: DataDir,
        dumps: Background,
        console: ConsoleInput,
    ) -> ApiSession {
        ApiSession {
            started: Instant::now(),
            on_crash,
            vcpus,
            memory_mib,
            data,
            dumps,
            console,
            state: Mutex::new(SessionState {
                boots: 0,
                vm: None,
                user_pause: None,
                recoveries: VecDeque::new(),
                recovery_total: 0,
                latencies_us: VecDeque::new(),
                crashes: 0,
                fallbacks: 0,
                last_fallback: None,
                injector: Injector::new(unix_ms()),
                injections: 0,
            }),
            ops: Mutex::new(()),
            telemetry: Telemetry::default(),
            events: EventLog::disabled(),
        }
    }

    /// Reports to the `--events` stream too.
    pub fn with_events(mut self, events: EventLog) -> ApiSession {
        self.events = events;
        self
    }

    /// A new VM (boot number `boot`, 1-based) is up.
    pub fn attach(&self, control: VmControl, boot_id: &str, boot: u64) {
        let old = {
            let mut st = lock(&self.state);
            st.boots = boot;
            let pause = st.user_pause.take();
            let vm = st.vm.replace(Attached {
                control,
                boot_id: boot_id.to_string(),
            });
            (pause, vm)
        };
        drop(old);
    }

    /// The VM is gone (rebooting or exiting): a pause on it ends with it.
    pub fn detach(&self) {
        let old = {
            let mut st = lock(&self.state);
            (st.user_pause.take(), st.vm.take())
        };
        drop(old);
    }

    /// A crash ended the guest's run (halt, reboot, or a resurrection
    /// that was not safe: then `info` says why).
    pub fn crash_detected(&self, info: &CrashInfo) {
        self.telemetry
            .crash(lazarus_resurrect::detector_name(&info.kind));
        let fallback = fallback_of(info);
        let mut st = lock(&self.state);
        st.crashes += 1;
        if let Some((code, reason)) = fallback {
            self.telemetry.fallback(code);
            st.fallbacks += 1;
            st.last_fallback = Some(FallbackInfo {
                boot: st.boots,
                time_unix_ms: unix_ms(),
                code: code.to_string(),
                reason,
            });
        }
    }

    /// The guest is rebooted (`cause`: `crash` or `requested`).
    pub fn rebooted(&self, cause: &str) {
        self.telemetry.reboot(cause);
    }

    /// The attached VM's control handle and boot id.
    pub(crate) fn attached(&self) -> Result<(VmControl, String), BackendError> {
        let st = lock(&self.state);
        st.vm
            .as_ref()
            .map(|a| (a.control.clone(), a.boot_id.clone()))
            .ok_or_else(not_running)
    }

    pub(crate) fn user_paused(&self) -> bool {
        lock(&self.state).user_pause.is_some()
    }

    /// The status `GET /vm` answers.
    pub(crate) fn status_now(&self) -> Status {
        let st = lock(&self.state);
        let (state, vm_uptime_ms, vcpus, memory_mib) = match &st.vm {
            Some(a) => (
                vm_state(a.control.state()),
                Some(ms(a.control.created_at().elapsed())),
                a.control.layout().vcpus,
                a.control.layout().mem_size >> 20,
            ),
            None => (VmState::Stopped, None, self.vcpus, self.memory_mib),
        };
        Status {
            api_version: API_VERSION,
            state,
            uptime_ms: ms(self.started.elapsed()),
            vm_uptime_ms,
            boots: st.boots,
            vcpus,
            memory_mib,
            on_crash: self.on_crash.to_string(),
            recoveries: st.recovery_total,
            last_recovery: st.recoveries.back().cloned(),
            fallbacks: st.fallbacks,
            last_fallback: st.last_fallback.clone(),
        }
    }

    /// Pauses or resumes the VM for `PATCH /vm`.
    pub(crate) fn set_vm_state(&self, state: RequestedState) -> Result<Status, BackendError> {
        let _ops = lock(&self.ops);
        match state {
            RequestedState::Paused => {
                if self.user_paused() {
                    return Err(BackendError::Conflict("the VM is already paused".into()));
                }
                let (control, boot_id) = self.attached()?;
                let guard = control.pause(PAUSE_TIMEOUT).map_err(control_error)?;
                let mut st = lock(&self.state);
                // The VM may have been replaced while pausing: the guard
                // then belongs to a VM that is gone.
                if st.vm.as_ref().is_none_or(|a| a.boot_id != boot_id) {
                    drop(st);
                    drop(guard);
                    return Err(not_running());
                }
                st.user_pause = Some(guard);
            }
            RequestedState::Resumed => {
                let guard = lock(&self.state).user_pause.take();
                match guard {
                    Some(g) => drop(g),
                    None => return Err(BackendError::Conflict("the VM is not paused".into())),
                }
            }
        }
        Ok(self.status_now())
    }
}

/// Why a crash outcome fell back from resurrection, if it did: the
/// reason's code (`Fallback::code`, `other` for an error of another type)
/// and its words.
pub(crate) fn fallback_of(info: &CrashInfo) -> Option<(&'static str, String)> {
    match (Fallback::of(info), &info.fallback) {
        (Some(f), _) => Some((f.code(), f.to_string())),
        (None, Some(e)) => Some(("other", e.to_string())),
        (None, None) => None,
    }
}

pub(crate) fn not_running() -> BackendError {
    BackendError::Conflict("no VM is running right now (booting, rebooting or exiting)".into())
}

pub(crate) fn control_error(e: ControlError) -> BackendError {
    match e {
        ControlError::NotRunning => not_running(),
        e @ ControlError::PauseTimeout { .. } => BackendError::Internal(e.to_string()),
    }
}

pub(crate) fn vm_state(s: RunState) -> VmState {
    match s {
        RunState::Running => VmState::Running,
        RunState::Paused => VmState::Paused,
        RunState::Repairing => VmState::Repairing,
        RunState::Stopped => VmState::Stopped,
    }
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
