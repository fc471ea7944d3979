//! `extclient [DEVICE [SECONDS]]`: keeps using the device of the target
//! extension of a fault-injection campaign, `ramdisk` (the default) or
//! `vda` (`virtblk`), so that injected faults in its code are activated.
//! Each round writes a pattern that depends on the round and reads it
//! back; it reports about every 200 ms. On `vda` it writes whole sectors
//! of `virtblk::pattern` and only inside the disk's scratch area
//! (`virtblk::scratch`), so the kvstore's log is never touched.
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

use core::ops::Range;

use lazarus_ulib::abi::dev::{ramdisk, virtblk};
use lazarus_ulib::abi::syscall::complaint;
use lazarus_ulib::io::{self, close, ioctl, read, write};
use lazarus_ulib::process::{sleep_ms, uptime_ms};
use lazarus_ulib::{Args, Errno, entry, eprintln, ext, println};

entry!(main);

const REPORT_MS: u64 = 200;
/// Bytes of one ramdisk round.
const LEN: usize = 512;
/// Sectors of one `vda` round: several, so a request spans descriptors.
const VDA_SECTORS: usize = 4;
const SECTOR: usize = virtblk::SECTOR as usize;

/// The device driven.
enum Target {
    Ramdisk,
    /// `/dev/vda`, within this byte range (the disk's scratch area).
    Vda(Range<u64>),
}

/// How one round went wrong.
enum Failure {
    /// Wrong bytes came back.
    BadData,
    /// A transfer of the wrong length.
    Short,
    Error(Errno),
}

fn main(args: Args) -> i32 {
    let name = args.get(1).unwrap_or(ramdisk::DEV);
    let mut target = match name {
        ramdisk::DEV => Some(Target::Ramdisk),
        virtblk::DEV => None,
        _ => {
            eprintln!("usage: extclient [ramdisk|vda [SECONDS]]");
            return 2;
        }
    };
    let limit_ms = args
        .get(2)
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
            None => match ext::open_device(name) {
                Ok(d) => (d, false),
                Err(_) => {
                    errors += 1;
                    sleep_ms(50);
                    continue;
                }
            },
        };
        // The disk's size is asked once, on the first open that answers
        // it: a size a faulty driver made up later must not move the
        // writes out of the scratch area.
        let target = match &target {
            Some(t) => t,
            None => match ioctl(dev, virtblk::IOC_SIZE, 0) {
                Ok(size) if !virtblk::scratch(size).is_empty() => {
                    target.insert(Target::Vda(virtblk::scratch(size)))
                }
                Ok(_) => {
                    eprintln!(
                        "extclient: /dev/{}: no scratch area on so small a disk",
                        virtblk::DEV
                    );
                    return 1;
                }
                Err(_) => {
                    errors += 1;
                    let _ = close(dev);
                    fd = None;
                    sleep_ms(50);
                    continue;
                }
            },
        };
        let result = match target {
            Target::Ramdisk => ramdisk_round_trip(dev, round),
            Target::Vda(scratch) => vda_round_trip(dev, round, scratch),
        };
        let failure = match result {
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
fn ramdisk_round_trip(fd: i32, round: u64) -> Result<(), Failure> {
    let off = (round * LEN as u64) % (ramdisk::SIZE - LEN as u64);
    let mut pattern = [0u8; LEN];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = (round as usize).wrapping_mul(31).wrapping_add(i * 7) as u8;
    }
    write_back(fd, off, &pattern, &mut [0u8; LEN])
}

/// Writes and reads back up to [`VDA_SECTORS`] sectors of
/// `virtblk::pattern` (seeded with the round) at a place in `scratch`
/// that moves each round.
fn vda_round_trip(fd: i32, round: u64, scratch: &Range<u64>) -> Result<(), Failure> {
    let scratch_sectors = (scratch.end - scratch.start) / SECTOR as u64;
    let sectors = VDA_SECTORS.min(scratch_sectors as usize);
    let first =
        scratch.start / SECTOR as u64 + round % (scratch_sectors / sectors as u64) * sectors as u64;
    let mut pattern = [[0u8; SECTOR]; VDA_SECTORS];
    for (i, s) in pattern[..sectors].iter_mut().enumerate() {
        virtblk::pattern(round as u32, first + i as u64, s);
    }
    let pattern = pattern[..sectors].as_flattened();
    let mut back = [0u8; VDA_SECTORS * SECTOR];
    write_back(
        fd,
        first * SECTOR as u64,
        pattern,
        &mut back[..pattern.len()],
    )
}

/// Writes `pattern` at `off`, reads it back into `back` and compares.
fn write_back(fd: i32, off: u64, pattern: &[u8], back: &mut [u8]) -> Result<(), Failure> {
    seek(fd, off).map_err(Failure::Error)?;
    if write(fd, pattern).map_err(Failure::Error)? != pattern.len() {
        return Err(Failure::Short);
    }
    seek(fd, off).map_err(Failure::Error)?;
    if read(fd, back).map_err(Failure::Error)? != back.len() {
        return Err(Failure::Short);
    }
    if back == pattern {
        Ok(())
    } else {
        Err(Failure::BadData)
    }
}

/// Moves the open's position to `off`: extclient's only position change.
fn seek(fd: i32, off: u64) -> Result<(), Errno> {
    io::seek(fd, off).map(drop)
}
