//! The kernel state root.
//!
//! Every piece of kernel state that diagnosis or repair needs lives in one
//! [`KernelRoot`]. The kernel registers its guest-physical address with the
//! hypervisor at boot (`HC_REGISTER_ROOT`), so the hypervisor, the dump
//! analyser and the repair image can all find processes, locks and
//! extensions without symbols. Tables are fixed-size arrays so that their
//! invariants can be checked without following guest pointers.

pub use crate::hypercall::RootHeader;
use crate::trap::TrapFrame;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const ROOT_MAGIC: u64 = u64::from_le_bytes(*b"LZRSROOT");
pub const ABI_VERSION: u32 = 2;

pub const MAX_CPUS: usize = 4;
pub const MAX_PROCS: usize = 64;
pub const MAX_FDS: usize = 16;
pub const MAX_LOCKS: usize = 64;
pub const MAX_EXTS: usize = 8;
pub const MAX_PIPES: usize = 32;
pub const MAX_TIMERS: usize = 16;
pub const MAX_SERVICES: usize = 8;
pub const MAX_MSGS: usize = 64;
pub const PIPE_BUF: usize = 1024;
/// Kernel heap: blocks of this size, tracked out of band (see [`HeapMap`]).
pub const HEAP_BLOCK: usize = 256;
pub const HEAP_BLOCKS: usize = 8192;
/// `HeapMap::owner` of a kernel allocation (extensions are slot + 1).
pub const HEAP_OWNER_KERNEL: u8 = 0xff;
pub const CONSOLE_BUF: usize = 1024;

/// "No process / no extension" in u32 id fields.
pub const NONE: u32 = u32::MAX;

// Process states.
pub const PS_FREE: u32 = 0;
pub const PS_RUNNABLE: u32 = 1;
pub const PS_RUNNING: u32 = 2;
pub const PS_BLOCKED: u32 = 3;
pub const PS_ZOMBIE: u32 = 4;
/// Crashed the kernel; never runs again, memory kept until reaped.
pub const PS_QUARANTINED: u32 = 5;
/// A quarantined process whose status its parent has collected: its
/// memory is freed when the CPU is next idle (freeing a whole address
/// space in emulated ring 0 takes milliseconds, which a surviving process
/// resuming from `wait` should not wait for).
pub const PS_RECLAIM: u32 = 6;

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
pub const W_NONE: u32 = 0;
pub const W_CHILD: u32 = 1;
pub const W_SLEEP: u32 = 2;
pub const W_PIPE_READ: u32 = 3;
pub const W_PIPE_WRITE: u32 = 4;
pub const W_CONSOLE: u32 = 5;
pub const W_IPC: u32 = 6;
pub const W_LOCK: u32 = 7;

