//! File descriptors, console output macros and line input.
//!
//! Output is buffered per `print!` call and written with as few system
//! calls as possible: each costs ~15 µs plus emulated kernel time.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use lazarus_abi::syscall::{
    PATH_MAX, SEEK_CUR, SEEK_SET, SYS_CLOSE, SYS_DUP, SYS_IOCTL, SYS_OPEN, SYS_PIPE, SYS_READ,
    SYS_SEEK, SYS_WRITE,
};

use crate::syscall::{Errno, Result, check, syscall1, syscall3};

/// Input: the console, or a pipe the parent mapped at spawn.
pub const STDIN: i32 = 0;
/// Output: the console, or a pipe the parent mapped at spawn.
pub const STDOUT: i32 = 1;
/// Always the console.
pub const STDERR: i32 = 2;

/// Reads at most `buf.len()` bytes; blocks until at least one is there.
/// `Ok(0)` means end of file (a pipe with no writers left).
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let r = unsafe {
        syscall3(
            SYS_READ,
            fd as u64,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
        )
    };
    check(r).map(|n| n as usize)
}

/// Writes some of `buf`; returns how much.
pub fn write(fd: i32, buf: &[u8]) -> Result<usize> {
    // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`.
    let r = unsafe { syscall3(SYS_WRITE, fd as u64, buf.as_ptr() as u64, buf.len() as u64) };
    check(r).map(|n| n as usize)
}

/// Writes all of `buf`, looping over short writes (pipes).
pub fn write_all(fd: i32, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        match write(fd, buf)? {
            0 => return Err(Errno::EIO),
            n => buf = &buf[n..],
        }
    }
    Ok(())
}

