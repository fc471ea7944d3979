//! Processes: spawning, waiting, time, and the rest of the process calls.

use alloc::vec::Vec;

use lazarus_abi::root::MAX_PROCS;
use lazarus_abi::syscall::{
    ARGS_MAX, EXIT_INTERRUPTED, EXIT_KILLED, EXIT_QUARANTINED, PATH_MAX, ProcInfo, SYS_EXIT,
    SYS_GETPID, SYS_KILL, SYS_POWEROFF, SYS_PS, SYS_SBRK, SYS_SLEEP, SYS_SPAWN, SYS_UPTIME,
    SYS_WAIT, SYS_YIELD, WNOHANG,
};

use crate::syscall::{Errno, Result, check, syscall1, syscall5};

/// Ends the process with `status`.
pub fn exit(status: i32) -> ! {
    // SAFETY: no memory is passed; SYS_EXIT does not return.
    unsafe { syscall1(SYS_EXIT, status as i64 as u64) };
    // The kernel never resumes an exited process; trap if it did.
    loop {
        // SAFETY: `hlt` in ring 3 faults, and the kernel kills the process.
        unsafe { core::arch::asm!("hlt") };
    }
}

/// Where a child's fd 0 and fd 1 come from; `None` inherits the console.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFds {
    /// The parent's fd that becomes the child's fd 0.
    pub stdin: Option<i32>,
    /// The parent's fd that becomes the child's fd 1.
    pub stdout: Option<i32>,
}

/// Starts `path` with `args` (not including the path, which the runtime
/// puts first) and returns the child's pid.
pub fn spawn(path: &str, args: &[&str], fds: StdFds) -> Result<u32> {
    if path.len() > PATH_MAX {
        return Err(Errno::E2BIG);
    }
    let mut block = [0u8; ARGS_MAX];
    let mut len = 0;
    for (i, a) in core::iter::once(&path).chain(args).enumerate() {
        let sep = usize::from(i > 0);
        if len + sep + a.len() > ARGS_MAX || a.as_bytes().contains(&0) {
            return Err(Errno::E2BIG);
        }
        len += sep; // the separator is already zero
        block[len..len + a.len()].copy_from_slice(a.as_bytes());
        len += a.len();
    }
    let map = [fds.stdin.unwrap_or(-1), fds.stdout.unwrap_or(-1)];
    // SAFETY: the kernel reads the path, `len` bytes of arguments and the
    // two-entry fd map, all live for the call.
    let r = unsafe {
        syscall5(
            SYS_SPAWN,
            path.as_ptr() as u64,
            path.len() as u64,
            block.as_ptr() as u64,
            len as u64,
            map.as_ptr() as u64,
        )
    };
    check(r).map(|pid| pid as u32)
}

/// Waits for child `pid` (or any child with `None`); returns its pid and
/// exit status.
pub fn wait(pid: Option<u32>) -> Result<(u32, i32)> {
    wait_flags(pid, 0).map(|(p, s)| (p as u32, s))
}

/// Reaps child `pid` (or any child with `None`) if it has ended, without
/// blocking: `None` if none has yet.
pub fn try_wait(pid: Option<u32>) -> Result<Option<(u32, i32)>> {
    wait_flags(pid, WNOHANG).map(|(p, s)| (p != 0).then_some((p as u32, s)))
}

fn wait_flags(pid: Option<u32>, flags: u64) -> Result<(u64, i32)> {
    let mut status = 0i32;
    let target = pid.map_or(-1i64, i64::from);
    // SAFETY: the kernel writes one i32 into `status`.
    let r = unsafe {
        syscall5(
            SYS_WAIT,
            target as u64,
            &mut status as *mut i32 as u64,
            flags,
            0,
            0,
        )
    };
    check(r).map(|p| (p, status))
}

/// Describes an exit status for people.
pub struct Status(pub i32);

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            EXIT_KILLED => write!(f, "killed (status {EXIT_KILLED})"),
            EXIT_INTERRUPTED => write!(f, "interrupted (status {EXIT_INTERRUPTED})"),
            EXIT_QUARANTINED => write!(f, "quarantined (status {EXIT_QUARANTINED})"),
            s => write!(f, "exit status {s}"),
        }
    }
}

/// The calling process's pid.
pub fn getpid() -> u32 {
    // SAFETY: no memory is passed.
    unsafe { syscall1(SYS_GETPID, 0) as u32 }
}

/// Gives up the CPU.
pub fn yield_now() {
    // SAFETY: no memory is passed.
    unsafe { syscall1(SYS_YIELD, 0) };
}

/// Blocks for at least `ms` milliseconds (whole timer ticks).
pub fn sleep_ms(ms: u64) {
    // SAFETY: no memory is passed.
    unsafe { syscall1(SYS_SLEEP, ms) };
}

/// Milliseconds since boot.
pub fn uptime_ms() -> u64 {
    // SAFETY: no memory is passed.
    unsafe { syscall1(SYS_UPTIME, 0) as u64 }
}

/// Kills `pid` (its exit status becomes `EXIT_KILLED`); pid 1 cannot be
/// killed.
pub fn kill(pid: u32) -> Result<()> {
    // SAFETY: no memory is passed.
    check(unsafe { syscall1(SYS_KILL, u64::from(pid)) }).map(drop)
}

/// Powers the machine off with `status` as the VM's exit status.
pub fn poweroff(status: i32) -> ! {
    // SAFETY: no memory is passed; SYS_POWEROFF does not return.
    unsafe { syscall1(SYS_POWEROFF, status as i64 as u64) };
    exit(status)
}

/// Moves the program break by `increment`; returns the previous break.
pub fn sbrk(increment: i64) -> Result<u64> {
    // SAFETY: no memory is passed; the kernel maps the new range.
    check(unsafe { syscall1(SYS_SBRK, increment as u64) })
}

/// Fills `out` with process-table rows; returns how many.
pub fn ps_into(out: &mut [ProcInfo]) -> Result<usize> {
    // SAFETY: the kernel writes at most `out.len()` records into `out`.
    let r = unsafe { syscall5(SYS_PS, out.as_mut_ptr() as u64, out.len() as u64, 0, 0, 0) };
    check(r).map(|n| (n as usize).min(out.len()))
}

/// All process-table rows.
pub fn ps() -> Result<Vec<ProcInfo>> {
    table(SYS_PS, MAX_PROCS)
}

/// Fills up to `cap` rows of a kernel table through system call `nr`
/// (`(*mut T, max) -> count`).
fn table<T: Clone + Default>(nr: u64, cap: usize) -> Result<Vec<T>> {
    let mut rows = alloc::vec![T::default(); cap];
    // SAFETY: the kernel writes at most `rows.len()` records of `T` into
    // `rows` (each table call's record type is its ABI's).
    let r = unsafe { syscall5(nr, rows.as_mut_ptr() as u64, rows.len() as u64, 0, 0, 0) };
    let n = check(r)? as usize;
    rows.truncate(n.min(rows.len()));
    Ok(rows)
}

/// One row per CPU: its ticks, idle ticks and current process.
pub fn cpus() -> Result<Vec<lazarus_abi::syscall::CpuInfo>> {
    table(lazarus_abi::syscall::SYS_CPUS, lazarus_abi::boot::MAX_CPUS)
}

/// The kernel's log of resurrections (most recent last, up to 16).
pub fn recoveries() -> Result<Vec<lazarus_abi::root::RecoveryRecord>> {
    table(
        lazarus_abi::syscall::SYS_RECOVERIES,
        lazarus_abi::root::MAX_RECOVERIES,
    )
}
