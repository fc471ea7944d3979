//! `lazarus bench io`: disk throughput through the guest's `virtblk`
//! driver and the virtio block device, against the same I/O done by the
//! host on a file of the same size, in one run.
//!
//! The guest's `blk bench` does the work and times each phase with the
//! kernel's clock (10 ms ticks; the phases are sized to take far longer);
//! the host then does the same phases with `pwrite`/`pread` and
//! `fdatasync` on its own file. Both go through the host's page cache the
//! same way: the device writes the image with `pwrite` and flushes with
//! `fdatasync`.
//!
//! Then it times resurrections of the driver with I/O in flight: a disk
//! writer runs in the background while `blk fault stall` holds requests
//! in the driver until it crashes (issue 11's "several in flight"); the
//! kernel replays them after the repair. Each latency is the hypervisor's
//! (crash exit to the first user instruction), as `bench recovery`'s. The
//! crashes are `LOOP_WINDOW` apart: the same crash sooner is a crash loop,
//! which the resurrector rightly refuses.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use lazarus_abi::dev::virtblk::{BenchOffsets, SECTOR, scratch};
use lazarus_campaign::driver::PROMPT;
use lazarus_campaign::stats::{Stats, ms, stats};
use lazarus_resurrect::{Recovery, ResurrectConfig};
use lazarus_virtio_blk::{Block, DiskImage};
use serde::Serialize;

use crate::bench_vm::{self, Session};
use crate::cli::BenchIoArgs;
use crate::exit::{BAD_INPUT, INTERNAL, failure};
use crate::image::BootImage;

const T: Duration = Duration::from_secs(60);
/// Sequential transfers: the driver's largest request.
const SEQ_IO: usize = lazarus_abi::dev::virtblk::IO_MAX;
/// Random transfers, at the offsets the guest uses too.
const RANDOM_IO: usize = BenchOffsets::IO;

/// Milliseconds each phase took.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct Phases {
    seq_write_ms: f64,
    seq_read_ms: f64,
    rand_read_ms: f64,
    rand_write_ms: f64,
}

#[derive(Debug, Serialize)]
struct Rates {
    seq_write_mb_s: f64,
    seq_read_mb_s: f64,
    rand_read_iops: f64,
    rand_write_iops: f64,
}

/// The guest's clock ticks every 10 ms: a guest phase is never taken as
/// shorter. The host's clock is precise.
const GUEST_TICK_MS: f64 = 10.0;
const HOST_RESOLUTION_MS: f64 = 0.001;

