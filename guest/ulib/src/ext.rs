//! Loading and listing kernel extensions.

use alloc::vec::Vec;

use lazarus_abi::root::MAX_EXTS;
use lazarus_abi::syscall::{ExtInfo, SYS_EXT_COMPLAIN, SYS_EXT_LIST, SYS_EXT_LOAD, SYS_EXT_UNLOAD};

use crate::syscall::{Result, check, syscall3};

/// Loads /ext/NAME.ko; returns its slot.
pub fn load(name: &str) -> Result<u32> {
    // SAFETY: the kernel reads `name.len()` bytes of the name.
    let r = unsafe { syscall3(SYS_EXT_LOAD, name.as_ptr() as u64, name.len() as u64, 0) };
    check(r).map(|slot| slot as u32)
}

/// Unloads extension NAME (`EBUSY` while its device is open).
pub fn unload(name: &str) -> Result<()> {
    // SAFETY: the kernel reads `name.len()` bytes of the name.
    let r = unsafe { syscall3(SYS_EXT_UNLOAD, name.as_ptr() as u64, name.len() as u64, 0) };
    check(r).map(drop)
}

/// Opens /dev/NAME of the extension NAME, loading the extension if it is
/// not loaded and reloading it if it was disabled after repeated crashes.
pub fn open_device(name: &str) -> Result<i32> {
    let path = alloc::format!("/dev/{name}");
    match crate::io::open(&path) {
        Err(crate::Errno::ENOENT | crate::Errno::ENODEV) => match load(name) {
            Err(crate::Errno::EEXIST) => unload_when_closed(name)
                .and_then(|_| load(name))
                .and_then(|_| crate::io::open(&path)),
            r => r.and_then(|_| crate::io::open(&path)),
        },
        r => r,
    }
}

/// Unloads a disabled extension to load it afresh. A process may still
/// have it open for a moment (EBUSY): typically one whose call a repair
/// just unwound, on its way out. Waits up to 2 s for it.
fn unload_when_closed(name: &str) -> Result<()> {
    let mut tries = 0;
    loop {
        match unload(name) {
            Err(crate::Errno::EBUSY) if tries < 200 => {
                tries += 1;
                crate::process::sleep_ms(10);
            }
            r => return r,
        }
    }
}

/// Reports that the extension behind device `fd` failed us without
/// crashing (`reason` from `lazarus_abi::syscall::complaint`). Returns
/// once it was reset and initialised again: `fd`'s per-open state is
/// gone, so reopen. `EAGAIN` if it was reported moments ago.
pub fn complain(fd: i32, reason: u64) -> Result<()> {
    // SAFETY: no memory is passed.
    let r = unsafe { syscall3(SYS_EXT_COMPLAIN, fd as u64, reason, 0) };
    check(r)?;
    // The kernel runs a reset extension's init at the next timer tick,
    // before it wakes sleepers: one tick of sleep finds it live again.
    crate::process::sleep_ms(1);
    Ok(())
}

/// Every extension slot in use.
pub fn list() -> Result<Vec<ExtInfo>> {
    let mut rows = alloc::vec![ExtInfo::default(); MAX_EXTS];
    // SAFETY: the kernel writes at most `rows.len()` records.
    let r = unsafe { syscall3(SYS_EXT_LIST, rows.as_mut_ptr() as u64, rows.len() as u64, 0) };
    let n = check(r)? as usize;
    rows.truncate(n);
    Ok(rows)
}
