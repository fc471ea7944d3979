//! `devtest`: exercises the bundled device extensions (`insmod rand` and
//! `insmod ramdisk` first): 16 bytes from /dev/rand, then a write/read-back
//! round trip on /dev/ramdisk.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use core::fmt::Write;

use lazarus_ulib::abi::dev::{ramdisk, rand};
use lazarus_ulib::io::{close, ioctl, open, read, seek, tell, write};
use lazarus_ulib::{Args, entry, println};

entry!(main);

fn main(_args: Args) -> i32 {
    match run() {
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
    let mut done = 0;
    while done < pattern.len() {
        done += match write(fd, &pattern[done..]) {
            Ok(0) => return Err(String::from("write ramdisk: no progress")),
            Ok(n) => n,
            Err(e) => return Err(format!("write ramdisk: {e}")),
        };
    }
    seek(OFFSET)?;
    let mut back = [0u8; 3000];
    let mut done = 0;
    while done < back.len() {
        done += match read(fd, &mut back[done..]) {
            Ok(0) => return Err(String::from("read ramdisk: end of disk")),
            Ok(n) => n,
            Err(e) => return Err(format!("read ramdisk: {e}")),
        };
    }
    if back != pattern {
        let at = back.iter().zip(&pattern).position(|(a, b)| a != b);
        return Err(format!("ramdisk data differs at offset {at:?}"));
    }
    Ok(())
}
