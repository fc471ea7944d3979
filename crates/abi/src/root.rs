//! The kernel state root.
//!
//! Every piece of kernel state that diagnosis or repair needs lives in one
//! [`KernelRoot`]. The kernel registers its guest-physical address with the
//! hypervisor at boot (`HC_REGISTER_ROOT`), so the hypervisor, the dump
//! analyser and the repair image can all find processes, locks and
//! extensions without symbols. Tables are fixed-size arrays so that their
//! invariants can be checked without following guest pointers.
//!
//! This file is longer than the project's usual 600 lines on purpose: it
//! is the one definition of the root's layout, shared by the kernel, the
//! repair program and every host tool, and reads best as one piece.
//!
//! The header and the constants of the paravirtual interface (magic, ABI
//! version, CPU and extension slot counts) are defined where the
//! hypervisor sees them, in [`crate::hypercall`] and [`crate::boot`], and
//! re-exported here.

pub use crate::boot::MAX_CPUS;
pub use crate::hypercall::{ABI_VERSION, MAX_EXTS, ROOT_MAGIC, RootHeader};
use crate::trap::TrapFrame;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

// Table sizes: every table in the root is a fixed-size array.
/// Entries of [`KernelRoot::procs`]: live processes at once.
pub const MAX_PROCS: usize = 64;
/// File descriptors per process.
pub const MAX_FDS: usize = 16;
/// Entries of [`KernelRoot::locks`].
pub const MAX_LOCKS: usize = 64;
/// Entries of [`KernelRoot::pipes`].
pub const MAX_PIPES: usize = 32;
/// Entries of [`KernelRoot::irqs`] (as many as the hypervisor's virtio
/// devices).
pub const MAX_IRQS: usize = crate::layout::MAX_VIRTIO_DEVICES;
/// Entries of [`KernelRoot::timers`].
pub const MAX_TIMERS: usize = 16;
/// Entries of [`KernelRoot::services`].
pub const MAX_SERVICES: usize = 8;
/// IPC messages queued at once, all mailboxes together.
pub const MAX_MSGS: usize = 64;
/// Bytes of each pipe's ring buffer.
pub const PIPE_BUF: usize = 1024;
/// Kernel heap: blocks of this size, tracked out of band (see [`HeapMap`]).
pub const HEAP_BLOCK: usize = 256;
/// Blocks in the kernel heap (2 MiB in all).
pub const HEAP_BLOCKS: usize = 8192;
/// `HeapMap::owner` of a kernel allocation (extensions are slot + 1).
pub const HEAP_OWNER_KERNEL: u8 = 0xff;
/// Bytes of console input buffered for readers ([`ConsoleIn`]).
pub const CONSOLE_BUF: usize = 1024;

/// "No process / no extension" in u32 id fields.
pub const NONE: u32 = u32::MAX;

// Process states (`Proc::state`).
/// An unused process-table entry.
pub const PS_FREE: u32 = 0;
/// Ready to run, on the run queue.
pub const PS_RUNNABLE: u32 = 1;
/// Running on a CPU.
pub const PS_RUNNING: u32 = 2;
/// Waiting (`Proc::wait_reason`).
pub const PS_BLOCKED: u32 = 3;
/// Exited; waits for its parent to collect the status.
pub const PS_ZOMBIE: u32 = 4;
/// Crashed the kernel; never runs again, memory kept until reaped.
pub const PS_QUARANTINED: u32 = 5;
/// A quarantined process whose status its parent has collected: its
/// memory is freed when the CPU is next idle (freeing a whole address
/// space in emulated ring 0 takes milliseconds, which a surviving process
/// resuming from `wait` should not wait for).
pub const PS_RECLAIM: u32 = 6;

