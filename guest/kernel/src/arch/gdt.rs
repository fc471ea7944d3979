//! GDT and TSS, laid out as docs/PLATFORM.md requires (Linux's selectors).

use core::arch::asm;
use core::mem::size_of;
use core::ptr::addr_of;
use lazarus_abi::layout::{SEL_KERNEL_CS, SEL_KERNEL_DS, SEL_TSS};

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
    iomap_base: u16,
}

const IST_STACK_SIZE: usize = 16 * 1024;

/// IST 1: double fault, 2: NMI, 3: machine check. A kernel stack overflow
/// must still be reportable, so these never share the faulting stack.
#[repr(C, align(16))]
struct IstStacks([[u8; IST_STACK_SIZE]; 3]);
static mut IST_STACKS: IstStacks = IstStacks([[0; IST_STACK_SIZE]; 3]);

static mut TSS: Tss = Tss {
    _reserved0: 0,
    rsp0: 0,
    _rsp1: 0,
    _rsp2: 0,
    _reserved1: 0,
    ist: [0; 7],
    _reserved2: 0,
    _reserved3: 0,
    iomap_base: size_of::<Tss>() as u16,
};

// null, unused, kcode 0x10, kdata 0x18, ucode32 0x20, udata 0x28,
// ucode64 0x30, unused 0x38, tss 0x40 (two slots).
static mut GDT: [u64; 10] = [
    0,
    0,
    0x00af_9b00_0000_ffff, // 0x10 kernel code, L=1
    0x00cf_9300_0000_ffff, // 0x18 kernel data
    0x00cf_fb00_0000_ffff, // 0x20 user code32
    0x00cf_f300_0000_ffff, // 0x28 user data
    0x00af_fb00_0000_ffff, // 0x30 user code64
    0,
    0,
    0,
];

#[repr(C, packed)]
struct Descriptor {
    limit: u16,
    base: u64,
}

pub fn init() {
    // SAFETY: single-threaded early boot; nothing else references these yet.
    unsafe {
        let tss = &raw mut TSS;
        let stacks = addr_of!(IST_STACKS) as u64;
        for i in 0..3 {
            (*tss).ist[i] = stacks + ((i + 1) * IST_STACK_SIZE) as u64;
        }
        let base = tss as u64;
        let limit = (size_of::<Tss>() - 1) as u64;
        let low = (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (0x89 << 40) // present, 64-bit available TSS
            | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56);
        let gdt = &raw mut GDT;
        (*gdt)[8] = low;
        (*gdt)[9] = base >> 32;

        let desc = Descriptor {
            limit: (size_of::<[u64; 10]>() - 1) as u16,
            base: gdt as u64,
        };
        asm!(
            "lgdt [{desc}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            "ltr {tss:x}",
            desc = in(reg) &desc,
            cs = in(reg) SEL_KERNEL_CS as u64,
            ds = in(reg) SEL_KERNEL_DS as u64,
            tss = in(reg) SEL_TSS as u64,
            tmp = out(reg) _,
        );
    }
}

/// Sets the stack ring-3 traps land on (the next process's kernel stack).
pub fn set_kernel_stack(top: u64) {
    // SAFETY: the TSS is only touched by this CPU with interrupts disabled.
    unsafe {
        let tss = &raw mut TSS;
        core::ptr::write_unaligned(&raw mut (*tss).rsp0, top);
    }
}
