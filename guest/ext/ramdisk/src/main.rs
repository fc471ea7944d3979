//! `/dev/ramdisk`: a 64 KiB memory disk. Reads and writes move at the
//! position the kernel keeps for each open file; ioctls report the size.
//! The disk is memory the kernel keeps across a reset of the extension
//! (`ExtApi::keep`), as a real disk keeps its contents when its driver is
//! reloaded; reads and writes may be issued again after a reset. A kernel
//! lock serializes disk access, which also exercises owner-recording locks
//! in crash diagnosis.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicPtr, Ordering};

use lazarus_extsdk::abi::dev::ramdisk::{IO_MAX, IOC_SIZE, SIZE};
use lazarus_extsdk::abi::ext::{REPLAY_READ, REPLAY_WRITE, ioctl_bit};
use lazarus_extsdk::declare_extension;
use lazarus_extsdk::errno::{EBADF, EINVAL, ENOMEM, ENOSPC};
use lazarus_extsdk::mem::keep;
use lazarus_extsdk::sync::KLock;
use lazarus_extsdk::user::{copy_from_user, copy_to_user};

const DISK_SIZE: usize = SIZE as usize;
const DISK_ALIGN: usize = 4096;
/// The disk, from the kernel's kept memory (set in `init`).
static DISK: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static LOCK: KLock = KLock::new();

fn init() -> i32 {
    if let Err(e) = LOCK.create("ramdisk") {
        return e;
    }
    let Some(disk) = keep(DISK_SIZE, DISK_ALIGN) else {
        return -(ENOMEM as i32);
    };
    DISK.store(disk.as_ptr(), Ordering::Release);
    0
}

extern "C" fn exit() {
    // The kernel frees the kept disk when it unloads the extension.
    DISK.store(core::ptr::null_mut(), Ordering::Release);
}

/// Runs `f` on the disk with the lock held.
fn with_disk(f: impl FnOnce(&mut [u8]) -> i64) -> i64 {
    let _guard = match LOCK.lock() {
        Ok(g) => g,
        Err(e) => return i64::from(e),
    };
    let disk = DISK.load(Ordering::Acquire);
    if disk.is_null() {
        return -EBADF;
    }
    // SAFETY: `disk` is the DISK_SIZE-byte kept allocation from `init`
    // (freed only after `exit`, at unload), and the lock makes this the
    // only reference to it.
    f(unsafe { core::slice::from_raw_parts_mut(disk, DISK_SIZE) })
}

/// The bytes of a transfer of `len` at `pos`: `start..start + n`.
fn span(pos: u64, len: usize) -> (usize, usize) {
    let start = pos.min(SIZE) as usize;
    (start, len.min(IO_MAX).min(DISK_SIZE - start))
}

extern "C" fn read(_aux: u64, buf: u64, len: usize, pos: u64) -> i64 {
    with_disk(|disk| {
        let (start, n) = span(pos, len);
        match copy_to_user(buf, &disk[start..start + n]) {
            Ok(()) => n as i64,
            Err(e) => e,
        }
    })
}

extern "C" fn write(_aux: u64, buf: u64, len: usize, pos: u64) -> i64 {
    with_disk(|disk| {
        let (start, n) = span(pos, len);
        if n == 0 && len > 0 {
            return -ENOSPC;
        }
        match copy_from_user(&mut disk[start..start + n], buf) {
            Ok(()) => n as i64,
            Err(e) => e,
        }
    })
}

extern "C" fn ioctl(_aux: u64, cmd: u64, _arg: u64) -> i64 {
    match cmd {
        IOC_SIZE => SIZE as i64,
        _ => -EINVAL,
    }
}

declare_extension! {
    name: "ramdisk",
    device: "ramdisk",
    init: init,
    exit: exit,
    open: None,
    read: Some(read),
    write: Some(write),
    ioctl: Some(ioctl),
    close: None,
    replay: REPLAY_READ | REPLAY_WRITE,
    replay_ioctls: ioctl_bit(IOC_SIZE),
}
