//! `lazarus bench recovery`: three ways back from the same crashes, on the
//! same image, in one run.
//!
//! - **resurrect**: one boot with the kv store full and two workers
//!   running; the kernel is crashed again and again and resurrected each
//!   time. Latency: crash exit to the kernel's return to a user process.
//! - **reboot**: `--keys` keys, flushed to the kv store's disk log, and a
//!   tenth more written just before the crash; then a new VM boots on the
//!   same disk. Downtime: crash exit to the new shell prompt. The kv store
//!   comes back from its log: lost are the writes since its last flush (at
//!   most a second's); the report gives them and the replay's time.
//! - **snapshot**: whole-VM snapshots every `--snapshot-interval` seconds
//!   while keys are being written; at a crash the latest snapshot is
//!   restored. Time: crash exit to the VM running again. Lost: the keys
//!   acknowledged after that snapshot.
//!
//! kv keys lost are counted against what the benchmark itself wrote.
//!
//! Resurrection is also timed for each vCPU count of `--vcpus-list` (and
//! `--vcpus`'s), one boot each: from the crash exit until every vCPU runs
//! again, i.e. the crashed one and every one parked for the repair have
//! re-entered KVM_RUN (`lazarus_vmm::CrashResume`, the hypervisor's own
//! measurement), beside the latency above for the same crashes.

use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use lazarus_abi::hypercall::MILESTONE_SHELL_PROMPT;
use lazarus_campaign::driver::{Driver, PROMPT, kv_check};
use lazarus_campaign::stats::{Stats, ms, stats};
use lazarus_resurrect::{Recovery, ResurrectConfig};
use lazarus_virtio_blk::{Block, DEFAULT_DISK_SIZE, DiskImage};
use lazarus_vmm::{Vm, VmOutcome, VmSnapshot};
use serde::Serialize;

use crate::bench_vm::{self, Session};
use crate::cli::BenchRecoveryArgs;
use crate::exit::{BAD_INPUT, INTERNAL, failure};
use crate::image::BootImage;

const T: Duration = Duration::from_secs(60);
/// How long after a resurrection's report every vCPU must run again (it
/// normally has already: the parked ones go when the repair ends).
const ALL_RUNNING_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize)]
struct Mode {
    samples: usize,
    median_ms: f64,
    p99_ms: f64,
    min_ms: f64,
    max_ms: f64,
    /// kv keys lost over the whole mode (see the module doc).
    kv_keys_lost: u64,
    /// kv keys the benchmark wrote in this mode.
    kv_keys_written: u64,
    samples_ms: Vec<f64>,
}

fn mode(samples: Vec<f64>, lost: u64, written: u64) -> Mode {
    let Stats {
        median,
        p99,
        min,
        max,
    } = stats(&samples);
    Mode {
        samples: samples.len(),
        median_ms: median,
        p99_ms: p99,
        min_ms: min,
        max_ms: max,
        kv_keys_lost: lost,
        kv_keys_written: written,
        samples_ms: samples,
    }
}

/// Resurrection with one vCPU count.
#[derive(Debug, Serialize)]
struct VcpusMode {
    vcpus: u32,
    samples: usize,
    /// Crash exit until every vCPU runs again.
    all_running_median_ms: f64,
    all_running_p99_ms: f64,
    all_running_min_ms: f64,
    all_running_max_ms: f64,
    /// Crash exit until the kernel returns to a user process (the
    /// resurrect latency), for the same crashes.
    resurrect_median_ms: f64,
    resurrect_p99_ms: f64,
    kv_keys_lost: u64,
    /// Resurrections of crashes the benchmark did not cause (the kernel
    /// crashing again after a recovery), not timed.
    unrequested_recoveries: u64,
    /// Resurrections after which another crash stopped the vCPUs before
    /// every one ran again (no all-running sample).
    interrupted_resumptions: u64,
    all_running_samples_ms: Vec<f64>,
}