/// A process state's name as `ps` shows it (`"?"` if unknown).
pub const fn proc_state_name(s: u32) -> &'static str {
    match s {
        PS_FREE => "free",
        PS_RUNNABLE => "ready",
        PS_RUNNING => "running",
        PS_BLOCKED => "blocked",
        PS_ZOMBIE => "zombie",
        PS_QUARANTINED => "quarantined",
        PS_RECLAIM => "reclaim",
        _ => "?",
    }
}

// Why a blocked process waits (`Proc::wait_reason`); `wait_obj` names the
// object (pipe index, lock index, child pid...).
/// Not waiting.
pub const W_NONE: u32 = 0;
/// In `SYS_WAIT`, for a child to end.
pub const W_CHILD: u32 = 1;
/// In `SYS_SLEEP` or `ExtApi::sleep_ticks`, until `Proc::wake_tick`.
pub const W_SLEEP: u32 = 2;
/// Reading an empty pipe.
pub const W_PIPE_READ: u32 = 3;
/// Writing a full pipe.
pub const W_PIPE_WRITE: u32 = 4;
/// Reading the console with no input buffered.
pub const W_CONSOLE: u32 = 5;
/// In `SYS_IPC_RECV` with an empty mailbox.
pub const W_IPC: u32 = 6;
/// For a kernel lock another process holds.
pub const W_LOCK: u32 = 7;
/// For extension `wait_obj`, reset by the repair, to be live again (its
/// init runs at the next tick): a device call replayed after the reset.
pub const W_EXT: u32 = 8;

// What the repair does with a system call that was in progress inside an
// extension it resets (`Proc::ext_call`, set by the kernel before it calls
// the extension): shadow-driver recovery, in which the clients of a reset
// driver never see it go.
/// Abandon it with `EINTR` (not a device call).
pub const CALL_INTERRUPT: u32 = 0;
/// Issue it again once the extension is live: an open, or a read, write
/// or ioctl the extension declared safe to repeat (`ExtDescriptor::replay`),
/// whose file position the kernel advances only when it completes.
pub const CALL_RESTART: u32 = 1;
/// It is done: return 0 (a close, whose descriptor is already gone, or a
/// client's complaint).
pub const CALL_COMPLETE: u32 = 2;
/// It cannot be repeated and its effect is unknown: return `EIO`, never
/// wrong data. Counted in `RecoveryRecord::calls_failed`.
pub const CALL_FAIL: u32 = 3;

// File-descriptor kinds (`Fd::kind`).
/// A closed descriptor.
pub const FD_NONE: u32 = 0;
/// The serial console.
pub const FD_CONSOLE: u32 = 1;
/// The read end of a pipe.
pub const FD_PIPE_READ: u32 = 2;
/// The write end of a pipe.
pub const FD_PIPE_WRITE: u32 = 3;
/// An extension's device.
pub const FD_DEVICE: u32 = 4;

/// One entry of a process's file-descriptor table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Fd {
    /// An `FD_*` kind.
    pub kind: u32,
    /// Pipe index, or for a device its open file in [`KernelRoot::files`].
    pub obj: u32,
}

/// Open device files at once, across all processes.
pub const MAX_FILES: usize = 64;
/// Configuration ioctls the kernel remembers per open file.
pub const MAX_FILE_CONFIG: usize = 4;

// Open-file states (`OpenFile::state`).
/// An unused entry.
pub const FILE_FREE: u32 = 0;
/// Open in its extension.
pub const FILE_OPEN: u32 = 1;
/// Its extension could not take it back after a reset (the reopen failed,
/// or the extension is disabled): every call on it fails with `EIO`.
pub const FILE_BROKEN: u32 = 2;
/// No descriptor refers to it any more (its last holder was quarantined):
/// the kernel closes it in the extension at the next tick.
pub const FILE_CLOSING: u32 = 3;

/// A configuration ioctl of an open file, replayed after a reset.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FileConfig {
    /// The command (below 64, in the extension's `config_ioctls`).
    pub cmd: u64,
    /// Its last argument.
    pub arg: u64,
}

