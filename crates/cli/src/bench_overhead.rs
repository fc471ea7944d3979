//! `lazarus bench overhead`: what the protection machinery costs in normal
//! running. The same image boots with it on (context seals, per-CPU
//! heartbeats and the hypervisor's watchdog, extension reply checks, a
//! repair image kept fresh by the resurrector) and off (the kernel's
//! `lazarus.protect=off`, no watchdog, no crash handler), alternately, and
//! runs the same fixed workloads (`/bin/overhead`), each timed by the guest
//! in TSC cycles. Same host, same TSC: the ratio on/off needs no
//! calibration. ALDR's goal was zero overhead; the target for ring-3 work
//! is 1% or less.

use std::time::Duration;

use lazarus_campaign::driver::Driver;
use lazarus_resurrect::ResurrectConfig;
use serde::Serialize;

use crate::bench_vm::{self, Session};
use crate::cli::BenchOverheadArgs;
use crate::exit::{INTERNAL, failure};
use crate::image::BootImage;

const PROMPT: &str = "lazarus> ";
const T: Duration = Duration::from_secs(60);
/// Each workload's own limit: the slowest one takes a few seconds here.
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// The workloads and their sizes (a few seconds each on these hosts).
const WORKLOADS: &[(&str, &str, u64)] = &[
    ("compute", "ring-3 hash chain (rounds of 2^20 steps)", 120),
    ("syscalls", "getpid system calls", 1500),
    ("pipe", "pipe round trips between two processes", 200),
    (
        "ext",
        "extension loads and unloads (repair image refreshes)",
        6,
    ),
];

#[derive(Debug, Serialize)]
struct Workload {
    name: &'static str,
    what: &'static str,
    n: u64,
    /// Cycles per run with the machinery on, one per boot.
    on_cycles: Vec<u64>,
    /// Likewise off.
    off_cycles: Vec<u64>,
    on_median: u64,
    off_median: u64,
    /// on / off of the medians.
    ratio: f64,
    /// (ratio - 1) in percent.
    overhead_pct: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    runs: u32,
    vcpus: u32,
    memory_mib: u64,
    workloads: Vec<Workload>,
    target_compute_overhead_pct: f64,
}

pub fn run(args: &BenchOverheadArgs) -> anyhow::Result<u8> {
    let image = BootImage::load(&args.image)?;
    let mut on: Vec<Vec<u64>> = vec![Vec::new(); WORKLOADS.len()];
    let mut off: Vec<Vec<u64>> = vec![Vec::new(); WORKLOADS.len()];
    for run in 0..args.runs {
        // Alternate the order, so that drift in the host's load does not
        // always favour the same side.
        let order = if run % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for protect in order {
            if !args.json {
                eprintln!(
                    "bench overhead: run {}/{}, protection {}",
                    run + 1,
                    args.runs,
                    if protect { "on" } else { "off" }
                );
            }
            let cycles = one_boot(&image, args, protect).map_err(|e| {
                e.context(format!(
                    "bench overhead with protection {}",
                    if protect { "on" } else { "off" }
                ))
            })?;
            let into = if protect { &mut on } else { &mut off };
            for (i, c) in cycles.into_iter().enumerate() {
                into[i].push(c);
            }
        }
    }
    let workloads = WORKLOADS
        .iter()
        .zip(on.into_iter().zip(off))
        .map(|(&(name, what, n), (on_cycles, off_cycles))| {
            let (on_median, off_median) = (median(&on_cycles), median(&off_cycles));
            let ratio = on_median as f64 / off_median.max(1) as f64;
            Workload {
                name,
                what,
                n,
                on_cycles,
                off_cycles,
                on_median,
                off_median,
                ratio,
                overhead_pct: (ratio - 1.0) * 100.0,
            }
        })
        .collect();
    let report = Report {
        runs: args.runs,
        vcpus: image.vcpus,
        memory_mib: image.memory_mib,
        workloads,
        target_compute_overhead_pct: 1.0,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(0)
}

fn median(v: &[u64]) -> u64 {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get(s.len() / 2).copied().unwrap_or(0)
}

/// One boot with the machinery on or off: every workload once.
fn one_boot(
    image: &BootImage,
    args: &BenchOverheadArgs,
    protect: bool,
) -> anyhow::Result<Vec<u64>> {
    let handler: Option<Box<dyn lazarus_vmm::CrashHandlerBuilder>> = if protect {
        Some(Box::new(ResurrectConfig::new(lazarus_image::REPAIR_ELF)))
    } else {
        None
    };
    let (vm, d) = bench_vm::new_vm_with(image, &args.image, handler, |c| {
        if !protect {
            c.cmdline = format!("{} lazarus.protect=off", c.cmdline)
                .trim()
                .to_string();
            c.watchdog = None;
        }
    })?;
    let mut s = Session::start(vm, d);
    let result = (|| -> anyhow::Result<Vec<u64>> {
        s.d.expect(PROMPT, T)?;
        let mut out = Vec::new();
        for &(name, _, n) in WORKLOADS {
            out.push(workload(&mut s.d, name, n)?);
        }
        s.d.send("poweroff");
        Ok(out)
    })();
    s.finish(result)
}

/// Runs `overhead NAME N` and returns its cycle count.
fn workload(d: &mut Driver, name: &str, n: u64) -> anyhow::Result<u64> {
    let line = format!("run overhead {name} {n}");
    let out = d.cmd(&line, WORKLOAD_TIMEOUT)?;
    parse_cycles(&out, name).ok_or_else(|| {
        let said: Vec<&str> = out.lines().filter(|l| l.contains("overhead")).collect();
        failure(
            INTERNAL,
            format!("`{line}` printed no result line: {}", said.join(" / ")),
        )
    })
}

/// `overhead: NAME n=N cycles=C` -> C.
fn parse_cycles(out: &str, name: &str) -> Option<u64> {
    let prefix = format!("overhead: {name} n=");
    let line = out.lines().find_map(|l| {
        let at = l.find(&prefix)?;
        Some(&l[at..])
    })?;
    let c = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cycles="))?;
    c.parse().ok().filter(|&c| c > 0)
}

fn print_table(r: &Report) {
    println!(
        "protection machinery on vs off, same image, {} vCPU(s), {} MiB, {} boot(s) each, median TSC cycles",
        r.vcpus, r.memory_mib, r.runs
    );
    println!(
        "{:<9} {:>6} {:>15} {:>15} {:>8} {:>9}  what",
        "workload", "n", "on", "off", "on/off", "overhead"
    );
    for w in &r.workloads {
        println!(
            "{:<9} {:>6} {:>15} {:>15} {:>8.3} {:>8.2}%  {}",
            w.name, w.n, w.on_median, w.off_median, w.ratio, w.overhead_pct, w.what
        );
    }
    println!(
        "target: ring-3 (compute) overhead <= {:.0}%",
        r.target_compute_overhead_pct
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_result_line_among_other_output() {
        let out = "run overhead pipe 200\nlazarus> overhead: pipe n=200 cycles=2991787514\n";
        assert_eq!(parse_cycles(out, "pipe"), Some(2_991_787_514));
        assert_eq!(parse_cycles(out, "compute"), None);
        assert_eq!(parse_cycles("overhead: pipe n=1 cycles=0", "pipe"), None);
        assert_eq!(parse_cycles("overhead: pipe n=1 cycles=x", "pipe"), None);
        assert_eq!(
            parse_cycles("overhead: the echo process went away", "pipe"),
            None
        );
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3, 1, 2]), 2);
        assert_eq!(median(&[4, 1, 3, 2]), 3);
        assert_eq!(median(&[]), 0);
    }
}
