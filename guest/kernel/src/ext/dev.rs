//! Extension devices: `/dev/NAME` opened, read, written and controlled
//! through the extension that provides it, with every reply checked
//! against the extension's contract.

use super::slot::{in_ext, live_descriptor};
use crate::file;
use crate::state::{current, current_pid, k};
use crate::uaccess::KResult;
use lazarus_abi::ext::{ExtDescriptor, REPLAY_READ, REPLAY_WRITE, ioctl_bit};
use lazarus_abi::root::*;
use lazarus_abi::syscall::errno::*;
use lazarus_abi::syscall::{SYS_CLOSE, SYS_EXIT, SYS_KILL};

/// Opens extension device `dev` for `pid`: a new open file. A device whose
/// extension is being reset is waited for, not missing.
pub fn dev_open(dev: &[u8], pid: u32) -> KResult<usize> {
    let slot = k()
        .exts
        .iter()
        .position(|e| {
            matches!(e.state, EXT_LIVE | EXT_LOADING)
                && e.dev_name
                    .iter()
                    .position(|&c| c == 0)
                    .map_or(&e.dev_name[..], |n| &e.dev_name[..n])
                    == dev
        })
        .ok_or(ENODEV)?;
    let d = wait_live(slot)?;
    let aux = match d.open {
        Some(open) => {
            let r = in_ext(slot, CALL_RESTART, || open(pid));
            if r < 0 {
                return Err(-r);
            }
            r as u64
        }
        None => 0,
    };
    file::alloc(slot, pid, aux).inspect_err(|_| close_in_ext(slot, aux, CALL_COMPLETE))
}

/// Drops a descriptor of open file `i`; the last one closes it in the
/// extension.
pub fn dev_close(i: usize) {
    if let Some((slot, aux)) = file::release(i) {
        // The descriptor is gone already: a close or kill interrupted by a
        // reset is done, an exit runs again (and finds nothing to close).
        let call = match current().map_or(u64::MAX, |p| p.syscall_nr) {
            SYS_CLOSE | SYS_KILL => CALL_COMPLETE,
            SYS_EXIT => CALL_RESTART,
            _ => CALL_INTERRUPT,
        };
        close_in_ext(slot, aux, call);
    }
}

fn close_in_ext(slot: usize, aux: u64, call: u32) {
    if let Some(d) = live_descriptor(slot)
        && let Some(close) = d.close
    {
        in_ext(slot, call, || close(aux));
    }
}

/// Waits while extension `slot` is being reset (its init runs again at
/// the next tick); `EIO` once it is out of service.
fn wait_live(slot: usize) -> KResult<&'static ExtDescriptor> {
    loop {
        match k().exts[slot].state {
            EXT_LIVE => return live_descriptor(slot).ok_or(EIO),
            EXT_LOADING => {
                // Woken by the re-init; the deadline only guards a lost
                // wakeup.
                let deadline = crate::state::now() + 10;
                crate::wait::block_until(W_EXT, slot as u32, deadline);
            }
            _ => return Err(EIO),
        }
    }
}

/// The live extension and open file behind file `i`: (slot, aux, pos,
/// descriptor). Waits out a reset; `EIO` if the file was not taken back.
fn file_call(i: usize) -> KResult<(usize, u64, u64, &'static ExtDescriptor)> {
    let slot = file::get(i).ok_or(EBADF)?.ext as usize;
    let d = wait_live(slot)?;
    let f = file::get(i).ok_or(EBADF)?;
    if f.state != FILE_OPEN || f.ext as usize != slot {
        return Err(EIO);
    }
    Ok((slot, f.aux, f.pos, d))
}

/// Moves file `i`'s position past a completed transfer (only then: a
/// transfer issued again after a reset starts where the first did).
fn advance(i: usize, from: u64, n: u64) {
    if let Some(f) = file::get(i) {
        f.pos = from + n;
    }
}

/// Highest errno an extension may return (as Linux's `MAX_ERRNO`).
const MAX_ERRNO: i64 = 4095;

/// Checks an extension's reply against its contract, Nooks-style: an
/// error must be an errno and a transfer no longer than asked. A broken
/// contract is a failed extension even though nothing crashed.
fn result(slot: usize, r: i64, max: Option<u64>, call: u32) -> KResult<u64> {
    if !crate::config::reply_checks() {
        return if r < 0 { Err(-r) } else { Ok(r as u64) };
    }
    if r < -MAX_ERRNO {
        failed(slot, call, "returned an invalid error code")
    } else if r < 0 {
        Err(-r)
    } else if max.is_some_and(|m| r as u64 > m) {
        failed(slot, call, "returned more bytes than asked for")
    } else {
        Ok(r as u64)
    }
}

