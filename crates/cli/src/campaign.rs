//! `lazarus campaign`: fault-injection campaigns (issue 5), in the manner
//! of Rio, Nooks and MINIX 3's driver fault injection.
//!
//! One VM runs the standard workload: the kv store with verified keys, two
//! workers that check their own memory, and `extclient`, which keeps using
//! the target extension (ramdisk) so that faults injected into its code are
//! activated. Faults are injected one after another from the host (no
//! guest cooperation, see `lazarus-inject`) or by a crash-test kind typed
//! into the shell. After every fault the survivors are verified and the
//! outcome classified:
//!
//! - `not-activated`: nothing happened within the activation window and
//!   every survivor is intact; the injected bytes are put back;
//! - `recovered`: resurrected, the offender quarantined, survivors intact;
//! - `recovered-by-reboot`: the hypervisor fell back to a reboot;
//! - `hung`: the shell stopped answering (the VM is rebooted);
//! - `silent-corruption`: `kv check` lost keys, a worker found its state
//!   corrupt, or extclient read back wrong data.
//!
//! Unlike `lazarus run`, a campaign writes no crash dumps: a thousand
//! faults would fill the disk with cores nobody reads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lazarus_inject::{FaultSpec, FaultType, Injection, Injector};
use lazarus_resurrect::{Fallback, Recovery, ResurrectConfig};
use lazarus_vmm::control::MemoryUsage;
use lazarus_vmm::{ConsoleOutput, StopHandle, Vm, VmControl, VmOutcome};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::bench::stats;
use crate::cli::ImageArgs;
use crate::driver::{Driver, kv_check};
use crate::exit::{BAD_INPUT, INTERNAL, failure};
use crate::image::BootImage;

/// The crash-test kinds a campaign triggers (the guest's `crash list`).
const CRASH_KINDS: &[&str] = &[
    "panic",
    "null-read",
    "wild-write",
    "gp",
    "ud2",
    "divide",
    "stack-overflow",
    "hard-lockup",
    "soft-lockup",
    "deadlock",
    "double-fault",
    "list-corruption",
    "timer-fault",
    "triple-fault",
    "emulation-failure",
    "corrupt-code",
    // Not crashes: the extension fails its caller (the client reports
    // it, or the kernel catches a broken contract).
    "fail-silent",
    "overlong-read",
];
/// The pseudo fault type that runs a crash-test kind.
const CRASH_TEST: &str = "crash-test";
const SHELL_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Args)]
pub struct CampaignArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Faults to inject (ignored with --soak).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub faults: u64,
    /// Seed: the same seed on the same image gives the same faults.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Fault types to draw from, comma-separated: bit-flip,
    /// replace-instruction, corrupt-register, delete-branch,
    /// wild-write-kernel, wild-write-struct, corrupt-stack, crash-test.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Extension whose code faults are injected into.
    #[arg(long, value_name = "NAME", default_value = "ramdisk")]
    pub ext: String,
    /// kv keys written and verified after every fault (each check is a
    /// round trip per key through the kv store, competing with the
    /// workers for the CPU).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub keys: u64,
    /// How long a fault has to show itself before it counts as not
    /// activated (milliseconds).
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub window_ms: u64,
    /// Keep injecting for this long instead of --faults (e.g. 10m, 600s),
    /// and sample the memory of the guest kernel and the hypervisor.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub soak: Option<Duration>,
    /// Write the full results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the latency distribution and the outcomes per type as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// No progress bar (also off when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// How one fault ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    NotActivated,
    Recovered,
    RecoveredByReboot,
    Hung,
    SilentCorruption,
    /// Activated without crashing the kernel: the extension returned
    /// errors or stopped serving its client (a fail-silent driver).
    /// Survivors' data intact; the campaign removes the fault.
    ExtensionFailed,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::NotActivated,
        Outcome::Recovered,
        Outcome::RecoveredByReboot,
        Outcome::Hung,
        Outcome::SilentCorruption,
        Outcome::ExtensionFailed,
    ];

    fn name(self) -> &'static str {
        match self {
            Outcome::NotActivated => "not-activated",
            Outcome::Recovered => "recovered",
            Outcome::RecoveredByReboot => "recovered-by-reboot",
            Outcome::Hung => "hung",
            Outcome::SilentCorruption => "silent-corruption",
            Outcome::ExtensionFailed => "extension-failed",
        }
    }
}

