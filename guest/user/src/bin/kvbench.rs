//! `kvbench [REQUESTS] [cal_ms=MS] [tsc_khz=K]`: times kv store requests
//! from inside the guest, for `lazarus bench ipc`.
//!
//! It issues REQUESTS (default 500) requests to the kvstore service,
//! alternating a put and a get of the same key over 16 keys, after a few
//! untimed ones that create the keys, and times each one with the
//! time-stamp counter. `rdtsc` is a plain ring-3 instruction here (no
//! kernel entry), so the clock adds nothing to what it measures; timing
//! over the serial console from the host would add two console exits and
//! the host's own scheduling to every sample.
//!
//! TSC ticks are converted to time by calibrating against the kernel's
//! clock (`uptime_ms`, which advances a whole timer tick at a time): the
//! TSC is read on both sides of the first tick edge and of the first edge
//! after about `cal_ms` (default 200). Each edge is bracketed by the
//! reads around the two `uptime_ms` calls that saw it change, so the
//! rate's own error bound is known and printed (`cal_err_ppm`); a
//! calibration whose bound is over 1% (the process was preempted while
//! watching for an edge) is repeated, and the best one kept.
//!
//! On a CPU shared with busy processes every clock call may wait a time
//! slice, and no calibration gets a tight bound. There the caller passes
//! the rate an idle run measured (`tsc_khz=K`, printed as `cal=given`):
//! the TSC's rate does not change with load.
//!
//! Output, one line: `kvbench: n=.. median_us=.. p99_us=.. min_us=..
//! max_us=.. mean_us=.. tsc_khz=.. cal=measured cal_ms=.. cal_err_ppm=..`
//! (or `cal=given`). Times have one decimal. Errors go to stderr and exit
//! 1; bad arguments exit 2.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use lazarus_ulib::kv::Client;
use lazarus_ulib::process::{sleep_ms, uptime_ms};
use lazarus_ulib::{Args, entry, eprintln, println};

entry!(main);

const DEFAULT_REQUESTS: u32 = 500;
const MAX_REQUESTS: u32 = 1_000_000;
const DEFAULT_CAL_MS: u64 = 200;
/// Shortest calibration window accepted: two timer ticks are 20 ms, and a
/// shorter window could not bound its own error usefully.
const MIN_CAL_MS: u64 = 50;
const MAX_CAL_MS: u64 = 10_000;
/// A calibration with a larger error bound is repeated, up to
/// `CAL_TRIES` times (the last one is used whatever its bound).
const CAL_MAX_ERR_PPM: u64 = 10_000;
const CAL_TRIES: u32 = 5;
/// Keys cycled through, and untimed warm-up requests (one put per key).
const KEYS: u32 = 16;
const VALUE: &[u8] = b"kvbench-value-16";