fn vcpus_mode(vcpus: u32, run: &ResurrectRun) -> VcpusMode {
    let all = stats(&run.all_running_ms);
    let back = stats(&run.latency_ms);
    VcpusMode {
        vcpus,
        samples: run.all_running_ms.len(),
        all_running_median_ms: all.median,
        all_running_p99_ms: all.p99,
        all_running_min_ms: all.min,
        all_running_max_ms: all.max,
        resurrect_median_ms: back.median,
        resurrect_p99_ms: back.p99,
        kv_keys_lost: run.lost,
        unrequested_recoveries: run.unrequested,
        interrupted_resumptions: run.interrupted,
        all_running_samples_ms: run.all_running_ms.clone(),
    }
}

#[derive(Debug, Serialize)]
struct Report {
    memory_mib: u64,
    vcpus: u32,
    /// How the repair image was mapped (`--repair-slot`).
    repair_slot: String,
    crashes: usize,
    kinds: Vec<String>,
    keys: u64,
    snapshot_interval_s: f64,
    resurrect: Mode,
    reboot: Mode,
    snapshot: Mode,
    /// resurrect median vs the others'.
    speedup_vs_reboot: f64,
    speedup_vs_snapshot: f64,
    /// The published system's bound, for scale.
    paper_bound_ms: f64,
    /// The reboot baseline's kv store: its log replay after each reboot.
    reboot_kv_log: KvLogReplay,
    /// Resurrection per vCPU count (`--vcpus-list`, then `--vcpus` if
    /// not listed).
    by_vcpus: Vec<VcpusMode>,
    /// The crash snapshot's share of the resurrections (at `--vcpus`).
    crash_snapshot: SnapshotCost,
}

/// What the rebooted kv stores replayed from their disk logs.
#[derive(Debug, Default, Serialize)]
struct KvLogReplay {
    /// Keys restored from the log, over all reboots.
    keys_restored: u64,
    /// Writes acknowledged before the crash but not yet flushed, hence
    /// lost, over all reboots (the same keys as `reboot.kv_keys_lost`).
    writes_lost_since_flush: u64,
    /// Milliseconds each replay took, by the kvstore's own clock.
    replay_ms: Vec<u64>,
}

/// `kvstore: restored N keys from the disk log (.., T ms)`: (N, T).
fn parse_restored(console: &str) -> Option<(u64, u64)> {
    let at = console.find("kvstore: restored ")?;
    let line = console[at..].lines().next()?;
    let keys = first_number(line)?;
    let end = line.find(" ms)")?;
    let start = line[..end].rfind(", ")? + 2;
    let ms = line[start..end].parse().ok()?;
    Some((keys, ms))
}

fn new_vm(
    image: &BootImage,
    args: &BenchRecoveryArgs,
    resurrect: Option<ResurrectConfig>,
) -> anyhow::Result<(Vm, Driver)> {
    bench_vm::new_vm(image, &args.image, resurrect.map(|r| Box::new(r) as _))
}

fn progress(args: &BenchRecoveryArgs, what: &str) {
    if !args.json {
        eprintln!("bench recovery: {what}");
    }
}

