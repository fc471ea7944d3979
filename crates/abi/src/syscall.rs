//! System-call numbers and the records they exchange with user programs.
//!
//! Calling convention: a ring-3 program executes `ud2` with the number in
//! RAX and arguments in RDI, RSI, RDX, R10, R8; the kernel returns in RAX
//! (negative = `-errno`) and resumes after the `ud2`. PLATFORM.md explains
//! why it is not `syscall` or `int 0x80`.

//! Process entry: RIP = ELF entry, RSP = 16-byte aligned top of the user
//! stack, RDI = pointer to the NUL-separated arguments (the program path
//! first), RSI = their length in bytes. fd 0 is input, fd 1 output, fd 2
//! the console. A spawned child gets the console on all three unless the
//! `fds` argument of [`SYS_SPAWN`] maps 0 and 1 to the parent's fds (an
//! entry of -1 keeps the console).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The two bytes of `ud2`, which the kernel checks before treating a #UD
/// from ring 3 as a system call.
pub const SYSCALL_INSN: [u8; 2] = [0x0f, 0x0b];

pub const SYS_EXIT: u64 = 0;
/// (fd, buf, len) -> bytes read; blocks until at least one byte.
pub const SYS_READ: u64 = 1;
/// (fd, buf, len) -> bytes written.
pub const SYS_WRITE: u64 = 2;
/// (path, path_len) -> fd. Paths are "/dev/NAME" for extension devices.
pub const SYS_OPEN: u64 = 3;
pub const SYS_CLOSE: u64 = 4;
/// (fd, cmd, arg) -> device-defined.
pub const SYS_IOCTL: u64 = 5;
/// (path, path_len, args, args_len, fds: *const [i32; 2]) -> pid.
/// `args` are NUL-separated; `fds` maps the child's fd 0 and 1 (or null).
pub const SYS_SPAWN: u64 = 6;
/// (pid or -1, *mut i32 status, flags) -> pid of the reaped child; with
/// [`WNOHANG`], 0 at once if no such child has ended yet.
pub const SYS_WAIT: u64 = 7;
/// [`SYS_WAIT`] flag: do not block.
pub const WNOHANG: u64 = 1;
pub const SYS_YIELD: u64 = 8;
/// (milliseconds)
pub const SYS_SLEEP: u64 = 9;
pub const SYS_GETPID: u64 = 10;
/// (*mut [i32; 2]) -> 0; [0] is the read end.
pub const SYS_PIPE: u64 = 11;
/// (increment) -> previous break.
pub const SYS_SBRK: u64 = 12;
/// (*mut ProcInfo, max) -> count.
pub const SYS_PS: u64 = 13;
/// (name, len) -> slot.
pub const SYS_EXT_LOAD: u64 = 14;
/// (name, len) -> 0.
pub const SYS_EXT_UNLOAD: u64 = 15;
/// (*mut ExtInfo, max) -> count.
pub const SYS_EXT_LIST: u64 = 16;
/// (dst pid, buf, len) -> 0. Message of at most [`IPC_MSG_MAX`] bytes.
pub const SYS_IPC_SEND: u64 = 17;
/// (buf, len, *mut u32 src) -> message length; blocks.
pub const SYS_IPC_RECV: u64 = 18;
/// (name, len) -> 0. Registers the caller as the named service.
pub const SYS_SVC_REGISTER: u64 = 19;
/// (name, len) -> pid.
pub const SYS_SVC_LOOKUP: u64 = 20;
/// (status) -> never returns.
pub const SYS_POWEROFF: u64 = 21;
/// () -> milliseconds since boot.
pub const SYS_UPTIME: u64 = 22;
/// (pid) -> 0.
pub const SYS_KILL: u64 = 23;
/// (fd) -> new fd referring to the same object.
pub const SYS_DUP: u64 = 24;
/// (*mut RecoveryRecord, max) -> count, most recent last.
pub const SYS_RECOVERIES: u64 = 25;
/// (device fd, reason) -> 0 once the extension behind the fd was reset.
/// A client reports that the extension failed it without crashing (bad
/// data, an error it should not return); the kernel hands the extension
/// to the repair as a `CRASH_EXT_FAILED`. `EAGAIN` if the extension was
/// reported less than [`COMPLAINT_INTERVAL_TICKS`] ago, `ENODEV` if it is
/// not live, `ENOTTY` if the fd is not a device.
pub const SYS_EXT_COMPLAIN: u64 = 26;

