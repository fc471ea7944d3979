//! The hypercall port.
//!
//! The guest writes the 32-bit guest-physical address of a [`Hypercall`]
//! block to `PORT_HYPERCALL`. Nothing in the block is trusted: the block
//! address, the call number and every argument are checked before use, and
//! failures become a negative errno in `ret` (or, when the block itself is
//! unusable, a warning and no access at all).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use lazarus_abi::hypercall::{
    CONSOLE_WRITE_MAX, EXT_EVENT_LOADED, EXT_EVENT_UNLOADED, HC_CONSOLE_WRITE, HC_CPU_ON,
    HC_EXT_EVENT, HC_MILESTONE, HC_POWEROFF, HC_REBOOT, HC_RECOVERED, HC_REGISTER_ROOT, Hypercall,
    MAX_EXTS,
};

use lazarus_abi::syscall::errno;
use tracing::{debug, info, warn};

use crate::console::lock;
use crate::memory::{GuestRam, ram_size, range_in_ram, read_bytes, read_obj, write_obj};
use crate::root::{RootError, validate_root};
use crate::stats::{ExitCounts, ExitStats};

/// Size of the hypercall block.
const BLOCK_SIZE: u64 = size_of::<Hypercall>() as u64;
/// Offset of `ret` in the block.
const RET_OFFSET: u64 = std::mem::offset_of!(Hypercall, ret) as u64;
/// Milestone ids the hypervisor records (bounded, so a looping guest cannot
/// grow host memory).
pub const MILESTONE_MAX: u64 = 63;

/// What the VMM must do after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HcAction {
    /// Resume the guest.
    Continue,
    /// The guest asked to power off with this status.
    PowerOff(i32),
    /// The guest asked to be rebooted.
    Reboot,
    /// The guest reached a milestone (every occurrence).
    Milestone(u64),
    /// An extension was loaded or unloaded: kernel code changed, so the
    /// repair image must be refreshed.
    ExtEvent(ExtEvent),
    /// The kernel is back in user mode after a repair (its recovery count).
    Recovered(u64),
    /// A vCPU was asked to start ([`Hypercalls::take_cpu_start`] has its
    /// registers); its thread must be kicked to pick them up.
    StartCpu(u32),
}

/// Where a vCPU started by `HC_CPU_ON` begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuStart {
    /// First instruction (virtual).
    pub rip: u64,
    /// Initial stack pointer (virtual).
    pub rsp: u64,
    /// Passed in RDI.
    pub arg: u64,
    /// Page-table root (guest-physical).
    pub cr3: u64,
}

/// When a milestone was first reached.
#[derive(Clone, Copy, Debug)]
pub struct Milestone {
    /// The guest's milestone number (`MILESTONE_*`).
    pub id: u64,
    /// Host time of the first `HC_MILESTONE` with this id.
    pub at: Instant,
    /// How often the guest reported it.
    pub count: u64,
    /// Guest exits counted up to the first report.
    pub exits: ExitCounts,
}

/// An extension load/unload the guest reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtEvent {
    /// Loaded (else unloaded).
    pub loaded: bool,
    /// The kernel's extension slot.
    pub slot: u32,
}

#[derive(Debug, Default)]
struct State {
    root_gpa: Option<u64>,
    milestones: BTreeMap<u64, Milestone>,
    ext_events: u64,
    last_ext_event: Option<ExtEvent>,
    hypercalls: u64,
    rejected: u64,
    /// vCPUs the VM has (HC_CPU_ON's bound).
    vcpus: u32,
    /// Bit per vCPU started (vCPU 0 boots started).
    started: u64,
    /// Starts asked for and not yet picked up by the vCPU's thread.
    starts: BTreeMap<u32, CpuStart>,
}

/// Hypercall handling and the state it keeps.
#[derive(Debug)]
pub struct Hypercalls {
    state: Mutex<State>,
}

impl Default for Hypercalls {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `va` is a canonical 48-bit virtual address.
fn canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == (1 << 17) - 1
}

/// Why a hypercall failed: an errno for the guest, a reason for the log.
struct Failure {
    errno: i64,
    reason: String,
}

fn fail(errno: i64, reason: impl Into<String>) -> Failure {
    Failure {
        errno,
        reason: reason.into(),
    }
}

impl Hypercalls {
    /// Nothing registered, nothing counted, for a one-vCPU VM.
    pub fn new() -> Self {
        Self::with_vcpus(1)
    }

    /// Likewise for a VM of `vcpus` vCPUs, vCPU 0 running.
    pub fn with_vcpus(vcpus: u32) -> Self {
        Self {
            state: Mutex::new(State {
                vcpus,
                started: 1,
                ..State::default()
            }),
        }
    }

    /// The start `HC_CPU_ON` asked of vCPU `id`, once.
    pub fn take_cpu_start(&self, id: u32) -> Option<CpuStart> {
        lock(&self.state).starts.remove(&id)
    }