/// Extension `slot` failed the current process without crashing: hand it
/// to the repair, which resets it, as a `CRASH_EXT_FAILED`. The process is
/// its victim, marked as in the extension with `call` (a `CALL_*`): the
/// repair has its system call issued again, completed or failed.
pub fn failed(slot: usize, call: u32, why: &str) -> ! {
    let pid = current_pid();
    if let Some(p) = current() {
        p.cur_ext = slot as u32;
        p.ext_call = call;
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
/// server) through its open file `i`. Only once
/// per `COMPLAINT_INTERVAL_TICKS` per extension, so that a client cannot
/// hold an extension in reset. Returns 0 after the reset.
pub fn complain(i: usize, why: &str) -> KResult<u64> {
    use lazarus_abi::syscall::COMPLAINT_INTERVAL_TICKS;
    let now = crate::state::now();
    let slot = file::get(i).ok_or(EBADF)?.ext as usize;
    let e = k().exts.get_mut(slot).ok_or(EBADF)?;
    match e.state {
        EXT_LIVE => {}
        // Being reset already: what the complaint asks for.
        EXT_LOADING => return wait_live(slot).map(|_| 0),
        _ => return Err(EIO),
    }
    if e.last_complaint_tick != 0
        && now.saturating_sub(e.last_complaint_tick) < COMPLAINT_INTERVAL_TICKS
    {
        return Err(EAGAIN);
    }
    e.last_complaint_tick = now.max(1);
    failed(slot, CALL_COMPLETE, why)
}

/// What the repair does with a call the extension may (`REPLAY_*` bit
/// set) or may not repeat.
fn replay_call(replayable: bool) -> u32 {
    if replayable { CALL_RESTART } else { CALL_FAIL }
}

pub fn dev_read(i: usize, buf: u64, len: u64) -> KResult<u64> {
    transfer(i, buf, len, false)
}

pub fn dev_write(i: usize, buf: u64, len: u64) -> KResult<u64> {
    transfer(i, buf, len, true)
}

/// A read or write of open file `i` at its position.
fn transfer(i: usize, buf: u64, len: u64, write: bool) -> KResult<u64> {
    let (slot, aux, pos, d) = file_call(i)?;
    let (op, replay) = if write {
        (d.write, REPLAY_WRITE)
    } else {
        (d.read, REPLAY_READ)
    };
    let f = op.ok_or(ENOTSUP)?;
    let call = replay_call(d.replay & replay != 0);
    let n = result(
        slot,
        in_ext(slot, call, || f(aux, buf, len as usize, pos)),
        Some(len),
        call,
    )?;
    advance(i, pos, n);
    Ok(n)
}

pub fn dev_ioctl(i: usize, cmd: u64, arg: u64) -> KResult<u64> {
    let (slot, aux, _, d) = file_call(i)?;
    let f = d.ioctl.ok_or(ENOTSUP)?;
    let bit = ioctl_bit(cmd);
    let call = replay_call(d.replay_ioctls & bit != 0);
    let r = result(slot, in_ext(slot, call, || f(aux, cmd, arg)), None, call)?;
    if d.config_ioctls & bit != 0 {
        file::remember_config(i, cmd, arg);
    }
    Ok(r)
}

/// After extension `slot`'s init ran again (in interrupt context on its
/// behalf): each of its open files is opened again for its opener and its
/// configuration ioctls issued again; a file it refuses is broken (`EIO`
/// from then on). A disabled extension takes none back. The clients
/// waiting for it run again. Returns (reopened, broken).
pub fn reopen_all(slot: usize) -> (u32, u32) {
    let d = live_descriptor(slot);
    let (mut reopened, mut broken) = (0, 0);
    for i in 0..MAX_FILES {
        let f = k().files[i];
        // A file broken before stays broken (and is not counted again).
        if matches!(f.state, FILE_FREE | FILE_BROKEN) || f.ext as usize != slot {
            continue;
        }
        if f.state == FILE_CLOSING {
            // Nobody holds it: nothing to take back.
            file::discard(i);
            continue;
        }
        let ok = d.is_some_and(|d| reopen(d, i, f.opener));
        if ok {
            reopened += 1;
        } else {
            k().files[i].state = FILE_BROKEN;
            broken += 1;
        }
    }
    crate::wait::wake_all(W_EXT, slot as u32);
    (reopened, broken)
}

fn reopen(d: &ExtDescriptor, i: usize, opener: u32) -> bool {
    let aux = match d.open {
        Some(open) => match open(opener) {
            r if r < 0 => return false,
            r => r as u64,
        },
        None => 0,
    };
    k().files[i].aux = aux;
    let f = k().files[i];
    let Some(ioctl) = d.ioctl else {
        return f.config_len == 0;
    };
    f.config[..(f.config_len as usize).min(MAX_FILE_CONFIG)]
        .iter()
        .all(|c| ioctl(aux, c.cmd, c.arg) >= 0)
}

/// Closes in their extensions the open files the repair left without a
/// descriptor (their last holder was quarantined).
pub fn close_orphans() {
    for i in 0..MAX_FILES {
        let f = k().files[i];
        if f.state != FILE_CLOSING {
            continue;
        }
        file::discard(i);
        let slot = f.ext as usize;
        if slot < MAX_EXTS {
            crate::ext::in_irq_of(slot as u32, || close_in_ext(slot, f.aux, CALL_INTERRUPT));
        }
    }
}
