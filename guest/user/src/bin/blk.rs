//! `blk`: uses the virtio disk `/dev/vda` (`insmod virtblk` first).
//!
//! - `blk info`: its size and id;
//! - `blk write SECTOR COUNT SEED`: writes COUNT sectors of the test
//!   pattern (`abi::dev::virtblk::pattern`) from SECTOR;
//! - `blk verify SECTOR COUNT SEED`: reads them back and checks them;
//! - `blk flush`: flushes the device's write cache;
//! - `blk fault bad-descriptor`: arms the driver fault of that name
//!   (`IOC_FAULT`) and writes one sector, which must fail with EIO;
//! - `blk bench MIB OPS SEED`: for `lazarus bench io`, writes MIB MiB
//!   sequentially in 64 KiB requests and flushes, reads them back, then
//!   does OPS random 4 KiB reads and OPS random 4 KiB writes in that range
//!   and flushes, timing each phase with the kernel clock:
//!   `blk: ok bench mib=.. ops=.. seq_write_ms=.. seq_read_ms=..
//!   rand_read_ms=.. rand_write_ms=..`.
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
    BenchOffsets, DEV, FAULT_BAD_DESCRIPTOR, ID_BYTES, IO_MAX, IOC_FAULT, IOC_FLUSH, IOC_GET_ID,
    IOC_SIZE, SECTOR, pattern,
};
use lazarus_ulib::io::{close, ioctl, open, read, seek, write};
use lazarus_ulib::process::uptime_ms;
use lazarus_ulib::{Args, entry, println};

entry!(main);

const USAGE: &str = "usage: blk info | blk write|verify SECTOR COUNT SEED | blk flush | blk fault bad-descriptor | blk bench MIB OPS SEED";
/// Bytes of a random request in `blk bench`.
const RANDOM_IO: usize = BenchOffsets::IO;

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
        ["fault", "bad-descriptor"] => bad_descriptor(fd),
        ["bench", mib, ops, seed] => match (mib.parse(), ops.parse(), seed.parse()) {
            (Ok(m), Ok(o), Ok(s)) => bench(fd, m, o, s),
            _ => Err(String::from(USAGE)),
        },
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
    seek(fd, first * SECTOR).map_err(|e| format!("seek to sector {first}: {e}"))?;
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

fn bench(fd: i32, mib: u64, ops: u64, seed: u64) -> Result<String, String> {
    let bytes = mib << 20;
    let size = ioctl(fd, IOC_SIZE, 0).map_err(|e| format!("size: {e}"))?;
    if bytes == 0 || bytes > size {
        return Err(format!("{mib} MiB does not fit the {size}-byte disk"));
    }
    let mut buf = vec![0xa5u8; IO_MAX];
    let timed = |f: &mut dyn FnMut() -> Result<(), String>| -> Result<u64, String> {
        let t0 = uptime_ms();
        f()?;
        Ok(uptime_ms() - t0)
    };
    let seq = |buf: &mut [u8], writing: bool| -> Result<(), String> {
        seek(fd, 0).map_err(|e| format!("seek: {e}"))?;
        let mut done = 0;
        while done < bytes {
            let n = if writing {
                write(fd, buf)
            } else {
                read(fd, buf)
            }
            .map_err(|e| format!("at byte {done}: {e}"))?;
            if n != buf.len() {
                return Err(format!("short transfer at byte {done}"));
            }
            done += n as u64;
        }
        if writing {
            ioctl(fd, IOC_FLUSH, 0).map_err(|e| format!("flush: {e}"))?;
        }
        Ok(())
    };
    let random = |buf: &mut [u8], writing: bool, offsets: BenchOffsets| -> Result<(), String> {
        for at in offsets.take(ops as usize) {
            seek(fd, at).map_err(|e| format!("seek: {e}"))?;
            let io = &mut buf[..RANDOM_IO];
            let n = if writing { write(fd, io) } else { read(fd, io) }
                .map_err(|e| format!("at byte {at}: {e}"))?;
            if n != RANDOM_IO {
                return Err(format!("short transfer at byte {at}"));
            }
        }
        if writing {
            ioctl(fd, IOC_FLUSH, 0).map_err(|e| format!("flush: {e}"))?;
        }
        Ok(())
    };
    let seq_write = timed(&mut || seq(&mut buf, true))?;
    let seq_read = timed(&mut || seq(&mut buf, false))?;
    let reads = BenchOffsets::reads(seed, bytes);
    let rand_read = timed(&mut || random(&mut buf, false, reads.clone()))?;
    let writes = BenchOffsets::writes(seed, bytes);
    let rand_write = timed(&mut || random(&mut buf, true, writes.clone()))?;
    Ok(format!(
        "bench mib={mib} ops={ops} seq_write_ms={seq_write} seq_read_ms={seq_read} rand_read_ms={rand_read} rand_write_ms={rand_write}"
    ))
}

/// A write through a driver that hands the device a bad buffer must fail,
/// not land somewhere.
fn bad_descriptor(fd: i32) -> Result<String, String> {
    let size = ioctl(fd, IOC_SIZE, 0).map_err(|e| format!("size: {e}"))?;
    let at = size - SECTOR;
    seek(fd, at).map_err(|e| format!("seek: {e}"))?;
    ioctl(fd, IOC_FAULT, FAULT_BAD_DESCRIPTOR).map_err(|e| format!("arm the fault: {e}"))?;
    let sector = [0x5au8; SECTOR as usize];
    match write(fd, &sector) {
        Err(e) => Ok(format!("the write with a bad descriptor failed: {e}")),
        Ok(n) => Err(format!(
            "the write with a bad descriptor succeeded ({n} bytes)"
        )),
    }
}
