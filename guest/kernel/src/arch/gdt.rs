//! GDT and TSS, laid out as docs/PLATFORM.md requires (Linux's selectors),
//! one pair per CPU (in `percpu`).

use super::percpu::{self, GDT_ENTRIES};
use core::arch::asm;
use core::mem::size_of;
use lazarus_abi::layout::{SEL_KERNEL_CS, SEL_KERNEL_DS, SEL_TSS};

// null, unused, kcode 0x10, kdata 0x18, ucode32 0x20, udata 0x28,
// ucode64 0x30, unused 0x38, tss 0x40 (two slots).
const TEMPLATE: [u64; GDT_ENTRIES] = [
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

/// Builds CPU `cpu`'s GDT and TSS and loads them (also after a repair,
/// which may have found them corrupted).
pub fn init(cpu: usize) {
    let pc = percpu::of(cpu);
    for i in 0..3 {
        pc.tss.ist[i] = percpu::ist_top(cpu, i + 1);
    }
    let base = (&raw const pc.tss) as u64;
    let limit = (size_of::<percpu::Tss>() - 1) as u64;
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40) // present, 64-bit available TSS
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    pc.gdt = TEMPLATE;
    pc.gdt[8] = low;
    pc.gdt[9] = base >> 32;
    let desc = Descriptor {
        limit: (size_of::<[u64; GDT_ENTRIES]>() - 1) as u16,
        base: (&raw const pc.gdt) as u64,
    };
    // SAFETY: the GDT just built has valid kernel code, data and TSS
    // descriptors at the selectors loaded here.
    unsafe {
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

/// Sets the stack ring-3 traps land on for CPU `cpu`, the caller's (the
/// next process's kernel stack).
pub fn set_kernel_stack(cpu: usize, top: u64) {
    let pc = percpu::of(cpu);
    // SAFETY: the TSS is this CPU's own; the field is unaligned (packed).
    unsafe { core::ptr::write_unaligned(&raw mut pc.tss.rsp0, top) };
}
