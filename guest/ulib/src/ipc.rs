//! Message passing and the service registry.

use lazarus_abi::syscall::{
    IPC_FOREVER, IPC_MSG_MAX, SYS_IPC_RECV, SYS_IPC_RECV_TIMEOUT, SYS_IPC_REPLY_WAIT, SYS_IPC_SEND,
    SYS_IPC_SENDRECV, SYS_SVC_LOOKUP, SYS_SVC_REGISTER,
};

use crate::syscall::{Errno, Result, check, syscall3, syscall5, syscall6};

/// Queues `msg` (at most `IPC_MSG_MAX` bytes) for process `dst`.
pub fn send(dst: u32, msg: &[u8]) -> Result<()> {
    if msg.len() > IPC_MSG_MAX {
        return Err(Errno::E2BIG);
    }
    // SAFETY: the kernel reads `msg.len()` bytes from `msg`.
    let r = unsafe {
        syscall3(
            SYS_IPC_SEND,
            u64::from(dst),
            msg.as_ptr() as u64,
            msg.len() as u64,
        )
    };
    check(r).map(drop)
}

/// [`send`], retrying (yielding the CPU) while the kernel's message table
/// is full, up to `tries` times.
pub fn send_retry(dst: u32, msg: &[u8], tries: u32) -> Result<()> {
    while_table_full(tries, || send(dst, msg))
}

/// Runs `call` again, yielding the CPU in between, while it fails with
/// EAGAIN (the kernel's message table is full), up to `tries` times.
fn while_table_full<T>(tries: u32, mut call: impl FnMut() -> Result<T>) -> Result<T> {
    let mut left = tries;
    loop {
        match call() {
            Err(Errno::EAGAIN) if left > 0 => {
                left -= 1;
                crate::process::yield_now();
            }
            r => return r,
        }
    }
}

/// Blocks for the next message; returns (sender pid, length).
pub fn recv(buf: &mut [u8]) -> Result<(u32, usize)> {
    let mut src = 0u32;
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf` and one
    // u32 into `src`.
    let r = unsafe {
        syscall3(
            SYS_IPC_RECV,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
            &mut src as *mut u32 as u64,
        )
    };
    check(r).map(|n| (src, (n as usize).min(buf.len())))
}

/// [`recv`] that gives up after `timeout_ms`: `Ok(None)` when nothing came.
pub fn recv_timeout(buf: &mut [u8], timeout_ms: u64) -> Result<Option<(u32, usize)>> {
    let mut src = 0u32;
    // SAFETY: as in `recv`.
    let r = unsafe {
        syscall5(
            SYS_IPC_RECV_TIMEOUT,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
            &mut src as *mut u32 as u64,
            timeout_ms,
            0,
        )
    };
    match check(r) {
        Ok(n) => Ok(Some((src, (n as usize).min(buf.len())))),
        Err(Errno::ETIMEDOUT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sends `msg` to `dst`, then blocks for the next message into `buf`, in
/// one system call: a request and its reply, or a reply and the next
/// request. Returns (sender pid, length); on an error nothing was sent.
pub fn sendrecv(dst: u32, msg: &[u8], buf: &mut [u8]) -> Result<(u32, usize)> {
    exchange(SYS_IPC_SENDRECV, dst, msg, buf, 0)
}

/// What the send-then-receive calls share: `last` is the call's sixth
/// argument; the result is (sender pid, length).
fn exchange(nr: u64, dst: u32, msg: &[u8], buf: &mut [u8], last: u64) -> Result<(u32, usize)> {
    if msg.len() > IPC_MSG_MAX {
        return Err(Errno::E2BIG);
    }
    // SAFETY: the kernel reads `msg.len()` bytes from `msg` and writes at
    // most `buf.len()` bytes into `buf`.
    let r = unsafe {
        syscall6(
            nr,
            u64::from(dst),
            msg.as_ptr() as u64,
            msg.len() as u64,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
            last,
        )
    };
    check(r).map(|v| {
        (
            (v >> 32) as u32,
            ((v & 0xffff_ffff) as usize).min(buf.len()),
        )
    })
}

/// [`sendrecv`], retrying (yielding the CPU) while the kernel's message
/// table is full, up to `tries` times.
pub fn sendrecv_retry(dst: u32, msg: &[u8], buf: &mut [u8], tries: u32) -> Result<(u32, usize)> {
    while_table_full(tries, || sendrecv(dst, msg, buf))
}

/// A server's reply and its wait for the next message into `buf`, in one
/// system call. `reply` is (client, message), `None` for no reply; a
/// reply to a client that has gone is dropped. `until_ms` is a deadline
/// on the [`crate::process::uptime_ms`] clock (`None`: none): once it has
/// passed this returns `None` (after the reply), even with a message
/// queued. Else returns (sender pid, length). `EAGAIN` (the kernel's
/// message table is full) means nothing was sent.
pub fn reply_wait(
    reply: Option<(u32, &[u8])>,
    buf: &mut [u8],
    until_ms: Option<u64>,
) -> Result<Option<(u32, usize)>> {
    let (dst, msg) = reply.unwrap_or((0, &[]));
    let until = until_ms.map_or(IPC_FOREVER, |ms| ms.min(IPC_FOREVER - 1));
    match exchange(SYS_IPC_REPLY_WAIT, dst, msg, buf, until) {
        Ok(m) => Ok(Some(m)),
        Err(Errno::ETIMEDOUT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`reply_wait`], retrying (yielding the CPU) while the kernel's message
/// table is full, up to `tries` times.
pub fn reply_wait_retry(
    reply: Option<(u32, &[u8])>,
    buf: &mut [u8],
    until_ms: Option<u64>,
    tries: u32,
) -> Result<Option<(u32, usize)>> {
    while_table_full(tries, || reply_wait(reply, buf, until_ms))
}

/// Registers the caller as service `name`.
pub fn register(name: &str) -> Result<()> {
    // SAFETY: the kernel reads `name.len()` bytes.
    let r = unsafe { syscall3(SYS_SVC_REGISTER, name.as_ptr() as u64, name.len() as u64, 0) };
    check(r).map(drop)
}

/// The pid serving `name`.
pub fn lookup(name: &str) -> Result<u32> {
    // SAFETY: the kernel reads `name.len()` bytes.
    let r = unsafe { syscall3(SYS_SVC_LOOKUP, name.as_ptr() as u64, name.len() as u64, 0) };
    check(r).map(|pid| pid as u32)
}
