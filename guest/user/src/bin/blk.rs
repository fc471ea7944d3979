//! `blk`: uses the virtio disk `/dev/vda` (`insmod virtblk` first).
//!
//! - `blk info`: its size and id;
//! - `blk write SECTOR COUNT SEED`: writes COUNT sectors of the test
//!   pattern (`abi::dev::virtblk::pattern`) from SECTOR;
//! - `blk verify SECTOR COUNT SEED`: reads them back and checks them;
//! - `blk flush`: flushes the device's write cache.
//!
//! Transfers go 64 KiB at a time. Each command ends with one line starting
//! `blk: ok` or `blk: FAIL`, for tests.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;

use lazarus_ulib::abi::dev::virtblk::{
    DEV, ID_BYTES, IO_MAX, IOC_FLUSH, IOC_GET_ID, IOC_SEEK, IOC_SIZE, SECTOR, pattern,
};
use lazarus_ulib::io::{close, ioctl, open, read, write};
use lazarus_ulib::{Args, entry, println};

entry!(main);

const USAGE: &str = "usage: blk info | blk write|verify SECTOR COUNT SEED | blk flush";

fn main(args: Args) -> i32 {
    let argv: alloc::vec::Vec<&str> = args.iter().skip(1).collect();
    let fd = match open(&format!("/dev/{DEV}")) {
        Ok(fd) => fd,
        Err(e) => {
            println!("blk: FAIL open /dev/{DEV}: {e}");
            return 1;
        }
    };
    let r = match argv.as_slice() {
        ["info"] => info(fd),
        ["flush"] => ioctl(fd, IOC_FLUSH, 0)
            .map(|_| String::from("flushed"))
            .map_err(|e| format!("flush: {e}")),
        [cmd @ ("write" | "verify"), sector, count, seed] => {
            match (sector.parse(), count.parse(), seed.parse()) {
                (Ok(s), Ok(c), Ok(seed)) => transfer(fd, *cmd == "write", s, c, seed),
                _ => Err(String::from(USAGE)),
            }
        }
        _ => Err(String::from(USAGE)),
    };
    let _ = close(fd);
    match r {
        Ok(what) => {
            println!("blk: ok {what}");
            0
        }
        Err(why) => {
            println!("blk: FAIL {why}");
            1
        }
    }
}

fn info(fd: i32) -> Result<String, String> {
    let size = ioctl(fd, IOC_SIZE, 0).map_err(|e| format!("size: {e}"))?;
    let mut id = [0u8; ID_BYTES];
    ioctl(fd, IOC_GET_ID, id.as_mut_ptr() as u64).map_err(|e| format!("id: {e}"))?;
    let n = id.iter().position(|&b| b == 0).unwrap_or(ID_BYTES);
    let id = core::str::from_utf8(&id[..n]).unwrap_or("?");
    Ok(format!("size {size} bytes ({} MiB), id {id}", size >> 20))
}

fn transfer(fd: i32, writing: bool, first: u64, count: u64, seed: u32) -> Result<String, String> {
    ioctl(fd, IOC_SEEK, first * SECTOR).map_err(|e| format!("seek to sector {first}: {e}"))?;
    let per = IO_MAX as u64 / SECTOR;
    let mut buf = vec![0u8; IO_MAX];
    let mut expect = [0u8; SECTOR as usize];
    let mut done = 0;
    while done < count {
        let n = per.min(count - done);
        let bytes = (n * SECTOR) as usize;
        let at = first + done;
        if writing {
            for (i, s) in buf[..bytes].chunks_mut(SECTOR as usize).enumerate() {
                pattern(seed, at + i as u64, &mut expect);
                s.copy_from_slice(&expect);
            }
            let w = write(fd, &buf[..bytes]).map_err(|e| format!("write at sector {at}: {e}"))?;
            if w != bytes {
                return Err(format!("short write at sector {at}: {w} of {bytes} bytes"));
            }
        } else {
            let r = read(fd, &mut buf[..bytes]).map_err(|e| format!("read at sector {at}: {e}"))?;
            if r != bytes {
                return Err(format!("short read at sector {at}: {r} of {bytes} bytes"));
            }
            for (i, s) in buf[..bytes].chunks(SECTOR as usize).enumerate() {
                pattern(seed, at + i as u64, &mut expect);
                if s != expect {
                    return Err(format!("sector {} differs from the pattern", at + i as u64));
                }
            }
        }
        done += n;
    }
    Ok(format!(
        "{} {count} sectors from {first} (seed {seed})",
        if writing { "wrote" } else { "verified" }
    ))
}
