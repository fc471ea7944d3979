//! System-call numbers and the records they exchange with user programs.
//!
//! Calling convention: a ring-3 program executes `ud2` with the number in
//! RAX and arguments in RDI, RSI, RDX, R10, R8, R9; the kernel returns in RAX
//! (negative = `-errno`) and resumes after the `ud2`. docs/PLATFORM.md explains
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

/// (status) -> never returns; the parent's `SYS_WAIT` sees `status`.
pub const SYS_EXIT: u64 = 0;
/// (fd, buf, len) -> bytes read; blocks until at least one byte.
pub const SYS_READ: u64 = 1;
/// (fd, buf, len) -> bytes written.
pub const SYS_WRITE: u64 = 2;
/// (path, path_len) -> fd. Paths are "/dev/NAME" for extension devices.
pub const SYS_OPEN: u64 = 3;
/// (fd) -> 0.
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
/// () -> 0; lets another runnable process run.
pub const SYS_YIELD: u64 = 8;
/// (milliseconds) -> 0; rounded up to whole ticks ([`crate::layout::TICK_HZ`]).
pub const SYS_SLEEP: u64 = 9;
/// () -> the caller's pid.
pub const SYS_GETPID: u64 = 10;
/// (*mut [i32; 2]) -> 0; `[0]` is the read end.
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
/// (pid) -> 0. The process exits with [`EXIT_KILLED`]; pid 1 cannot be
/// killed (`EPERM`).
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
/// (*mut CpuInfo, max) -> count: one row per CPU the VM has.
pub const SYS_CPUS: u64 = 27;
/// (dst pid, buf, len, rbuf, rlen) -> `(sender pid << 32) | message
/// length`: [`SYS_IPC_SEND`] then [`SYS_IPC_RECV`] in one kernel entry,
/// for a client's request and its reply (L4's call). The receive buffer
/// is checked first, so an error means nothing was sent. The sender comes
/// back in the result, not through a pointer: one user write less per
/// request, at a microsecond per ring-0 instruction.
pub const SYS_IPC_SENDRECV: u64 = 28;
/// (buf, len, *mut u32 src, timeout_ms) -> message length: [`SYS_IPC_RECV`]
/// that gives up with `ETIMEDOUT` when no message came within
/// `timeout_ms` (a server's periodic work, such as the kvstore's log
/// flush, runs between requests).
pub const SYS_IPC_RECV_TIMEOUT: u64 = 29;
/// (device fd, offset, whence) -> the new position: moves the open file's
/// byte position, which the kernel keeps (as `lseek`), so that it survives
/// a reset of the device's extension. [`SEEK_SET`] or [`SEEK_CUR`];
/// `EINVAL` for another whence or a negative result, `ESPIPE` for a
/// descriptor that is not a device. The device checks a position when
/// it is used (a disk wants it sector-aligned).
pub const SYS_SEEK: u64 = 30;
/// (dst pid, buf, len, rbuf, rlen, until_ms) -> `(sender pid << 32) |
/// message length`: a server's reply and its wait for the next request in
/// one kernel entry (L4's reply-and-wait).
///
/// - The reply is best-effort: to a client that is gone (or to pid 0, for
///   no reply at all) it is dropped, and the call waits all the same.
/// - `until_ms` is a deadline on the [`SYS_UPTIME`] clock ([`IPC_FOREVER`]:
///   none). Once it has passed, the call returns `ETIMEDOUT` (after the
///   reply) even if a message is queued: a server's periodic work, such
///   as the kvstore's log flush, is never starved by a busy queue, and the
///   server needs no clock call per request to know whether it is due.
/// - `EAGAIN` (message table full) and the buffer errors mean nothing was
///   sent.
pub const SYS_IPC_REPLY_WAIT: u64 = 31;
/// [`SYS_IPC_REPLY_WAIT`]'s deadline for "wait as long as it takes".
pub const IPC_FOREVER: u64 = u64::MAX;
/// [`SYS_SEEK`]: the offset is the new position.
pub const SEEK_SET: u64 = 0;
/// [`SYS_SEEK`]: the offset (signed) is added to the position.
pub const SEEK_CUR: u64 = 1;

/// Reasons for [`SYS_EXT_COMPLAIN`].
pub mod complaint {
    /// It returned an error it has no business returning.
    pub const ERROR: u64 = 1;
    /// It returned wrong data (a read-back differs from what was written).
    pub const BAD_DATA: u64 = 2;
    /// It returned a wrong reply to a request with a known answer.
    pub const BAD_REPLY: u64 = 3;

