//! The JSON bodies of the control API, one type per request and response.
//!
//! Requests are parsed strictly (`deny_unknown_fields`): a typo in a field
//! name is a 400 that names the field, not a silently ignored setting.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Bumped when a response changes incompatibly.
pub const API_VERSION: u32 = 1;

/// What the VM is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Guest code runs.
    Running,
    /// Every vCPU is stopped (`PATCH /vm {"state":"Paused"}`).
    Paused,
    /// The hidden repair image is repairing a crash.
    Repairing,
    /// No VM is running right now (booting, rebooting after a crash, or
    /// shutting down).
    Stopped,
}

/// `GET /` and `GET /vm`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// [`API_VERSION`] of the server.
    pub api_version: u32,
    /// What the VM is doing now.
    pub state: VmState,
    /// Since `lazarus run` started (all boots).
    pub uptime_ms: u64,
    /// Since the current VM was created; `None` while there is none.
    pub vm_uptime_ms: Option<u64>,
    /// VMs booted this session (1 + reboots).
    pub boots: u64,
    /// vCPUs of the VM (as configured while there is none).
    pub vcpus: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// The `--on-crash` policy: "resurrect", "halt" or "reboot".
    pub on_crash: String,
    /// Resurrections this session.
    pub recoveries: u64,
    /// The most recent resurrection, if any.
    pub last_recovery: Option<RecoveryInfo>,
    /// Crashes this session that could not be resurrected safely and fell
    /// back to a reboot.
    #[serde(default)]
    pub fallbacks: u64,
    /// The most recent of them, if any.
    #[serde(default)]
    pub last_fallback: Option<FallbackInfo>,
}

/// A crash that fell back to a reboot, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackInfo {
    /// Which boot (1-based) crashed.
    pub boot: u64,
    /// When, in milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// A stable code for the reason (`lazarus_resurrect::Fallback::code`,
    /// e.g. "refused", "over-budget", "no-state-root").
    pub code: String,
    /// The reason, in words.
    pub reason: String,
}

/// One resurrection (`GET /recoveries`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryInfo {
    /// 0-based over the whole session.
    pub seq: u64,
    /// Which boot (1-based) and the 0-based count within it.
    pub boot: u64,
    /// See `boot`.
    pub boot_seq: u64,
    /// When the resurrection was reported, in milliseconds since the Unix
    /// epoch.
    pub time_unix_ms: u64,
    /// The repair program's diagnosis, e.g. "null-deref".
    pub kind: String,
    /// How the crash was detected, e.g. "guest panic (pvpanic code 1)".
    pub crash: String,
    /// The faulty extension, and what was done to it ("reset",
    /// "disabled").
    pub extension: Option<String>,
    /// See `extension`.
    pub extension_action: Option<String>,
    /// The quarantined process (`None`: nobody was blamed, e.g. a fault in
    /// interrupt context or a fail-silent extension).
    pub quarantined_pid: Option<u32>,
    /// Its name.
    pub quarantined_name: Option<String>,
    /// The function that crashed, when the repair image could name it.
    pub symbol: Option<String>,
    /// Bytes of corrupted code restored from the pristine copies.
    pub code_bytes_restored: u32,
    /// Crash exit to the kernel's return to a user process, and its parts.
    pub latency_us: u64,
    /// Part of `latency_us`: the kernel-memory snapshot for the dump.
    pub snapshot_us: u64,
    /// Part of `latency_us`: the repair program's run.
    pub repair_us: u64,
    /// Removing the repair image from the guest (overlaps the resume).
    pub unmap_us: u64,
    /// Part of `latency_us`: the kernel's recovery entry up to its return
    /// to user mode.
    pub resume_us: u64,
    /// The console's `[lazarus] resurrected ...` line.
    pub summary: String,
}

/// `GET /recoveries`: the most recent resurrections, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryList {
    /// All resurrections this session; `recoveries` holds the latest
    /// (the list is bounded) when this is larger.
    pub total: u64,
    /// The resurrections, oldest first.
    pub recoveries: Vec<RecoveryInfo>,
}

/// `GET /crashes`: the crash database, as `lazarus crashes --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashList {
    /// One entry per crash signature.
    pub buckets: Vec<CrashBucket>,
}

/// Every recorded crash with one signature (same fields as the crash
/// database's bucket).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashBucket {
    /// The crash signature from the diagnosis; equal signatures are the
    /// same bug.
    pub signature: String,
    /// Kind of the most recent crash, e.g. "null-deref".
    pub kind: String,
    /// One-line summary of the most recent crash.
    pub title: String,
    /// Crashes recorded with this signature.
    pub count: u64,
    /// The first crash, in milliseconds since the Unix epoch.
    pub first_seen_unix_ms: u64,
    /// The most recent crash, in milliseconds since the Unix epoch.
    pub last_seen_unix_ms: u64,
    /// The most recent dump of the bucket still on disk.
    pub example_dump: Option<PathBuf>,
    /// Every extension involved, sorted.
    pub extensions: Vec<String>,
}