/// An open device file, shared by the descriptors duplicated from it (as
/// POSIX's open file description). The kernel, not the extension, keeps
/// what the open means, so that a reset extension can be handed it again:
/// the opener, the position and the configuration.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct OpenFile {
    /// A `FILE_*` state.
    pub state: u32,
    /// Descriptors referring to it.
    pub refs: u32,
    /// Extension slot whose device it is.
    pub ext: u32,
    /// The pid that opened it, handed to the extension's `open` again when
    /// the file is reopened after a reset.
    pub opener: u32,
    /// The extension's per-open value, from its `open`.
    pub aux: u64,
    /// Byte position of the next read or write.
    pub pos: u64,
    /// Entries used in `config`.
    pub config_len: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// The last argument of each configuration ioctl issued on it.
    pub config: [FileConfig; MAX_FILE_CONFIG],
}

/// A process: entry [`KernelRoot::slot_of`]`(pid)` of the process table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Proc {
    /// Process id (never 0; 1 is `/init`).
    pub pid: u32,
    /// A `PS_*` state.
    pub state: u32,
    /// Parent's pid; orphans are re-parented to 1.
    pub parent: u32,
    /// Exit status once it ended ([`crate::syscall::EXIT_KILLED`],
    /// [`crate::syscall::EXIT_QUARANTINED`] or its own).
    pub exit_status: i32,
    /// Program name (NUL-padded).
    pub name: [u8; 16],
    /// Physical address of the process's PML4.
    pub cr3: u64,
    /// Top of this process's kernel stack (virtual).
    pub kstack_top: u64,
    /// Saved kernel RSP while switched out.
    pub kctx_rsp: u64,
    /// While blocked: a `W_*` reason.
    pub wait_reason: u32,
    /// While blocked: the object waited on (pipe or lock index), else 0.
    pub wait_obj: u32,
    /// Tick at which a sleeping process wakes (and one blocked in
    /// `SYS_IPC_RECV_TIMEOUT` gives up; 0 in a plain receive).
    pub wake_tick: u64,
    /// Start of the user heap (page-aligned end of the program image).
    pub brk_base: u64,
    /// Current program break (`SYS_SBRK`): the heap is `[brk_base, brk)`.
    pub brk: u64,
    /// Ticks this process has been scheduled.
    pub ticks: u64,
    /// Tick at which the current system call began (0 = in user mode).
    pub kernel_entry_tick: u64,
    /// System call in progress (`u64::MAX` = none).
    pub syscall_nr: u64,
    /// Extension slot executing on behalf of this process, or [`NONE`].
    pub cur_ext: u32,
    /// Messages queued for this process in [`KernelRoot::msgs`]. Lets a
    /// receive skip the table when nothing is queued and stop its scan at
    /// the last one, instead of walking all [`MAX_MSGS`] entries (two
    /// scans per request, at ring-0 emulation speed). The repair recounts
    /// it after changing the table.
    pub ipc_pending: u32,
    /// Lock this process is spinning on (`ExtApi::lock_try_acquire`
    /// failed and it has not acquired since), or [`NONE`]. Turns a lockup
    /// into a diagnosable deadlock.
    pub spinning_on: u32,
    /// The CPU this process last ran on (`ps` shows it).
    pub last_cpu: u32,
    /// While `cur_ext` is set: a `CALL_*`, what the repair does with the
    /// system call if it resets that extension.
    pub ext_call: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// Pages of user memory mapped.
    pub mem_pages: u64,
    /// Virtual address of the user-mode trap frame on the kernel stack, set
    /// while the process is inside the kernel.
    pub user_frame: u64,
    /// The file-descriptor table, indexed by fd.
    pub fds: [Fd; MAX_FDS],
    /// While switched out: `trap::seal` of its saved context and user trap
    /// frame, checked before it runs again, so that corruption of a
    /// sleeping process's saved state is caught instead of resumed. 0 =
    /// not sealed (a context built from scratch).
    pub ctx_seal: u64,
}

