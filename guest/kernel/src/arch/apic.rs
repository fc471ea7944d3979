//! x2APIC timer and EOI, the I/O APIC route for the console, and masking of
//! the legacy PIC (docs/PLATFORM.md: its LVT0 ExtINT path would steal IRQs).

use super::cpu::{outb, rdmsr, wrmsr};
use lazarus_abi::layout::{IOAPIC_BASE, PHYSMAP_BASE, TICK_HZ, VEC_SPURIOUS, VEC_TIMER};

const IA32_APIC_BASE: u32 = 0x1b;
const X2APIC_TPR: u32 = 0x808;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_SVR: u32 = 0x80f;
const X2APIC_LVT_TIMER: u32 = 0x832;
const X2APIC_TIMER_INIT: u32 = 0x838;
const X2APIC_TIMER_DIV: u32 = 0x83e;

const X2APIC_ICR: u32 = 0x830;

/// The boot CPU's interrupt controllers: the legacy PICs masked, then its
/// local APIC.
pub fn init(lapic_timer_hz: u64) {
    // Mask both 8259 PICs.
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    init_local(lapic_timer_hz);
}

/// This CPU's local APIC: x2APIC mode, the periodic tick timer.
pub fn init_local(lapic_timer_hz: u64) {
    let base = rdmsr(IA32_APIC_BASE);
    wrmsr(IA32_APIC_BASE, base | (1 << 11) | (1 << 10));
    wrmsr(X2APIC_TPR, 0);
    wrmsr(X2APIC_SVR, 0x100 | VEC_SPURIOUS as u64);
    wrmsr(X2APIC_TIMER_DIV, 0b1011); // divide by 1
    wrmsr(X2APIC_LVT_TIMER, VEC_TIMER as u64 | (1 << 17)); // periodic
    let hz = if lapic_timer_hz == 0 {
        1_000_000_000
    } else {
        lapic_timer_hz
    };
    wrmsr(X2APIC_TIMER_INIT, hz / TICK_HZ);
}

/// Sends `vector` to CPU `cpu` (its x2APIC id is its index): fixed
/// delivery, physical destination.
pub fn send_ipi(cpu: usize, vector: u8) {
    wrmsr(X2APIC_ICR, ((cpu as u64) << 32) | vector as u64);
}

#[inline(always)]
pub fn eoi() {
    wrmsr(X2APIC_EOI, 0);
}

/// Acknowledges interrupts left in service by a crash inside a handler
/// (otherwise the LAPIC never delivers that vector, or any lower one,
/// again). Handlers acknowledge early, so this is rarely needed.
pub fn ack_in_service() {
    const X2APIC_ISR0: u32 = 0x810;
    for reg in 0..8 {
        let isr = rdmsr(X2APIC_ISR0 + reg);
        for _ in 0..isr.count_ones() {
            eoi();
        }
    }
}

/// Masks I/O APIC pin `irq` (its redirection entry's bit 16): nothing it
/// raises is delivered until it is routed again.
pub fn ioapic_mask(irq: u32) {
    let regsel = (PHYSMAP_BASE + IOAPIC_BASE) as *mut u32;
    // SAFETY: as in `ioapic_route`.
    unsafe {
        let win = regsel.byte_add(0x10);
        regsel.write_volatile(0x10 + 2 * irq);
        win.write_volatile(1 << 16);
    }
}

/// Routes an ISA IRQ to `vector` on CPU 0, edge-triggered.
pub fn ioapic_route(irq: u32, vector: u8) {
    let regsel = (PHYSMAP_BASE + IOAPIC_BASE) as *mut u32;
    // SAFETY: the hypervisor maps the I/O APIC page in the physmap
    // (layout::MMIO_WINDOW_*); IOREGSEL is at +0 and IOWIN at +0x10.
    unsafe {
        let win = regsel.byte_add(0x10);
        regsel.write_volatile(0x10 + 2 * irq + 1);
        win.write_volatile(0);
        regsel.write_volatile(0x10 + 2 * irq);
        win.write_volatile(vector as u32);
    }
}
