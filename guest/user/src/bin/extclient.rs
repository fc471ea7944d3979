//! `extclient [SECONDS]`: keeps using the ramdisk extension, the target of
//! fault-injection campaigns, so that injected faults in its code are
//! activated. Each round writes a pattern that depends on the round and
//! reads it back; it reports about every 200 ms. A wrong read-back is
//! data corruption (`MISMATCH`); an error (the extension is being reset or
//! was disabled) makes it reopen the device, reloading the extension if it
//! was disabled, and go on.
#![no_std]
#![no_main]

use lazarus_ulib::abi::dev::ramdisk;
use lazarus_ulib::io::{close, ioctl, read, write};
use lazarus_ulib::process::{sleep_ms, uptime_ms};
use lazarus_ulib::{Args, entry, ext, println};

entry!(main);

const REPORT_MS: u64 = 200;
const LEN: usize = 512;

fn main(args: Args) -> i32 {
    let limit_ms = args
        .get(1)
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| s * 1000);
    let start = uptime_ms();
    let mut next_report = start + REPORT_MS;
    let (mut ok, mut errors, mut mismatches) = (0u64, 0u64, 0u64);
    let mut fd: Option<i32> = None;
    let mut round: u64 = 0;
    loop {
        let now = uptime_ms();
        if limit_ms.is_some_and(|l| now - start >= l) {
            println!("extclient: done {ok} ok, {errors} errors, {mismatches} mismatches");
            return 0;
        }
        if now >= next_report {
            println!("extclient: round {round} ok {ok} errors {errors} mismatches {mismatches}");
            next_report = now + REPORT_MS;
        }
        round += 1;
        let dev = match fd {
            Some(d) => d,
            None => match ext::open_device(ramdisk::DEV) {
                Ok(d) => {
                    fd = Some(d);
                    d
                }
                Err(_) => {
                    errors += 1;
                    sleep_ms(50);
                    continue;
                }
            },
        };
        match round_trip(dev, round) {
            Ok(true) => ok += 1,
            Ok(false) => {
                mismatches += 1;
                println!("extclient: MISMATCH in round {round}");
            }
            Err(()) => {
                errors += 1;
                let _ = close(dev);
                fd = None;
                sleep_ms(20);
            }
        }
    }
}

/// Writes and reads back one block; `Ok(false)` if it came back different.
fn round_trip(fd: i32, round: u64) -> Result<bool, ()> {
    let off = (round * LEN as u64) % (ramdisk::SIZE - LEN as u64);
    let mut pattern = [0u8; LEN];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = (round as usize).wrapping_mul(31).wrapping_add(i * 7) as u8;
    }
    ioctl(fd, ramdisk::IOC_SEEK, off).map_err(|_| ())?;
    let n = write(fd, &pattern).map_err(|_| ())?;
    if n != LEN {
        return Err(());
    }
    ioctl(fd, ramdisk::IOC_SEEK, off).map_err(|_| ())?;
    let mut back = [0u8; LEN];
    let n = read(fd, &mut back).map_err(|_| ())?;
    if n != LEN {
        return Err(());
    }
    Ok(back == pattern)
}