pub fn run(args: &BenchRecoveryArgs) -> anyhow::Result<u8> {
    let image = BootImage::load(&args.image)?;
    let kinds: Vec<String> = args
        .kinds
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect();
    if kinds.is_empty() || args.crashes == 0 {
        return Err(failure(
            BAD_INPUT,
            "need at least one crash kind and one crash",
        ));
    }
    if !(0.05..=60.0).contains(&args.snapshot_interval) {
        return Err(failure(
            BAD_INPUT,
            "--snapshot-interval must be between 0.05 and 60 seconds",
        ));
    }

    let mut counts: Vec<u32> = Vec::new();
    for &n in args.vcpus_list.iter().chain([&args.image.vcpus]) {
        if !counts.contains(&n) {
            counts.push(n);
        }
    }
    let mut image = image;
    let mut by_vcpus = Vec::new();
    let mut resurrect = None;
    let mut crash_snapshot = None;
    for &n in &counts {
        progress(args, &format!("resurrection with {n} vCPU(s)"));
        image.vcpus = n;
        let run = bench_resurrect(&image, args, &kinds)?;
        by_vcpus.push(vcpus_mode(n, &run));
        if n == args.image.vcpus {
            crash_snapshot = Some(snapshot_cost(&run));
            resurrect = Some(mode(run.latency_ms, run.lost, args.keys));
        }
    }
    image.vcpus = args.image.vcpus;
    let resurrect = resurrect.ok_or_else(|| failure(INTERNAL, "no resurrection run"))?;
    let crash_snapshot = crash_snapshot.ok_or_else(|| failure(INTERNAL, "no resurrection run"))?;
    progress(args, "reboot baseline");
    let (reboot, reboot_kv_log) = bench_reboot(&image, args, &kinds)?;
    progress(args, "snapshot-restore baseline");
    let snapshot = bench_snapshot(&image, args, &kinds)?;

    let report = Report {
        memory_mib: image.memory_mib,
        vcpus: image.vcpus,
        repair_slot: format!("{:?}", args.repair_slot).to_lowercase(),
        crashes: args.crashes,
        kinds,
        keys: args.keys,
        snapshot_interval_s: args.snapshot_interval,
        speedup_vs_reboot: reboot.median_ms / resurrect.median_ms,
        speedup_vs_snapshot: snapshot.median_ms / resurrect.median_ms,
        paper_bound_ms: 3000.0,
        by_vcpus,
        crash_snapshot,
        resurrect,
        reboot,
        reboot_kv_log,
        snapshot,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(0)
}

fn print_table(r: &Report) {
    println!(
        "recovery from {} crashes ({}), {} MiB guest with {} vCPUs, {} kv keys, {} repair slot",
        r.crashes,
        r.kinds.join(", "),
        r.memory_mib,
        r.vcpus,
        r.keys,
        r.repair_slot
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "way back", "median ms", "p99 ms", "min ms", "max ms", "kv keys lost"
    );
    for (name, m) in [
        ("resurrect", &r.resurrect),
        ("reboot", &r.reboot),
        ("snapshot-restore", &r.snapshot),
    ] {
        println!(
            "{:<22} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>8}/{:<5}",
            name, m.median_ms, m.p99_ms, m.min_ms, m.max_ms, m.kv_keys_lost, m.kv_keys_written
        );
    }
    let kv = &r.reboot_kv_log;
    let mut replay = kv.replay_ms.clone();
    replay.sort_unstable();
    println!(
        "reboot: the kv store replayed its disk log ({} keys restored, median {} ms); {} writes since its last flush were lost (it flushes every {} ms)",
        kv.keys_restored,
        replay.get(replay.len() / 2).copied().unwrap_or(0),
        kv.writes_lost_since_flush,
        lazarus_abi::dev::kvlog::FLUSH_INTERVAL_MS
    );
    println!(
        "resurrection median is {:.0}x faster than reboot, {:.1}x faster than snapshot restore; the published system: < {:.0} ms ({:.0}x)",
        r.speedup_vs_reboot,
        r.speedup_vs_snapshot,
        r.paper_bound_ms,
        r.paper_bound_ms / r.resurrect.median_ms
    );
    let c = &r.crash_snapshot;
    println!(
        "of which the crash snapshot for the dump: median {:.3} ms, p99 {:.3} ms, max {:.3} ms; {} KiB copied (median), {} KiB max",
        c.median_ms, c.p99_ms, c.max_ms, c.median_kib, c.max_kib
    );
    println!(
        "until every vCPU runs again (crash exit to the last vCPU back in KVM_RUN), per vCPU count:"
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "vCPUs", "median ms", "p99 ms", "min ms", "max ms", "user mode med"
    );
    for m in &r.by_vcpus {
        println!(
            "{:<22} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>14.3}",
            format!("{} ({} crashes)", m.vcpus, m.samples),
            m.all_running_median_ms,
            m.all_running_p99_ms,
            m.all_running_min_ms,
            m.all_running_max_ms,
            m.resurrect_median_ms
        );
    }
    for m in &r.by_vcpus {
        if m.unrequested_recoveries > 0 {
            println!(
                "with {} vCPU(s) the kernel also crashed {} time(s) unasked after a recovery (resurrected, not timed)",
                m.vcpus, m.unrequested_recoveries
            );
        }
        if m.interrupted_resumptions > 0 {
            println!(
                "with {} vCPU(s), {} time(s) another crash stopped the vCPUs before all ran again (no sample)",
                m.vcpus, m.interrupted_resumptions
            );
        }
    }
}

/// One boot's resurrections: both latencies per crash, and the keys lost.
struct ResurrectRun {
    /// Crash exit to the kernel's return to a user process.
    latency_ms: Vec<f64>,
    /// Crash exit until every vCPU runs again.
    all_running_ms: Vec<f64>,
    lost: u64,
    /// Resurrections of crashes the benchmark did not cause.
    unrequested: u64,
    /// Resurrections after which another crash came before every vCPU
    /// ran again (not in `all_running_ms`).
    interrupted: u64,
    /// Taking the crash snapshot for the dump (part of `latency_ms`).
    snapshot_ms: Vec<f64>,
    /// Bytes each snapshot copied.
    snapshot_bytes: Vec<u64>,
}

/// The crash snapshot for the dump: a copy into a pre-faulted buffer
/// before the repair, so part of every resurrection's latency.
#[derive(Debug, Serialize)]
struct SnapshotCost {
    samples: usize,
    median_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    median_kib: u64,
    max_kib: u64,
}

fn snapshot_cost(run: &ResurrectRun) -> SnapshotCost {
    let t = stats(&run.snapshot_ms);
    let mut kib: Vec<u64> = run.snapshot_bytes.iter().map(|b| b / 1024).collect();
    kib.sort_unstable();
    SnapshotCost {
        samples: run.snapshot_ms.len(),
        median_ms: t.median,
        p99_ms: t.p99,
        max_ms: t.max,
        median_kib: kib.get(kib.len() / 2).copied().unwrap_or(0),
        max_kib: kib.last().copied().unwrap_or(0),
    }
}

fn bench_resurrect(
    image: &BootImage,
    args: &BenchRecoveryArgs,
    kinds: &[String],
) -> anyhow::Result<ResurrectRun> {
    let (tx, rx) = channel::<Recovery>();
    let mut rc = ResurrectConfig::new(lazarus_image::REPAIR_ELF);
    rc.slot = args.repair_slot.into();
    rc.listener = Some(tx);
    let (vm, d) = new_vm(image, args, Some(rc))?;
    let control = vm.control();
    let mut s = Session::start(vm, d);
    let result = (|| -> anyhow::Result<ResurrectRun> {
        s.d.expect(PROMPT, T)?;
        s.d.cmd(&format!("kv fill {}", args.keys), T)?;
        s.d.cmd("run worker alpha 3600 &", T)?;
        s.d.cmd("run worker beta 3600 &", T)?;
        let mut latency_ms = Vec::new();
        let mut all_running_ms = Vec::new();
        let mut unrequested = 0;
        let mut interrupted = 0;
        let mut snapshot_ms = Vec::new();
        let mut snapshot_bytes = Vec::new();
        for i in 0..args.crashes {
            let kind = &kinds[i % kinds.len()];
            let sent = Instant::now();
            s.d.send(&format!("crash {kind}"));
            let rec = loop {
                let rec = recv_recovery(&rx, &s)?;
                if rec.crash.detected_at >= sent {
                    break rec;
                }
                unrequested += 1;
            };
            latency_ms.push(ms(rec.latency));
            snapshot_ms.push(ms(rec.snapshot_time));
            snapshot_bytes.push(rec.snapshot.len() as u64);
            // By now the kernel is back in user mode on the crashed vCPU;
            // the others were let go before that, when the repair ended.
            match control.wait_crash_resume(rec.crash.detected_at, ALL_RUNNING_WAIT) {
                Some(back) => all_running_ms.push(ms(back.all_running_after())),
                // Another crash stopped them first: no such moment.
                None => {
                    tracing::warn!(
                        "crash {i} ({kind}): another crash came before every vCPU ran again"
                    );
                    interrupted += 1;
                }
            }
            drop(rec);
            s.d.resync()?;
            // Crashes the benchmark did not ask for (the kernel crashing
            // again after a recovery) are counted, not timed.
            while let Ok(extra) = rx.try_recv() {
                tracing::warn!("an unrequested resurrection: {}", extra.summary());
                unrequested += 1;
            }
        }
        let out = s.d.cmd("kv check", T)?;
        let (_, lost) =
            kv_check(&out).ok_or_else(|| anyhow::anyhow!("no kv check result in {out:?}"))?;
        s.d.send("poweroff");
        Ok(ResurrectRun {
            latency_ms,
            all_running_ms,
            lost,
            unrequested,
            interrupted,
            snapshot_ms,
            snapshot_bytes,
        })
    })();
    if result.is_err() {
        s.stop.stop();
    }
    let joined = s.join();
    match (result, joined) {
        (Err(e), Ok((_, VmOutcome::Crash(info), _))) => Err(anyhow::anyhow!(
            "{e}: the guest crashed for good ({}{})",
            info.summary(),
            info.fallback
                .as_ref()
                .map(|f| format!("; not resurrected: {f}"))
                .unwrap_or_default()
        )),
        (result, _) => result,
    }
}

/// The next resurrection's report; an error when none comes within `T`
/// or the VM stopped meanwhile (a crash that was not resurrected).
fn recv_recovery(rx: &Receiver<Recovery>, s: &Session) -> anyhow::Result<Recovery> {
    let deadline = Instant::now() + T;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => return Ok(r),
            Err(_) if s.finished() => anyhow::bail!("the VM stopped instead of resurrecting"),
            Err(_) if Instant::now() >= deadline => {
                anyhow::bail!("no resurrection within {T:?} (did the repair fall back?)")
            }
            Err(_) => {}
        }
    }
}

