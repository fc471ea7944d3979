//! Per-CPU data: each CPU's GDT, TSS, interrupt stacks and idle context.
//!
//! A CPU finds its index from its stack pointer, as Linux once found its
//! `thread_info`: kernel code runs on a process's kernel stack (the
//! scheduler notes, per stack slot, the CPU it switched that process in
//! on, and a process runs on one CPU at a time), on a CPU's idle stack or
//! on one of its interrupt stacks, and each of those says which CPU it
//! is. That is plain arithmetic, nothing
//! user mode can change, and no special instruction: `sgdt` or `rdmsr`
//! cost tens of microseconds each under the emulated ring 0 of these
//! hosts, and the kernel asks many times per system call.

use core::arch::asm;
use core::mem::size_of;
use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use lazarus_abi::boot::MAX_CPUS;
use lazarus_abi::layout::{KSTACK_REGION, KSTACK_STRIDE};
use lazarus_abi::root::MAX_PROCS;

/// Bytes of each interrupt stack (IST 1-3).
pub const IST_STACK_SIZE: usize = 16 * 1024;
/// Bytes of each application processor's idle stack.
pub const IDLE_STACK_SIZE: usize = 32 * 1024;

/// IST 1: double fault, 2: NMI, 3: machine check, per CPU. A kernel stack
/// overflow must still be reportable, so these never share the faulting
/// stack.
#[repr(C, align(16))]
struct IstStacks([[[u8; IST_STACK_SIZE]; 3]; MAX_CPUS]);
static mut IST_STACKS: IstStacks = IstStacks([[[0; IST_STACK_SIZE]; 3]; MAX_CPUS]);

/// Idle (and recovery) stacks of CPUs 1.. (the boot CPU's is the boot
/// stack; entry 0 is unused).
#[repr(C, align(16))]
struct IdleStacks([[u8; IDLE_STACK_SIZE]; MAX_CPUS]);
static mut IDLE_STACKS: IdleStacks = IdleStacks([[0; IDLE_STACK_SIZE]; MAX_CPUS]);

/// Per kernel-stack slot: the CPU its process was last switched in on.
static SLOT_CPU: [AtomicU8; MAX_PROCS] = [const { AtomicU8::new(0) }; MAX_PROCS];
const _: () = assert!(MAX_CPUS.is_power_of_two(), "`id` masks with MAX_CPUS - 1");

/// Bit per CPU that runs the kernel.
static ONLINE: AtomicU32 = AtomicU32::new(0);

/// The process on kernel-stack slot `slot` now runs on `cpu` (the
/// scheduler calls this before switching to its stack).
#[inline(always)]
pub fn note_running(slot: usize, cpu: usize) {
    if let Some(c) = SLOT_CPU.get(slot) {
        c.store(cpu as u8, Ordering::Relaxed);
    }
}

/// CPU `cpu` runs the kernel (`true`) or has left it for good.
pub fn set_online(cpu: usize, online: bool) {
    let bit = 1u32 << cpu.min(31);
    if online {
        ONLINE.fetch_or(bit, Ordering::SeqCst);
    } else {
        ONLINE.fetch_and(!bit, Ordering::SeqCst);
    }
}

/// Bit per CPU that runs the kernel.
pub fn online_mask() -> u32 {
    ONLINE.load(Ordering::SeqCst)
}

/// Top of CPU `cpu`'s interrupt stack `ist` (1-3).
pub fn ist_top(cpu: usize, ist: usize) -> u64 {
    let base = (&raw const IST_STACKS) as u64;
    base + ((cpu.min(MAX_CPUS - 1) * 3 + ist.clamp(1, 3)) * IST_STACK_SIZE) as u64
}

/// Top of application processor `cpu`'s idle stack.
pub fn idle_stack_top(cpu: usize) -> u64 {
    let base = (&raw const IDLE_STACKS) as u64;
    base + ((cpu.min(MAX_CPUS - 1) + 1) * IDLE_STACK_SIZE) as u64
}

/// The 64-bit TSS (Intel SDM vol. 3, 8.7).
#[repr(C, packed)]
pub struct Tss {
    _reserved0: u32,
    pub rsp0: u64,
    _rsp1: u64,
    _rsp2: u64,
    _reserved1: u64,
    pub ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    pub iomap_base: u16,
}