// File-descriptor kinds.
pub const FD_NONE: u32 = 0;
pub const FD_CONSOLE: u32 = 1;
pub const FD_PIPE_READ: u32 = 2;
pub const FD_PIPE_WRITE: u32 = 3;
pub const FD_DEVICE: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Fd {
    pub kind: u32,
    /// Pipe index or extension slot.
    pub obj: u32,
    /// Device-defined per-open value.
    pub aux: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Proc {
    pub pid: u32,
    pub state: u32,
    pub parent: u32,
    pub exit_status: i32,
    pub name: [u8; 16],
    /// Physical address of the process's PML4.
    pub cr3: u64,
    /// Top of this process's kernel stack (virtual).
    pub kstack_top: u64,
    /// Saved kernel RSP while switched out.
    pub kctx_rsp: u64,
    pub wait_reason: u32,
    pub wait_obj: u32,
    /// Tick at which a sleeping process wakes.
    pub wake_tick: u64,
    pub brk_base: u64,
    pub brk: u64,
    /// Ticks this process has been scheduled.
    pub ticks: u64,
    /// Tick at which the current system call began (0 = in user mode).
    pub kernel_entry_tick: u64,
    /// System call in progress (`u64::MAX` = none).
    pub syscall_nr: u64,
    /// Extension slot executing on behalf of this process, or [`NONE`].
    pub cur_ext: u32,
    pub flags: u32,
    /// Lock this process is spinning on (`ExtApi::lock_try_acquire`
    /// failed and it has not acquired since), or [`NONE`]. Turns a lockup
    /// into a diagnosable deadlock.
    pub spinning_on: u32,
    pub _pad: u32,
    pub mem_pages: u64,
    /// Virtual address of the user-mode trap frame on the kernel stack, set
    /// while the process is inside the kernel.
    pub user_frame: u64,
    pub fds: [Fd; MAX_FDS],
    /// While switched out: `trap::seal` of its saved context and user trap
    /// frame, checked before it runs again, so that corruption of a
    /// sleeping process's saved state is caught instead of resumed. 0 =
    /// not sealed (a context built from scratch).
    pub ctx_seal: u64,
}

// Lock states.
pub const LOCK_UNUSED: u32 = 0;
pub const LOCK_FREE: u32 = 1;
pub const LOCK_HELD: u32 = 2;

/// A kernel lock. Locks live in this table (not inside other objects) so
/// that a crash can be answered with "which locks did the offender hold".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KLock {
    pub state: u32,
    /// Holding pid, 0 if none.
    pub owner: u32,
    /// Extension slot that created it, or [`NONE`] for the core kernel.
    pub ext: u32,
    pub waiters: u32,
    pub name: [u8; 24],
    pub acquired_tick: u64,
    pub acquisitions: u64,
}

// Extension slot states.
pub const EXT_FREE: u32 = 0;
pub const EXT_LOADING: u32 = 1;
pub const EXT_LIVE: u32 = 2;
pub const EXT_DISABLED: u32 = 3;