/// A VM of the benchmark's image with the disk at `path` (created empty
/// when missing).
fn new_vm_with_disk(
    image: &BootImage,
    args: &BenchRecoveryArgs,
    path: &std::path::Path,
) -> anyhow::Result<(Vm, Driver)> {
    let (disk, _) = DiskImage::open_or_create(path, DEFAULT_DISK_SIZE)
        .map_err(|e| failure(INTERNAL, e.to_string()))?;
    bench_vm::new_vm_with(image, &args.image, None, |c| {
        c.virtio.push(Box::new(Block::new(disk)));
    })
}

fn bench_reboot(
    image: &BootImage,
    args: &BenchRecoveryArgs,
    kinds: &[String],
) -> anyhow::Result<(Mode, KvLogReplay)> {
    let runs = args.crashes.min(args.reboot_samples).max(1);
    let mut samples = Vec::new();
    let mut lost = 0;
    let mut replay = KvLogReplay::default();
    let dir = tempfile::Builder::new()
        .prefix("lazarus-bench-reboot-")
        .tempdir()
        .map_err(|e| failure(INTERNAL, format!("temporary directory: {e}")))?;
    for i in 0..runs {
        let kind = &kinds[i % kinds.len()];
        // A fresh disk per sample: every sample starts from the same state.
        let disk = dir.path().join(format!("disk-{i}.img"));
        let (vm, d) = new_vm_with_disk(image, args, &disk)?;
        let mut s = Session::start(vm, d);
        let step = (|| -> anyhow::Result<()> {
            s.d.expect(PROMPT, T)?;
            // Older data, on the disk by the crash; then recent writes,
            // which the crash comes right after.
            s.d.cmd(&format!("kv fill {}", args.keys), T)?;
            wait_flushed(&mut s.d)?;
            s.d.cmd(&format!("kv fill {} recent", recent_keys(args)), T)?;
            s.d.send(&format!("crash {kind}"));
            Ok(())
        })();
        if step.is_err() {
            s.stop.stop();
        }
        let (old, outcome, _) = s.join()?;
        step?;
        let VmOutcome::Crash(info) = outcome else {
            anyhow::bail!("reboot baseline: expected a crash, got {outcome:?}");
        };
        let t0 = info.detected_at;
        // The old VM lets go of the disk (and its lock) first.
        drop(old);
        // The reboot: a new VM from the boot image, on the same disk.
        let (vm, d) = new_vm_with_disk(image, args, &disk)?;
        vm.set_stop_milestone(Some(MILESTONE_SHELL_PROMPT));
        let s = Session::start(vm, d);
        let (vm, outcome, d) = s.join()?;
        let VmOutcome::MilestoneReached(_) = outcome else {
            anyhow::bail!("reboot baseline: the new guest did not reach its prompt: {outcome:?}");
        };
        let prompt = vm
            .milestone(MILESTONE_SHELL_PROMPT)
            .ok_or_else(|| anyhow::anyhow!("no prompt milestone"))?;
        samples.push(ms(prompt.at.saturating_duration_since(t0)));
        // What survived: count the keys the new guest's store holds.
        vm.set_stop_milestone(None);
        let mut s = Session::start(vm, d);
        let counted = (|| -> anyhow::Result<(u64, String)> {
            s.d.expect(PROMPT, T)?;
            // Answered once the kvstore's replay is done.
            let out = s.d.cmd("kv count", T)?;
            let console = s.d.take_since_mark();
            s.d.send("poweroff");
            Ok((first_number(&out).unwrap_or(0), console))
        })();
        if counted.is_err() {
            s.stop.stop();
        }
        let _ = s.join();
        let (count, console) = counted?;
        let lost_now = (args.keys + recent_keys(args)).saturating_sub(count);
        lost += lost_now;
        replay.writes_lost_since_flush += lost_now;
        if let Some((keys, ms)) = parse_restored(&console) {
            replay.keys_restored += keys;
            replay.replay_ms.push(ms);
        }
    }
    let written = (args.keys + recent_keys(args)) * runs as u64;
    Ok((mode(samples, lost, written), replay))
}