fn rdtsc() -> u64 {
    // SAFETY: rdtsc only reads the time-stamp counter; ring 3 may use it
    // (the kernel leaves CR4.TSD clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A kernel clock edge: the new `uptime_ms` value and the TSC interval
/// within which it changed.
struct Edge {
    ms: u64,
    tsc_lo: u64,
    tsc_hi: u64,
}

/// Spins on `uptime_ms` until it changes. The change happened after the
/// kernel read the clock in the previous call (so after `tsc_lo`, read
/// before that call) and before it read it in the last one (before
/// `tsc_hi`, read after it).
fn next_edge() -> Edge {
    let mut before = rdtsc();
    let last = uptime_ms();
    loop {
        let lo = before;
        before = rdtsc();
        let now = uptime_ms();
        let hi = rdtsc();
        if now != last {
            return Edge {
                ms: now,
                tsc_lo: lo,
                tsc_hi: hi,
            };
        }
    }
}

/// TSC ticks per millisecond, the window in ms and the error bound in
/// parts per million.
struct Calibration {
    ticks_per_ms: u64,
    window_ms: u64,
    err_ppm: u64,
}

fn calibrate_once(window_ms: u64) -> Option<Calibration> {
    let start = next_edge();
    // Sleep through most of the window (no need to load the kernel with
    // clock calls), then watch for the edge that ends it.
    sleep_ms(window_ms.saturating_sub(20));
    while uptime_ms() < start.ms + window_ms - 10 {
        sleep_ms(10);
    }
    let end = next_edge();
    let ms = end.ms.checked_sub(start.ms).filter(|&d| d > 0)?;
    let mid = |e: &Edge| e.tsc_lo / 2 + e.tsc_hi / 2;
    let ticks = mid(&end).checked_sub(mid(&start)).filter(|&t| t > 0)?;
    let half_widths = (start.tsc_hi - start.tsc_lo) / 2 + (end.tsc_hi - end.tsc_lo) / 2;
    let err_ppm = u64::try_from(u128::from(half_widths) * 1_000_000 / u128::from(ticks)).ok()?;
    Some(Calibration {
        ticks_per_ms: ticks / ms,
        window_ms: ms,
        err_ppm,
    })
}

fn calibrate(window_ms: u64) -> Option<Calibration> {
    let mut best: Option<Calibration> = None;
    for _ in 0..CAL_TRIES {
        let Some(c) = calibrate_once(window_ms) else {
            continue;
        };
        if c.err_ppm <= CAL_MAX_ERR_PPM {
            return Some(c);
        }
        if best.as_ref().is_none_or(|b| c.err_ppm < b.err_ppm) {
            best = Some(c);
        }
    }
    best
}

/// `ticks` in nanoseconds.
fn ns(ticks: u64, ticks_per_ms: u64) -> u64 {
    let ns = u128::from(ticks) * 1_000_000 / u128::from(ticks_per_ms.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Nanoseconds as microseconds with one decimal.
fn us(ns: u64) -> String {
    format!("{}.{}", ns / 1000, ns % 1000 / 100)
}

/// Nearest-rank percentile of sorted `v`, as the host's statistics
/// compute it (0 when empty).
fn percentile(v: &[u64], p: u64) -> u64 {
    let rank = (p * v.len() as u64).div_ceil(100) as usize;
    v.get(rank.clamp(1, v.len().max(1)) - 1)
        .copied()
        .unwrap_or(0)
}

/// What the command line asks for.
struct Options {
    requests: u32,
    cal_ms: u64,
    /// A rate to use instead of calibrating.
    tsc_khz: Option<u64>,
}

fn parse(args: &Args) -> Option<Options> {
    let mut o = Options {
        requests: DEFAULT_REQUESTS,
        cal_ms: DEFAULT_CAL_MS,
        tsc_khz: None,
    };
    for (i, a) in args.iter().enumerate().skip(1) {
        match a.split_once('=') {
            Some(("cal_ms", v)) => {
                o.cal_ms = v
                    .parse()
                    .ok()
                    .filter(|n| (MIN_CAL_MS..=MAX_CAL_MS).contains(n))?;
            }
            Some(("tsc_khz", v)) => o.tsc_khz = Some(v.parse().ok().filter(|&k| k > 0)?),
            None if i == 1 => {
                o.requests = a.parse().ok().filter(|n| (1..=MAX_REQUESTS).contains(n))?;
            }
            _ => return None,
        }
    }
    Some(o)
}

fn main(args: Args) -> i32 {
    let Some(opts) = parse(&args) else {
        eprintln!(
            "usage: kvbench [REQUESTS 1-{MAX_REQUESTS}] [cal_ms={MIN_CAL_MS}-{MAX_CAL_MS}] [tsc_khz=K]"
        );
        return 2;
    };
    let requests = opts.requests;
    let mut kv = match Client::connect() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kvbench: cannot reach the kv store: {e}");
            return 1;
        }
    };
    let keys: Vec<_> = (0..KEYS).map(|i| format!("kvbench-{i:02}")).collect();
    for k in &keys {
        if let Err(e) = kv.put(k, VALUE) {
            eprintln!("kvbench: warm-up put {k}: {e}");
            return 1;
        }
    }
    let cal = match opts.tsc_khz {
        Some(khz) => Calibration {
            ticks_per_ms: khz,
            window_ms: 0,
            err_ppm: 0,
        },
        None => match calibrate(opts.cal_ms) {
            Some(c) => c,
            None => {
                eprintln!("kvbench: the TSC could not be calibrated against the kernel clock");
                return 1;
            }
        },
    };
    let how = match opts.tsc_khz {
        Some(_) => String::from("cal=given"),
        None => format!(
            "cal=measured cal_ms={} cal_err_ppm={}",
            cal.window_ms, cal.err_ppm
        ),
    };
    let mut samples: Vec<u64> = Vec::with_capacity(requests as usize);
    for i in 0..requests {
        let key = &keys[(i / 2 % KEYS) as usize];
        let t0 = rdtsc();
        let r = if i % 2 == 0 {
            kv.put(key, VALUE).map(|()| true)
        } else {
            kv.get(key).map(|v| v.as_deref() == Some(VALUE))
        };
        let t1 = rdtsc();
        match r {
            Ok(true) => samples.push(t1.saturating_sub(t0)),
            Ok(false) => {
                eprintln!("kvbench: get {key} returned the wrong value");
                return 1;
            }
            Err(e) => {
                eprintln!("kvbench: request {i} ({key}): {e}");
                return 1;
            }
        }
    }
    samples.sort_unstable();
    let t = |ticks: u64| us(ns(ticks, cal.ticks_per_ms));
    let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
    let mean = u64::try_from(sum / samples.len().max(1) as u128).unwrap_or(u64::MAX);
    println!(
        "kvbench: n={} median_us={} p99_us={} min_us={} max_us={} mean_us={} tsc_khz={} {how}",
        samples.len(),
        t(percentile(&samples, 50)),
        t(percentile(&samples, 99)),
        t(samples.first().copied().unwrap_or(0)),
        t(samples.last().copied().unwrap_or(0)),
        t(mean),
        cal.ticks_per_ms,
    );
    0
}
