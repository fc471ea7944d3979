//! `lazarus bench ipc`: kv store request latency, timed inside the guest,
//! in four conditions side by side: each vCPU count of `--vcpus-list`
//! (1 and 2 by default), idle and loaded with CPU-bound `worker`s.
//!
//! One boot per vCPU count. The guest's `kvbench` program times every
//! request with the TSC (a ring-3 instruction, no exit) and prints one
//! result line, which is all the host reads: the console's own cost never
//! enters a sample. The idle run calibrates the TSC against the kernel's
//! clock; the loaded run, started once every worker has reported, uses
//! that rate, because a process sharing its CPU with busy workers cannot
//! watch the clock's tick edges closely enough to calibrate well. The
//! host measures its own TSC rate too, as a cross-check.

use std::time::{Duration, Instant};

use lazarus_campaign::driver::{Driver, PROMPT};
use serde::Serialize;

use crate::bench_vm::{self, Session};
use crate::cli::BenchIpcArgs;
use crate::exit::{INTERNAL, failure};
use crate::image::BootImage;

/// Boot to the prompt, and any short shell command.
const T: Duration = Duration::from_secs(60);
/// What a loaded request may take, for the command's timeout: workers
/// take whole 10 ms time slices, and a request waits for a few of them.
const SLOW_REQUEST: Duration = Duration::from_millis(200);
/// How long the loaded condition's workers may take to report once.
const WORKERS_UP: Duration = Duration::from_secs(30);
/// Workers run at most this long (seconds); the guest powers off first.
const WORKER_SECONDS: u32 = 3600;
/// The targets, reported for scale (not enforced).
const TARGET_IDLE_MEDIAN_US: f64 = 2000.0;
const TARGET_LOADED_OVER_IDLE: f64 = 2.0;
/// Guest and host TSC rates further apart than this get a warning.
const TSC_AGREEMENT: f64 = 0.02;

/// One `kvbench:` result line.
#[derive(Debug, Clone, PartialEq)]
struct KvbenchLine {
    n: u64,
    median_us: f64,
    p99_us: f64,
    min_us: f64,
    max_us: f64,
    mean_us: f64,
    tsc_khz: u64,
    /// `Some` when the guest calibrated (not given the rate).
    cal_err_ppm: Option<u64>,
}

/// Finds and parses the `kvbench: n=.. median_us=..` line in `out`.
fn parse_kvbench(out: &str) -> Option<KvbenchLine> {
    let at = out.find("kvbench: n=")?;
    let line = out[at + "kvbench: ".len()..].lines().next()?;
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    };
    let f = |key: &str| field(key)?.parse::<f64>().ok().filter(|v| v.is_finite());
    let u = |key: &str| field(key)?.parse::<u64>().ok();
    let cal_err_ppm = match field("cal")? {
        "measured" => Some(u("cal_err_ppm")?),
        "given" => None,
        _ => return None,
    };
    Some(KvbenchLine {
        n: u("n")?,
        median_us: f("median_us")?,
        p99_us: f("p99_us")?,
        min_us: f("min_us")?,
        max_us: f("max_us")?,
        mean_us: f("mean_us")?,
        tsc_khz: u("tsc_khz")?.max(1),
        cal_err_ppm,
    })
}

#[derive(Debug, Serialize)]
struct Condition {
    vcpus: u32,
    /// `idle` or `loaded`.
    load: &'static str,
    /// CPU-bound workers running meanwhile.
    workers: u32,
    /// Requests timed.
    requests: u64,
    median_us: f64,
    p99_us: f64,
    min_us: f64,
    max_us: f64,
    mean_us: f64,
    /// The TSC rate the guest converted with.
    tsc_khz: u64,
    /// `measured` (calibrated in this run) or `idle-run` (the idle
    /// condition's rate, same boot).
    calibration: &'static str,
    /// The calibration's error bound, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    calibration_error_ppm: Option<u64>,
}

impl Condition {
    fn new(vcpus: u32, load: &'static str, workers: u32, k: KvbenchLine) -> Condition {
        Condition {
            vcpus,
            load,
            workers,
            requests: k.n,
            median_us: k.median_us,
            p99_us: k.p99_us,
            min_us: k.min_us,
            max_us: k.max_us,
            mean_us: k.mean_us,
            tsc_khz: k.tsc_khz,
            calibration: if k.cal_err_ppm.is_some() {
                "measured"
            } else {
                "idle-run"
            },
            calibration_error_ppm: k.cal_err_ppm,
        }
    }
}