/// Reads until end of file, appending to `out`.
pub fn read_to_end(fd: i32, out: &mut Vec<u8>) -> Result<usize> {
    let mut chunk = [0u8; 512];
    let start = out.len();
    loop {
        match read(fd, &mut chunk)? {
            0 => return Ok(out.len() - start),
            n => out.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Opens a device ("/dev/NAME").
pub fn open(path: &str) -> Result<i32> {
    if path.len() > PATH_MAX {
        return Err(Errno::E2BIG);
    }
    // SAFETY: the kernel reads `path.len()` bytes of the path.
    let r = unsafe { syscall3(SYS_OPEN, path.as_ptr() as u64, path.len() as u64, 0) };
    check(r).map(|fd| fd as i32)
}

/// Closes `fd`; the object goes away with its last descriptor.
pub fn close(fd: i32) -> Result<()> {
    // SAFETY: no memory is passed.
    check(unsafe { syscall1(SYS_CLOSE, fd as u64) }).map(drop)
}

/// Device-defined control call.
pub fn ioctl(fd: i32, cmd: u64, arg: u64) -> Result<u64> {
    // SAFETY: no memory is passed by the wrapper itself; a device that
    // treats `arg` as a user address checks it with copy_{to,from}_user.
    check(unsafe { syscall3(SYS_IOCTL, fd as u64, cmd, arg) })
}

/// Moves a device file's position to `at` bytes (`SYS_SEEK`, as `lseek`
/// with `SEEK_SET`); returns it.
pub fn seek(fd: i32, at: u64) -> Result<u64> {
    // SAFETY: no memory is passed.
    check(unsafe { syscall3(SYS_SEEK, fd as u64, at, SEEK_SET) })
}

/// A device file's position (`SYS_SEEK` by 0 from `SEEK_CUR`).
pub fn tell(fd: i32) -> Result<u64> {
    // SAFETY: no memory is passed.
    check(unsafe { syscall3(SYS_SEEK, fd as u64, 0, SEEK_CUR) })
}

/// Whether `fd` is an interactive terminal (the console on a host
/// terminal in raw mode): the reader then echoes and edits what is typed.
pub fn is_terminal(fd: i32) -> bool {
    ioctl(fd, lazarus_abi::syscall::tty::IS_TERMINAL, 0) == Ok(1)
}

/// Makes `pids` the console's foreground job (empty: none), the
/// processes a Ctrl-C on a terminal ends. EINVAL for more than
/// `tty::MAX_FOREGROUND`.
pub fn set_foreground(pids: &[u32]) -> Result<()> {
    use lazarus_abi::syscall::tty::{MAX_FOREGROUND, SET_FOREGROUND};
    let mut job = [0u32; MAX_FOREGROUND];
    if pids.len() > job.len() {
        return Err(Errno::EINVAL);
    }
    job[..pids.len()].copy_from_slice(pids);
    let arg = if pids.is_empty() {
        0
    } else {
        job.as_ptr() as u64
    };
    ioctl(STDIN, SET_FOREGROUND, arg).map(drop)
}

/// Creates a pipe: (read end, write end).
pub fn pipe() -> Result<(i32, i32)> {
    let mut fds = [-1i32; 2];
    // SAFETY: the kernel writes two i32s into `fds`.
    check(unsafe { syscall1(SYS_PIPE, fds.as_mut_ptr() as u64) })?;
    Ok((fds[0], fds[1]))
}

/// A new descriptor for the same object.
pub fn dup(fd: i32) -> Result<i32> {
    // SAFETY: no memory is passed.
    check(unsafe { syscall1(SYS_DUP, fd as u64) }).map(|fd| fd as i32)
}

/// A `fmt::Write` sink that gathers output in a fixed buffer and writes it
/// to `fd` when full and when dropped, so one `println!` is usually one
/// system call. Write errors are ignored, as with a console.
pub struct FdWriter<const N: usize> {
    fd: i32,
    len: usize,
    buf: [u8; N],
}

impl<const N: usize> FdWriter<N> {
    /// An empty writer to `fd`, buffering `N` bytes.
    pub const fn new(fd: i32) -> Self {
        FdWriter {
            fd,
            len: 0,
            buf: [0; N],
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        if self.len > 0 {
            let _ = write_all(self.fd, &self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl<const N: usize> fmt::Write for FdWriter<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut bytes = s.as_bytes();
        while !bytes.is_empty() {
            if self.len == N {
                self.flush();
            }
            let n = bytes.len().min(N - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
        Ok(())
    }
}

impl<const N: usize> Drop for FdWriter<N> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[doc(hidden)]
pub fn _print(fd: i32, args: fmt::Arguments) {
    use fmt::Write;
    match args.as_str() {
        Some(s) => {
            let _ = write_all(fd, s.as_bytes());
        }
        None => {
            let mut w = FdWriter::<512>::new(fd);
            let _ = w.write_fmt(args);
        }
    }
}

/// Prints to fd 1 with one system call per 512 bytes.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::io::_print($crate::io::STDOUT, format_args!($($arg)*)) };
}

/// [`print!`] with a newline.
#[macro_export]
macro_rules! println {
    () => { $crate::io::_print($crate::io::STDOUT, format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::io::_print($crate::io::STDOUT, format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints to fd 2.
#[macro_export]
macro_rules! eprint {
    ($($arg:tt)*) => { $crate::io::_print($crate::io::STDERR, format_args!($($arg)*)) };
}

/// [`eprint!`] with a newline.
#[macro_export]
macro_rules! eprintln {
    () => { $crate::io::_print($crate::io::STDERR, format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::io::_print($crate::io::STDERR, format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Longest line [`LineReader`] keeps; further bytes are counted and
/// dropped ([`LineReader::overlong`]), and the caller refuses the line.
pub const LINE_MAX: usize = 1024;

/// Reads lines from a descriptor that delivers bytes as they arrive (the
/// console) or in arbitrary chunks (a pipe), with minimal line editing:
/// `\r`, `\n` and `\r\n` end a line, backspace/DEL erase, Ctrl-C drops the
/// line, Ctrl-D on an empty line is end of input. With `echo`, what is
/// typed is written back to fd 1, one write per chunk read.
pub struct LineReader {
    fd: i32,
    echo: bool,
    pending: [u8; 256],
    start: usize,
    end: usize,
    /// The previous byte was `\r`, so a following `\n` is not a new line.
    after_cr: bool,
    /// Bytes the last line had beyond [`LINE_MAX`].
    overlong: usize,
}

impl LineReader {
    /// A reader of `fd`; `echo` writes what is typed back to fd 1 (the
    /// shell leaves it off: the host terminal already echoes).
    pub const fn new(fd: i32, echo: bool) -> LineReader {
        LineReader {
            fd,
            echo,
            pending: [0; 256],
            start: 0,
            end: 0,
            after_cr: false,
            overlong: 0,
        }
    }

    /// How many bytes past [`LINE_MAX`] the last line read had (0: it
    /// was whole). A caller must not act on a cut line.
    pub fn overlong(&self) -> usize {
        self.overlong
    }

    /// Reads the next line (without its terminator) into `line`.
    /// Returns false at end of input.
    pub fn read_line(&mut self, line: &mut String) -> Result<bool> {
        let mut bytes: Vec<u8> = Vec::new();
        let mut echo: Vec<u8> = Vec::new();
        self.overlong = 0;
        let done = loop {
            if self.start == self.end {
                self.flush_echo(&mut echo);
                let n = read(self.fd, &mut self.pending)?;
                if n == 0 {
                    break !bytes.is_empty();
                }
                self.start = 0;
                self.end = n;
            }
            let b = self.pending[self.start];
            self.start += 1;
            let after_cr = core::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    echo.push(b'\n');
                    break true;
                }
                0x08 | 0x7f => {
                    if let Some(c) = bytes.pop() {
                        // Drop a whole UTF-8 character, and erase one cell.
                        if c >= 0x80 {
                            while bytes.last().is_some_and(|&c| c & 0xc0 == 0x80) {
                                bytes.pop();
                            }
                            bytes.pop_if(|c| *c >= 0xc0);
                        }
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                0x03 => {
                    bytes.clear();
                    echo.extend_from_slice(b"^C\n");
                    break true;
                }
                0x04 if bytes.is_empty() => break false,
                b'\t' | 0x20..=0x7e | 0x80.. if bytes.len() < LINE_MAX => {
                    bytes.push(b);
                    echo.push(b);
                }
                b'\t' | 0x20..=0x7e | 0x80.. => self.overlong += 1,
                _ => {}
            }
        };
        self.flush_echo(&mut echo);
        line.clear();
        line.push_str(&String::from_utf8_lossy(&bytes));
        Ok(done)
    }

    fn flush_echo(&self, echo: &mut Vec<u8>) {
        if self.echo && !echo.is_empty() {
            let _ = write_all(STDOUT, echo);
        }
        echo.clear();
    }
}
