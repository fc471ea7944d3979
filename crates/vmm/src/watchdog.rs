//! The hang detector: watches the kernel's heartbeats (counters in its
//! state root's header that each CPU's timer interrupt increments) without
//! any guest exit.
//!
//! Every vCPU is watched on its own `cpu_heartbeat` entry, so one CPU
//! locked up while the others tick is still found; an entry of 0 is a CPU
//! the kernel never started and is not watched. A kernel that fills none
//! of them (an older one, or before its first tick) is watched as before
//! SMP: its `heartbeat`, for vCPU 0.
//!
//! A stalled heartbeat alone is not proof of a hang on a loaded host: the
//! vCPU thread may simply not have been scheduled. So a hang is declared
//! when a CPU's heartbeat has not moved while that vCPU's thread consumed
//! `timeout` of CPU time (a spinning kernel), or after ten times `timeout`
//! of wall-clock time (a kernel halted with interrupts off burns no CPU).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lazarus_abi::boot::MAX_CPUS;
use lazarus_abi::hypercall::RootHeader;

use crate::console::lock;
use crate::memory::{GuestRam, read_obj};

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
    /// That vCPU's thread's CPU time since it last moved (if measurable).
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

/// The heartbeats a root header offers, as the watchdog reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeats {
    /// No per-CPU entry is filled (a kernel from before SMP, or before its
    /// first tick): the boot CPU's `heartbeat`, watched for vCPU 0.
    Boot(u64),
    /// `cpu_heartbeat`, indexed by vCPU; 0 is a CPU never started.
    PerCpu([u64; MAX_CPUS]),
}

impl Heartbeats {
    /// The heartbeats in `header` (guest data: any values are fine).
    pub fn of(header: &RootHeader) -> Self {
        if header.cpu_heartbeat.iter().all(|&b| b == 0) {
            Heartbeats::Boot(header.heartbeat)
        } else {
            Heartbeats::PerCpu(header.cpu_heartbeat)
        }
    }

    /// `vcpu`'s heartbeat, or `None` if it is not watched.
    pub fn get(&self, vcpu: u32) -> Option<u64> {
        match self {
            Heartbeats::Boot(beat) => (vcpu == BOOT_VCPU).then_some(*beat),
            Heartbeats::PerCpu(beats) => index(vcpu)
                .and_then(|i| beats.get(i).copied())
                .filter(|&b| b != 0),
        }
    }
}

/// `vcpu` as an index into the per-CPU arrays, if it fits.
fn index(vcpu: u32) -> Option<usize> {
    usize::try_from(vcpu).ok().filter(|&i| i < MAX_CPUS)
}

/// When a vCPU's heartbeat was last seen to move.
#[derive(Clone, Copy, Debug)]
struct Seen {
    beat: u64,
    since: Instant,
    /// Its thread's CPU time then.
    cpu: Option<Duration>,
}

/// Watches one guest's heartbeats (see the module doc).
pub struct Watchdog {
    timeout: Duration,
    /// Per vCPU: the last movement seen (`None`: not watched yet).
    last: [Option<Seen>; MAX_CPUS],
}

