//! `lazarus campaign`: the arguments become a `lazarus_campaign` run; this
//! shows its progress, prints its table and writes its JSON and SVG.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lazarus_campaign::{CampaignConfig, CampaignError, ConfigError, Outcome, Report};

use crate::cli::CampaignArgs;
use crate::exit::{BAD_INPUT, INTERNAL, failure};
use crate::image::BootImage;

pub fn run(args: &CampaignArgs) -> anyhow::Result<u8> {
    let config = CampaignConfig {
        faults: args.faults,
        seed: args.seed,
        types: args.types.clone(),
        ext: args.ext.clone(),
        keys: args.keys,
        window: Duration::from_millis(args.window_ms),
        soak: args.soak,
        repair_program: lazarus_image::REPAIR_ELF.into(),
    };
    // Bad arguments are reported before the image is read.
    config.validate().map_err(usage)?;
    let image = BootImage::load(&args.image)?;
    let bar = progress_bar(args)?;
    let report = lazarus_campaign::run(
        &config,
        || image.config(&args.image),
        |rec| {
            bar.set_message(format!("last: {} {}", rec.fault, rec.outcome.name()));
            bar.inc(1);
        },
    )
    .map_err(|e| match e {
        CampaignError::Vm(e) => image.explain(e),
        CampaignError::Config(e) => usage(e),
        e => anyhow::Error::new(e),
    })?;
    bar.finish_and_clear();

    print_table(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        lazarus_campaign::plot::draw(path, &report)
            .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
    }
    Ok(0)
}

/// A settings error, in terms of the command line.
fn usage(e: ConfigError) -> anyhow::Error {
    let message = match e {
        ConfigError::NoFaults => "--faults must be at least 1".to_string(),
        ConfigError::NoKeys | ConfigError::NoWindow => {
            "--keys and --window-ms must be positive".to_string()
        }
        e @ (ConfigError::UnknownFaultType { .. } | ConfigError::UnknownExt { .. }) => {
            e.to_string()
        }
    };
    failure(BAD_INPUT, message)
}

/// A bar with the fault count (a spinner for a soak), hidden with
/// `--quiet` or when stderr is not a terminal.
fn progress_bar(args: &CampaignArgs) -> anyhow::Result<ProgressBar> {
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
    Ok(bar)
}

fn print_table(r: &Report) {
    println!(
        "campaign: {} faults, seed {}, target extension {}, {} vCPUs, {:.0} s, {} boot(s)",
        r.faults, r.seed, r.ext, r.vcpus, r.duration_s, r.boots
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
