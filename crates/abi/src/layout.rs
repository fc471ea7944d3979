//! Guest-physical and virtual memory map.
//!
//! The hypervisor builds the boot page tables, so it and the kernel must
//! agree on every address below.

/// A 4 KiB page.
pub const PAGE_SIZE: u64 = 4096;
/// A 2 MiB page (the physmap and the kernel image window use them).
pub const LARGE_PAGE_SIZE: u64 = 2 * 1024 * 1024;

/// Guest-physical address of the boot GDT the hypervisor installs.
pub const BOOT_GDT_GPA: u64 = 0x500;
/// Guest-physical address of [`crate::boot::BootInfo`].
pub const BOOT_INFO_GPA: u64 = 0x1000;
/// Boot PML4; the kernel keeps using it as its master page table.
pub const BOOT_PML4_GPA: u64 = 0x2000;
/// PDPT for the physical-memory map (PML4 slot 256).
pub const BOOT_PHYSMAP_PDPT_GPA: u64 = 0x3000;
/// Up to [`MAX_MEMORY`]/1 GiB page directories of 2 MiB pages follow here.
pub const BOOT_PHYSMAP_PD_GPA: u64 = 0x4000;
/// PDPT for the top 2 GiB (PML4 slot 511), shared by kernel image and extensions.
pub const BOOT_KERNEL_PDPT_GPA: u64 = 0x8000;
/// Page directory mapping the kernel image window (PDPT slot 510).
pub const BOOT_KERNEL_PD_GPA: u64 = 0x9000;
/// Everything below this is boot structures the kernel must not hand out.
pub const BOOT_RESERVED_END: u64 = 0x10000;

/// Physical load address of the kernel image.
pub const KERNEL_PHYS_BASE: u64 = 0x10_0000;
/// Kernel image window: virtual `KERNEL_VIRT_BASE + p` maps physical `p`
/// for the first 1 GiB of RAM.
pub const KERNEL_VIRT_BASE: u64 = 0xFFFF_FFFF_8000_0000;
/// All guest RAM is mapped here: virtual `PHYSMAP_BASE + p` is physical `p`.
pub const PHYSMAP_BASE: u64 = 0xFFFF_8000_0000_0000;
/// Per-process kernel stacks (4 KiB pages, with unmapped guard pages).
pub const KSTACK_REGION: u64 = 0xFFFF_FF00_0000_0000;
/// Bytes of kernel stack per process (excluding the guard page).
pub const KSTACK_SIZE: u64 = 16 * 1024;
/// Distance between consecutive kernel stacks; the gap is the guard.
pub const KSTACK_STRIDE: u64 = 32 * 1024;
/// Extension modules are loaded here (4 KiB pages).
pub const EXT_REGION: u64 = 0xFFFF_FFFF_C000_0000;
/// Address space reserved per extension slot.
pub const EXT_SLOT_SIZE: u64 = 16 * 1024 * 1024;

/// `ExtApi::ioremap` mappings (4 KiB pages, uncached).
pub const IOREMAP_REGION: u64 = EXT_REGION + 512 * 1024 * 1024;
/// Bytes of that region; `ioremap` fails once it is used up (mappings are
/// never freed).
pub const IOREMAP_SIZE: u64 = 64 * 1024 * 1024;

/// Where user programs are linked.
pub const USER_IMAGE_BASE: u64 = 0x40_0000;
/// Top of the user stack.
pub const USER_STACK_TOP: u64 = 0x8000_0000;
/// Bytes of user stack mapped at spawn.
pub const USER_STACK_SIZE: u64 = 128 * 1024;
/// Highest address user memory (heap) may reach.
pub const USER_HEAP_LIMIT: u64 = 0x4000_0000;

/// Smallest guest RAM the kernel can boot with.
pub const MIN_MEMORY: u64 = 16 * 1024 * 1024;
/// Largest guest RAM: stays below the 32-bit MMIO hole (IOAPIC at 0xFEC0_0000).
pub const MAX_MEMORY: u64 = 3 * 1024 * 1024 * 1024;
/// Default guest RAM.
pub const DEFAULT_MEMORY: u64 = 128 * 1024 * 1024;

/// I/O port of the 16550 console (COM1).
pub const PORT_COM1: u16 = 0x3f8;
/// COM1's IRQ line (I/O APIC input), routed to [`VEC_COM1`].
pub const IRQ_COM1: u32 = 4;
/// pvpanic-style port: the guest writes [`PVPANIC_PANICKED`] after filling
/// the crash record in its state root.
pub const PORT_PVPANIC: u16 = 0x505;
/// pvpanic event bit: the guest panicked (the kernel's crash signal).
pub const PVPANIC_PANICKED: u8 = 1;
/// pvpanic event bit "crash loaded"; the hypervisor only advertises it
/// (reads of the port return both bits).
pub const PVPANIC_CRASH_LOADED: u8 = 2;
/// 32-bit write of the guest-physical address of a
/// [`crate::hypercall::Hypercall`] block.
pub const PORT_HYPERCALL: u16 = 0x510;