/// One injected fault and what became of it.
#[derive(Debug, Serialize)]
struct FaultRecord {
    n: u64,
    fault: String,
    target: String,
    detail: String,
    outcome: Outcome,
    /// Recovery latency, when resurrected.
    latency_ms: Option<f64>,
    /// What the hypervisor said (recovery line, fallback reason, hang).
    note: String,
}

#[derive(Debug, Serialize)]
struct LatencySummary {
    samples: usize,
    median: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct MemorySample {
    t_s: f64,
    faults: u64,
    host_rss_kib: Option<u64>,
    /// Guest RAM pages resident in the hypervisor's memory.
    guest_ram_resident_kib: Option<u64>,
    /// The hypervisor's own memory: its RSS less the guest RAM in it.
    vmm_own_kib: Option<u64>,
    guest_frames_used: Option<u64>,
    guest_heap_used_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Report {
    faults: u64,
    seed: u64,
    ext: String,
    types: Vec<String>,
    duration_s: f64,
    boots: u64,
    outcomes: BTreeMap<&'static str, u64>,
    by_type: BTreeMap<String, BTreeMap<&'static str, u64>>,
    latency_ms: LatencySummary,
    /// Recovered (by resurrection) out of all activated faults.
    recovery_rate: f64,
    memory: Vec<MemorySample>,
    records: Vec<FaultRecord>,
}

/// A booted VM with the workload running, driven from this thread.
struct Session {
    d: Driver,
    control: VmControl,
    stop: StopHandle,
    recoveries: Receiver<Recovery>,
    thread: Option<JoinHandle<anyhow::Result<VmOutcome>>>,
    /// Pids of the workload, by the command that restarts it.
    roles: BTreeMap<u32, &'static str>,
    keys: u64,
    /// extclient's last report before the current fault.
    ext_progress: ExtProgress,
    /// A fault left the guest unusable for the next one: start over.
    broken: bool,
}

const WORKLOAD: &[&str] = &[
    "run worker alpha 1000000 &",
    "run worker beta 1000000 &",
    "run extclient &",
];

impl Session {
    fn boot(image: &BootImage, args: &CampaignArgs) -> anyhow::Result<Session> {
        let (d, input, tee) = Driver::new(None);
        let mut config = image.config(&args.image);
        config.console_in = input;
        config.console_out = ConsoleOutput::Writer(Box::new(tee));
        let (tx, recoveries) = channel();
        let mut rc = ResurrectConfig::new(lazarus_image::REPAIR_ELF);
        rc.listener = Some(tx);
        config.crash_handler = Some(Box::new(rc));
        let mut vm = Vm::new(config).map_err(|e| image.explain(e))?;
        let control = vm.control();
        let stop = vm.stop_handle();
        let thread = std::thread::spawn(move || vm.run().map_err(anyhow::Error::from));
        let mut s = Session {
            d,
            control,
            stop,
            recoveries,
            thread: Some(thread),
            roles: BTreeMap::new(),
            keys: args.keys,
            ext_progress: ExtProgress::default(),
            broken: false,
        };
        s.d.expect(crate::driver::PROMPT, Duration::from_secs(60))
            .context("the guest did not reach its shell")?;
        s.d.cmd(&format!("kv fill {}", s.keys), SHELL_TIMEOUT)?;
        s.d.cmd(&format!("insmod {}", args.ext), SHELL_TIMEOUT)?;
        for w in WORKLOAD {
            s.start(w)?;
        }
        s.d.resync()?;
        // extclient's counters before the first fault.
        std::thread::sleep(Duration::from_millis(500));
        s.ext_progress = last_ext_report(&s.d.take_since_mark()).unwrap_or_default();
        s.d.mark();
        Ok(s)
    }

    /// Starts a background job and remembers its pid.
    fn start(&mut self, cmd: &'static str) -> anyhow::Result<()> {
        let out = self.d.cmd(cmd, SHELL_TIMEOUT)?;
        let pid = out
            .split("[pid ")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("{cmd:?} printed no pid: {out:?}"))?;
        self.roles.insert(pid, cmd);
        Ok(())
    }

    fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the VM and returns how its run ended.
    fn shut_down(mut self) -> Option<VmOutcome> {
        self.stop.stop();
        let t = self.thread.take()?;
        t.join().ok()?.ok()
    }
}

/// What the survivors looked like.
struct Verdict {
    responsive: bool,
    corrupt: Option<String>,
}

/// Checks the survivors: the shell answers, every kv key is intact, the
/// workers report progress with intact state, extclient read back what it
/// wrote. `since` is the console position before the fault.
fn verify(s: &mut Session, console_before: &str) -> Verdict {
    let out = match s.d.cmd("kv check", SHELL_TIMEOUT) {
        Ok(o) => o,
        Err(_) => {
            return Verdict {
                responsive: false,
                corrupt: None,
            };
        }
    };
    let mut corrupt = match kv_check(&out) {
        Some((intact, 0)) if intact == s.keys => None,
        Some((intact, lost)) => Some(format!("kv check: {intact} intact, {lost} lost")),
        None => Some(format!("kv check answered {out:?}")),
    };
    if corrupt.is_none() {
        corrupt = console_before
            .lines()
            .find(|l| l.contains("STATE CORRUPT") || l.contains("MISMATCH"))
            .map(str::to_string);
    }
    Verdict {
        responsive: true,
        corrupt,
    }
}

fn parse_types(args: &CampaignArgs) -> anyhow::Result<Vec<String>> {
    let all: Vec<String> = FaultType::ALL
        .iter()
        .map(|t| t.name().to_string())
        .chain([CRASH_TEST.to_string()])
        .collect();
    if args.types.is_empty() {
        return Ok(all);
    }
    for t in &args.types {
        if !all.contains(t) {
            return Err(failure(
                BAD_INPUT,
                format!("unknown fault type {t:?}; known: {}", all.join(", ")),
            ));
        }
    }
    Ok(args.types.clone())
}

pub fn run(args: &CampaignArgs) -> anyhow::Result<u8> {
    let types = parse_types(args)?;
    if args.soak.is_none() && args.faults == 0 {
        return Err(failure(BAD_INPUT, "--faults must be at least 1"));
    }
    if args.keys == 0 || args.window_ms == 0 {
        return Err(failure(
            BAD_INPUT,
            "--keys and --window-ms must be positive",
        ));
    }
    let image = BootImage::load(&args.image)?;
    let start = Instant::now();
    let deadline = args.soak.map(|d| start + d);
    let total = if args.soak.is_some() { 0 } else { args.faults };

    let bar = if args.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    let style = match args.soak {
        Some(_) => ProgressStyle::with_template("{spinner} {elapsed_precise} {pos} faults {msg}"),
        None => ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {pos}/{len} faults (eta {eta}) {msg}",
        ),
    }
    .map_err(|e| failure(INTERNAL, format!("progress bar: {e}")))?;
    bar.set_style(style);