/// `PUT /inject`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectRequest {
    /// A fault type of the host-side injector (e.g. "bit-flip"), or
    /// "crash-test" to run one of the guest's crash-test kinds.
    pub fault: String,
    /// Target extension of a code fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<String>,
    /// Target kernel table of "wild-write-struct".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<String>,
    /// Makes the injection reproducible; without it the session's own
    /// injector (seeded at start) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The crash-test kind (as in the guest's `crash list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `PUT /dump` (the body is optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpRequest {
    /// Why, for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to `PUT /dump`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpResponse {
    /// The ELF core dump, readable by `lazarus diagnose` and gdb.
    pub dump: PathBuf,
    /// The diagnosis report (JSON; a .txt lies beside it).
    pub report: PathBuf,
    /// Always "on-demand": this is not a crash, and it is not recorded in
    /// the crash database.
    pub kind: String,
    /// The report's one-line summary.
    pub title: String,
    /// How long the guest was paused to copy its memory and registers.
    pub paused_us: u64,
    /// Bytes of guest RAM dumped.
    pub ram_bytes: u64,
    /// vCPUs whose registers are in the dump.
    pub vcpus: u32,
}

/// `PATCH /vm`, as Firecracker: `{"state": "Paused"}` or
/// `{"state": "Resumed"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateRequest {
    /// The state wanted.
    pub state: RequestedState,
}

/// The `state` of a `PATCH /vm` (spelled as in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestedState {
    /// Stop every vCPU (409 if already paused).
    Paused,
    /// Run the vCPUs again (409 if not paused).
    Resumed,
}

/// `GET /metrics`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Since `lazarus run` started (all boots).
    pub uptime_ms: u64,
    /// VMs booted this session (1 + reboots).
    pub boots: u64,
    /// What the VM is doing now.
    pub state: VmState,
    /// Time the guest spent paused (current VM).
    pub paused_ms: u64,
    /// Guest exits.
    pub exits: ExitMetrics,
    /// Resurrections and their latency.
    pub recoveries: RecoveryMetrics,
    /// Crash counts.
    pub crashes: CrashMetrics,
    /// Hypervisor and guest-kernel memory.
    pub memory: MemoryMetrics,
    /// Events of `--events` lost so far (a slow or missing reader);
    /// `None` without `--events`.
    #[serde(default)]
    pub events_dropped: Option<u64>,
}

/// Guest exits of the current VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitMetrics {
    /// Guest exits (signal kicks excluded).
    pub total: u64,
    /// Nonzero counters by kind, e.g. "pio-serial"; "interrupted" counts
    /// kicks, which are not guest exits.
    pub by_kind: BTreeMap<String, u64>,
}

/// Resurrections this session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryMetrics {
    /// Resurrections this session.
    pub count: u64,
    /// Their latency (`RecoveryInfo::latency_us`), in microseconds.
    pub latency_us: LatencyStats,
}

/// Over the most recent recoveries (a bounded window).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyStats {
    /// Recoveries in the window.
    pub samples: u64,
    /// Median (nearest rank); `None` without samples.
    pub median: Option<u64>,
    /// 99th percentile (nearest rank); `None` without samples.
    pub p99: Option<u64>,
    /// Largest; `None` without samples.
    pub max: Option<u64>,
}

/// Crash counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashMetrics {
    /// Crashes detected this session (resurrected or not).
    pub session: u64,
    /// Crashes in the crash database (all sessions); `None` if it could
    /// not be read.
    pub recorded: Option<u64>,
}

/// Memory of the hypervisor and of the guest kernel. Guest figures are
/// `None` before the kernel registers its state root.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryMetrics {
    /// The hypervisor process's resident set, guest RAM included.
    pub host_rss_bytes: Option<u64>,
    /// The guest RAM pages in that resident set.
    #[serde(default)]
    pub guest_ram_resident_bytes: Option<u64>,
    /// The hypervisor's own memory: the resident set without guest RAM.
    #[serde(default)]
    pub vmm_own_bytes: Option<u64>,
    /// Guest RAM configured.
    pub guest_ram_bytes: u64,
    /// Physical frames (4 KiB) the guest kernel manages.
    pub guest_frames_total: Option<u64>,
    /// Of which in use.
    pub guest_frames_used: Option<u64>,
    /// The guest kernel's heap size.
    pub guest_heap_size_bytes: Option<u64>,
    /// Bytes its allocator counts as in use.
    pub guest_heap_used_bytes: Option<u64>,
    /// Heap blocks (256 bytes) marked allocated in the kernel's
    /// allocation map.
    pub guest_heap_blocks_used: Option<u64>,
}

/// Every error response, as Firecracker's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, in words.
    pub fault_message: String,
}