/// Local APIC MMIO base (we use x2APIC MSRs, but KVM still reserves it).
pub const LAPIC_BASE: u64 = 0xFEE0_0000;
/// I/O APIC MMIO base; the serial IRQ is routed through it.
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
/// The hypervisor maps [MMIO_WINDOW_START, MMIO_WINDOW_END) into the physmap
/// too (2 MiB pages, cache disabled), so the kernel can reach the I/O APIC
/// at `PHYSMAP_BASE + IOAPIC_BASE` without building mappings of its own.
pub const MMIO_WINDOW_START: u64 = 0xFEC0_0000;
/// End (exclusive) of that window.
pub const MMIO_WINDOW_END: u64 = 0xFF00_0000;
/// Guest-physical base of the virtio MMIO windows, inside the MMIO window
/// above (so the physmap reaches them too); device `i` is at
/// `VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE`. The hypervisor names each
/// one on the kernel command line as Linux and Firecracker do:
/// `virtio_mmio.device=4K@0xfed00000:5`.
pub const VIRTIO_MMIO_BASE: u64 = 0xFED0_0000;
/// Spacing (and size) of the virtio MMIO windows.
pub const VIRTIO_MMIO_STRIDE: u64 = 0x1000;
/// Most virtio devices a VM has.
pub const MAX_VIRTIO_DEVICES: usize = 8;
/// I/O APIC pin of virtio device 0 (device `i` uses `IRQ_VIRTIO_BASE + i`).
pub const IRQ_VIRTIO_BASE: u32 = 5;
/// IDT vector of the local APIC timer (the kernel tick).
pub const VEC_TIMER: u8 = 0x20;
/// IDT vector of the COM1 receive interrupt.
pub const VEC_COM1: u8 = 0x24;
/// IDT vector of device interrupt handler 0 (`KernelRoot::irqs`); handler
/// `i` gets `VEC_DEVICE_BASE + i`.
pub const VEC_DEVICE_BASE: u8 = 0x30;
/// IDT vector of the reschedule IPI: wakes a halted CPU (idle, or
/// waiting for the big kernel lock) to look at the run queue again.
pub const VEC_RESCHED: u8 = 0xF1;
/// IDT vector of the TLB-shootdown IPI: a kernel mapping shared by every
/// CPU changed.
pub const VEC_TLB: u8 = 0xF2;
/// IDT vector of the stop IPI: the CPU leaves the kernel for good
/// (power-off), so nothing runs on it while the machine goes down.
pub const VEC_STOP: u8 = 0xF3;
/// IDT vector of the local APIC's spurious interrupt.
pub const VEC_SPURIOUS: u8 = 0xFF;
/// Kernel timer frequency.
pub const TICK_HZ: u64 = 100;

// GDT selectors. docs/PLATFORM.md: they must follow Linux's layout.
/// GDT selector: kernel 64-bit code.
pub const SEL_KERNEL_CS: u16 = 0x10;
/// GDT selector: kernel data.
pub const SEL_KERNEL_DS: u16 = 0x18;
/// GDT selector: user 32-bit code (RPL 3); unused, kept for Linux's layout.
pub const SEL_USER_CS32: u16 = 0x23;
/// GDT selector: user data (RPL 3).
pub const SEL_USER_DS: u16 = 0x2b;
/// GDT selector: user 64-bit code (RPL 3).
pub const SEL_USER_CS: u16 = 0x33;
/// GDT selector: the TSS.
pub const SEL_TSS: u16 = 0x40;

/// Translates a kernel-image virtual address to guest-physical.
pub const fn kernel_virt_to_phys(va: u64) -> Option<u64> {
    if va >= KERNEL_VIRT_BASE && va < KERNEL_VIRT_BASE + (1 << 30) {
        Some(va - KERNEL_VIRT_BASE)
    } else if va >= PHYSMAP_BASE && va < PHYSMAP_BASE + MAX_MEMORY {
        Some(va - PHYSMAP_BASE)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virt_to_phys_windows() {
        assert_eq!(kernel_virt_to_phys(KERNEL_VIRT_BASE + 0x1234), Some(0x1234));
        assert_eq!(kernel_virt_to_phys(PHYSMAP_BASE + 0x10), Some(0x10));
        assert_eq!(kernel_virt_to_phys(0x40_0000), None);
        assert_eq!(kernel_virt_to_phys(EXT_REGION), None);
    }
}