    let mut injector = Injector::new(args.seed);
    // Fault types and crash kinds come from their own stream, so the
    // choice does not depend on how many random numbers an injection used.
    let mut pick = ChaCha8Rng::seed_from_u64(args.seed ^ 0x5eed_7e57);
    let mut records: Vec<FaultRecord> = Vec::new();
    let mut memory: Vec<MemorySample> = Vec::new();
    let mut boots = 1u64;
    let mut session = Session::boot(&image, args)?;
    let mut last_sample = Instant::now() - Duration::from_secs(3600);
    let sample_every = Duration::from_secs(5);

    let mut n = 0u64;
    loop {
        let more = match deadline {
            Some(d) => Instant::now() < d,
            None => n < total,
        };
        if !more {
            break;
        }
        if last_sample.elapsed() >= sample_every {
            memory.push(sample(&session.control, start, n));
            last_sample = Instant::now();
        }
        n += 1;
        let fault = types[pick.random_range(0..types.len())].clone();
        let rec = one_fault(&mut session, &mut injector, &mut pick, args, n, &fault);
        let rec = match rec {
            Ok(r) => r,
            Err(e) => FaultRecord {
                n,
                fault: fault.clone(),
                target: String::new(),
                detail: String::new(),
                outcome: Outcome::Hung,
                latency_ms: None,
                note: format!("{e:#}"),
            },
        };
        let reboot = matches!(rec.outcome, Outcome::Hung | Outcome::RecoveredByReboot)
            || session.finished()
            || session.broken;
        bar.set_message(format!("last: {} {}", rec.fault, rec.outcome.name()));
        bar.inc(1);
        let silent = rec.outcome == Outcome::SilentCorruption;
        records.push(rec);
        if reboot || silent {
            // A fresh VM and workload: a reboot fallback lost the guest's
            // state, a hang needs a new guest, and after corruption the
            // survivors' data can no longer be trusted.
            let _ = session.shut_down();
            session = Session::boot(&image, args)?;
            boots += 1;
        }
    }
    memory.push(sample(&session.control, start, n));
    bar.finish_and_clear();
    let _ = session.shut_down();