// Lock states (`KLock::state`).
/// An unused lock-table entry.
pub const LOCK_UNUSED: u32 = 0;
/// Created and not held.
pub const LOCK_FREE: u32 = 1;
/// Held by `KLock::owner`.
pub const LOCK_HELD: u32 = 2;

/// A kernel lock. Locks live in this table (not inside other objects) so
/// that a crash can be answered with "which locks did the offender hold".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KLock {
    /// A `LOCK_*` state.
    pub state: u32,
    /// Holding pid, 0 if none.
    pub owner: u32,
    /// Extension slot that created it, or [`NONE`] for the core kernel.
    pub ext: u32,
    /// Processes blocked waiting for it.
    pub waiters: u32,
    /// Name given at creation (NUL-padded).
    pub name: [u8; 24],
    /// Heartbeat (tick) of the last acquisition.
    pub acquired_tick: u64,
    /// Times it was acquired.
    pub acquisitions: u64,
    /// The CPU the holder took it on ([`NONE`] when free).
    pub owner_cpu: u32,
    /// Padding; zero.
    pub _pad: u32,
}

// Extension slot states (`ExtSlot::state`).
/// An unused slot.
pub const EXT_FREE: u32 = 0;
/// Being loaded, or reset by the repair: mapped, its init not yet run
/// (again) successfully.
pub const EXT_LOADING: u32 = 1;

/// Loaded and initialised; its device can be opened.
pub const EXT_LIVE: u32 = 2;
/// Still mapped but out of service: its re-init failed or it crashed too
/// often.
pub const EXT_DISABLED: u32 = 3;

/// An extension state's name as `lsmod` shows it (`"?"` if unknown).
pub const fn ext_state_name(s: u32) -> &'static str {
    match s {
        EXT_FREE => "free",
        EXT_LOADING => "loading",
        EXT_LIVE => "live",
        EXT_DISABLED => "disabled",
        _ => "?",
    }
}

/// One extension slot; its code lives at `EXT_REGION + slot *
/// EXT_SLOT_SIZE` (`crate::layout`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ExtSlot {
    /// An `EXT_*` state.
    pub state: u32,
    /// Times an extension was loaded into this slot (kept across unloads;
    /// resets do not count).
    pub load_count: u32,
    /// Resets by the repair since the last load (the repair disables the
    /// extension at `RepairInput::ext_crash_limit`).
    pub crash_count: u32,
    /// Open files of this extension's device ([`KernelRoot::files`]).
    pub open_count: u32,
    /// Module name (NUL-padded).
    pub name: [u8; 16],
    /// Device name under `/dev` (NUL-padded).
    pub dev_name: [u8; 16],
    /// Virtual load base and mapped size.
    pub base: u64,
    /// See `base`.
    pub size: u64,
    /// Executable range (virtual), for code checksums.
    pub text_start: u64,
    /// See `text_start` (exclusive end).
    pub text_end: u64,
    /// Virtual address of its `ExtDescriptor`.
    pub descriptor: u64,
    /// Entry point (returns the descriptor), run again after a reset.
    pub entry: u64,
    /// Heartbeat of the last accepted complaint about this extension:
    /// complaints are rate-limited so that a client cannot keep it in
    /// reset.
    pub last_complaint_tick: u64,
    /// Register windows (guest-physical bases) of the platform devices it
    /// drives, 0 = unused: the repair has them reset with the extension.
    pub devices: [u64; MAX_EXT_DEVICES],
    /// Memory that outlives a reset (`ExtApi::keep`), 0 = none: a
    /// device's contents, such as a ramdisk's disk. Freed at unload.
    pub kept: u64,
    /// Size of `kept` in bytes.
    pub kept_size: u64,
}

/// Platform devices one extension may drive.
pub const MAX_EXT_DEVICES: usize = 2;

