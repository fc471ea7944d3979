//! `worker [NAME] [SECONDS]`: a CPU-bound process for scheduling and
//! recovery tests. It runs a hash chain in rounds, makes a system call only
//! once per round (so only the timer can preempt it), and reports progress
//! about every 500 ms.
#![no_std]
#![no_main]

use core::hint::black_box;

use lazarus_ulib::checksum::fnv1a64;
use lazarus_ulib::process::uptime_ms;
use lazarus_ulib::{Args, entry, println};

entry!(main);

/// Hash steps per round: a few milliseconds of native ring-3 work.
const ROUND_STEPS: u32 = 1 << 20;
const REPORT_MS: u64 = 500;

/// One step of the chain (a 64-bit mix, as in splitmix64).
fn step(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn main(args: Args) -> i32 {
    let name = args.get(1).unwrap_or("worker");
    let limit_ms = match args.get(2).map(str::parse::<u64>) {
        None => None,
        Some(Ok(s)) => Some(s * 1000),
        Some(Err(_)) => {
            println!("usage: worker [NAME] [SECONDS]");
            return 2;
        }
    };
    let start = uptime_ms();
    let mut next_report = start + REPORT_MS;
    let mut hash = fnv1a64(name.as_bytes());
    let mut rounds: u64 = 0;
    loop {
        for _ in 0..ROUND_STEPS {
            hash = step(black_box(hash));
        }
        rounds += 1;
        let now = uptime_ms();
        if limit_ms.is_some_and(|l| now - start >= l) {
            println!("worker {name}: done {rounds} rounds");
            return 0;
        }
        if now >= next_report {
            println!("worker {name}: round {rounds}");
            next_report = now + REPORT_MS;
        }
    }
}