pub const fn ext_state_name(s: u32) -> &'static str {
    match s {
        EXT_FREE => "free",
        EXT_LOADING => "loading",
        EXT_LIVE => "live",
        EXT_DISABLED => "disabled",
        _ => "?",
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ExtSlot {
    pub state: u32,
    pub load_count: u32,
    pub crash_count: u32,
    /// Open file descriptors referring to this extension's device.
    pub open_count: u32,
    pub name: [u8; 16],
    pub dev_name: [u8; 16],
    /// Virtual load base and mapped size.
    pub base: u64,
    pub size: u64,
    /// Executable range (virtual), for code checksums.
    pub text_start: u64,
    pub text_end: u64,
    /// Virtual address of its `ExtDescriptor`.
    pub descriptor: u64,
    /// Entry point (returns the descriptor), run again after a reset.
    pub entry: u64,
    /// Heartbeat of the last accepted complaint about this extension:
    /// complaints are rate-limited so that a client cannot keep it in
    /// reset.
    pub last_complaint_tick: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Pipe {
    /// Nonzero while allocated.
    pub in_use: u32,
    pub readers: u32,
    pub writers: u32,
    pub _pad: u32,
    pub head: u64,
    pub len: u64,
    pub buf: [u8; PIPE_BUF],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Timer {
    pub in_use: u32,
    pub ext: u32,
    pub period_ticks: u64,
    pub next_tick: u64,
    /// `extern "C" fn(arg: u64)` in the owning extension.
    pub callback: u64,
    pub arg: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Service {
    pub pid: u32,
    pub _pad: u32,
    pub name: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Message {
    pub in_use: u32,
    pub src: u32,
    pub dst: u32,
    pub len: u32,
    /// Arrival order, so each mailbox is FIFO.
    pub seq: u64,
    pub data: [u8; crate::syscall::IPC_MSG_MAX],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Cpu {
    /// Pid running on this CPU, 0 when idle.
    pub current: u32,
    /// Nesting depth of interrupt handlers.
    pub in_irq: u32,
    /// Extension slot whose timer callback is running, or [`NONE`].
    pub irq_ext: u32,
    pub online: u32,
    pub irqs: u64,
    pub syscalls: u64,
    pub context_switches: u64,
    pub idle_ticks: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ConsoleIn {
    pub head: u64,
    pub len: u64,
    pub buf: [u8; CONSOLE_BUF],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct MemStats {
    pub frames_total: u64,
    pub frames_free: u64,
    /// Physical address of the frame bitmap (1 bit per frame, 1 = used).
    pub bitmap_phys: u64,
    pub bitmap_words: u64,
    pub heap_start: u64,
    pub heap_size: u64,
    pub heap_used: u64,
    pub _reserved: u64,
}

// Crash kinds reported by the kernel in `CrashRecord::kind`.
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
    pub next: u64,
    pub prev: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CrashRecord {
    /// Incremented for every crash the kernel reports.
    pub seq: u64,
    pub kind: u32,
    pub cpu: u32,
    pub vector: u64,
    pub error_code: u64,
    pub cr2: u64,
    /// Offending pid (0 = none, e.g. idle or early boot).
    pub pid: u32,
    /// Executing extension slot or [`NONE`].
    pub ext: u32,
    /// Nonzero if the crash happened in interrupt context.
    pub in_irq: u32,
    pub msg_len: u32,
    pub frame: TrapFrame,
    pub message: [u8; 128],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KernelRoot {
    /// The part the hypervisor reads: magic, version, size and the
    /// heartbeat (timer ticks since boot) its watchdog watches move.
    pub header: RootHeader,
    pub mem_size: u64,
    /// Physical address of the master PML4 (kernel half shared by all).
    pub master_pml4: u64,
    /// Kernel text range (virtual), for code checksums.
    pub kernel_text_start: u64,
    pub kernel_text_end: u64,
    /// Kernel entry point that resumes scheduling after a repair, and the
    /// stack it starts on (the boot/idle stack, abandoned at a crash).
    pub recovery_entry: u64,
    pub recovery_stack: u64,
    /// Where a fresh kernel context "returns" to restart a process from
    /// its user-mode trap frame (the repair program builds such contexts).
    pub trap_return: u64,
    /// The IDT and the table of entry stubs it is built from, so the
    /// repair program can rebuild a corrupted IDT.
    pub idt: u64,
    pub isr_table: u64,
    pub next_pid: u32,
    pub runq_head: u32,
    pub runq_len: u32,
    pub _pad0: u32,
    /// Ring buffer of runnable pids.
    pub runq: [u32; MAX_PROCS],
    pub cpus: [Cpu; MAX_CPUS],
    pub procs: [Proc; MAX_PROCS],
    pub locks: [KLock; MAX_LOCKS],
    pub exts: [ExtSlot; MAX_EXTS],
    pub timers: [Timer; MAX_TIMERS],
    pub services: [Service; MAX_SERVICES],
    pub msg_seq: u64,
    pub msgs: [Message; MAX_MSGS],
    pub pipes: [Pipe; MAX_PIPES],
    pub console_in: ConsoleIn,
    /// Kernel list extensions register nodes on (ExtApi::list_add).
    pub ext_list: ListNode,
    pub mem: MemStats,
    pub heap: HeapMap,
    pub crash: CrashRecord,
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

pub const MAX_RECOVERIES: usize = 16;

/// One resurrection, appended by the repair program; the hypervisor fills
/// in the latency once the first user process runs again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RecoveryRecord {
    pub seq: u64,
    pub tick: u64,
    /// Crash exit to the first user instruction, in nanoseconds (0 until
    /// known).
    pub latency_ns: u64,
    pub pid: u32,
    pub ext: u32,
    /// `lazarus_abi::repair` diagnosis kind (a `KIND_*`).
    pub kind: u32,
    pub code_bytes_restored: u32,
    pub name: [u8; 16],
    pub ext_name: [u8; 16],
}

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