/// A pipe: a ring buffer and the count of descriptors on each end.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Pipe {
    /// Nonzero while allocated.
    pub in_use: u32,
    /// Open read-end descriptors.
    pub readers: u32,
    /// Open write-end descriptors; 0 means end of file for readers.
    pub writers: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// Index in `buf` of the oldest unread byte.
    pub head: u64,
    /// Unread bytes, from `head` (wrapping).
    pub len: u64,
    /// The ring buffer.
    pub buf: [u8; PIPE_BUF],
}

/// A periodic timer an extension registered (`ExtApi::timer_add`); the
/// callback runs in the timer interrupt.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Timer {
    /// Nonzero while registered.
    pub in_use: u32,
    /// The owning extension's slot.
    pub ext: u32,
    /// Period in ticks (at least 1).
    pub period_ticks: u64,
    /// Heartbeat at which it fires next.
    pub next_tick: u64,
    /// `extern "C" fn(arg: u64)` in the owning extension.
    pub callback: u64,
    /// The argument passed to `callback`.
    pub arg: u64,
    /// The CPU it fires on: the one that armed it, as Linux's timers do.
    pub cpu: u32,
    /// Padding; zero.
    pub _pad: u32,
}

/// A device interrupt handler an extension registered
/// (`ExtApi::irq_register`); I/O APIC pin `gsi` is routed to vector
/// `VEC_DEVICE_BASE + index`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IrqHandler {
    /// Nonzero while registered.
    pub in_use: u32,
    /// The owning extension's slot.
    pub ext: u32,
    /// The I/O APIC pin.
    pub gsi: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// `extern "C" fn(arg: u64)` in the owning extension.
    pub callback: u64,
    /// The argument passed to `callback`.
    pub arg: u64,
    /// Interrupts delivered to it.
    pub count: u64,
}

/// A named IPC service (`SYS_SVC_REGISTER`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Service {
    /// The registered process; 0 for a free entry.
    pub pid: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// Service name (NUL-padded).
    pub name: [u8; 16],
}

/// A queued IPC message; all mailboxes share one table.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Message {
    /// Nonzero while queued.
    pub in_use: u32,
    /// Sender's pid.
    pub src: u32,
    /// Recipient's pid (whose mailbox it is in).
    pub dst: u32,
    /// Bytes of `data` used.
    pub len: u32,
    /// Arrival order, so each mailbox is FIFO.
    pub seq: u64,
    /// The payload.
    pub data: [u8; crate::syscall::IPC_MSG_MAX],
}

/// Per-CPU state and counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Cpu {
    /// Pid running on this CPU, 0 when idle.
    pub current: u32,
    /// Nesting depth of interrupt handlers.
    pub in_irq: u32,
    /// Extension slot whose timer callback is running, or [`NONE`].
    pub irq_ext: u32,
    /// Nonzero once the CPU runs the kernel.
    pub online: u32,
    /// Interrupts handled; not maintained by the kernel yet (0).
    pub irqs: u64,
    /// System calls handled.
    pub syscalls: u64,
    /// Switches to another process.
    pub context_switches: u64,
    /// Timer ticks that found the CPU idle.
    pub idle_ticks: u64,
    /// Timer ticks this CPU handled (its own heartbeat is in the header).
    pub ticks: u64,
    /// Top of this CPU's idle stack, where a repair on this CPU restarts
    /// it (`KernelRoot::recovery_entry`).
    pub recovery_stack: u64,
    /// Times this CPU waited for the big kernel lock.
    pub bkl_waits: u64,
}