/// Loaded over idle, for one vCPU count.
#[derive(Debug, Serialize)]
struct Ratio {
    vcpus: u32,
    median: f64,
    p99: f64,
}

#[derive(Debug, Serialize)]
struct Targets {
    idle_median_us: f64,
    loaded_over_idle_median: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    requests: u32,
    memory_mib: u64,
    vcpus_list: Vec<u32>,
    workers_per_vcpu: u32,
    /// Two per vCPU count: idle, then loaded.
    conditions: Vec<Condition>,
    loaded_over_idle: Vec<Ratio>,
    /// The host's TSC rate, measured against its monotonic clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    host_tsc_khz: Option<u64>,
    /// The targets, for scale (not enforced).
    targets: Targets,
}

pub fn run(args: &BenchIpcArgs) -> anyhow::Result<u8> {
    let mut image = BootImage::load(&args.image)?;
    let mut counts: Vec<u32> = Vec::new();
    for &n in &args.vcpus_list {
        if !counts.contains(&n) {
            counts.push(n);
        }
    }
    let host_tsc_khz = host_tsc_khz();
    let mut conditions = Vec::new();
    let mut ratios = Vec::new();
    for &n in &counts {
        image.vcpus = n;
        let workers = n * args.workers_per_vcpu;
        if !args.json {
            eprintln!("bench ipc: {n} vCPU(s), idle, then with {workers} workers");
        }
        let (idle, loaded) = bench_one(&image, args, workers)
            .map_err(|e| e.context(format!("bench ipc with {n} vCPU(s)")))?;
        ratios.push(Ratio {
            vcpus: n,
            median: loaded.median_us / idle.median_us,
            p99: loaded.p99_us / idle.p99_us,
        });
        if let Some(host) = host_tsc_khz {
            let off = (idle.tsc_khz as f64 - host as f64).abs() / host as f64;
            if off > TSC_AGREEMENT {
                eprintln!(
                    "bench ipc: warning: the guest's TSC calibration ({} kHz) is {:.1}% off the host's TSC rate ({host} kHz)",
                    idle.tsc_khz,
                    off * 100.0
                );
            }
        }
        conditions.push(Condition::new(n, "idle", 0, idle));
        conditions.push(Condition::new(n, "loaded", workers, loaded));
    }
    let report = Report {
        requests: args.requests,
        memory_mib: image.memory_mib,
        vcpus_list: counts,
        workers_per_vcpu: args.workers_per_vcpu,
        conditions,
        loaded_over_idle: ratios,
        host_tsc_khz,
        targets: Targets {
            idle_median_us: TARGET_IDLE_MEDIAN_US,
            loaded_over_idle_median: TARGET_LOADED_OVER_IDLE,
        },
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(0)
}

/// One boot: kvbench idle, then with `workers` workers running.
fn bench_one(
    image: &BootImage,
    args: &BenchIpcArgs,
    workers: u32,
) -> anyhow::Result<(KvbenchLine, KvbenchLine)> {
    let (vm, d) = bench_vm::new_vm(image, &args.image, None)?;
    let mut s = Session::start(vm, d);
    let kvbench_timeout = T + SLOW_REQUEST * args.requests;
    let result = (|| -> anyhow::Result<(KvbenchLine, KvbenchLine)> {
        s.d.expect(PROMPT, T)?;
        let idle = kvbench(
            &mut s.d,
            &format!(
                "run kvbench {} cal_ms={}",
                args.requests, args.calibration_ms
            ),
            kvbench_timeout,
        )?;
        s.d.mark();
        for i in 0..workers {
            s.d.cmd(&format!("run worker load{i} {WORKER_SECONDS} &"), T)?;
        }
        wait_for_workers(&s.d, workers)?;
        let loaded = kvbench(
            &mut s.d,
            &format!("run kvbench {} tsc_khz={}", args.requests, idle.tsc_khz),
            kvbench_timeout,
        )?;
        s.d.send("poweroff");
        Ok((idle, loaded))
    })();
    s.finish(result)
}

/// Runs one kvbench command and parses its result line.
fn kvbench(d: &mut Driver, line: &str, timeout: Duration) -> anyhow::Result<KvbenchLine> {
    let out = d.cmd(line, timeout)?;
    parse_kvbench(&out).ok_or_else(|| {
        let said: Vec<&str> = out.lines().filter(|l| l.contains("kvbench")).collect();
        failure(
            INTERNAL,
            format!("`{line}` printed no result line: {}", said.join(" / ")),
        )
    })
}

/// Waits until each of the `n` workers has reported a round: they are
/// all running (and past their start-up) when the loaded run begins.
fn wait_for_workers(d: &Driver, n: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + WORKERS_UP;
    loop {
        let text = d.take_since_mark();
        if (0..n).all(|i| text.contains(&format!("worker load{i}: round"))) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(failure(
                INTERNAL,
                format!("the {n} workers did not all report within {WORKERS_UP:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The host's TSC rate in kHz over 100 ms of its monotonic clock; `None`
/// if the TSC did not advance.
fn host_tsc_khz() -> Option<u64> {
    fn rdtsc() -> u64 {
        // SAFETY: rdtsc only reads the time-stamp counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    let (t0, c0) = (Instant::now(), rdtsc());
    std::thread::sleep(Duration::from_millis(100));
    let (c1, t1) = (rdtsc(), Instant::now());
    let ns = t1.duration_since(t0).as_nanos();
    let ticks = u128::from(c1.checked_sub(c0).filter(|&t| t > 0)?);
    u64::try_from(ticks * 1_000_000 / ns.max(1)).ok()
}

fn print_table(r: &Report) {
    println!(
        "kv request latency, timed in the guest: {} requests per condition (put and get alternating), {} MiB; loaded: {} workers per vCPU",
        r.requests, r.memory_mib, r.workers_per_vcpu
    );
    println!(
        "{:>5} {:<8} {:>12} {:>12} {:>12} {:>12}",
        "vCPUs", "load", "median us", "p99 us", "min us", "max us"
    );
    for c in &r.conditions {
        println!(
            "{:>5} {:<8} {:>12.1} {:>12.1} {:>12.1} {:>12.1}",
            c.vcpus, c.load, c.median_us, c.p99_us, c.min_us, c.max_us
        );
    }
    for q in &r.loaded_over_idle {
        println!(
            "loaded/idle with {} vCPU(s): median {:.1}x, p99 {:.1}x",
            q.vcpus, q.median, q.p99
        );
    }
    for c in r.conditions.iter().filter(|c| c.calibration == "measured") {
        println!(
            "TSC with {} vCPU(s): {} kHz calibrated in the guest (error bound {:.2}%){}",
            c.vcpus,
            c.tsc_khz,
            c.calibration_error_ppm.unwrap_or(0) as f64 / 1e4,
            r.host_tsc_khz
                .map(|h| format!("; the host's TSC: {h} kHz"))
                .unwrap_or_default()
        );
    }
    println!(
        "targets: idle median <= {:.0} us, loaded median <= {:.0}x idle",
        r.targets.idle_median_us, r.targets.loaded_over_idle_median
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_measured_line_among_other_output() {
        let out = "run kvbench 300\nworker load0: round 3\nkvbench: n=300 median_us=4527.8 p99_us=8645.1 min_us=3809.3 max_us=8963.4 mean_us=4783.4 tsc_khz=2099712 cal=measured cal_ms=200 cal_err_ppm=4538\n";
        let k = parse_kvbench(out).expect("line");
        assert_eq!(k.n, 300);
        assert_eq!(k.median_us, 4527.8);
        assert_eq!(k.p99_us, 8645.1);
        assert_eq!(k.tsc_khz, 2_099_712);
        assert_eq!(k.cal_err_ppm, Some(4538));
    }

    #[test]
    fn parses_a_given_rate_and_refuses_garbage() {
        let given = "kvbench: n=5 median_us=1.0 p99_us=2.0 min_us=0.5 max_us=2.0 mean_us=1.2 tsc_khz=2100000 cal=given";
        assert_eq!(parse_kvbench(given).expect("line").cal_err_ppm, None);
        for bad in [
            "",
            "kvbench: request 3 (kvbench-01): EAGAIN",
            "kvbench: n=5 median_us=x p99_us=2 min_us=1 max_us=2 mean_us=1 tsc_khz=1 cal=given",
            "kvbench: n=5 median_us=1 p99_us=2 min_us=1 max_us=2 mean_us=1 tsc_khz=1",
            "kvbench: n=5 median_us=1 p99_us=2 min_us=1 max_us=2 mean_us=1 tsc_khz=1 cal=measured",
            "kvbench: n=5 median_us=NaN p99_us=2 min_us=1 max_us=2 mean_us=1 tsc_khz=1 cal=given",
        ] {
            assert_eq!(parse_kvbench(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn host_tsc_is_plausible() {
        let khz = host_tsc_khz().expect("a running TSC");
        assert!((100_000..20_000_000).contains(&khz), "{khz}");
    }
}