impl Watchdog {
    /// Declares a hang after `timeout` without a heartbeat.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            last: [None; MAX_CPUS],
        }
    }

    /// How often to check.
    pub fn poll_interval(&self) -> Duration {
        (self.timeout / 4).max(Duration::from_millis(2))
    }

    /// Forgets every observation (after the guest was paused or resumed
    /// from a repair, stalls before that do not count).
    pub fn reset(&mut self) {
        self.last = [None; MAX_CPUS];
    }

    /// Forgets `vcpu`'s observation: a hang was just delivered to it, and
    /// it gets a whole timeout to pick it up before it counts again.
    pub fn reset_vcpu(&mut self, vcpu: u32) {
        if let Some(seen) = index(vcpu).and_then(|i| self.last.get_mut(i)) {
            *seen = None;
        }
    }

    /// Reads the heartbeats from the root header and decides. `vcpus`
    /// lists the vCPUs that have a thread, each with that thread's CPU
    /// time now. An unreadable header is no heartbeat information: nothing
    /// fires and nothing is forgotten.
    pub fn check(
        &mut self,
        mem: &GuestRam,
        root_gpa: Option<u64>,
        vcpus: &[(u32, Option<Duration>)],
    ) -> Option<Stall> {
        let header: RootHeader = read_obj(mem, root_gpa?)?;
        self.observe(&Heartbeats::of(&header), vcpus, Instant::now())
    }

    /// The decision itself, on heartbeats and CPU times observed at `now`
    /// (no guest memory, no clocks: testable). Every watched vCPU's
    /// observation is updated; the stall returned is the first hung vCPU's
    /// in `vcpus` order. A vCPU not in `vcpus` (no thread to deliver a hang
    /// to) or without a heartbeat is not watched.
    pub fn observe(
        &mut self,
        beats: &Heartbeats,
        vcpus: &[(u32, Option<Duration>)],
        now: Instant,
    ) -> Option<Stall> {
        let mut watched = [false; MAX_CPUS];
        let mut stall = None;
        for &(vcpu, cpu_now) in vcpus {
            let (Some(i), Some(beat)) = (index(vcpu), beats.get(vcpu)) else {
                continue;
            };
            watched[i] = true;
            match self.last[i] {
                Some(seen) if seen.beat == beat => {
                    if stall.is_none() {
                        stall = self.judge(vcpu, &seen, cpu_now, now);
                    }
                }
                _ => {
                    self.last[i] = Some(Seen {
                        beat,
                        since: now,
                        cpu: cpu_now,
                    });
                }
            }
        }
        // A CPU no longer watched starts afresh if it comes back.
        for (seen, watched) in self.last.iter_mut().zip(watched) {
            if !watched {
                *seen = None;
            }
        }
        stall
    }

    /// Whether a heartbeat unchanged since `seen` is a hang by now.
    fn judge(
        &self,
        vcpu: u32,
        seen: &Seen,
        cpu_now: Option<Duration>,
        now: Instant,
    ) -> Option<Stall> {
        let wall = now.saturating_duration_since(seen.since);
        let cpu = match (seen.cpu, cpu_now) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let spun = cpu.is_some_and(|c| c >= self.timeout);
        // Without a CPU clock, fall back to wall time alone.
        let waited = wall
            >= self
                .timeout
                .saturating_mul(if cpu.is_some() { 10 } else { 1 });
        (spun || waited).then_some(Stall {
            vcpu,
            heartbeat: seen.beat,
            wall,
            cpu,
        })
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
    use std::mem::offset_of;

    use super::*;
    use crate::memory::{create_guest_ram, write_obj};

    const TIMEOUT: Duration = Duration::from_millis(20);
    const ROOT: u64 = 0x10_0000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Per-CPU heartbeats starting with `beats`, the rest 0.
    fn per_cpu(beats: &[u64]) -> Heartbeats {
        let mut all = [0; MAX_CPUS];
        all[..beats.len()].copy_from_slice(beats);
        Heartbeats::PerCpu(all)
    }

    #[test]
    fn fires_only_after_the_heartbeat_stops() {
        let mem = create_guest_ram(16 << 20).expect("ram");
        let hb = ROOT + offset_of!(RootHeader, heartbeat) as u64;
        let mut wd = Watchdog::new(TIMEOUT);
        let cpu = |c| [(0, Some(c))];
        assert_eq!(wd.check(&mem, None, &cpu(ms(0))), None, "no root");
        write_obj(&mem, hb, &1u64).expect("write");
        assert_eq!(wd.check(&mem, Some(ROOT), &cpu(ms(0))), None);
        // Moving heartbeat: never fires.
        for beat in 2..5u64 {
            std::thread::sleep(ms(10));
            write_obj(&mem, hb, &beat).expect("write");
            assert_eq!(wd.check(&mem, Some(ROOT), &cpu(ms(100))), None);
        }
        // Stalled while the vCPU burns CPU: fires.
        std::thread::sleep(ms(5));
        let stall = wd.check(&mem, Some(ROOT), &cpu(ms(200)));
        assert!(stall.is_some_and(|s| s.heartbeat == 4 && s.vcpu == 0));
    }

    #[test]
    fn reads_per_cpu_heartbeats_from_the_root_header() {
        let mem = create_guest_ram(16 << 20).expect("ram");
        let mut cpu_heartbeat = [0; MAX_CPUS];
        cpu_heartbeat[..2].copy_from_slice(&[9, 3]);
        let header = RootHeader {
            heartbeat: 9,
            cpu_heartbeat,
            ..RootHeader::default()
        };
        write_obj(&mem, ROOT, &header).expect("write");
        let mut wd = Watchdog::new(TIMEOUT);
        let start = [(0, Some(ms(0))), (1, Some(ms(0)))];
        assert_eq!(wd.check(&mem, Some(ROOT), &start), None);
        // Only vCPU 1's thread burned CPU.
        let later = [(0, Some(ms(0))), (1, Some(ms(50)))];
        let stall = wd.check(&mem, Some(ROOT), &later).expect("a stall");
        assert_eq!((stall.vcpu, stall.heartbeat), (1, 3));
        // A root outside RAM is no information, not a hang.
        assert_eq!(wd.check(&mem, Some(u64::MAX - 8), &later), None);
        assert_eq!(wd.check(&mem, Some(16 << 20), &later), None);
    }

    #[test]
    fn one_stalled_cpu_is_reported_while_the_others_tick() {
        let t0 = Instant::now();
        let mut wd = Watchdog::new(TIMEOUT);
        let mut found = None;
        for step in 0..3u64 {
            let b = 10 + step;
            // CPU 2 is stuck at 5; every thread burns 10 ms a step.
            let beats = per_cpu(&[b, b, 5, b]);
            let vcpus: Vec<_> = (0..4).map(|id| (id, Some(ms(10 * step)))).collect();
            found = wd.observe(&beats, &vcpus, t0 + ms(10 * step));
            if step < 2 {
                assert_eq!(found, None, "step {step}");
            }
        }
        assert_eq!(
            found,
            Some(Stall {
                vcpu: 2,
                heartbeat: 5,
                wall: ms(20),
                cpu: Some(ms(20)),
            })
        );
    }

    #[test]
    fn an_all_zero_array_falls_back_to_the_boot_heartbeat() {
        let header = RootHeader {
            heartbeat: 7,
            ..RootHeader::default()
        };
        let beats = Heartbeats::of(&header);
        assert_eq!(beats, Heartbeats::Boot(7));
        assert_eq!((beats.get(0), beats.get(1)), (Some(7), None));

        // Both threads spin; only vCPU 0 has a heartbeat to judge.
        let t0 = Instant::now();
        let mut wd = Watchdog::new(TIMEOUT);
        let vcpus = |c| [(0, Some(c)), (1, Some(c))];
        assert_eq!(wd.observe(&beats, &vcpus(ms(0)), t0), None);
        let stall = wd.observe(&beats, &vcpus(ms(30)), t0 + ms(30));
        assert_eq!(stall.map(|s| (s.vcpu, s.heartbeat)), Some((0, 7)));
        // A moving boot heartbeat never fires, whatever vCPU 1 does.
        let mut wd = Watchdog::new(TIMEOUT);
        for step in 0..5u64 {
            let moving = Heartbeats::Boot(step + 1);
            let t = t0 + ms(100 * step);
            assert_eq!(wd.observe(&moving, &vcpus(ms(100 * step)), t), None);
        }
    }

    #[test]
    fn a_cpu_never_started_is_ignored() {
        let t0 = Instant::now();
        let mut wd = Watchdog::new(TIMEOUT);
        let vcpus = |c| [(0, Some(c)), (1, Some(c))];
        for step in 0..5u64 {
            // vCPU 1 spins at 0 (not started); entry 5 has no vCPU thread.
            let mut beats = [0; MAX_CPUS];
            beats[0] = step + 1;
            beats[5] = 42;
            let t = t0 + ms(100 * step);
            let found = wd.observe(&Heartbeats::PerCpu(beats), &vcpus(ms(100 * step)), t);
            assert_eq!(found, None, "step {step}");
        }
        // Once started, it is watched from its first tick on.
        let t = t0 + ms(500);
        assert_eq!(wd.observe(&per_cpu(&[6, 1]), &vcpus(ms(500)), t), None);
        let t = t + ms(30);
        let stall = wd.observe(&per_cpu(&[7, 1]), &vcpus(ms(530)), t);
        assert_eq!(stall.map(|s| (s.vcpu, s.wall)), Some((1, ms(30))));
    }

    #[test]
    fn an_unscheduled_vcpu_is_not_a_hang() {
        let t0 = Instant::now();
        let mut wd = Watchdog::new(TIMEOUT);
        let beats = per_cpu(&[3]);
        let cpu = [(0, Some(ms(5)))];
        assert_eq!(wd.observe(&beats, &cpu, t0), None);
        // 40 ms of wall time but no CPU time consumed: not yet.
        assert_eq!(wd.observe(&beats, &cpu, t0 + ms(40)), None);
        // Ten timeouts of wall time: a halted guest is hung too.
        let stall = wd.observe(&beats, &cpu, t0 + ms(200));
        assert_eq!(stall.map(|s| s.cpu), Some(Some(Duration::ZERO)));
    }

    #[test]
    fn without_a_cpu_clock_wall_time_alone_decides() {
        let t0 = Instant::now();
        let mut wd = Watchdog::new(TIMEOUT);
        let beats = per_cpu(&[3]);
        let cpu = [(0, None)];
        assert_eq!(wd.observe(&beats, &cpu, t0), None);
        assert_eq!(wd.observe(&beats, &cpu, t0 + ms(19)), None);
        let stall = wd.observe(&beats, &cpu, t0 + ms(20));
        assert_eq!(stall.map(|s| s.cpu), Some(None));
    }

    #[test]
    fn a_delivered_hang_gives_its_vcpu_a_fresh_timeout() {
        let t0 = Instant::now();
        let mut wd = Watchdog::new(TIMEOUT);
        // vCPUs 1 and 2 are both stuck; vCPU 0 ticks.
        let beats = |b| per_cpu(&[b, 4, 4]);
        let vcpus = |c| [(0, Some(c)), (1, Some(c)), (2, Some(c))];
        assert_eq!(wd.observe(&beats(1), &vcpus(ms(0)), t0), None);
        let first = wd.observe(&beats(2), &vcpus(ms(30)), t0 + ms(30));
        assert_eq!(first.map(|s| s.vcpu), Some(1));
        wd.reset_vcpu(1);
        let second = wd.observe(&beats(3), &vcpus(ms(40)), t0 + ms(40));
        assert_eq!(second.map(|s| s.vcpu), Some(2));
        wd.reset_vcpu(2);
        assert_eq!(wd.observe(&beats(4), &vcpus(ms(45)), t0 + ms(45)), None);
        // vCPU 1 did not pick it up: a whole timeout later it fires again.
        let again = wd.observe(&beats(5), &vcpus(ms(70)), t0 + ms(70));
        assert_eq!(again.map(|s| (s.vcpu, s.wall)), Some((1, ms(30))));
        // A full reset forgets everything.
        wd.reset();
        assert_eq!(wd.observe(&beats(6), &vcpus(ms(500)), t0 + ms(500)), None);
    }

    #[test]
    fn pending_hangs_wait_for_their_own_vcpu() {
        let stall = |vcpu| Stall {
            vcpu,
            heartbeat: 1,
            wall: ms(1),
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