/// The big kernel lock: one CPU at a time runs kernel code (ring 3 runs
/// on every CPU in parallel). Kept in the state root so the repair image
/// knows which CPU was inside the kernel and whether the others are
/// merely waiting at its door.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct BigLock {
    /// 1 while held (changed atomically); 0 free.
    pub locked: u32,
    /// The CPU holding it, or [`NONE`].
    pub owner_cpu: u32,
    /// The pid running on that CPU when it took the lock (0: idle).
    pub owner_pid: u32,
    /// 1 while held, 0 free (an interrupt taken by the owner inside the
    /// kernel does not take it again).
    pub depth: u32,
    /// Bit per CPU waiting for it (halted, woken by an IPI at release).
    pub waiters: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// Times it was taken.
    pub acquisitions: u64,
    /// Times a CPU found it held and waited.
    pub contended: u64,
}

/// Console input received and not yet read: a ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ConsoleIn {
    /// Index in `buf` of the oldest unread byte.
    pub head: u64,
    /// Unread bytes, from `head` (wrapping); input beyond the buffer is
    /// dropped.
    pub len: u64,
    /// The ring buffer.
    pub buf: [u8; CONSOLE_BUF],
}

/// Physical memory and kernel heap accounting.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct MemStats {
    /// 4 KiB frames of guest RAM.
    pub frames_total: u64,
    /// Frames not allocated.
    pub frames_free: u64,
    /// Physical address of the frame bitmap (1 bit per frame, 1 = used).
    pub bitmap_phys: u64,
    /// Its length in 64-bit words.
    pub bitmap_words: u64,
    /// Kernel virtual address of the heap ([`HeapMap`] block 0).
    pub heap_start: u64,
    /// Bytes of heap.
    pub heap_size: u64,
    /// Bytes allocated (whole blocks).
    pub heap_used: u64,
    /// Reserved; zero.
    pub _reserved: u64,
}

// Crash kinds reported by the kernel in `CrashRecord::kind`.
/// No crash recorded.
pub const CRASH_NONE: u32 = 0;
/// An explicit kernel panic (a `panic!` or the extension API's panic).
pub const CRASH_PANIC: u32 = 1;
/// A CPU exception in ring 0 the kernel could not handle (an oops).
pub const CRASH_OOPS: u32 = 2;
/// A kernel path ran too long without scheduling (found by the kernel).
pub const CRASH_SOFT_LOCKUP: u32 = 3;
/// A kernel list failed its integrity checks (like Linux's
/// CONFIG_DEBUG_LIST), typically after a use-after-free.
pub const CRASH_LIST_CORRUPTION: u32 = 4;
/// An extension failed without crashing: it broke its contract with the
/// kernel (found by the kernel) or a client reported it failed
/// (`SYS_EXT_COMPLAIN`, like a complaint to MINIX 3's reincarnation
/// server). `CrashRecord::ext` names it; `pid` is its victim, not the
/// offender.
pub const CRASH_EXT_FAILED: u32 = 5;
/// A switched-out process's saved state no longer matched its seal
/// (`Proc::ctx_seal`) when it was about to run again; `pid` is that
/// process.
pub const CRASH_CONTEXT_CORRUPT: u32 = 6;

/// A kernel crash kind's name, as dumps record it (`"unknown"` if
/// unknown).
pub const fn crash_kind_name(k: u32) -> &'static str {
    match k {
        CRASH_PANIC => "panic",
        CRASH_OOPS => "oops",
        CRASH_SOFT_LOCKUP => "soft-lockup",
        CRASH_LIST_CORRUPTION => "list-corruption",
        CRASH_EXT_FAILED => "extension-failure",
        CRASH_CONTEXT_CORRUPT => "context-corruption",
        _ => "unknown",
    }
}

/// A node of a kernel list (`KernelRoot::ext_list`): kernel virtual
/// addresses of the neighbours, as in Linux's `struct list_head`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ListNode {
    /// The next node (the head itself at the end).
    pub next: u64,
    /// The previous node.
    pub prev: u64,
}

