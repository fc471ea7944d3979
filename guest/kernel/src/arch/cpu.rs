//! Thin wrappers over privileged instructions.

use core::arch::asm;

#[inline(always)]
pub fn outb(port: u16, val: u8) {
    // SAFETY: port I/O has no memory effects visible to Rust.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") val, options(nomem, nostack, preserves_flags))
    }
}

#[inline(always)]
pub fn outl(port: u16, val: u32) {
    // SAFETY: as for outb; the hypervisor reads guest memory for hypercalls,
    // so callers order their stores before this with a compiler fence.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") val, options(nostack, preserves_flags)) }
}

#[inline(always)]
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port I/O has no memory effects visible to Rust.
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    v
}

/// Writes a whole buffer to one port with `rep outsb`: the hypervisor gets
/// it in a single exit instead of one exit per byte.
#[inline(always)]
pub fn outsb(port: u16, buf: &[u8]) {
    // SAFETY: reads exactly `buf.len()` bytes from `buf`.
    unsafe {
        asm!("rep outsb", in("dx") port, inout("rsi") buf.as_ptr() => _,
             inout("rcx") buf.len() => _, options(nostack, preserves_flags, readonly))
    }
}

#[inline(always)]
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called with MSRs the kernel configured the CPU to have.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    }
    ((hi as u64) << 32) | lo as u64
}

#[inline(always)]
pub fn wrmsr(msr: u32, val: u64) {
    // SAFETY: only called with architectural MSRs (APIC), no memory effects.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") val as u32, in("edx") (val >> 32) as u32,
             options(nomem, nostack, preserves_flags))
    }
}

#[inline(always)]
pub fn read_cr2() -> u64 {
    let v;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

#[inline(always)]
pub fn read_cr3() -> u64 {
    let v;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Switches address space.
///
/// # Safety
/// `pml4` must be a valid PML4 whose kernel half maps the running code.
#[inline(always)]
pub unsafe fn write_cr3(pml4: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov cr3, {}", in(reg) pml4, options(nostack, preserves_flags)) }
}

#[inline(always)]
pub fn invlpg(va: u64) {
    // SAFETY: flushing a TLB entry is always safe.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) }
}

#[inline(always)]
pub fn interrupts_enabled() -> bool {
    let f: u64;
    // SAFETY: reads RFLAGS.
    unsafe { asm!("pushfq; pop {}", out(reg) f, options(nomem, preserves_flags)) }
    f & (1 << 9) != 0
}

#[inline(always)]
pub fn cli() {
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { asm!("cli", options(nostack)) }
}

#[inline(always)]
pub fn sti() {
    // SAFETY: the kernel is prepared for interrupts wherever it enables them.
    unsafe { asm!("sti", options(nostack)) }
}

/// Interrupt-state changes are compiler barriers (no `nomem`): handlers
/// change memory while interrupts are on.
/// Enables interrupts and halts until one arrives, atomically (the `sti`
/// shadow covers the `hlt`, so a wakeup cannot slip in between).
#[inline(always)]
pub fn sti_hlt() {
    // SAFETY: see above.
    unsafe { asm!("sti; hlt", options(nostack)) }
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: nothing runs after this.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) }
    }
}

/// Flushes the whole TLB, global entries included (toggling CR4.PGE).
pub fn flush_tlb_all() {
    // SAFETY: clearing and restoring PGE only flushes the TLB.
    unsafe {
        asm!(
            "mov {t}, cr4",
            "mov {s}, {t}",
            "and {t}, ~0x80",
            "mov cr4, {t}",
            "mov cr4, {s}",
            t = out(reg) _,
            s = out(reg) _,
            options(nostack),
        );
    }
}

#[inline(always)]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc has no side effects.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    ((hi as u64) << 32) | lo as u64
}
