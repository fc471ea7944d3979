//! The control API's backend (`lazarus run --api-sock PATH`): the session's
//! view of the VM that `run` boots (and reboots), its recoveries, the crash
//! database, pause/resume, on-demand dumps and fault injection.
//!
//! `run` attaches each new VM ([`ApiSession::attach`]) and detaches it when
//! it is gone; between the two the API answers "stopped". Operations that
//! pause the VM are serialized; reads never wait for them.

use std::collections::VecDeque;
use std::ffi::CString;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use lazarus_abi::repair::{EXT_ACTION_DISABLED, EXT_ACTION_RESET};
use lazarus_abi::root::NONE;
use lazarus_api::{
    API_VERSION, ApiServer, Backend, BackendError, CrashBucket, CrashList, CrashMetrics,
    DumpRequest, DumpResponse, ExitMetrics, InjectRequest, LatencyStats, MemoryMetrics, Metrics,
    RecoveryInfo, RecoveryList, RecoveryMetrics, RequestedState, ServerConfig, Status, VmState,
};
use lazarus_crashdb::{CrashDb, DataDir};
use lazarus_inject::{FaultSpec, FaultType, InjectError, Injector, Structure};
use lazarus_resurrect::Recovery;
use lazarus_vmm::{ConsoleInput, ControlError, PauseGuard, RunState, VmControl};
use vm_memory::{Bytes, GuestAddress};

use crate::exit::{BAD_INPUT, failure};
use lazarus_triage::{Background, OnDemand, lower_priority, unix_ms};

/// Longest wait for every vCPU to stop (a repair in progress finishes
/// first; its budget is far below this).
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Recoveries kept for `GET /recoveries`, and latencies for the metrics.
const MAX_RECOVERIES: usize = 1000;
const MAX_LATENCIES: usize = 10_000;
/// The crash-test fault type (the guest's own `crash KIND`).
const CRASH_TEST: &str = "crash-test";

/// A running control API: the server and the session it serves.
pub struct Api {
    server: Option<ApiServer>,
    session: Arc<ApiSession>,
}

impl Api {
    /// Binds the socket and starts serving. A path that exists and is not
    /// a stale socket is refused (exit code 4).
    pub fn start(path: &Path, session: ApiSession) -> anyhow::Result<Api> {
        let session = Arc::new(session);
        let backend: Arc<dyn Backend> = session.clone();
        let server = ApiServer::start(path, backend, ServerConfig::default())
            .map_err(|e| failure(BAD_INPUT, format!("--api-sock: {e}")))?;
        remove_on_signal(path);
        Ok(Api {
            server: Some(server),
            session,
        })
    }

    pub fn session(&self) -> &Arc<ApiSession> {
        &self.session
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        self.session.detach();
    }
}

/// The socket to remove when a signal (Ctrl-C, SIGTERM, SIGHUP) ends the
/// process: its path, device and inode (only our own socket is removed).
static SIGNAL_SOCKET: OnceLock<(CString, u64, u64)> = OnceLock::new();

extern "C" fn remove_socket_and_die(sig: libc::c_int) {
    if let Some((path, dev, ino)) = SIGNAL_SOCKET.get() {
        // SAFETY: lstat and unlink are async-signal-safe; `path` is a
        // NUL-terminated string that lives as long as the process, and
        // `st` is a valid out-pointer.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::lstat(path.as_ptr(), &mut st) == 0
                && st.st_dev as u64 == *dev
                && st.st_ino as u64 == *ino
            {
                libc::unlink(path.as_ptr());
            }
        }
    }
    // SA_RESETHAND restored the default action: die of the same signal.
    // SAFETY: raise is async-signal-safe.
    unsafe { libc::raise(sig) };
}