/// The kernel's account of its last crash, filled just before it writes
/// the pvpanic port. A crash the kernel could not report (a triple fault,
/// a hang) leaves the previous record, with an older `seq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CrashRecord {
    /// Incremented for every crash the kernel reports.
    pub seq: u64,
    /// A `CRASH_*` kind.
    pub kind: u32,
    /// The CPU that crashed.
    pub cpu: u32,
    /// The exception vector of an oops (`frame.vector`).
    pub vector: u64,
    /// The CPU's error code of an oops.
    pub error_code: u64,
    /// The faulting address of a page fault, else 0.
    pub cr2: u64,
    /// Offending pid (0 = none, e.g. idle or early boot).
    pub pid: u32,
    /// Executing extension slot or [`NONE`].
    pub ext: u32,
    /// Nonzero if the crash happened in interrupt context.
    pub in_irq: u32,
    /// Bytes of `message` used.
    pub msg_len: u32,
    /// Registers at the crash: the exception's frame, or the caller's for a
    /// panic (enough for a backtrace).
    pub frame: TrapFrame,
    /// What happened, in words (e.g. `oops: page fault at ...`).
    pub message: [u8; 128],
}

/// All kernel state that diagnosis and repair need (see the module docs).
/// Written by the kernel; read by the hypervisor (header only), the dump
/// and its analysis, fault injection, and the repair program, which also
/// repairs it.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KernelRoot {
    /// The part the hypervisor reads: magic, version, size and the
    /// heartbeat (timer ticks since boot) its watchdog watches move.
    pub header: RootHeader,
    /// Bytes of guest RAM.
    pub mem_size: u64,
    /// Physical address of the master PML4 (kernel half shared by all).
    pub master_pml4: u64,
    /// Kernel text range (virtual), for code checksums.
    pub kernel_text_start: u64,
    /// See `kernel_text_start` (exclusive end).
    pub kernel_text_end: u64,
    /// Kernel entry point that resumes scheduling after a repair, on the
    /// crashed CPU's idle stack (`Cpu::recovery_stack`, abandoned at a
    /// crash).
    pub recovery_entry: u64,
    /// The boot CPU's `Cpu::recovery_stack` (kept for older readers).
    pub recovery_stack: u64,
    /// Where a fresh kernel context "returns" to restart a process from
    /// its user-mode trap frame (the repair program builds such contexts).
    pub trap_return: u64,
    /// The IDT and the table of entry stubs it is built from, so the
    /// repair program can rebuild a corrupted IDT.
    pub idt: u64,
    /// See `idt`.
    pub isr_table: u64,
    /// The next pid to try allocating (pids count up and wrap, skipping 0).
    pub next_pid: u32,
    /// Index in `runq` of the next pid to run.
    pub runq_head: u32,
    /// Pids queued in `runq` from `runq_head` (wrapping).
    pub runq_len: u32,
    /// Padding; zero.
    pub _pad0: u32,
    /// Ring buffer of runnable pids.
    pub runq: [u32; MAX_PROCS],
    /// Per-CPU state.
    pub cpus: [Cpu; MAX_CPUS],
    /// The big kernel lock.
    pub bkl: BigLock,
    /// The process table, indexed by [`KernelRoot::slot_of`].
    pub procs: [Proc; MAX_PROCS],
    /// Every kernel lock; a lock's id is its index.
    pub locks: [KLock; MAX_LOCKS],
    /// Extension slots.
    pub exts: [ExtSlot; MAX_EXTS],
    /// Extension timers; a timer's id is its index.
    pub timers: [Timer; MAX_TIMERS],
    /// Device interrupt handlers; a handler's id is its index.
    pub irqs: [IrqHandler; MAX_IRQS],
    /// Registered IPC services.
    pub services: [Service; MAX_SERVICES],
    /// Sequence number of the last message sent (`Message::seq`).
    pub msg_seq: u64,
    /// Queued IPC messages.
    pub msgs: [Message; MAX_MSGS],
    /// Pipes; a pipe's index is `Fd::obj` of its descriptors.
    pub pipes: [Pipe; MAX_PIPES],
    /// Open device files.
    pub files: [OpenFile; MAX_FILES],
    /// Console input not yet read.
    pub console_in: ConsoleIn,
    /// Kernel list extensions register nodes on (ExtApi::list_add).
    pub ext_list: ListNode,
    /// Memory accounting.
    pub mem: MemStats,
    /// The kernel heap's allocation map.
    pub heap: HeapMap,
    /// The last crash the kernel reported.
    pub crash: CrashRecord,
    /// Resurrections so far.
    pub recovery: RecoveryLog,
}

