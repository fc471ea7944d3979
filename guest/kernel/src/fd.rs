//! File descriptors: the console, pipe ends and extension devices. The
//! calls on a descriptor are dispatched to the object behind it.

use crate::state::{current, current_pid, k};
use crate::uaccess::{self, KResult};
use crate::{console, ext, pipe};
use lazarus_abi::root::*;
use lazarus_abi::syscall::errno::*;

/// Takes a reference on the object behind `fd` (it is being duplicated).
pub fn retain(fd: &Fd) {
    match fd.kind {
        FD_PIPE_READ => k().pipes[fd.obj as usize].readers += 1,
        FD_PIPE_WRITE => k().pipes[fd.obj as usize].writers += 1,
        FD_DEVICE => crate::file::retain(fd.obj as usize),
        _ => {}
    }
}

/// Drops a reference on the object behind `fd`.
pub fn release(fd: &Fd) {
    match fd.kind {
        FD_PIPE_READ | FD_PIPE_WRITE => pipe::close(fd.obj as usize, fd.kind == FD_PIPE_WRITE),
        FD_DEVICE => ext::dev_close(fd.obj as usize),
        _ => {}
    }
}

/// Whether the kernel could have installed `f`: a known kind naming an
/// object that exists.
fn well_formed(f: &Fd) -> bool {
    match f.kind {
        FD_CONSOLE => true,
        FD_PIPE_READ | FD_PIPE_WRITE => (f.obj as usize) < MAX_PIPES,
        FD_DEVICE => (f.obj as usize) < MAX_FILES,
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
        FD_CONSOLE => console::read(buf, len),
        FD_PIPE_READ => pipe::read(f.obj as usize, buf, len),
        FD_DEVICE => ext::dev_read(f.obj as usize, buf, len),
        _ => Err(EBADF),
    }
}

pub fn write(fd: u64, buf: u64, len: u64) -> KResult<u64> {
    let f = get(fd)?;
    match f.kind {
        FD_CONSOLE => console::write(buf, len),
        FD_PIPE_WRITE => pipe::write(f.obj as usize, buf, len),
        FD_DEVICE => ext::dev_write(f.obj as usize, buf, len),
        _ => Err(EBADF),
    }
}

pub fn ioctl(fd: u64, cmd: u64, arg: u64) -> KResult<u64> {
    let f = get(fd)?;
    match f.kind {
        FD_DEVICE => ext::dev_ioctl(f.obj as usize, cmd, arg),
        FD_CONSOLE => console::ioctl(cmd, arg),
        _ => Err(ENOTSUP),
    }
}

/// `SYS_EXT_COMPLAIN`: a client reports that the extension behind `fd`
/// failed it (see `ext::complain`). Only a process with the device open
/// can complain.
pub fn complain(fd: u64, reason: u64) -> KResult<u64> {
    let why = lazarus_abi::syscall::complaint::name(reason).ok_or(EINVAL)?;
    let f = get(fd)?;
    if f.kind != FD_DEVICE {
        return Err(ENOTTY);
    }
    ext::complain(f.obj as usize, why)
}

/// Creates a pipe and installs its read and write ends.
pub fn pipe() -> KResult<(u64, u64)> {
    let i = pipe::create()?;
    let rfd = match install(Fd {
        kind: FD_PIPE_READ,
        obj: i as u32,
    }) {
        Ok(f) => f,
        Err(e) => {
            pipe::discard(i);
            return Err(e);
        }
    };
    match install(Fd {
        kind: FD_PIPE_WRITE,
        obj: i as u32,
    }) {
        Ok(w) => Ok((rfd, w)),
        Err(e) => {
            let _ = close(rfd);
            pipe::close(i, true);
            Err(e)
        }
    }
}

pub fn open(path: &[u8]) -> KResult<u64> {
    let dev = path.strip_prefix(b"/dev/").ok_or(ENOENT)?;
    let file = ext::dev_open(dev, current_pid())?;
    match install(Fd {
        kind: FD_DEVICE,
        obj: file as u32,
    }) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            ext::dev_close(file);
            Err(e)
        }
    }
}

/// `SYS_SEEK`: moves a device file's position, which the kernel keeps.
pub fn seek(fd: u64, off: u64, whence: u64) -> KResult<u64> {
    let f = get(fd)?;
    if f.kind != FD_DEVICE {
        return Err(ESPIPE);
    }
    crate::file::seek(f.obj as usize, off, whence)
}
