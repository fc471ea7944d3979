//! `lazarus bench boot`: time from hypervisor start to the shell prompt.
//!
//! Each run starts the clock before the VM is created, boots with the
//! console going nowhere, and stops the clock when the kernel reports
//! `MILESTONE_SHELL_PROMPT`; the VM is then dropped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lazarus_abi::hypercall::{MILESTONE_KERNEL_READY, MILESTONE_SHELL_PROMPT};
use lazarus_campaign::stats::{Stats, ms, percentile, stats};
use lazarus_vmm::{ConsoleInput, ConsoleOutput, ExitCounts, Vm, VmOutcome};
use serde::Serialize;

use crate::cli::BenchBootArgs;
use crate::exit::{BAD_INPUT, CRASHED, INTERNAL, failure};
use crate::image::BootImage;

/// One boot.
struct Sample {
    boot_ms: f64,
    kernel_ready_ms: Option<f64>,
    exits: ExitCounts,
}

#[derive(Debug, Serialize)]
struct ExitReport {
    /// Median of the total guest exits until the prompt.
    median: u64,
    min: u64,
    max: u64,
    /// Median per exit kind.
    by_kind: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
struct Report {
    runs: usize,
    memory_mib: u64,
    vcpus: u32,
    boot_ms: Stats,
    /// Time to MILESTONE_KERNEL_READY, when every run reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_ready_ms: Option<Stats>,
    exits: ExitReport,
    samples_ms: Vec<f64>,
}

fn median_u64(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    percentile(&values, 50.0).unwrap_or(0)
}

fn boot_once(image: &BootImage, args: &BenchBootArgs, run: u32) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let mut config = image.config(&args.image);
    config.console_out = ConsoleOutput::Null;
    config.console_in = ConsoleInput::none();
    config.stop_at_milestone = Some(MILESTONE_SHELL_PROMPT);
    // 0 means no timeout (as for `run`).
    config.timeout = if args.timeout == 0.0 {
        None
    } else {
        Some(
            Duration::try_from_secs_f64(args.timeout)
                .map_err(|_| failure(BAD_INPUT, format!("invalid --timeout {}", args.timeout)))?,
        )
    };
    let mut vm = Vm::new(config).map_err(|e| image.explain(e))?;
    let outcome = vm.run()?;
    let prompt = match outcome {
        VmOutcome::MilestoneReached(_) => vm.milestone(MILESTONE_SHELL_PROMPT),
        VmOutcome::Crash(info) => {
            return Err(failure(
                CRASHED,
                format!("boot {run}: the guest crashed: {}", info.summary()),
            ));
        }
        other => {
            return Err(failure(
                INTERNAL,
                format!("boot {run}: the guest did not reach the shell prompt ({other:?})"),
            ));
        }
    };
    let prompt = prompt.ok_or_else(|| failure(INTERNAL, "shell prompt milestone missing"))?;
    let kernel_ready_ms = vm
        .milestone(MILESTONE_KERNEL_READY)
        .map(|m| ms(m.at.saturating_duration_since(start)));
    let sample = Sample {
        boot_ms: ms(prompt.at.saturating_duration_since(start)),
        kernel_ready_ms,
        exits: prompt.exits,
    };
    drop(vm);
    Ok(sample)
}

pub fn boot(args: &BenchBootArgs) -> anyhow::Result<u8> {
    let image = BootImage::load(&args.image)?;
    let mut samples = Vec::new();
    for run in 1..=args.runs {
        let s = boot_once(&image, args, run)?;
        tracing::info!(
            run,
            boot_ms = s.boot_ms,
            exits = s.exits.total(),
            "boot done"
        );
        if !args.json {
            eprintln!(
                "run {run}/{}: {:.1} ms, {} exits",
                args.runs,
                s.boot_ms,
                s.exits.total()
            );
        }
        samples.push(s);
    }
    let report = summarize(&samples, image.memory_mib, image.vcpus);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(0)
}

fn summarize(samples: &[Sample], memory_mib: u64, vcpus: u32) -> Report {
    let boot: Vec<f64> = samples.iter().map(|s| s.boot_ms).collect();
    let ready: Option<Vec<f64>> = samples.iter().map(|s| s.kernel_ready_ms).collect();
    let totals: Vec<u64> = samples.iter().map(|s| s.exits.total()).collect();
    let mut kinds: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    for s in samples {
        for (kind, _) in s.exits.nonzero() {
            kinds.entry(kind.name()).or_default();
        }
    }
    for s in samples {
        for kind in lazarus_vmm::ExitKind::ALL {
            if let Some(v) = kinds.get_mut(kind.name()) {
                v.push(s.exits.get(kind));
            }
        }
    }
    Report {
        runs: samples.len(),
        memory_mib,
        vcpus,
        boot_ms: stats(&boot),
        kernel_ready_ms: ready.map(|r| stats(&r)),
        exits: ExitReport {
            median: median_u64(totals.clone()),
            min: totals.iter().copied().min().unwrap_or(0),
            max: totals.iter().copied().max().unwrap_or(0),
            by_kind: kinds.into_iter().map(|(k, v)| (k, median_u64(v))).collect(),
        },
        samples_ms: boot,
    }
}

fn print_table(r: &Report) {
    println!(
        "boot to shell prompt: {} runs, {} MiB, {} vCPUs",
        r.runs, r.memory_mib, r.vcpus
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10}",
        "", "median", "p99", "min", "max"
    );
    let row = |name: &str, s: &Stats| {
        println!(
            "{:<22} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            name, s.median, s.p99, s.min, s.max
        );
    };
    row("boot (ms)", &r.boot_ms);
    if let Some(k) = &r.kernel_ready_ms {
        row("kernel ready (ms)", k);
    }
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10}",
        "guest exits", r.exits.median, "", r.exits.min, r.exits.max
    );
    for (kind, median) in &r.exits.by_kind {
        println!("  {kind:<20} {median:>10}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_counts() {
        assert_eq!(median_u64(vec![9, 1, 5, 7]), 5);
        assert_eq!(median_u64(Vec::new()), 0);
    }
}