    let report = summarize(args, types, start.elapsed(), boots, records, memory);
    print_table(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        crate::campaign_plot::draw(path, &report_plot_data(&report))
            .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
    }
    Ok(0)
}

fn sample(control: &VmControl, start: Instant, faults: u64) -> MemorySample {
    let m: MemoryUsage = control.memory_usage();
    let guest = control
        .root_gpa()
        .and_then(|gpa| lazarus_resurrect::guest_kernel_memory(control.memory(), gpa).ok());
    MemorySample {
        t_s: start.elapsed().as_secs_f64(),
        faults,
        host_rss_kib: m.host_rss_bytes.map(|b| b / 1024),
        guest_ram_resident_kib: m.guest_ram_resident_bytes.map(|b| b / 1024),
        vmm_own_kib: m.vmm_own_bytes().map(|b| b / 1024),
        guest_frames_used: guest.map(|g| g.frames_used),
        guest_heap_used_bytes: guest.map(|g| g.heap_used_bytes),
    }
}

/// Injects one fault and classifies what happened.
fn one_fault(
    s: &mut Session,
    injector: &mut Injector,
    pick: &mut ChaCha8Rng,
    args: &CampaignArgs,
    n: u64,
    fault: &str,
) -> anyhow::Result<FaultRecord> {
    // Drain what came before: the workload's output since the last
    // verification and any stale recovery report.
    while s.recoveries.try_recv().is_ok() {}
    let mut rec = FaultRecord {
        n,
        fault: fault.to_string(),
        target: String::new(),
        detail: String::new(),
        outcome: Outcome::NotActivated,
        latency_ms: None,
        note: String::new(),
    };
    let mut injection: Option<Injection> = None;
    if fault == CRASH_TEST {
        let kind = CRASH_KINDS[pick.random_range(0..CRASH_KINDS.len())];
        rec.target = format!("crash {kind}");
        s.d.send(&format!("crash {kind}"));
    } else {
        let ft: FaultType = fault.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut spec = FaultSpec::new(ft);
        if ft.targets_code() {
            spec = spec.with_ext(args.ext.clone());
        }
        let root = s
            .control
            .root_gpa()
            .context("the kernel has not registered its state root")?;
        // Inject with the vCPUs parked, so the injector reads a consistent
        // kernel state; the guard resumes them.
        let paused = s.control.pause(Duration::from_secs(1));
        let result = injector.inject(s.control.memory(), root, &spec);
        drop(paused);
        match result {
            Ok(inj) => {
                rec.target = inj.target.clone();
                rec.detail = inj.detail.clone();
                injection = Some(inj);
            }
            Err(e) => {
                // Nothing to inject into (e.g. the extension is being
                // reloaded): not a fault at all; say so and move on.
                rec.note = format!("not injected: {e}");
                return Ok(rec);
            }
        }
    }

    // Activation: a resurrection, or the VM thread ending (a fallback).
    let window = Duration::from_millis(args.window_ms);
    let wait = if fault == CRASH_TEST {
        // Lockups need the watchdog; give crash tests their time.
        Duration::from_secs(3)
    } else {
        window
    };
    let mut recovery = match s.recoveries.recv_timeout(wait) {
        Ok(r) => Some(r),
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => None,
    };
    if s.finished() {
        return Ok(fell_back(s, rec));
    }
    // No crash: did the extension stop working for its client instead
    // (errors, or no progress)? extclient reports every 200 ms.
    let mut ext_failed = None;
    if recovery.is_none() && injection.is_some() {
        let until = Instant::now() + EXT_REPORT_WAIT;
        let before = s.ext_progress;
        let mut after = None;
        while Instant::now() < until && recovery.is_none() {
            after = last_ext_report(&s.d.take_since_mark()).filter(|a| a.seq >= 2);
            if after.is_some() {
                break;
            }
            recovery = s.recoveries.recv_timeout(Duration::from_millis(50)).ok();
        }
        if recovery.is_none() {
            ext_failed = match after {
                Some(a) if a.errors > before.errors || a.ok <= before.ok => Some(format!(
                    "the extension failed its client without crashing: extclient ok {} -> {}, errors {} -> {}",
                    before.ok, a.ok, before.errors, a.errors
                )),
                Some(_) => None,
                None => Some("extclient stopped reporting".to_string()),
            };
        }
    }
    if recovery.is_none()
        && let Some(inj) = &injection
    {
        // Not activated as a crash: put the bytes back while they are ours.
        if inj.is_present(s.control.memory()) {
            let _ = inj.revert(s.control.memory());
        }
    }
    // Let the workload run a little after the fault, then verify.
    if s.d.resync().is_err() {
        if s.finished() {
            return Ok(fell_back(s, rec));
        }
        rec.outcome = Outcome::Hung;
        rec.note = "the shell stopped answering".into();
        return Ok(rec);
    }
    let console = s.d.take_since_mark();
    if recovery.is_none() {
        recovery = s.recoveries.try_recv().ok();
    }
    if let Some(r) = &recovery {
        rec.latency_ms = Some(r.latency.as_secs_f64() * 1e3);
        rec.note = r.summary();
        rec.outcome = Outcome::Recovered;
        restart_offender(s, r.plan.quarantined)?;
        // The kv data lives in kvstore and the record of what was written
        // in the shell: when either was the offender (init restarts both),
        // that state was the offender's own and is written anew.
        if matches!(lazarus_abi::name_str(&r.plan.name), "shell" | "kvstore") {
            s.d.resync()?;
            s.d.cmd(&format!("kv fill {}", s.keys), SHELL_TIMEOUT)?;
        }
    }
    let v = verify(s, &console);
    if let Some(why) = ext_failed
        && v.responsive
        && v.corrupt.is_none()
    {
        rec.outcome = Outcome::ExtensionFailed;
        rec.note = why;
        // With the bytes back, the extension must serve its client again;
        // if the fault left its state broken, start over on a fresh VM.
        if !ext_serves_again(s) {
            rec.note
                .push_str("; still failing after the fault was removed");
            s.broken = true;
        }
    }
    if !v.responsive {
        if s.finished() {
            return Ok(fell_back(s, rec));
        }
        rec.outcome = Outcome::Hung;
        rec.note = "the shell stopped answering".into();
    } else if let Some(why) = v.corrupt {
        rec.outcome = Outcome::SilentCorruption;
        rec.note = if rec.note.is_empty() {
            why
        } else {
            format!("{}; {why}", rec.note)
        };
    }
    s.ext_progress = last_ext_report(&s.d.take_since_mark()).unwrap_or(s.ext_progress);
    s.d.mark();
    Ok(rec)
}