    fn cpu_on(&self, mem: &GuestRam, args: [u64; 5]) -> Result<(i64, HcAction), Failure> {
        let [cpu, rip, rsp, arg, cr3] = args;
        let mut st = lock(&self.state);
        if cpu >= u64::from(st.vcpus) {
            return Err(fail(
                errno::EINVAL,
                format!("vCPU {cpu} does not exist (the VM has {})", st.vcpus),
            ));
        }
        if st.started & (1 << cpu) != 0 {
            return Err(fail(errno::EBUSY, format!("vCPU {cpu} already started")));
        }
        if !canonical(rip) || !canonical(rsp) {
            return Err(fail(
                errno::EINVAL,
                format!("non-canonical entry {rip:#x} or stack {rsp:#x}"),
            ));
        }
        if !cr3.is_multiple_of(4096) || !range_in_ram(ram_size(mem), cr3, 4096) {
            return Err(fail(
                errno::EINVAL,
                format!("page-table root {cr3:#x} is not a page of guest RAM"),
            ));
        }
        let id = cpu as u32;
        st.started |= 1 << cpu;
        st.starts.insert(id, CpuStart { rip, rsp, arg, cr3 });
        info!(
            vcpu = id,
            rip = format_args!("{rip:#x}"),
            "guest started a vCPU"
        );
        Ok((0, HcAction::StartCpu(id)))
    }

    /// Handles an `out` to the hypercall port carrying `data`.
    pub fn handle_port_write(
        &self,
        mem: &GuestRam,
        data: &[u8],
        console: &mut dyn Write,
        stats: &ExitStats,
    ) -> HcAction {
        let Ok(raw) = <[u8; 4]>::try_from(data) else {
            warn!(
                len = data.len(),
                "hypercall: ignoring an access that is not a 4-byte out"
            );
            lock(&self.state).rejected += 1;
            return HcAction::Continue;
        };
        let gpa = u64::from(u32::from_le_bytes(raw));
        self.handle_block(mem, gpa, console, stats)
    }

    /// Runs the hypercall whose block is at `gpa`.
    pub fn handle_block(
        &self,
        mem: &GuestRam,
        gpa: u64,
        console: &mut dyn Write,
        stats: &ExitStats,
    ) -> HcAction {
        let usable = gpa.is_multiple_of(8) && range_in_ram(ram_size(mem), gpa, BLOCK_SIZE);
        let block = if usable {
            read_obj::<Hypercall>(mem, gpa)
        } else {
            None
        };
        let Some(hc) = block else {
            warn!(
                gpa = format_args!("{gpa:#x}"),
                "hypercall: ignoring a block address that is unaligned or outside guest RAM"
            );
            lock(&self.state).rejected += 1;
            return HcAction::Continue;
        };
        lock(&self.state).hypercalls += 1;

        let (ret, action) = match self.dispatch(mem, &hc, console, stats) {
            Ok((ret, action)) => (ret, action),
            Err(f) => {
                warn!(
                    nr = hc.nr,
                    errno = f.errno,
                    "hypercall {} rejected: {}",
                    name(hc.nr),
                    f.reason
                );
                lock(&self.state).rejected += 1;
                (-f.errno, HcAction::Continue)
            }
        };
        // The block was checked above, so this write stays inside RAM.
        if let Err(e) = write_obj(mem, gpa + RET_OFFSET, &ret) {
            warn!("hypercall: cannot store the result: {e}");
        }
        action
    }

