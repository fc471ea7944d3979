//! `extclient [SECONDS]`: keeps using the ramdisk extension, the target of
//! fault-injection campaigns, so that injected faults in its code are
//! activated. Each round writes a pattern that depends on the round and
//! reads it back; it reports about every 200 ms.
//!
//! When the extension fails it without crashing (wrong data, a short
//! transfer, an error it has no reason to return) it reports the extension
//! to the kernel (`ext::complain`), which has it reset, and reopens the
//! device. Errors that a reset itself causes (the device gone, a call
//! interrupted, an open's state forgotten) only make it reopen. A wrong
//! read-back it could not get fixed is printed as `MISMATCH`: data
//! corruption nobody repaired.
#![no_std]
#![no_main]

use lazarus_ulib::abi::dev::ramdisk;
use lazarus_ulib::abi::syscall::complaint;
use lazarus_ulib::io::{close, read, seek, write};
use lazarus_ulib::process::{sleep_ms, uptime_ms};
use lazarus_ulib::{Args, Errno, entry, ext, println};

entry!(main);

const REPORT_MS: u64 = 200;
const LEN: usize = 512;

/// How one round went wrong.
enum Failure {
    /// Wrong bytes came back.
    BadData,
    /// A transfer of the wrong length.
    Short,
    Error(Errno),
}

fn main(args: Args) -> i32 {
    let limit_ms = args
        .get(1)
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| s * 1000);
    let start = uptime_ms();
    let mut next_report = start + REPORT_MS;
    let (mut ok, mut errors, mut mismatches, mut complaints) = (0u64, 0u64, 0u64, 0u64);
    // The open device, and whether a round on it has succeeded (an open
    // that never worked cannot have been forgotten by a reset).
    let mut fd: Option<(i32, bool)> = None;
    let mut round: u64 = 0;
    loop {
        let now = uptime_ms();
        if limit_ms.is_some_and(|l| now - start >= l) {
            println!(
                "extclient: done {ok} ok, {errors} errors, {mismatches} mismatches, {complaints} complaints"
            );
            return 0;
        }
        if now >= next_report {
            println!("extclient: round {round} ok {ok} errors {errors} mismatches {mismatches}");
            next_report = now + REPORT_MS;
        }
        round += 1;
        let (dev, worked) = match fd {
            Some(d) => d,
            None => match ext::open_device(ramdisk::DEV) {
                Ok(d) => (d, false),
                Err(_) => {
                    errors += 1;
                    sleep_ms(50);
                    continue;
                }
            },
        };
        let failure = match round_trip(dev, round) {
            Ok(()) => {
                ok += 1;
                fd = Some((dev, true));
                continue;
            }
            Err(f) => f,
        };
        let reason = match failure {
            Failure::BadData => Some(complaint::BAD_DATA),
            Failure::Short => Some(complaint::ERROR),
            // What a reset of the extension does to its clients.
            Failure::Error(Errno::ENODEV | Errno::EINTR) => None,
            Failure::Error(Errno::EBADF) if worked => None,
            Failure::Error(_) => Some(complaint::ERROR),
        };
        let fixed = match reason {
            Some(r) => match ext::complain(dev, r) {
                Ok(()) => {
                    complaints += 1;
                    println!("extclient: reported the extension in round {round}; it was reset");
                    true
                }
                Err(_) => false,
            },
            None => false,
        };
        match failure {
            Failure::BadData if !fixed => {
                mismatches += 1;
                println!("extclient: MISMATCH in round {round}");
            }
            _ => errors += 1,
        }
        let _ = close(dev);
        fd = None;
        if !fixed {
            sleep_ms(20);
        }
    }
}

/// Writes and reads back one block.
fn round_trip(fd: i32, round: u64) -> Result<(), Failure> {
    let off = (round * LEN as u64) % (ramdisk::SIZE - LEN as u64);
    let mut pattern = [0u8; LEN];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = (round as usize).wrapping_mul(31).wrapping_add(i * 7) as u8;
    }
    seek(fd, off).map_err(Failure::Error)?;
    if write(fd, &pattern).map_err(Failure::Error)? != LEN {
        return Err(Failure::Short);
    }
    seek(fd, off).map_err(Failure::Error)?;
    let mut back = [0u8; LEN];
    if read(fd, &mut back).map_err(Failure::Error)? != LEN {
        return Err(Failure::Short);
    }
    if back == pattern {
        Ok(())
    } else {
        Err(Failure::BadData)
    }
}