impl Tss {
    const fn new() -> Self {
        Tss {
            _reserved0: 0,
            rsp0: 0,
            _rsp1: 0,
            _rsp2: 0,
            _reserved1: 0,
            ist: [0; 7],
            _reserved2: 0,
            _reserved3: 0,
            iomap_base: size_of::<Tss>() as u16,
        }
    }
}

/// GDT entries (Linux's layout, see `gdt`).
pub const GDT_ENTRIES: usize = 10;

/// One CPU's own data. The GDT comes first: `id` relies on it.
#[repr(C, align(64))]
pub struct PerCpu {
    pub gdt: [u64; GDT_ENTRIES],
    pub tss: Tss,
    /// The idle loop's saved stack pointer while a process runs.
    pub idle_rsp: u64,
    /// Nonzero while this CPU halts waiting for the big kernel lock: an
    /// interrupt then only notes itself (see `trap`).
    pub waiting_bkl: u32,
    /// Nonzero when this kernel entry woke a process no idle CPU took
    /// (`sched::preempt_for_woken`).
    pub woke: u32,
    /// A process another CPU asked this one to end, with its exit status
    /// (`proc::kill_with`); 0: none.
    pub kill_pid: u32,
    /// See `kill_pid`.
    pub kill_status: i32,
    /// Nonzero while the idle loop halts without the lock: a tick then
    /// takes no lock either (`tick::idle_tick`).
    pub idle_halt: u32,
    /// Set by an interrupt that took the lock while this CPU halted idle:
    /// the idle loop looks for work before it halts again.
    pub idle_work: u32,
}

const PERCPU_INIT: PerCpu = PerCpu {
    gdt: [0; GDT_ENTRIES],
    tss: Tss::new(),
    idle_rsp: 0,
    waiting_bkl: 0,
    woke: 0,
    kill_pid: 0,
    kill_status: 0,
    idle_halt: 0,
    idle_work: 0,
};

static mut PERCPU: [PerCpu; MAX_CPUS] = [PERCPU_INIT; MAX_CPUS];

#[inline(always)]
fn rsp() -> u64 {
    let rsp: u64;
    // SAFETY: reads the stack pointer.
    unsafe { asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    rsp
}

/// The process-table slot whose kernel stack this code runs on; `None` on
/// an idle, boot or interrupt stack.
#[inline(always)]
pub fn stack_slot() -> Option<usize> {
    let kstack = rsp().wrapping_sub(KSTACK_REGION);
    (kstack < MAX_PROCS as u64 * KSTACK_STRIDE).then_some((kstack / KSTACK_STRIDE) as usize)
}

/// This CPU's index, from the stack it runs on (see the module doc).
/// Anything else (the boot stack, early boot) is the boot CPU.
#[inline(always)]
pub fn id() -> usize {
    if let Some(slot) = stack_slot() {
        // Masked, not compared: `note_running` only stores CPU indices,
        // and a mask is one emulated instruction where a test is four.
        return SLOT_CPU[slot].load(Ordering::Relaxed) as usize & (MAX_CPUS - 1);
    }
    let rsp = rsp();
    let (idle, ist) = (
        (&raw const IDLE_STACKS) as u64,
        (&raw const IST_STACKS) as u64,
    );
    let off = rsp.wrapping_sub(idle);
    if off < (MAX_CPUS * IDLE_STACK_SIZE) as u64 {
        return off as usize / IDLE_STACK_SIZE;
    }
    let off = rsp.wrapping_sub(ist);
    if off < (MAX_CPUS * 3 * IST_STACK_SIZE) as u64 {
        return off as usize / (3 * IST_STACK_SIZE);
    }
    0
}

/// CPU `cpu`'s data.
///
/// Each CPU only touches its own entry, with interrupts off (the GDT and
/// TSS are also read by the CPU itself), so borrows never overlap.
#[inline(always)]
pub fn of(cpu: usize) -> &'static mut PerCpu {
    let base = (&raw mut PERCPU).cast::<PerCpu>();
    // SAFETY: see above; `cpu` is clamped into the array.
    unsafe { &mut *base.add(cpu.min(MAX_CPUS - 1)) }
}

/// This CPU's data.
#[inline(always)]
pub fn this() -> &'static mut PerCpu {
    of(id())
}