impl Rates {
    fn of(p: &Phases, mib: u64, ops: u64, resolution_ms: f64) -> Rates {
        let per_s = |n: f64, ms: f64| n / (ms.max(resolution_ms) / 1000.0);
        let mb = (mib << 20) as f64 / 1e6;
        Rates {
            seq_write_mb_s: per_s(mb, p.seq_write_ms),
            seq_read_mb_s: per_s(mb, p.seq_read_ms),
            rand_read_iops: per_s(ops as f64, p.rand_read_ms),
            rand_write_iops: per_s(ops as f64, p.rand_write_ms),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    mib: u64,
    ops: u64,
    seq_request_bytes: usize,
    random_request_bytes: usize,
    guest: Phases,
    host: Phases,
    guest_rates: Rates,
    host_rates: Rates,
    /// guest / host, per phase (1.0: as fast as the host).
    ratio: Rates,
    /// Driver crashes with I/O in flight (absent with `--crashes 0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    driver_crash: Option<DriverCrashes>,
}

/// Resurrections of `virtblk` with requests held in flight.
#[derive(Debug, Serialize)]
struct DriverCrashes {
    crashes: u32,
    /// Crash exit to the first user instruction.
    latency_ms: Stats,
    /// Device calls the kernel issued again, per crash.
    calls_replayed: Stats,
    /// Calls that failed with EIO instead, over all crashes (0 expected).
    calls_failed: u64,
}

/// Parses `blk: ok bench mib=.. ops=.. seq_write_ms=..` from `out`.
fn parse(out: &str) -> Option<Phases> {
    let line = out.lines().find(|l| l.starts_with("blk: ok bench "))?;
    let field = |key: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some(Phases {
        seq_write_ms: field("seq_write_ms")?,
        seq_read_ms: field("seq_read_ms")?,
        rand_read_ms: field("rand_read_ms")?,
        rand_write_ms: field("rand_write_ms")?,
    })
}

pub fn run(args: &BenchIoArgs) -> anyhow::Result<u8> {
    let image = BootImage::load(&args.image)?;
    let dir = tempfile::Builder::new()
        .prefix("lazarus-bench-io-")
        .tempdir()
        .map_err(|e| failure(INTERNAL, format!("temporary directory: {e}")))?;
    let disk_mib = (args.mib * 2).max(64);
    let (guest, driver_crash) =
        guest_phases(&image, args, &dir.path().join("guest.img"), disk_mib)?;
    let host = host_phases(args, &dir.path().join("host.img"), disk_mib)
        .map_err(|e| failure(INTERNAL, format!("host I/O: {e}")))?;
    let (g, h) = (
        Rates::of(&guest, args.mib, args.ops, GUEST_TICK_MS),
        Rates::of(&host, args.mib, args.ops, HOST_RESOLUTION_MS),
    );
    let ratio = Rates {
        seq_write_mb_s: g.seq_write_mb_s / h.seq_write_mb_s,
        seq_read_mb_s: g.seq_read_mb_s / h.seq_read_mb_s,
        rand_read_iops: g.rand_read_iops / h.rand_read_iops,
        rand_write_iops: g.rand_write_iops / h.rand_write_iops,
    };
    let report = Report {
        mib: args.mib,
        ops: args.ops,
        seq_request_bytes: SEQ_IO,
        random_request_bytes: RANDOM_IO,
        guest,
        host,
        guest_rates: g,
        host_rates: h,
        ratio,
        driver_crash,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(0)
}

fn guest_phases(
    image: &BootImage,
    args: &BenchIoArgs,
    path: &Path,
    disk_mib: u64,
) -> anyhow::Result<(Phases, Option<DriverCrashes>)> {
    let (disk, _) = DiskImage::open_or_create(path, disk_mib << 20)
        .map_err(|e| failure(BAD_INPUT, e.to_string()))?;
    let (tx, rx) = channel::<Recovery>();
    let mut rc = ResurrectConfig::new(lazarus_image::REPAIR_ELF);
    rc.listener = Some(tx);
    // Every crash here is asked for: none may disable the driver.
    rc.ext_crash_limit = args.crashes + 1;
    let (vm, d) = bench_vm::new_vm_with(image, &args.image, Some(Box::new(rc)), |c| {
        c.virtio.push(Box::new(Block::new(disk)));
    })?;
    let mut s = Session::start(vm, d);
    // Generous: the guest's ring-0 path is emulated on some hosts.
    let timeout = T + Duration::from_millis(50) * (args.ops * 2 + args.mib * 32) as u32;
    let result = (|| -> anyhow::Result<(Phases, Option<DriverCrashes>)> {
        s.d.expect(PROMPT, T)?;
        let line = format!("run blk bench {} {} {}", args.mib, args.ops, args.seed);
        let out = s.d.cmd(&line, timeout)?;
        let phases = parse(&out).ok_or_else(|| {
            failure(
                INTERNAL,
                format!("`{line}` printed no result: {}", out.trim()),
            )
        })?;
        let crashes = (args.crashes > 0)
            .then(|| driver_crashes(&mut s, &rx, args.crashes, disk_mib << 20))
            .transpose()?;
        s.d.send("poweroff");
        Ok((phases, crashes))
    })();
    s.finish(result)
}

/// `crashes` resurrections of the driver, each with two disk writers'
/// requests held in it when it crashes.
fn driver_crashes(
    s: &mut Session,
    rx: &Receiver<Recovery>,
    crashes: u32,
    disk_bytes: u64,
) -> anyhow::Result<DriverCrashes> {
    let first = scratch(disk_bytes).start / SECTOR;
    let (mut latency, mut replayed, mut failed) = (Vec::new(), Vec::new(), 0u64);
    for i in 0..crashes {
        if i > 0 {
            // The same crash again sooner would be taken for a crash loop.
            std::thread::sleep(lazarus_resurrect::LOOP_WINDOW);
        }
        s.d.cmd(&format!("run blk write {first} 512 {i} &"), T)?;
        let sent = Instant::now();
        let out = s.d.cmd("run blk fault stall", T)?;
        if !out.contains("blk: ok fault stall") {
            anyhow::bail!("`blk fault stall` failed: {}", out.trim());
        }
        let rec = loop {
            let rec = rx
                .recv_timeout(T)
                .map_err(|_| failure(INTERNAL, "no resurrection after a driver crash"))?;
            if rec.crash.detected_at >= sent {
                break rec;
            }
        };
        latency.push(ms(rec.latency));
        replayed.push(f64::from(rec.plan.calls_replayed));
        failed += u64::from(rec.plan.calls_failed);
        // The background writer must have come through too (its line may
        // have come before the prompt).
        const WROTE: &str = "blk: ok wrote 512 sectors";
        if !out.contains(WROTE) {
            s.d.expect(WROTE, T)?;
        }
    }
    Ok(DriverCrashes {
        crashes,
        latency_ms: stats(&latency),
        calls_replayed: stats(&replayed),
        calls_failed: failed,
    })
}

/// The guest's phases, on a host file.
fn host_phases(args: &BenchIoArgs, path: &Path, disk_mib: u64) -> std::io::Result<Phases> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    file.set_len(disk_mib << 20)?;
    let bytes = args.mib << 20;
    let mut buf = vec![0xa5u8; SEQ_IO];
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;

    let t = Instant::now();
    for at in (0..bytes).step_by(SEQ_IO) {
        file.write_all_at(&buf, at)?;
    }
    file.sync_data()?;
    let seq_write_ms = ms(t);

    let t = Instant::now();
    for at in (0..bytes).step_by(SEQ_IO) {
        file.read_exact_at(&mut buf, at)?;
    }
    let seq_read_ms = ms(t);

    let t = Instant::now();
    for at in BenchOffsets::reads(args.seed, bytes).take(args.ops as usize) {
        file.read_exact_at(&mut buf[..RANDOM_IO], at)?;
    }
    let rand_read_ms = ms(t);

    let t = Instant::now();
    for at in BenchOffsets::writes(args.seed, bytes).take(args.ops as usize) {
        file.write_all_at(&buf[..RANDOM_IO], at)?;
    }
    file.sync_data()?;
    let rand_write_ms = ms(t);
    Ok(Phases {
        seq_write_ms,
        seq_read_ms,
        rand_read_ms,
        rand_write_ms,
    })
}

fn print_table(r: &Report) {
    println!(
        "disk throughput: {} MiB sequential in {} KiB requests, {} random {} KiB reads and writes; guest through virtblk and virtio-blk, host on a file (pwrite/pread, fdatasync), same run",
        r.mib,
        r.seq_request_bytes / 1024,
        r.ops,
        r.random_request_bytes / 1024
    );
    println!(
        "{:<18} {:>12} {:>12} {:>12}",
        "", "guest", "host", "guest/host"
    );
    let rows = [
        (
            "seq write MB/s",
            r.guest_rates.seq_write_mb_s,
            r.host_rates.seq_write_mb_s,
            r.ratio.seq_write_mb_s,
        ),
        (
            "seq read MB/s",
            r.guest_rates.seq_read_mb_s,
            r.host_rates.seq_read_mb_s,
            r.ratio.seq_read_mb_s,
        ),
        (
            "rand read IOPS",
            r.guest_rates.rand_read_iops,
            r.host_rates.rand_read_iops,
            r.ratio.rand_read_iops,
        ),
        (
            "rand write IOPS",
            r.guest_rates.rand_write_iops,
            r.host_rates.rand_write_iops,
            r.ratio.rand_write_iops,
        ),
    ];
    for (name, g, h, ratio) in rows {
        println!("{name:<18} {g:>12.1} {h:>12.1} {ratio:>12.4}");
    }
    if let Some(c) = &r.driver_crash {
        println!(
            "driver crash with I/O in flight ({} crashes of virtblk, requests held until it crashed): resurrection median {:.3} ms, p99 {:.3} ms, max {:.3} ms; calls replayed per crash median {:.0} (max {:.0}), failed with EIO {}; the published system: < 3000 ms ({:.0}x)",
            c.crashes,
            c.latency_ms.median,
            c.latency_ms.p99,
            c.latency_ms.max,
            c.calls_replayed.median,
            c.calls_replayed.max,
            c.calls_failed,
            3000.0 / c.latency_ms.median
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_guest_line() {
        let out = "run blk bench 8 100 1\nblk: ok bench mib=8 ops=100 seq_write_ms=120 seq_read_ms=80 rand_read_ms=40 rand_write_ms=50\nlazarus> ";
        assert_eq!(
            parse(out),
            Some(Phases {
                seq_write_ms: 120.0,
                seq_read_ms: 80.0,
                rand_read_ms: 40.0,
                rand_write_ms: 50.0
            })
        );
        assert_eq!(parse("blk: FAIL open /dev/vda: no such device"), None);
    }
}