    /// How a complaint reads in the kernel log and crash message; `None`
    /// for an unknown reason (the kernel refuses it).
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

/// Largest IPC message in bytes (`SYS_IPC_SEND` fails with `E2BIG` above).
pub const IPC_MSG_MAX: usize = 240;
/// Longest path or name `SYS_OPEN`, `SYS_SPAWN`, the extension and the
/// service calls accept, in bytes (`E2BIG` above).
pub const PATH_MAX: usize = 64;
/// Longest argument block `SYS_SPAWN` accepts, in bytes (`E2BIG` above).
pub const ARGS_MAX: usize = 512;

/// Error numbers: system calls, hypercalls and extension API calls return
/// them negated. The values are Linux's.
pub mod errno {
    /// Not allowed (releasing a lock one does not hold, killing pid 1).
    pub const EPERM: i64 = 1;
    /// No such file, device path or service.
    pub const ENOENT: i64 = 2;
    /// No such (live) process.
    pub const ESRCH: i64 = 3;
    /// A system call aborted by a kernel repair (the extension it was in
    /// was reset); the caller may retry.
    pub const EINTR: i64 = 4;
    /// I/O error; also what the kernel substitutes for an invalid error
    /// code from an extension.
    pub const EIO: i64 = 5;
    /// A path, argument block or message too long.
    pub const E2BIG: i64 = 7;
    /// Not a valid executable or extension image.
    pub const ENOEXEC: i64 = 8;
    /// Not an open file descriptor.
    pub const EBADF: i64 = 9;
    /// No child to wait for.
    pub const ECHILD: i64 = 10;
    /// Temporarily impossible (no free pid, complaint rate limit); retry.
    pub const EAGAIN: i64 = 11;
    /// Out of memory (frames, heap or page tables).
    pub const ENOMEM: i64 = 12;
    /// A bad user address.
    pub const EFAULT: i64 = 14;
    /// Busy (a lock held, an extension still open).
    pub const EBUSY: i64 = 16;
    /// Already exists (a loaded extension, a registered service).
    pub const EEXIST: i64 = 17;
    /// No such (live) device or extension.
    pub const ENODEV: i64 = 19;
    /// An invalid argument.
    pub const EINVAL: i64 = 22;
    /// The process's file-descriptor table is full.
    pub const EMFILE: i64 = 24;
    /// A kernel table is full (locks, extensions, messages).
    pub const ENOSPC: i64 = 28;
    /// A write to a read-only device.
    pub const EROFS: i64 = 30;
    /// Writing to a pipe with no reader.
    pub const EPIPE: i64 = 32;
    /// Seeking something without a position (not a device).
    pub const ESPIPE: i64 = 29;
    /// Not a device (for a device-only call).
    pub const ENOTTY: i64 = 25;
    /// No such system call (or hypercall).
    pub const ENOSYS: i64 = 38;
    /// Nothing happened in the time allowed.
    pub const ETIMEDOUT: i64 = 110;
    /// The object does not support the operation (a device without that
    /// operation).
    pub const ENOTSUP: i64 = 95;

    /// A short description of `e` (positive), for messages.
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
            EROFS => "read-only device",
            EPIPE => "broken pipe",
            ESPIPE => "illegal seek",
            ENOSYS => "no such system call",
            ENOTSUP => "not supported",
            ETIMEDOUT => "timed out",
            _ => "error",
        }
    }
}

/// Exit status of a process killed by the kernel (bad syscall, fault).
pub const EXIT_KILLED: i32 = -9;
/// Exit status of a foreground job interrupted from the console (Ctrl-C
/// on a terminal).
pub const EXIT_INTERRUPTED: i32 = -2;

/// `ioctl` commands on the console (fd kind `FD_CONSOLE`), as a Unix
/// tty's `isatty` and `tcsetpgrp`.
pub mod tty {
    /// () -> 1 if the console is an interactive terminal (the hypervisor
    /// put the host's terminal in raw mode: the guest echoes and edits,
    /// and Ctrl-C arrives as a byte), else 0.
    pub const IS_TERMINAL: u64 = 1;
    /// (pointer to `[u32; MAX_FOREGROUND]`, 0-padded; or 0 for none) ->
    /// 0: names the foreground job, whose processes a Ctrl-C typed on a
    /// terminal console ends with `EXIT_INTERRUPTED`.
    pub const SET_FOREGROUND: u64 = 2;
    /// How many processes a foreground job can hold.
    pub const MAX_FOREGROUND: usize = 8;
}
/// Exit status a parent sees for a process quarantined after it crashed the
/// kernel; distinct from every status a process can pass to exit.
pub const EXIT_QUARANTINED: i32 = -1000;

/// One row of `ps`, filled by the kernel ([`SYS_PS`]) from the process
/// table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ProcInfo {
    /// Process id.
    pub pid: u32,
    /// Parent's pid (0 for `/init`).
    pub parent: u32,
    /// A `crate::root::PS_*` state.
    pub state: u32,
    /// Exit status, meaningful once the process has ended.
    pub exit_status: i32,
    /// Program name (NUL-padded).
    pub name: [u8; 16],
    /// Timer ticks it has been scheduled.
    pub ticks: u64,
    /// Pages of user memory mapped.
    pub mem_pages: u64,
    /// The CPU it last ran on.
    pub cpu: u32,
    /// Padding; zero.
    pub _pad: u32,
}

/// One row of `cpus`, filled by the kernel ([`SYS_CPUS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CpuInfo {
    /// The CPU's index.
    pub cpu: u32,
    /// Nonzero once it runs the kernel.
    pub online: u32,
    /// Pid running on it, 0 when idle.
    pub current: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// Timer ticks it handled.
    pub ticks: u64,
    /// Those of its ticks that found it idle.
    pub idle_ticks: u64,
    /// Switches to another process.
    pub context_switches: u64,
    /// System calls it handled.
    pub syscalls: u64,
    /// Times it waited for the big kernel lock.
    pub bkl_waits: u64,
}

/// One row of `lsmod`, filled by the kernel ([`SYS_EXT_LIST`]) from the
/// extension table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ExtInfo {
    /// Extension slot (index in the kernel's table).
    pub slot: u32,
    /// A `crate::root::EXT_*` state.
    pub state: u32,
    /// Module name (NUL-padded).
    pub name: [u8; 16],
    /// Device name under `/dev` (NUL-padded).
    pub dev_name: [u8; 16],
    /// Kernel virtual load address.
    pub base: u64,
    /// Bytes mapped at `base`.
    pub size: u64,
    /// Resets by the repair since it was last loaded.
    pub crash_count: u32,
    /// Times an extension was loaded into this slot (resets do not count).
    pub load_count: u32,
}