/// Removes the socket also when a signal ends `lazarus run`; signals the
/// process ignores (e.g. SIGHUP under nohup) stay ignored.
fn remove_on_signal(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    if SIGNAL_SOCKET.set((c, meta.dev(), meta.ino())).is_err() {
        return;
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: plain sigaction calls with valid, zero-initialised
        // structs; the handler only makes async-signal-safe calls.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction != libc::SIG_DFL
            {
                continue;
            }
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = remove_socket_and_die as *const () as usize;
            act.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

/// What the API knows about this `lazarus run`.
pub struct ApiSession {
    started: Instant,
    on_crash: &'static str,
    vcpus: u32,
    memory_mib: u64,
    data: DataDir,
    dumps: Background,
    console: ConsoleInput,
    state: Mutex<SessionState>,
    /// Serializes the operations that pause the VM.
    ops: Mutex<()>,
}

struct SessionState {
    boots: u64,
    vm: Option<Attached>,
    /// The pause taken by `PATCH /vm {"state":"Paused"}`.
    user_pause: Option<PauseGuard>,
    recoveries: VecDeque<RecoveryInfo>,
    recovery_total: u64,
    latencies_us: VecDeque<u64>,
    crashes: u64,
    /// Injections without a seed of their own draw from this one.
    injector: Injector,
    injections: u64,
}

struct Attached {
    control: VmControl,
    boot_id: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
                injector: Injector::new(unix_ms()),
                injections: 0,
            }),
            ops: Mutex::new(()),
        }
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

    /// A crash that was not resurrected (halt, reboot or fallback).
    pub fn crash_detected(&self) {
        lock(&self.state).crashes += 1;
    }

    /// A resurrection of boot `boot`.
    pub fn record_recovery(&self, rec: &Recovery, boot: u64) {
        let plan = &rec.plan;
        let ext = (plan.ext != NONE).then(|| {
            let name = lazarus_abi::name_str(&plan.ext_name);
            if name.is_empty() {
                format!("slot {}", plan.ext)
            } else {
                name.to_string()
            }
        });
        let ext_action = (plan.ext != NONE)
            .then(|| plan.ext_actions.get(plan.ext as usize).copied())
            .flatten()
            .and_then(|a| match a {
                EXT_ACTION_RESET => Some("reset".to_string()),
                EXT_ACTION_DISABLED => Some("disabled".to_string()),
                _ => None,
            });
        let symbol = lazarus_abi::name_str(&plan.symbol);
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut st = lock(&self.state);
        let info = RecoveryInfo {
            seq: st.recovery_total,
            boot,
            boot_seq: rec.seq,
            time_unix_ms: unix_ms(),
            kind: rec.kind().to_string(),
            crash: rec.crash.summary(),
            extension: ext,
            extension_action: ext_action,
            quarantined_pid: (plan.quarantined != 0).then_some(plan.quarantined),
            quarantined_name: (plan.quarantined != 0)
                .then(|| lazarus_abi::name_str(&plan.name).to_string()),
            symbol: (!symbol.is_empty()).then(|| symbol.to_string()),
            code_bytes_restored: plan.code_bytes_restored,
            latency_us: us(rec.latency),
            snapshot_us: us(rec.snapshot_time),
            repair_us: us(rec.repair_time),
            unmap_us: us(rec.unmap_time),
            resume_us: us(rec.resume_time),
            summary: rec.summary(),
        };
        st.recovery_total += 1;
        st.crashes += 1;
        if st.latencies_us.len() >= MAX_LATENCIES {
            st.latencies_us.pop_front();
        }
        st.latencies_us.push_back(info.latency_us);
        if st.recoveries.len() >= MAX_RECOVERIES {
            st.recoveries.pop_front();
        }
        st.recoveries.push_back(info);
    }

    /// The attached VM's control handle and boot id.
    fn attached(&self) -> Result<(VmControl, String), BackendError> {
        let st = lock(&self.state);
        st.vm
            .as_ref()
            .map(|a| (a.control.clone(), a.boot_id.clone()))
            .ok_or_else(not_running)
    }

    fn user_paused(&self) -> bool {
        lock(&self.state).user_pause.is_some()
    }

    fn status_now(&self) -> Status {
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
        }
    }

    fn crash_buckets(&self) -> Result<Vec<lazarus_crashdb::Bucket>, BackendError> {
        let path = self.data.db_path();
        // No database yet simply means no crash yet.
        if !path.exists() {
            return Ok(Vec::new());
        }
        CrashDb::open(&path)
            .and_then(|db| db.buckets())
            .map_err(|e| BackendError::Internal(format!("crash database: {e}")))
    }

    /// Types `crash KIND` into the guest console: the guest's crash tool
    /// then crashes the kernel in that way through the crashtest driver.
    fn inject_crash_test(&self, req: &InjectRequest) -> Result<serde_json::Value, BackendError> {
        use lazarus_abi::dev::crashtest::KINDS;
        let names = || KINDS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ");
        let kind = req.kind.as_deref().ok_or_else(|| {
            BackendError::BadRequest(format!(
                "fault \"crash-test\" needs \"kind\", one of: {}",
                names()
            ))
        })?;
        // Only a listed kind reaches the console: never arbitrary text.
        let Some(&(name, _, what)) = KINDS.iter().find(|k| k.0 == kind) else {
            return Err(BackendError::BadRequest(format!(
                "unknown crash-test kind {kind:?}; expected one of: {}",
                names()
            )));
        };
        if let Some(ext) = req.ext.as_deref().filter(|e| *e != "crashtest") {
            return Err(BackendError::BadRequest(format!(
                "crash-test runs in the crashtest extension, not {ext:?}"
            )));
        }
        if req.structure.is_some() {
            return Err(BackendError::BadRequest(
                "\"structure\" is only for wild-write-struct".into(),
            ));
        }
        self.attached()?;
        if self.user_paused() {
            return Err(BackendError::Conflict(
                "the VM is paused; resume it before a crash test".into(),
            ));
        }
        let command = format!("crash {name}");
        self.console.push(format!("{command}\n").as_bytes());
        Ok(serde_json::json!({
            "fault": CRASH_TEST,
            "kind": name,
            "target": "crashtest",
            "detail": format!("typed `{command}` into the guest console: {what}"),
            "seed": req.seed,
        }))
    }

    /// A host-side fault from lazarus-inject, with the VM paused while the
    /// injector reads the kernel's state and writes its fault.
    fn inject_fault(&self, req: &InjectRequest) -> Result<serde_json::Value, BackendError> {
        let fault = FaultType::from_str(req.fault.trim()).map_err(|_| {
            let names: Vec<&str> = FaultType::ALL.iter().map(|f| f.name()).collect();
            BackendError::BadRequest(format!(
                "unknown fault type {:?}; expected {CRASH_TEST} or one of: {}",
                req.fault,
                names.join(", ")
            ))
        })?;
        if req.kind.is_some() {
            return Err(BackendError::BadRequest(
                "\"kind\" is only for the crash-test fault".into(),
            ));
        }
        let structure = match req.structure.as_deref() {
            None => None,
            Some(s) if fault == FaultType::WildWriteStruct => {
                Some(Structure::from_str(s).map_err(|e| BackendError::BadRequest(e.to_string()))?)
            }
            Some(_) => {
                return Err(BackendError::BadRequest(
                    "\"structure\" is only for wild-write-struct".into(),
                ));
            }
        };
        if req.ext.is_some() && !fault.targets_code() {
            return Err(BackendError::BadRequest(format!(
                "\"ext\" is only for faults in extension code, not {fault}"
            )));
        }
        let spec = FaultSpec {
            fault,
            ext: req.ext.clone(),
            structure,
        };
        let _ops = lock(&self.ops);
        let (control, _) = self.attached()?;
        let root_gpa = control.root_gpa().ok_or_else(|| {
            BackendError::Conflict("the guest kernel has not registered its state root yet".into())
        })?;
        let pause = if self.user_paused() {
            None
        } else {
            Some(control.pause(PAUSE_TIMEOUT).map_err(control_error)?)
        };
        let (result, seed, index) = match req.seed {
            Some(seed) => (
                Injector::new(seed).inject(control.memory(), root_gpa, &spec),
                seed,
                0,
            ),
            None => {
                let mut st = lock(&self.state);
                let index = st.injections;
                st.injections += 1;
                let seed = st.injector.seed();
                (
                    st.injector.inject(control.memory(), root_gpa, &spec),
                    seed,
                    index,
                )
            }
        };
        drop(pause);
        let injection = result.map_err(inject_error)?;
        let mut v = serde_json::to_value(&injection)
            .map_err(|e| BackendError::Internal(format!("encoding the injection: {e}")))?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("seed".into(), seed.into());
            obj.insert("index".into(), index.into());
        }
        Ok(v)
    }
}