    fn dispatch(
        &self,
        mem: &GuestRam,
        hc: &Hypercall,
        console: &mut dyn Write,
        stats: &ExitStats,
    ) -> Result<(i64, HcAction), Failure> {
        let [a0, a1, a2, _, _] = hc.args;
        debug!(nr = hc.nr, args = ?hc.args, "hypercall {}", name(hc.nr));
        match hc.nr {
            HC_REGISTER_ROOT => {
                validate_root(mem, a0, a1, a2).map_err(|e| {
                    let errno = match e {
                        RootError::Unaligned(_)
                        | RootError::OutsideRam { .. }
                        | RootError::Read => errno::EFAULT,
                        RootError::NoMemory => errno::ENOMEM,
                        _ => errno::EINVAL,
                    };
                    fail(errno, e.to_string())
                })?;
                let previous = lock(&self.state).root_gpa.replace(a0);
                info!(
                    gpa = format_args!("{a0:#x}"),
                    ?previous,
                    "kernel registered its state root"
                );
                Ok((0, HcAction::Continue))
            }
            HC_POWEROFF => {
                // The status is an i32; accept it sign- or zero-extended.
                let status = a0 as u32 as i32;
                info!(status, "guest requested power-off");
                Ok((0, HcAction::PowerOff(status)))
            }
            HC_REBOOT => {
                info!("guest requested a reboot");
                Ok((0, HcAction::Reboot))
            }
            HC_EXT_EVENT => {
                let loaded = match a0 {
                    EXT_EVENT_LOADED => true,
                    EXT_EVENT_UNLOADED => false,
                    other => return Err(fail(errno::EINVAL, format!("unknown event {other}"))),
                };
                if a1 >= MAX_EXTS as u64 {
                    return Err(fail(
                        errno::EINVAL,
                        format!("extension slot {a1} out of range"),
                    ));
                }
                let event = ExtEvent {
                    loaded,
                    slot: a1 as u32,
                };
                let mut st = lock(&self.state);
                st.ext_events += 1;
                st.last_ext_event = Some(event);
                info!(
                    slot = a1,
                    loaded,
                    count = st.ext_events,
                    "kernel extension event (repair image refresh point)"
                );
                Ok((0, HcAction::ExtEvent(event)))
            }
            HC_RECOVERED => Ok((0, HcAction::Recovered(a0))),
            HC_CPU_ON => self.cpu_on(mem, hc.args),
            HC_CONSOLE_WRITE => {
                if a1 > CONSOLE_WRITE_MAX {
                    return Err(fail(
                        errno::E2BIG,
                        format!("length {a1} exceeds {CONSOLE_WRITE_MAX}"),
                    ));
                }
                let bytes = read_bytes(mem, a0, a1).ok_or_else(|| {
                    fail(
                        errno::EFAULT,
                        format!("buffer [{a0:#x}, +{a1:#x}) is not inside guest RAM"),
                    )
                })?;
                // ConsoleSink never fails; a plain writer's error is logged.
                if let Err(e) = console.write_all(&bytes) {
                    warn!("console write failed: {e}");
                }
                Ok((a1 as i64, HcAction::Continue))
            }
            HC_MILESTONE => {
                if a0 == 0 || a0 > MILESTONE_MAX {
                    return Err(fail(errno::EINVAL, format!("milestone {a0} out of range")));
                }
                let now = Instant::now();
                let mut st = lock(&self.state);
                let m = st.milestones.entry(a0).or_insert_with(|| Milestone {
                    id: a0,
                    at: now,
                    count: 0,
                    exits: stats.snapshot(),
                });
                m.count += 1;
                debug!(milestone = a0, count = m.count, "guest milestone");
                Ok((0, HcAction::Milestone(a0)))
            }
            other => Err(fail(errno::ENOSYS, format!("unknown hypercall {other}"))),
        }
    }

    /// Guest-physical address of the registered kernel root.
    pub fn root_gpa(&self) -> Option<u64> {
        lock(&self.state).root_gpa
    }

    /// All milestones reached so far, by id.
    pub fn milestones(&self) -> Vec<Milestone> {
        lock(&self.state).milestones.values().copied().collect()
    }

    /// A milestone, if it was reached.
    pub fn milestone(&self, id: u64) -> Option<Milestone> {
        lock(&self.state).milestones.get(&id).copied()
    }

    /// Number of extension events reported, and the latest.
    pub fn ext_events(&self) -> (u64, Option<ExtEvent>) {
        let st = lock(&self.state);
        (st.ext_events, st.last_ext_event)
    }

    /// Hypercalls handled and hypercalls rejected (bad block or arguments).
    pub fn counts(&self) -> (u64, u64) {
        let st = lock(&self.state);
        (st.hypercalls, st.rejected)
    }

    /// The bookkeeping that follows the guest's state (registered root,
    /// milestones, extension events), for whole-VM snapshots. The call
    /// counters are host statistics and are not part of it.
    pub fn save_state(&self) -> HypercallState {
        let st = lock(&self.state);
        HypercallState {
            root_gpa: st.root_gpa,
            milestones: st.milestones.clone(),
            ext_events: st.ext_events,
            last_ext_event: st.last_ext_event,
            started_cpus: st.started,
        }
    }

    /// Puts back what [`Hypercalls::save_state`] captured.
    pub fn restore_state(&self, saved: &HypercallState) {
        let mut st = lock(&self.state);
        st.root_gpa = saved.root_gpa;
        st.milestones.clone_from(&saved.milestones);
        st.ext_events = saved.ext_events;
        st.last_ext_event = saved.last_ext_event;
        st.started = saved.started_cpus;
        st.starts.clear();
    }
}

/// Hypercall bookkeeping captured by [`Hypercalls::save_state`].
#[derive(Clone, Debug, Default)]
pub struct HypercallState {
    /// The registered state root.
    pub root_gpa: Option<u64>,
    /// Milestones reached.
    pub milestones: BTreeMap<u64, Milestone>,
    /// Extension events reported.
    pub ext_events: u64,
    /// The latest of them.
    pub last_ext_event: Option<ExtEvent>,
    /// Bit per vCPU started (with the vCPUs' own state, which says how
    /// far they got).
    pub started_cpus: u64,
}

/// Human name of a hypercall number.
pub fn name(nr: u64) -> &'static str {
    match nr {
        HC_REGISTER_ROOT => "register-root",
        HC_POWEROFF => "poweroff",
        HC_REBOOT => "reboot",
        HC_EXT_EVENT => "ext-event",
        HC_CONSOLE_WRITE => "console-write",
        HC_MILESTONE => "milestone",
        HC_RECOVERED => "recovered",
        HC_CPU_ON => "cpu-on",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests;