/// Reasons for [`SYS_EXT_COMPLAIN`].
pub mod complaint {
    /// It returned an error it has no business returning.
    pub const ERROR: u64 = 1;
    /// It returned wrong data (a read-back differs from what was written).
    pub const BAD_DATA: u64 = 2;
    /// It returned a wrong reply to a request with a known answer.
    pub const BAD_REPLY: u64 = 3;

    pub const fn name(r: u64) -> Option<&'static str> {
        match r {
            ERROR => Some("returned an unexpected error"),
            BAD_DATA => Some("returned wrong data"),
            BAD_REPLY => Some("returned a wrong reply"),
            _ => None,
        }
    }
}
/// At most one accepted complaint per extension in this many ticks.
pub const COMPLAINT_INTERVAL_TICKS: u64 = 50;

pub const IPC_MSG_MAX: usize = 240;
pub const PATH_MAX: usize = 64;
pub const ARGS_MAX: usize = 512;

pub mod errno {
    pub const EPERM: i64 = 1;
    pub const ENOENT: i64 = 2;
    pub const ESRCH: i64 = 3;
    /// A system call aborted by a kernel repair (the extension it was in
    /// was reset); the caller may retry.
    pub const EINTR: i64 = 4;
    pub const EIO: i64 = 5;
    pub const E2BIG: i64 = 7;
    pub const ENOEXEC: i64 = 8;
    pub const EBADF: i64 = 9;
    pub const ECHILD: i64 = 10;
    pub const EAGAIN: i64 = 11;
    pub const ENOMEM: i64 = 12;
    pub const EFAULT: i64 = 14;
    pub const EBUSY: i64 = 16;
    pub const EEXIST: i64 = 17;
    pub const ENODEV: i64 = 19;
    pub const EINVAL: i64 = 22;
    pub const EMFILE: i64 = 24;
    pub const ENOSPC: i64 = 28;
    pub const EPIPE: i64 = 32;
    pub const ENOTTY: i64 = 25;
    pub const ENOSYS: i64 = 38;
    pub const ENOTSUP: i64 = 95;

    pub const fn name(e: i64) -> &'static str {
        match e {
            EPERM => "operation not permitted",
            ENOENT => "no such file",
            ESRCH => "no such process",
            EINTR => "interrupted by a kernel repair",
            ENOTTY => "not a device",
            EIO => "I/O error",
            E2BIG => "argument too long",
            ENOEXEC => "not an executable",
            EBADF => "bad file descriptor",
            ECHILD => "no child process",
            EAGAIN => "try again",
            ENOMEM => "out of memory",
            EFAULT => "bad address",
            EBUSY => "busy",
            EEXIST => "already exists",
            ENODEV => "no such device",
            EINVAL => "invalid argument",
            EMFILE => "too many open files",
            ENOSPC => "no space left",
            EPIPE => "broken pipe",
            ENOSYS => "no such system call",
            ENOTSUP => "not supported",
            _ => "error",
        }
    }
}

/// Exit status of a process killed by the kernel (bad syscall, fault).
pub const EXIT_KILLED: i32 = -9;
/// Exit status a parent sees for a process quarantined after it crashed the
/// kernel; distinct from every status a process can pass to exit.
pub const EXIT_QUARANTINED: i32 = -1000;

/// One row of `ps`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ProcInfo {
    pub pid: u32,
    pub parent: u32,
    pub state: u32,
    pub exit_status: i32,
    pub name: [u8; 16],
    pub ticks: u64,
    pub mem_pages: u64,
}

/// One row of `lsmod`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ExtInfo {
    pub slot: u32,
    pub state: u32,
    pub name: [u8; 16],
    pub dev_name: [u8; 16],
    pub base: u64,
    pub size: u64,
    pub crash_count: u32,
    pub load_count: u32,
}
