//! `devtest`: exercises the bundled device extensions (`insmod rand` and
//! `insmod ramdisk` first): 16 bytes from /dev/rand, then a write/read-back
//! round trip on /dev/ramdisk.
//!
//! `devtest shadow`: the clients of a reset extension never notice. It
//! writes the ramdisk and reads a seeded /dev/rand stream, has both
//! extensions reset (a complaint each), then checks through the same
//! descriptors, none reopened: the positions are where they were, the
//! ramdisk still holds the data (its disk is memory the kernel keeps), a
//! duplicated descriptor still works, and the rand stream goes on exactly
//! as an untouched one with the same seed (the kernel gave the reset
//! extension the seed again: a configuration ioctl).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use core::fmt::Write;

use lazarus_ulib::abi::dev::{ramdisk, rand};
use lazarus_ulib::abi::syscall::complaint;
use lazarus_ulib::io::{close, dup, ioctl, open, read, seek, tell, write};
use lazarus_ulib::{Args, entry, ext, println};

entry!(main);

fn main(args: Args) -> i32 {
    let r = match args.get(1) {
        None => run(),
        Some("shadow") => shadow(),
        Some(other) => Err(format!("unknown mode {other:?} (usage: devtest [shadow])")),
    };
    match r {
        Ok(()) => {
            println!("devtest: ok");
            0
        }
        Err(why) => {
            println!("devtest: FAIL {why}");
            1
        }
    }
}

/// Opens /dev/NAME. The extension must be loaded already: tests rely on
/// devtest failing once a module is gone.
fn open_dev(name: &str) -> Result<i32, String> {
    let path = format!("/dev/{name}");
    open(&path).map_err(|e| format!("open {path}: {e}"))
}

fn run() -> Result<(), String> {
    let fd = open_dev(rand::DEV)?;
    let mut bytes = [0u8; 16];
    let n = read(fd, &mut bytes).map_err(|e| format!("read rand: {e}"))?;
    let _ = close(fd);
    let mut hex = String::new();
    for b in &bytes[..n] {
        let _ = write!(hex, "{b:02x}");
    }
    println!("devtest: rand {hex}");
    if n != bytes.len() || bytes.iter().all(|&b| b == 0) {
        return Err(format!("rand: short or zero read ({n} bytes)"));
    }

    let fd = open_dev(ramdisk::DEV)?;
    let r = ramdisk_round_trip(fd).and_then(|()| independent_positions(fd));
    let _ = close(fd);
    r
}

/// `devtest shadow` (see the module doc).
fn shadow() -> Result<(), String> {
    const AT: u64 = 8192;
    const SEED: u64 = 0x5eed;
    let disk = open_dev(ramdisk::DEV)?;
    let twin = dup(disk).map_err(|e| format!("dup: {e}"))?;
    let stream = open_dev(rand::DEV)?;
    let reference = open_dev(rand::DEV)?;
    let mut pattern = [0u8; 1024];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = (i * 13 + 5) as u8;
    }
    seek(disk, AT).map_err(|e| format!("seek: {e}"))?;
    full_write(disk, &pattern)?;
    let pos = tell(disk).map_err(|e| format!("tell: {e}"))?;
    for fd in [stream, reference] {
        ioctl(fd, rand::IOC_RESEED, SEED).map_err(|e| format!("reseed: {e}"))?;
    }
    let mut first = [0u8; 64];
    full_read(stream, &mut first)?;

    for (fd, what) in [(disk, "ramdisk"), (stream, "rand")] {
        ext::complain(fd, complaint::ERROR).map_err(|e| format!("complain about {what}: {e}"))?;
    }

    let after = tell(disk).map_err(|e| format!("tell after the reset: {e}"))?;
    if after != pos {
        return Err(format!("position {pos} became {after} in the reset"));
    }
    let mut back = [0u8; 1024];
    seek(twin, AT).map_err(|e| format!("seek the duplicate: {e}"))?;
    full_read(twin, &mut back)?;
    if back != pattern {
        return Err(String::from("the ramdisk lost its data in the reset"));
    }
    let mut next = [0u8; 64];
    full_read(stream, &mut next)?;
    let mut whole = [0u8; 128];
    full_read(reference, &mut whole)?;
    if whole[..64] != first || whole[64..] != next {
        return Err(String::from(
            "the seeded rand stream did not go on where it was after the reset",
        ));
    }
    for fd in [disk, twin, stream, reference] {
        close(fd).map_err(|e| format!("close: {e}"))?;
    }
    Ok(())
}

fn full_write(fd: i32, data: &[u8]) -> Result<(), String> {
    let mut done = 0;
    while done < data.len() {
        done += match write(fd, &data[done..]) {
            Ok(0) => return Err(String::from("write: no progress")),
            Ok(n) => n,
            Err(e) => return Err(format!("write: {e}")),
        };
    }
    Ok(())
}

fn full_read(fd: i32, out: &mut [u8]) -> Result<(), String> {
    let mut done = 0;
    while done < out.len() {
        done += match read(fd, &mut out[done..]) {
            Ok(0) => return Err(String::from("read: end of device")),
            Ok(n) => n,
            Err(e) => return Err(format!("read: {e}")),
        };
    }
    Ok(())
}

/// A second open of the ramdisk starts at 0 and moves on its own.
fn independent_positions(first: i32) -> Result<(), String> {
    let tell = |fd| tell(fd).map_err(|e| format!("tell: {e}"));
    let before = tell(first)?;
    let second = open_dev(ramdisk::DEV)?;
    let r = (|| {
        let fresh = tell(second)?;
        let mut byte = [0u8; 1];
        read(second, &mut byte).map_err(|e| format!("read ramdisk: {e}"))?;
        let (after, moved) = (tell(first)?, tell(second)?);
        if fresh != 0 || moved != 1 || after != before {
            return Err(format!(
                "positions not per open: first {before}->{after}, second {fresh}->{moved}"
            ));
        }
        Ok(())
    })();
    let _ = close(second);
    r
}

fn ramdisk_round_trip(fd: i32) -> Result<(), String> {
    let size = ioctl(fd, ramdisk::IOC_SIZE, 0).map_err(|e| format!("ioctl SIZE: {e}"))?;
    if size != ramdisk::SIZE {
        return Err(format!("ramdisk size {size}"));
    }
    const OFFSET: u64 = 1000;
    let mut pattern = [0u8; 3000];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let seek = |pos| seek(fd, pos).map_err(|e| format!("seek: {e}"));
    seek(OFFSET)?;
    full_write(fd, &pattern).map_err(|e| format!("ramdisk {e}"))?;
    seek(OFFSET)?;
    let mut back = [0u8; 3000];
    full_read(fd, &mut back).map_err(|e| format!("ramdisk {e}"))?;
    if back != pattern {
        let at = back.iter().zip(&pattern).position(|(a, b)| a != b);
        return Err(format!("ramdisk data differs at offset {at:?}"));
    }
    Ok(())
}
