//! Extension devices: `/dev/NAME` opened, read, written and controlled
//! through the extension that provides it, with every reply checked
//! against the extension's contract.

use super::slot::{descriptor, in_ext, live_descriptor};
use crate::state::{current, current_pid, k};
use crate::uaccess::KResult;
use lazarus_abi::root::*;
use lazarus_abi::syscall::errno::*;

pub fn dev_open(dev: &[u8], pid: u32) -> KResult<(usize, u64)> {
    let slot = k()
        .exts
        .iter()
        .position(|e| {
            e.state == EXT_LIVE
                && e.dev_name
                    .iter()
                    .position(|&c| c == 0)
                    .map_or(&e.dev_name[..], |n| &e.dev_name[..n])
                    == dev
        })
        .ok_or(ENODEV)?;
    let d = descriptor(slot).ok_or(ENODEV)?;
    let aux = match d.open {
        Some(open) => {
            let r = in_ext(slot, || open(pid));
            if r < 0 {
                return Err(-r);
            }
            r as u64
        }
        None => 0,
    };
    k().exts[slot].open_count += 1;
    Ok((slot, aux))
}

pub fn dev_close(slot: usize, aux: u64) {
    if let Some(d) = live_descriptor(slot)
        && let Some(close) = d.close
    {
        in_ext(slot, || close(aux));
    }
    let e = &mut k().exts[slot];
    e.open_count = e.open_count.saturating_sub(1);
}

/// Highest errno an extension may return (as Linux's `MAX_ERRNO`).
const MAX_ERRNO: i64 = 4095;

/// Checks an extension's reply against its contract, Nooks-style: an
/// error must be an errno and a transfer no longer than asked. A broken
/// contract is a failed extension even though nothing crashed.
fn result(slot: usize, r: i64, max: Option<u64>) -> KResult<u64> {
    if !crate::config::reply_checks() {
        return if r < 0 { Err(-r) } else { Ok(r as u64) };
    }
    if r < -MAX_ERRNO {
        failed(slot, -EIO, "returned an invalid error code")
    } else if r < 0 {
        Err(-r)
    } else if max.is_some_and(|m| r as u64 > m) {
        failed(slot, -EIO, "returned more bytes than asked for")
    } else {
        Ok(r as u64)
    }
}

/// Extension `slot` failed the current process without crashing: hand it
/// to the repair, which resets it, as a `CRASH_EXT_FAILED`. The process is
/// its victim: its system call returns `ret` once the kernel resumes.
fn failed(slot: usize, ret: i64, why: &str) -> ! {
    let pid = current_pid();
    if let Some(p) = current()
        && p.user_frame != 0
    {
        // SAFETY: `user_frame` points at this system call's trap frame on
        // the current process's kernel stack, live until it returns.
        unsafe { (*(p.user_frame as *mut lazarus_abi::trap::TrapFrame)).rax = ret as u64 };
    }
    crate::crash::report_fmt(
        CRASH_EXT_FAILED,
        slot as u32,
        &crate::crash::here(),
        format_args!(
            "extension {} failed pid {pid}: {why}",
            lazarus_abi::name_str(&k().exts[slot].name)
        ),
    )
}

/// `SYS_EXT_COMPLAIN`: a client reports that the extension in `slot`
/// failed it (as drivers' clients complain to MINIX 3's reincarnation
/// server); `fd::complain` checked that it has the device open. Only once
/// per `COMPLAINT_INTERVAL_TICKS` per extension, so that a client cannot
/// hold an extension in reset. Returns 0 after the reset.
pub fn complain(slot: usize, why: &str) -> KResult<u64> {
    use lazarus_abi::syscall::COMPLAINT_INTERVAL_TICKS;
    let now = crate::state::now();
    let e = k().exts.get_mut(slot).ok_or(EBADF)?;
    if e.state != EXT_LIVE {
        return Err(ENODEV);
    }
    if e.last_complaint_tick != 0
        && now.saturating_sub(e.last_complaint_tick) < COMPLAINT_INTERVAL_TICKS
    {
        return Err(EAGAIN);
    }
    e.last_complaint_tick = now.max(1);
    failed(slot, 0, why)
}

pub fn dev_read(slot: usize, aux: u64, buf: u64, len: u64) -> KResult<u64> {
    let d = live_descriptor(slot).ok_or(ENODEV)?;
    let f = d.read.ok_or(ENOTSUP)?;
    result(slot, in_ext(slot, || f(aux, buf, len as usize)), Some(len))
}

pub fn dev_write(slot: usize, aux: u64, buf: u64, len: u64) -> KResult<u64> {
    let d = live_descriptor(slot).ok_or(ENODEV)?;
    let f = d.write.ok_or(ENOTSUP)?;
    result(slot, in_ext(slot, || f(aux, buf, len as usize)), Some(len))
}

pub fn dev_ioctl(slot: usize, aux: u64, cmd: u64, arg: u64) -> KResult<u64> {
    let d = live_descriptor(slot).ok_or(ENODEV)?;
    let f = d.ioctl.ok_or(ENOTSUP)?;
    result(slot, in_ext(slot, || f(aux, cmd, arg)), None)
}