/// How long to wait for extclient's reports after a fault that did not
/// crash the kernel (it reports every 200 ms).
const EXT_REPORT_WAIT: Duration = Duration::from_millis(1500);

/// extclient's counters from one report line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ExtProgress {
    /// Counts reports: a restarted extclient starts again from zero, so
    /// this is the campaign's own count, not extclient's round.
    seq: u64,
    ok: u64,
    errors: u64,
}

/// The last `extclient: round R ok O errors E mismatches M` line in
/// `text`; `seq` is the number of such lines.
fn last_ext_report(text: &str) -> Option<ExtProgress> {
    let mut last = None;
    let mut seq = 0;
    for line in text.lines().filter(|l| l.starts_with("extclient: round ")) {
        let nums: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if let [_, ok, errors, _] = nums[..] {
            seq += 1;
            last = Some(ExtProgress { seq, ok, errors });
        }
    }
    last
}

/// Waits for extclient to make progress without new errors.
fn ext_serves_again(s: &mut Session) -> bool {
    s.d.mark();
    let until = Instant::now() + Duration::from_secs(2);
    let mut first: Option<ExtProgress> = None;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        let Some(now) = last_ext_report(&s.d.take_since_mark()) else {
            continue;
        };
        match first {
            None => first = Some(now),
            Some(f) if now.seq > f.seq => return now.ok > f.ok && now.errors == f.errors,
            Some(_) => {}
        }
    }
    false
}