/// Keys the reboot baseline writes just before its crash: a tenth of
/// `--keys`, at least one.
fn recent_keys(args: &BenchRecoveryArgs) -> u64 {
    (args.keys / 10).max(1)
}

/// Waits until the kv store has flushed its log (it does every second).
fn wait_flushed(d: &mut Driver) -> anyhow::Result<()> {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if d.cmd("kv stats", T)?.contains("unflushed=0") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    anyhow::bail!("reboot baseline: the kv store never flushed its log")
}

fn first_number(s: &str) -> Option<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())?
        .parse()
        .ok()
}

/// Snapshots every interval while writing keys one by one; after the
/// crash, restores the latest snapshot.
fn bench_snapshot(
    image: &BootImage,
    args: &BenchRecoveryArgs,
    kinds: &[String],
) -> anyhow::Result<Mode> {
    let runs = args.crashes.min(args.snapshot_samples).max(1);
    let interval = Duration::from_secs_f64(args.snapshot_interval);
    let mut samples = Vec::new();
    let (mut lost, mut written) = (0u64, 0u64);
    let (vm, d) = new_vm(image, args, None)?;
    vm.set_stop_milestone(Some(MILESTONE_SHELL_PROMPT));
    let (mut vm, _, mut d) = Session::start(vm, d).join()?;
    vm.set_stop_milestone(None);
    let mut snap: Option<VmSnapshot> = None;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..runs {
        let kind = &kinds[i % kinds.len()];
        // Crash somewhere inside the interval after the last snapshot.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let crash_after = interval.mul_f64((seed % 1000) as f64 / 1000.0);
        snap = Some(vm.snapshot(snap.take())?);
        let since_snapshot = Instant::now();
        let mut s = Session::start(vm, d);
        let mut acked = 0u64;
        let step = (|| -> anyhow::Result<()> {
            s.d.resync()?;
            while since_snapshot.elapsed() < crash_after {
                s.d.cmd(&format!("kv put bench{i}-{acked} v{acked}"), T)?;
                acked += 1;
            }
            s.d.send(&format!("crash {kind}"));
            Ok(())
        })();
        if step.is_err() {
            s.stop.stop();
        }
        let (v, outcome, dd) = s.join()?;
        step?;
        let VmOutcome::Crash(info) = outcome else {
            anyhow::bail!("snapshot baseline: expected a crash, got {outcome:?}");
        };
        vm = v;
        d = dd;
        let snapshot = snap
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no snapshot"))?;
        vm.restore(snapshot)?;
        samples.push(ms(info.detected_at.elapsed()));
        lost += acked;
        written += acked;
    }
    let mut s = Session::start(vm, d);
    let _ = s.d.resync();
    s.d.send("poweroff");
    let _ = s.join();
    Ok(mode(samples, lost, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kvstores_restore_line() {
        let console = "lazarus> kvstore: restored 1980 keys from the disk log (1980 changes in 330 blocks, generation 0, 70 ms); changes after its last flush were lost\n";
        assert_eq!(parse_restored(console), Some((1980, 70)));
        assert_eq!(parse_restored("kv: 0 keys"), None);
    }
}
