//! The hang detector: watches the kernel's heartbeat (a counter in its
//! state root that the timer interrupt increments) without any guest exit.
//!
//! A stalled heartbeat alone is not proof of a hang on a loaded host: the
//! vCPU thread may simply not have been scheduled. So a hang is declared
//! when the heartbeat has not moved while the vCPU thread consumed
//! `timeout` of CPU time (a spinning kernel), or after ten times `timeout`
//! of wall-clock time (a kernel halted with interrupts off burns no CPU).

use std::mem::offset_of;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lazarus_abi::hypercall::RootHeader;
use vm_memory::{Bytes, GuestAddress};

use crate::console::lock;
use crate::memory::GuestRam;

/// Default time without a heartbeat before the guest is declared hung.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// Why the watchdog fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    /// The vCPU whose heartbeat stopped: the hang is delivered to it.
    pub vcpu: u32,
    /// The heartbeat value that stopped moving.
    pub heartbeat: u64,
    /// Wall-clock time since it last moved.
    pub wall: Duration,
    /// vCPU CPU time consumed since it last moved (if measurable).
    pub cpu: Option<Duration>,
}

/// CPU time consumed so far by a thread.
pub fn thread_cpu_time(thread: libc::pthread_t) -> Option<Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `thread` is a live thread of this process (its JoinHandle is
    // held by the caller) and `clock` is a valid out-pointer.
    if unsafe { libc::pthread_getcpuclockid(thread, &mut clock) } != 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; an invalid clock only errors.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The vCPU that the pre-SMP `heartbeat` belongs to.
const BOOT_VCPU: u32 = 0;

/// Watches one guest's heartbeat (see the module doc).
pub struct Watchdog {
    timeout: Duration,
    last: Option<(u64, Instant, Option<Duration>)>,
}

impl Watchdog {
    /// Declares a hang after `timeout` without a heartbeat.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            last: None,
        }
    }

    /// How often to check.
    pub fn poll_interval(&self) -> Duration {
        (self.timeout / 4).max(Duration::from_millis(2))
    }

    /// Forgets the last observation (after the guest was paused or resumed
    /// from a repair, stalls before that do not count).
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// Reads the heartbeat and decides. `vcpu_cpu` is the CPU time of the
    /// boot vCPU's thread now.
    pub fn check(
        &mut self,
        mem: &GuestRam,
        root_gpa: Option<u64>,
        vcpu_cpu: Option<Duration>,
    ) -> Option<Stall> {
        let gpa = root_gpa?;
        let beat: u64 = mem
            .read_obj(GuestAddress(gpa + offset_of!(RootHeader, heartbeat) as u64))
            .ok()?;
        let now = Instant::now();
        match self.last {
            Some((prev, since, cpu0)) if prev == beat => {
                let wall = now - since;
                let cpu = match (cpu0, vcpu_cpu) {
                    (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                    _ => None,
                };
                let spun = cpu.is_some_and(|c| c >= self.timeout);
                // Without a CPU clock, fall back to wall time alone.
                let waited = wall >= self.timeout * if cpu.is_some() { 10 } else { 1 };
                (spun || waited).then_some(Stall {
                    vcpu: BOOT_VCPU,
                    heartbeat: beat,
                    wall,
                    cpu,
                })
            }
            _ => {
                self.last = Some((beat, now, vcpu_cpu));
                None
            }
        }
    }
}

/// Hangs the watchdog found, each waiting for its own vCPU's thread
/// (kicked out of KVM_RUN) to turn it into a crash of that vCPU: only that
/// thread has the hung CPU's registers.
#[derive(Debug, Default)]
pub struct PendingHangs(Mutex<Vec<Stall>>);

impl PendingHangs {
    /// Leaves `stall` for its vCPU. `false`, and nothing changes, when one
    /// is already waiting there: that vCPU never picked it up.
    pub fn post(&self, stall: Stall) -> bool {
        let mut pending = lock(&self.0);
        if pending.iter().any(|s| s.vcpu == stall.vcpu) {
            return false;
        }
        pending.push(stall);
        true
    }

    /// The hang waiting for `vcpu`, if any.
    pub fn take(&self, vcpu: u32) -> Option<Stall> {
        let mut pending = lock(&self.0);
        let i = pending.iter().position(|s| s.vcpu == vcpu)?;
        Some(pending.swap_remove(i))
    }

    /// Forgets every waiting hang (the VM's state was replaced).
    pub fn clear(&self) {
        lock(&self.0).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_ram;

    #[test]
    fn fires_only_after_the_heartbeat_stops() {
        let mem = create_guest_ram(16 << 20).expect("ram");
        let root = 0x10_0000u64;
        let hb = GuestAddress(root + offset_of!(RootHeader, heartbeat) as u64);
        let mut wd = Watchdog::new(Duration::from_millis(20));
        assert_eq!(wd.check(&mem, None, None), None, "no root, no watchdog");
        mem.write_obj(1u64, hb).expect("write");
        assert_eq!(wd.check(&mem, Some(root), Some(Duration::ZERO)), None);
        // Moving heartbeat: never fires.
        for beat in 2..5u64 {
            std::thread::sleep(Duration::from_millis(10));
            mem.write_obj(beat, hb).expect("write");
            assert_eq!(
                wd.check(&mem, Some(root), Some(Duration::from_millis(100))),
                None
            );
        }
        // Stalled while the vCPU burns CPU: fires.
        std::thread::sleep(Duration::from_millis(5));
        let stall = wd.check(&mem, Some(root), Some(Duration::from_millis(200)));
        assert!(stall.is_some_and(|s| s.heartbeat == 4 && s.vcpu == 0));
    }

    #[test]
    fn an_unscheduled_vcpu_is_not_a_hang() {
        let mem = create_guest_ram(16 << 20).expect("ram");
        let root = 0x10_0000u64;
        let mut wd = Watchdog::new(Duration::from_millis(20));
        let cpu = Some(Duration::from_millis(5));
        assert_eq!(wd.check(&mem, Some(root), cpu), None);
        std::thread::sleep(Duration::from_millis(40));
        // 40 ms of wall time but no CPU time consumed: not yet.
        assert_eq!(wd.check(&mem, Some(root), cpu), None);
        std::thread::sleep(Duration::from_millis(170));
        // Ten timeouts of wall time: a halted guest is hung too.
        assert!(wd.check(&mem, Some(root), cpu).is_some());
    }

    #[test]
    fn pending_hangs_wait_for_their_own_vcpu() {
        let stall = |vcpu| Stall {
            vcpu,
            heartbeat: 1,
            wall: Duration::from_millis(1),
            cpu: None,
        };
        let pending = PendingHangs::default();
        assert!(pending.post(stall(1)));
        assert!(!pending.post(stall(1)), "vCPU 1 has not picked it up");
        assert!(pending.post(stall(2)));
        assert_eq!(pending.take(0), None);
        assert_eq!(pending.take(1), Some(stall(1)));
        assert_eq!(pending.take(1), None);
        pending.clear();
        assert_eq!(pending.take(2), None);
    }
}
