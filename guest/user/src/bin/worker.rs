//! `worker [NAME] [SECONDS]`: a CPU-bound process for scheduling and
//! recovery tests. It runs a hash chain in rounds, makes a system call only
//! once per round (so only the timer can preempt it), and reports progress
//! about every 500 ms. It also keeps 32 KiB of state derived from its name
//! and checks it at every report: a kernel fault that corrupted this
//! process's memory shows as `STATE CORRUPT` (the campaigns' "silent
//! corruption").
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

/// Words of checked state.
const STATE_WORDS: usize = 4096;

fn fill(state: &mut [u64; STATE_WORDS], seed: u64) {
    let mut x = seed;
    for w in state.iter_mut() {
        x = step(x);
        *w = x;
    }
}

/// Index of the first word that differs from what `fill` wrote.
fn check(state: &[u64; STATE_WORDS], seed: u64) -> Option<usize> {
    let mut x = seed;
    state.iter().position(|&w| {
        x = step(x);
        black_box(w) != x
    })
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
    let seed = hash;
    // On the stack: 32 KiB of the process's own memory.
    let mut state = [0u64; STATE_WORDS];
    fill(&mut state, seed);
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
            match check(&state, seed) {
                None => println!("worker {name}: round {rounds}"),
                Some(i) => {
                    println!("worker {name}: round {rounds} STATE CORRUPT at word {i}");
                    fill(&mut state, seed);
                }
            }
            next_report = now + REPORT_MS;
        }
    }
}
