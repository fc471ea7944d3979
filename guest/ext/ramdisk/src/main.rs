//! `/dev/ramdisk`: a 64 KiB memory disk. Each open gets its own position:
//! `open` returns an index into [`POSITIONS`], which the kernel hands back
//! as `aux` on every later call. Reads and writes move at the position and
//! advance it; ioctls seek and report the size. A kernel lock serializes
//! disk access, which also exercises owner-recording locks in crash
//! diagnosis.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicPtr, Ordering};

use lazarus_extsdk::abi::dev::ramdisk::{IO_MAX, IOC_SEEK, IOC_SIZE, IOC_TELL, MAX_OPENS, SIZE};
use lazarus_extsdk::dev::Positions;
use lazarus_extsdk::errno::{EBADF, EINVAL, ENOMEM, ENOSPC};
use lazarus_extsdk::sync::KLock;
use lazarus_extsdk::user::{copy_from_user, copy_to_user};
use lazarus_extsdk::{api, declare_extension};

const DISK_SIZE: usize = SIZE as usize;
const DISK_ALIGN: usize = 4096;
/// The disk, allocated in `init` and freed in `exit`.
static DISK: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
/// Position of each open, indexed by `aux`; moved only with `LOCK` held.
static POSITIONS: Positions<MAX_OPENS> = Positions::new();
static LOCK: KLock = KLock::new();

fn init() -> i32 {
    if let Err(e) = LOCK.create("ramdisk") {
        return e;
    }
    let disk = (api().alloc)(DISK_SIZE, DISK_ALIGN);
    if disk.is_null() {
        return -(ENOMEM as i32);
    }
    // SAFETY: the kernel just gave us DISK_SIZE writable bytes at `disk`.
    unsafe { core::ptr::write_bytes(disk, 0, DISK_SIZE) };
    POSITIONS.clear();
    DISK.store(disk, Ordering::Release);
    0
}

extern "C" fn exit() {
    // The kernel unloads only with no open descriptors, so no device call
    // is running or can start.
    let disk = DISK.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if !disk.is_null() {
        (api().free)(disk, DISK_SIZE, DISK_ALIGN);
    }
}

extern "C" fn open(_pid: u32) -> i64 {
    POSITIONS.open()
}

extern "C" fn close(aux: u64) {
    POSITIONS.close(aux);
}

/// Runs `f` on the disk and the position of open `aux` with the lock held.
fn with_disk(aux: u64, f: impl FnOnce(&mut [u8], &mut u64) -> i64) -> i64 {
    let _guard = match LOCK.lock() {
        Ok(g) => g,
        Err(e) => return i64::from(e),
    };
    let disk = DISK.load(Ordering::Acquire);
    let Some(mut pos) = POSITIONS.get(aux) else {
        return -EBADF;
    };
    if disk.is_null() {
        return -EBADF;
    }
    // SAFETY: `disk` is the live DISK_SIZE-byte allocation from `init`
    // (freed only in `exit`, after the last device call), and the lock
    // makes this the only reference to it.
    let disk = unsafe { core::slice::from_raw_parts_mut(disk, DISK_SIZE) };
    let r = f(disk, &mut pos);
    POSITIONS.set(aux, pos);
    r
}

extern "C" fn read(aux: u64, buf: u64, len: usize) -> i64 {
    with_disk(aux, |disk, pos| {
        let start = *pos as usize;
        let n = len.min(IO_MAX).min(DISK_SIZE - start);
        if let Err(e) = copy_to_user(buf, &disk[start..start + n]) {
            return e;
        }
        *pos += n as u64;
        n as i64
    })
}

extern "C" fn write(aux: u64, buf: u64, len: usize) -> i64 {
    with_disk(aux, |disk, pos| {
        let start = *pos as usize;
        let n = len.min(IO_MAX).min(DISK_SIZE - start);
        if n == 0 && len > 0 {
            return -ENOSPC;
        }
        if let Err(e) = copy_from_user(&mut disk[start..start + n], buf) {
            return e;
        }
        *pos += n as u64;
        n as i64
    })
}

extern "C" fn ioctl(aux: u64, cmd: u64, arg: u64) -> i64 {
    match cmd {
        IOC_SIZE => SIZE as i64,
        IOC_SEEK if arg <= SIZE => with_disk(aux, |_, pos| {
            *pos = arg;
            arg as i64
        }),
        IOC_TELL => with_disk(aux, |_, pos| *pos as i64),
        _ => -EINVAL,
    }
}

declare_extension! {
    name: "ramdisk",
    device: "ramdisk",
    init: init,
    exit: exit,
    open: Some(open),
    read: Some(read),
    write: Some(write),
    ioctl: Some(ioctl),
    close: Some(close),
}
