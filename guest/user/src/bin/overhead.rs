//! `overhead compute ROUNDS | syscalls N | pipe N | ext N`:
//! fixed amounts of work, timed in TSC cycles, for `lazarus bench
//! overhead`. The host runs them on the same image with the kernel's
//! protection machinery on and off and compares the cycle counts (same
//! host, same TSC: the ratio needs no calibration).
//!
//! - `compute`: ring-3 work only (a hash chain), what ALDR promised to
//!   leave untouched; the timer tick is the kernel's only share.
//! - `syscalls`: `getpid` in a loop: every kernel entry and exit.
//! - `pipe`: a byte through a pipe and back between two processes: system
//!   calls, blocking, waking and context switches.
//! - `ext`: loads and unloads an extension: kernel code changes, which is
//!   when the hypervisor refreshes its repair image.
#![no_std]
#![no_main]

use core::hint::black_box;

use lazarus_ulib::io::{close, pipe, read, write};
use lazarus_ulib::process;
use lazarus_ulib::{Args, entry, ext, println};

entry!(main);

fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the time-stamp counter.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

fn step(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn compute(rounds: u64) -> Result<u64, &'static str> {
    let mut h = 1u64;
    for _ in 0..rounds {
        for _ in 0..(1u32 << 20) {
            h = step(black_box(h));
        }
    }
    Ok(black_box(h))
}

fn syscalls(n: u64) -> Result<u64, &'static str> {
    let mut sum = 0u64;
    for _ in 0..n {
        sum = sum.wrapping_add(u64::from(process::getpid()));
    }
    Ok(sum)
}

fn ping_pong(n: u64) -> Result<u64, &'static str> {
    let (to_child_r, to_child_w) = pipe().map_err(|_| "pipe")?;
    let (to_parent_r, to_parent_w) = pipe().map_err(|_| "pipe")?;
    // The echo side: `overhead echo` with the pipes as its stdin/stdout.
    let fds = process::StdFds {
        stdin: Some(to_child_r),
        stdout: Some(to_parent_w),
    };
    let child = process::spawn("/bin/overhead", &["echo"], fds).map_err(|_| "spawn")?;
    let _ = close(to_child_r);
    let _ = close(to_parent_w);
    let mut b = [0u8; 1];
    for i in 0..n {
        b[0] = i as u8;
        if write(to_child_w, &b) != Ok(1) || read(to_parent_r, &mut b) != Ok(1) {
            return Err("the echo process went away");
        }
    }
    let _ = close(to_child_w);
    let _ = close(to_parent_r);
    let _ = process::wait(Some(child));
    Ok(n)
}

fn ext_cycles(n: u64) -> Result<u64, &'static str> {
    for _ in 0..n {
        ext::load("rand").map_err(|_| "cannot load the rand extension")?;
        ext::unload("rand").map_err(|_| "cannot unload the rand extension")?;
    }
    Ok(n)
}

/// Copies stdin to stdout a byte at a time until end of file.
fn echo() -> i32 {
    let mut b = [0u8; 1];
    while read(0, &mut b) == Ok(1) {
        if write(1, &b) != Ok(1) {
            return 1;
        }
    }
    0
}

fn main(args: Args) -> i32 {
    let (mode, n) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok()));
    let run: fn(u64) -> Result<u64, &'static str> = match mode {
        Some("compute") => compute,
        Some("syscalls") => syscalls,
        Some("pipe") => ping_pong,
        Some("ext") => ext_cycles,
        Some("echo") => return echo(),
        _ => {
            println!("usage: overhead compute ROUNDS | syscalls N | pipe N | ext N");
            return 2;
        }
    };
    let Some(n) = n else {
        println!("usage: overhead compute ROUNDS | syscalls N | pipe N | ext N");
        return 2;
    };
    let t0 = rdtsc();
    let r = run(n);
    let cycles = rdtsc().wrapping_sub(t0);
    match r {
        Ok(_) => {
            println!("overhead: {} n={n} cycles={cycles}", mode.unwrap_or(""));
            0
        }
        Err(e) => {
            println!("overhead: {e}");
            1
        }
    }
}