fn not_running() -> BackendError {
    BackendError::Conflict("no VM is running right now (booting, rebooting or exiting)".into())
}

fn control_error(e: ControlError) -> BackendError {
    match e {
        ControlError::NotRunning => not_running(),
        e @ ControlError::PauseTimeout { .. } => BackendError::Internal(e.to_string()),
    }
}

fn inject_error(e: InjectError) -> BackendError {
    match e {
        InjectError::UnknownFault(_) | InjectError::UnknownStructure(_) => {
            BackendError::BadRequest(e.to_string())
        }
        InjectError::Write { .. } => BackendError::Internal(e.to_string()),
        // The guest's state does not allow it (nothing loaded, no such
        // extension, no suitable target): nothing was written.
        _ => BackendError::Conflict(e.to_string()),
    }
}

fn vm_state(s: RunState) -> VmState {
    match s {
        RunState::Running => VmState::Running,
        RunState::Paused => VmState::Paused,
        RunState::Repairing => VmState::Repairing,
        RunState::Stopped => VmState::Stopped,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Median and 99th percentile (nearest rank) of `samples`.
fn latency_stats(samples: &VecDeque<u64>) -> LatencyStats {
    let mut v: Vec<u64> = samples.iter().copied().collect();
    v.sort_unstable();
    let rank = |q: f64| -> Option<u64> {
        let n = v.len();
        if n == 0 {
            return None;
        }
        let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        v.get(i).copied()
    };
    LatencyStats {
        samples: v.len() as u64,
        median: rank(0.5),
        p99: rank(0.99),
        max: v.last().copied(),
    }
}

impl Backend for ApiSession {
    fn status(&self) -> Result<Status, BackendError> {
        Ok(self.status_now())
    }

    fn recoveries(&self) -> Result<RecoveryList, BackendError> {
        let st = lock(&self.state);
        Ok(RecoveryList {
            total: st.recovery_total,
            recoveries: st.recoveries.iter().cloned().collect(),
        })
    }

    fn crashes(&self) -> Result<CrashList, BackendError> {
        let buckets = self
            .crash_buckets()?
            .into_iter()
            .map(|b| CrashBucket {
                signature: b.signature,
                kind: b.kind,
                title: b.title,
                count: b.count,
                first_seen_unix_ms: b.first_seen_unix_ms,
                last_seen_unix_ms: b.last_seen_unix_ms,
                example_dump: b.example_dump,
                extensions: b.extensions,
            })
            .collect();
        Ok(CrashList { buckets })
    }

    fn inject(&self, req: InjectRequest) -> Result<serde_json::Value, BackendError> {
        if req.fault.trim() == CRASH_TEST {
            self.inject_crash_test(&req)
        } else {
            self.inject_fault(&req)
        }
    }

    fn dump(&self, req: DumpRequest) -> Result<DumpResponse, BackendError> {
        let _ops = lock(&self.ops);
        let (control, boot_id) = self.attached()?;
        let size = usize::try_from(control.layout().mem_size)
            .map_err(|_| BackendError::Internal("guest RAM does not fit in memory".into()))?;
        // Fault the copy's pages in before pausing: the pause then only
        // lasts the copy itself.
        let mut ram = vec![0xa5u8; size];
        std::hint::black_box(&mut ram);
        let t0 = Instant::now();
        let own_pause;
        let vcpus = {
            let st = lock(&self.state);
            match &st.user_pause {
                Some(g) => {
                    own_pause = None;
                    g.vcpus()
                }
                None => {
                    drop(st);
                    let g = control.pause(PAUSE_TIMEOUT).map_err(control_error)?;
                    let v = g.vcpus();
                    own_pause = Some(g);
                    v
                }
            }
        };
        let copied = control.memory().read_slice(&mut ram, GuestAddress(0));
        let root_gpa = control.root_gpa();
        drop(own_pause);
        let paused = t0.elapsed();
        copied.map_err(|e| BackendError::Internal(format!("copying guest RAM: {e}")))?;
        // Writing and diagnosing is background work: the guest runs on.
        lower_priority();
        let n = vcpus.len() as u32;
        let d = OnDemand {
            ram,
            vcpus: vcpus.into_iter().map(|v| (v.id, v.regs, v.sregs)).collect(),
            root_gpa,
            reason: req.reason.clone(),
        };
        let p = self
            .dumps
            .write_on_demand(d, &boot_id)
            .map_err(|e| BackendError::Internal(format!("writing the dump: {e:#}")))?;
        eprintln!(
            "lazarus: on-demand dump {} (guest paused {:.1} ms)",
            p.dump.display(),
            paused.as_secs_f64() * 1e3
        );
        Ok(DumpResponse {
            dump: p.dump,
            report: p.report_json,
            kind: "on-demand".into(),
            title: p.title,
            paused_us: u64::try_from(paused.as_micros()).unwrap_or(u64::MAX),
            ram_bytes: size as u64,
            vcpus: n,
        })
    }

    fn set_state(&self, state: RequestedState) -> Result<Status, BackendError> {
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

    fn metrics(&self) -> Result<Metrics, BackendError> {
        let recorded = self
            .crash_buckets()
            .ok()
            .map(|b| b.iter().map(|b| b.count).sum());
        let st = lock(&self.state);
        let control = st.vm.as_ref().map(|a| &a.control);
        let exits = control
            .map(|c| c.exit_counts())
            .map_or_else(ExitMetrics::default, |c| ExitMetrics {
                total: c.total(),
                by_kind: c
                    .nonzero()
                    .map(|(k, n)| (k.name().to_string(), n))
                    .collect(),
            });
        let usage = control.map(|c| c.memory_usage());
        let guest = control
            .and_then(|c| lazarus_resurrect::guest_kernel_memory(c.memory(), c.root_gpa()?).ok());
        let memory = MemoryMetrics {
            host_rss_bytes: usage
                .and_then(|u| u.host_rss_bytes)
                .or_else(lazarus_vmm::control::host_rss_bytes),
            guest_ram_resident_bytes: usage.and_then(|u| u.guest_ram_resident_bytes),
            vmm_own_bytes: usage.and_then(|u| u.vmm_own_bytes()),
            guest_ram_bytes: control.map_or(self.memory_mib << 20, |c| c.layout().mem_size),
            guest_frames_total: guest.map(|g| g.frames_total),
            guest_frames_used: guest.map(|g| g.frames_used),
            guest_heap_size_bytes: guest.map(|g| g.heap_size_bytes),
            guest_heap_used_bytes: guest.map(|g| g.heap_used_bytes),
            guest_heap_blocks_used: guest.map(|g| g.heap_blocks_used),
        };
        Ok(Metrics {
            uptime_ms: ms(self.started.elapsed()),
            boots: st.boots,
            state: control.map_or(VmState::Stopped, |c| vm_state(c.state())),
            paused_ms: control.map_or(0, |c| ms(c.paused_total())),
            exits,
            recoveries: RecoveryMetrics {
                count: st.recovery_total,
                latency_us: latency_stats(&st.latencies_us),
            },
            crashes: CrashMetrics {
                session: st.crashes,
                recorded,
            },
            memory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles() {
        let empty = latency_stats(&VecDeque::new());
        assert_eq!((empty.samples, empty.median, empty.p99), (0, None, None));
        let v: VecDeque<u64> = (1..=100).rev().collect();
        let s = latency_stats(&v);
        assert_eq!((s.median, s.p99, s.max), (Some(50), Some(99), Some(100)));
        let one: VecDeque<u64> = [7].into();
        assert_eq!(latency_stats(&one).p99, Some(7));
    }

    #[test]
    fn crash_buckets_serialize_as_the_database_does() {
        let b = lazarus_crashdb::Bucket {
            signature: "abc".into(),
            kind: "panic".into(),
            title: "panic in x".into(),
            count: 2,
            first_seen_unix_ms: 1,
            last_seen_unix_ms: 3,
            example_dump: Some("/d/x.core".into()),
            extensions: vec!["crashtest".into()],
        };
        let api = CrashBucket {
            signature: b.signature.clone(),
            kind: b.kind.clone(),
            title: b.title.clone(),
            count: b.count,
            first_seen_unix_ms: b.first_seen_unix_ms,
            last_seen_unix_ms: b.last_seen_unix_ms,
            example_dump: b.example_dump.clone(),
            extensions: b.extensions.clone(),
        };
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            serde_json::to_value(&api).unwrap()
        );
    }
}
