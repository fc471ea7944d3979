//! File descriptors: the console, pipe ends and extension devices.

use crate::state::{current, current_pid, k};
use crate::uaccess::{self, KResult};
use crate::{ext, pipe, sched};
use lazarus_abi::root::*;
use lazarus_abi::syscall::errno::*;

/// Takes a reference on the object behind `fd` (it is being duplicated).
pub fn retain(fd: &Fd) {
    match fd.kind {
        FD_PIPE_READ => k().pipes[fd.obj as usize].readers += 1,
        FD_PIPE_WRITE => k().pipes[fd.obj as usize].writers += 1,
        FD_DEVICE => k().exts[fd.obj as usize].open_count += 1,
        _ => {}
    }
}

/// Drops a reference on the object behind `fd`.
pub fn release(fd: &Fd) {
    match fd.kind {
        FD_PIPE_READ | FD_PIPE_WRITE => pipe::close(fd.obj as usize, fd.kind == FD_PIPE_WRITE),
        FD_DEVICE => ext::dev_close(fd.obj as usize, fd.aux),
        _ => {}
    }
}

/// Whether the kernel could have installed `f`: a known kind naming an
/// object that exists.
fn well_formed(f: &Fd) -> bool {
    match f.kind {
        FD_CONSOLE => true,
        FD_PIPE_READ | FD_PIPE_WRITE => (f.obj as usize) < MAX_PIPES,
        FD_DEVICE => (f.obj as usize) < MAX_EXTS,
        _ => false,
    }
}

pub fn get(fd: u64) -> KResult<Fd> {
    let p = current().ok_or(EBADF)?;
    let f = *p.fds.get(fd as usize).ok_or(EBADF)?;
    if f.kind == FD_NONE {
        return Err(EBADF);
    }
    if !well_formed(&f) {
        // The process's descriptor table was corrupted: acting on it
        // would touch the wrong object, and failing the call would leave
        // the process silently broken. It is a crash blamed on that
        // process, which the repair quarantines.
        crate::crash::report_fmt(
            CRASH_PANIC,
            crate::state::current_ext(),
            &crate::crash::here(),
            format_args!(
                "descriptor table of pid {} corrupted: fd {fd} kind {:#x} obj {:#x}",
                current_pid(),
                f.kind,
                f.obj
            ),
        );
    }
    Ok(f)
}

pub fn install(f: Fd) -> KResult<u64> {
    let p = current().ok_or(EBADF)?;
    let i = p.fds.iter().position(|x| x.kind == FD_NONE).ok_or(EMFILE)?;
    p.fds[i] = f;
    Ok(i as u64)
}

pub fn close(fd: u64) -> KResult<u64> {
    let f = get(fd)?;
    if let Some(p) = current() {
        p.fds[fd as usize] = Fd::default();
    }
    release(&f);
    Ok(0)
}

pub fn dup(fd: u64) -> KResult<u64> {
    let f = get(fd)?;
    let n = install(f)?;
    retain(&f);
    Ok(n)
}

pub fn read(fd: u64, buf: u64, len: u64) -> KResult<u64> {
    let f = get(fd)?;
    uaccess::check(buf, len, true)?;
    match f.kind {
        FD_CONSOLE => {
            if len == 0 {
                return Ok(0);
            }
            loop {
                let mut tmp = [0u8; 256];
                let want = (len as usize).min(tmp.len());
                let n = crate::console::take(&mut tmp[..want]);
                if n > 0 {
                    uaccess::copy_to(buf, &tmp[..n])?;
                    return Ok(n as u64);
                }
                crate::boot::note_waiting_for_input();
                sched::block(W_CONSOLE, 0);
            }
        }
        FD_PIPE_READ => pipe::read(f.obj as usize, buf, len),
        FD_DEVICE => ext::dev_read(f.obj as usize, f.aux, buf, len),
        _ => Err(EBADF),
    }
}

pub fn write(fd: u64, buf: u64, len: u64) -> KResult<u64> {
    let f = get(fd)?;
    match f.kind {
        FD_CONSOLE => {
            let s = uaccess::slice(buf, len)?;
            crate::arch::serial::write(s);
            Ok(len)
        }
        FD_PIPE_WRITE => pipe::write(f.obj as usize, buf, len),
        FD_DEVICE => ext::dev_write(f.obj as usize, f.aux, buf, len),
        _ => Err(EBADF),
    }
}

pub fn ioctl(fd: u64, cmd: u64, arg: u64) -> KResult<u64> {
    let f = get(fd)?;
    match f.kind {
        FD_DEVICE => ext::dev_ioctl(f.obj as usize, f.aux, cmd, arg),
        _ => Err(ENOTSUP),
    }
}

pub fn open(path: &[u8]) -> KResult<u64> {
    let dev = path.strip_prefix(b"/dev/").ok_or(ENOENT)?;
    let (slot, aux) = ext::dev_open(dev, current_pid())?;
    match install(Fd {
        kind: FD_DEVICE,
        obj: slot as u32,
        aux,
    }) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            ext::dev_close(slot, aux);
            Err(e)
        }
    }
}