/// The kernel heap's allocation map, kept out of the heap itself: a stray
/// write or use-after-free in an extension can corrupt heap *data* but not
/// the allocator, and the repair can check the map and reclaim everything a
/// reset extension owned.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HeapMap {
    /// One bit per block, 1 = allocated.
    pub used: [u64; HEAP_BLOCKS / 64],
    /// Per block: 0 free, extension slot + 1, or [`HEAP_OWNER_KERNEL`].
    pub owner: [u8; HEAP_BLOCKS],
    /// Per block: 1 on the first block of an allocation.
    pub start: [u8; HEAP_BLOCKS],
}

/// Records kept in [`RecoveryLog`] (the oldest are overwritten).
pub const MAX_RECOVERIES: usize = 16;

/// One resurrection, appended by the repair program; the hypervisor fills
/// in the latency once the first user process runs again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RecoveryRecord {
    /// Number of this recovery, from 0.
    pub seq: u64,
    /// Heartbeat (tick) at the repair.
    pub tick: u64,
    /// Crash exit to the first user instruction, in nanoseconds (0 until
    /// known).
    pub latency_ns: u64,
    /// The quarantined pid, 0 if none.
    pub pid: u32,
    /// The faulty extension's slot, or [`NONE`].
    pub ext: u32,
    /// `lazarus_abi::repair` diagnosis kind (a `KIND_*`).
    pub kind: u32,
    /// Bytes of code restored from pristine copies.
    pub code_bytes_restored: u32,
    /// The quarantined process's name (NUL-padded).
    pub name: [u8; 16],
    /// The faulty extension's name (NUL-padded).
    pub ext_name: [u8; 16],
    /// Device calls in progress in the reset extension that were issued
    /// again once it was back (`CALL_RESTART`).
    pub calls_replayed: u32,
    /// Device calls that could not be replayed and failed with `EIO`.
    pub calls_failed: u32,
    /// Open files the reset extension was handed again (its `open` and
    /// their configuration ioctls).
    pub files_reopened: u32,
    /// Open files it could not take back (now `FILE_BROKEN`: `EIO`).
    pub files_broken: u32,
}

/// The log of resurrections, kept in the root so that it survives them;
/// user programs read it with `SYS_RECOVERIES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RecoveryLog {
    /// Recoveries so far; record `i` is at `records[i % MAX_RECOVERIES]`.
    pub count: u64,
    /// Extension slots (bit per slot) whose init must run again.
    pub pending_reinit: u32,
    /// Set by the repair; the kernel reports to the hypervisor (and
    /// clears it) just before it returns to a user process.
    pub awaiting_user: u32,
    /// Set by the repair when it left open files `FILE_CLOSING`.
    pub pending_close: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// The last [`MAX_RECOVERIES`] recoveries (see `count`).
    pub records: [RecoveryRecord; MAX_RECOVERIES],
}

impl KernelRoot {
    /// Index of a pid in `procs` (pids are allocated so this is unique
    /// among live processes).
    pub const fn slot_of(pid: u32) -> usize {
        pid as usize % MAX_PROCS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_small_and_aligned() {
        let size = core::mem::size_of::<KernelRoot>();
        assert!(size < 256 * 1024, "root is {size} bytes");
        assert_eq!(core::mem::align_of::<KernelRoot>(), 8);
    }
}