/// The VM thread ended during a fault: the hypervisor fell back to dump
/// and reboot (or, rarely, stopped for another reason).
fn fell_back(s: &mut Session, mut rec: FaultRecord) -> FaultRecord {
    let outcome = s.thread.take().and_then(|t| t.join().ok());
    match outcome {
        Some(Ok(VmOutcome::Crash(info))) => {
            rec.outcome = Outcome::RecoveredByReboot;
            rec.note = match Fallback::of(&info) {
                Some(why) => format!("{}; fell back ({}): {why}", info.summary(), why.code()),
                None => match &info.fallback {
                    Some(why) => format!("{}; fell back: {why}", info.summary()),
                    None => info.summary(),
                },
            };
        }
        other => {
            rec.outcome = Outcome::Hung;
            rec.note = format!("the VM stopped: {other:?}");
        }
    }
    rec
}

/// Restarts the workload process the repair quarantined, if it was one.
fn restart_offender(s: &mut Session, pid: u32) -> anyhow::Result<()> {
    if let Some(cmd) = s.roles.remove(&pid) {
        s.start(cmd)?;
    }
    Ok(())
}

fn summarize(
    args: &CampaignArgs,
    types: Vec<String>,
    took: Duration,
    boots: u64,
    records: Vec<FaultRecord>,
    memory: Vec<MemorySample>,
) -> Report {
    let empty = || {
        Outcome::ALL
            .iter()
            .map(|o| (o.name(), 0u64))
            .collect::<BTreeMap<_, _>>()
    };
    let mut outcomes = empty();
    let mut by_type: BTreeMap<String, BTreeMap<&'static str, u64>> =
        types.iter().map(|t| (t.clone(), empty())).collect();
    let mut latencies = Vec::new();
    for r in &records {
        *outcomes.entry(r.outcome.name()).or_default() += 1;
        *by_type
            .entry(r.fault.clone())
            .or_insert_with(empty)
            .entry(r.outcome.name())
            .or_default() += 1;
        if let Some(l) = r.latency_ms {
            latencies.push(l);
        }
    }
    let st = stats(&latencies);
    let activated = records
        .iter()
        .filter(|r| r.outcome != Outcome::NotActivated)
        .count();
    let recovered = outcomes.get("recovered").copied().unwrap_or(0);
    Report {
        faults: records.len() as u64,
        seed: args.seed,
        ext: args.ext.clone(),
        types,
        duration_s: took.as_secs_f64(),
        boots,
        outcomes,
        by_type,
        latency_ms: LatencySummary {
            samples: latencies.len(),
            median: st.median,
            p99: st.p99,
            max: st.max,
        },
        recovery_rate: if activated == 0 {
            f64::NAN
        } else {
            recovered as f64 / activated as f64
        },
        memory,
        records,
    }
}

