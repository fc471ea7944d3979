//! Per-CPU data: each CPU's GDT, TSS, interrupt stacks and idle context.
//!
//! A CPU finds its index from its own GDT register (`sgdt`): every CPU
//! loads the GDT inside its own [`PerCpu`], so the address says which one
//! it is. Unlike GS-based per-CPU pointers this needs no `swapgs` on each
//! kernel entry and cannot be changed from user mode (Linux's `getcpu`
//! reads a per-CPU GDT entry for the same reason).

use core::arch::asm;
use core::mem::size_of;
use lazarus_abi::boot::MAX_CPUS;

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
}

const PERCPU_INIT: PerCpu = PerCpu {
    gdt: [0; GDT_ENTRIES],
    tss: Tss::new(),
    idle_rsp: 0,
    waiting_bkl: 0,
};

static mut PERCPU: [PerCpu; MAX_CPUS] = [PERCPU_INIT; MAX_CPUS];

#[repr(C, packed)]
struct Descriptor {
    _limit: u16,
    base: u64,
}

/// This CPU's index. Before the CPU loaded its own GDT (early boot) it
/// is 0, the boot CPU.
#[inline(always)]
pub fn id() -> usize {
    let mut d = Descriptor { _limit: 0, base: 0 };
    // SAFETY: sgdt stores 10 bytes into `d`.
    unsafe { asm!("sgdt [{}]", in(reg) &raw mut d, options(nostack, preserves_flags)) };
    let start = (&raw const PERCPU) as u64;
    let i = d.base.wrapping_sub(start) / size_of::<PerCpu>() as u64;
    if (i as usize) < MAX_CPUS {
        i as usize
    } else {
        0
    }
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