fn print_table(r: &Report) {
    println!(
        "campaign: {} faults, seed {}, target extension {}, {:.0} s, {} boot(s)",
        r.faults, r.seed, r.ext, r.duration_s, r.boots
    );
    print!("{:<22}", "fault type");
    for o in Outcome::ALL {
        print!("{:>21}", o.name());
    }
    println!("{:>12}", "recovered%");
    let row = |name: &str, counts: &BTreeMap<&'static str, u64>| {
        print!("{name:<22}");
        for o in Outcome::ALL {
            print!("{:>21}", counts.get(o.name()).copied().unwrap_or(0));
        }
        let activated: u64 = Outcome::ALL
            .iter()
            .filter(|o| **o != Outcome::NotActivated)
            .map(|o| counts.get(o.name()).copied().unwrap_or(0))
            .sum();
        let rec = counts.get("recovered").copied().unwrap_or(0);
        if activated == 0 {
            println!("{:>12}", "-");
        } else {
            println!("{:>11.1}%", 100.0 * rec as f64 / activated as f64);
        }
    };
    for (t, counts) in &r.by_type {
        row(t, counts);
    }
    row("all", &r.outcomes);
    println!(
        "recovery latency: median {:.3} ms, p99 {:.3} ms, max {:.3} ms over {} resurrections",
        r.latency_ms.median, r.latency_ms.p99, r.latency_ms.max, r.latency_ms.samples
    );
    if let (Some(first), Some(last)) = (r.memory.first(), r.memory.last()) {
        println!(
            "memory: hypervisor's own {} -> {} KiB (RSS {} -> {} KiB with guest RAM); guest kernel frames {} -> {}, heap {} -> {} bytes ({} samples)",
            opt(first.vmm_own_kib),
            opt(last.vmm_own_kib),
            opt(first.host_rss_kib),
            opt(last.host_rss_kib),
            opt(first.guest_frames_used),
            opt(last.guest_frames_used),
            opt(first.guest_heap_used_bytes),
            opt(last.guest_heap_used_bytes),
            r.memory.len()
        );
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

fn report_plot_data(r: &Report) -> crate::campaign_plot::PlotData {
    crate::campaign_plot::PlotData {
        latencies_ms: r.records.iter().filter_map(|x| x.latency_ms).collect(),
        by_type: r
            .by_type
            .iter()
            .map(|(t, c)| {
                (
                    t.clone(),
                    Outcome::ALL
                        .iter()
                        .map(|o| (o.name(), c.get(o.name()).copied().unwrap_or(0)))
                        .collect(),
                )
            })
            .collect(),
        memory: r
            .memory
            .iter()
            .map(|m| crate::campaign_plot::MemPoint {
                t_s: m.t_s,
                rss_kib: m.host_rss_kib,
                vmm_own_kib: m.vmm_own_kib,
                guest_frames_used: m.guest_frames_used,
            })
            .collect(),
    }
}
