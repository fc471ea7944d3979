//! Boot structures the hypervisor writes into guest RAM before the first
//! instruction: the [`BootInfo`] block, the boot page tables and the GDT.
//!
//! Everything lives below `BOOT_RESERVED_END`, at the addresses that
//! `lazarus_abi::layout` documents.

use lazarus_abi::boot::{BOOT_MAGIC, BootInfo};
use lazarus_abi::hypercall::ABI_VERSION;
use lazarus_abi::layout::{
    BOOT_GDT_GPA, BOOT_INFO_GPA, BOOT_KERNEL_PD_GPA, BOOT_KERNEL_PDPT_GPA, BOOT_PHYSMAP_PD_GPA,
    BOOT_PHYSMAP_PDPT_GPA, BOOT_PML4_GPA, BOOT_RESERVED_END, LARGE_PAGE_SIZE, MMIO_WINDOW_END,
    MMIO_WINDOW_START, PAGE_SIZE,
};
use zerocopy::FromZeros;

use crate::error::{Error, Result};
use crate::memory::{GuestRam, write_bytes, write_obj};

/// Page-table entry bits of the boot tables the hypervisor builds:
/// present,
pub const PTE_PRESENT: u64 = 1 << 0;
/// writable,
pub const PTE_WRITABLE: u64 = 1 << 1;
/// write-through (with PCD: uncached, for the MMIO window),
pub const PTE_PWT: u64 = 1 << 3;
/// cache disable,
pub const PTE_PCD: u64 = 1 << 4;
/// and a 2 MiB (PD) or 1 GiB (PDPT) leaf.
pub const PTE_PS: u64 = 1 << 7;

const GIB: u64 = 1 << 30;
/// Number of physmap page directories (covers 4 GiB: RAM and the MMIO window).
pub const PHYSMAP_PDS: u64 = 4;
/// Entries per paging structure.
const ENTRIES: u64 = 512;

/// GDT contents, following Linux's layout (docs/PLATFORM.md).
pub const GDT: [u64; 8] = [
    0,                     // 0x00 null
    0x00cf_9b00_0000_ffff, // 0x08 kernel code, 32-bit
    0x00af_9b00_0000_ffff, // 0x10 kernel code, 64-bit
    0x00cf_9300_0000_ffff, // 0x18 kernel data
    0x00cf_fb00_0000_ffff, // 0x20 user code, 32-bit (selector 0x23)
    0x00cf_f300_0000_ffff, // 0x28 user data (selector 0x2b)
    0x00af_fb00_0000_ffff, // 0x30 user code, 64-bit (selector 0x33)
    0,                     // 0x38 unused; the kernel's TSS goes at 0x40
];

/// What the loader placed where, for [`BootInfo`].
#[derive(Clone, Debug)]
pub struct BootParams<'a> {
    /// vCPUs the kernel may bring up.
    pub num_cpus: u32,
    /// Guest RAM in bytes.
    pub mem_size: u64,
    /// Physical extent of the loaded kernel (it must not allocate there).
    pub kernel_phys_start: u64,
    /// End of it (exclusive).
    pub kernel_phys_end: u64,
    /// Where the initramfs was placed.
    pub initramfs_phys: u64,
    /// Its length in bytes.
    pub initramfs_len: u64,
    /// LAPIC timer input frequency, so the kernel needs no calibration.
    pub lapic_timer_hz: u64,
    /// Kernel command line.
    pub cmdline: &'a str,
}

/// Checks that the command line fits in [`BootInfo::cmdline`] with a NUL.
pub fn validate_cmdline(cmdline: &str) -> Result<()> {
    let max = BootInfo::new_zeroed().cmdline.len() - 1;
    if cmdline.len() > max {
        return Err(Error::InvalidCmdline(format!(
            "{} bytes long, at most {max} are allowed",
            cmdline.len()
        )));
    }
    if cmdline.contains('\0') {
        return Err(Error::InvalidCmdline("contains a NUL byte".to_string()));
    }
    Ok(())
}

/// Builds the [`BootInfo`] block.
pub fn boot_info(p: &BootParams<'_>) -> Result<BootInfo> {
    validate_cmdline(p.cmdline)?;
    let mut info = BootInfo::new_zeroed();
    info.magic = BOOT_MAGIC;
    info.abi_version = ABI_VERSION;
    info.num_cpus = p.num_cpus;
    info.mem_size = p.mem_size;
    info.kernel_phys_start = p.kernel_phys_start;
    info.kernel_phys_end = p.kernel_phys_end;
    info.initramfs_phys = p.initramfs_phys;
    info.initramfs_len = p.initramfs_len;
    info.lapic_timer_hz = p.lapic_timer_hz;
    info.cmdline[..p.cmdline.len()].copy_from_slice(p.cmdline.as_bytes());
    Ok(info)
}

/// The boot page tables as (guest-physical address, 4 KiB table) pairs.
///
/// - `PML4[256]` -> physmap PDPT; its entries 0..4 -> four page directories
///   mapping RAM (2 MiB pages) and the MMIO window (cache disabled).
/// - `PML4[511]` -> kernel PDPT; entry 510 -> a page directory mapping
///   physical `[0, min(mem, 1 GiB))`.
pub fn page_tables(mem_size: u64) -> Vec<(u64, [u64; 512])> {
    let rw = PTE_PRESENT | PTE_WRITABLE;
    let mut pml4 = [0u64; 512];
    pml4[256] = BOOT_PHYSMAP_PDPT_GPA | rw;
    pml4[511] = BOOT_KERNEL_PDPT_GPA | rw;

    let mut physmap_pdpt = [0u64; 512];
    let mut tables = Vec::new();
    for i in 0..PHYSMAP_PDS {
        let pd_gpa = BOOT_PHYSMAP_PD_GPA + i * PAGE_SIZE;
        physmap_pdpt[i as usize] = pd_gpa | rw;
        let mut pd = [0u64; 512];
        for (j, entry) in pd.iter_mut().enumerate() {
            let addr = i * GIB + j as u64 * LARGE_PAGE_SIZE;
            if addr < mem_size {
                *entry = addr | rw | PTE_PS;
            } else if (MMIO_WINDOW_START..MMIO_WINDOW_END).contains(&addr) {
                *entry = addr | rw | PTE_PS | PTE_PCD | PTE_PWT;
            }
        }
        tables.push((pd_gpa, pd));
    }

    let mut kernel_pdpt = [0u64; 512];
    kernel_pdpt[510] = BOOT_KERNEL_PD_GPA | rw;
    let mut kernel_pd = [0u64; 512];
    let window = mem_size.min(GIB);
    for (j, entry) in kernel_pd.iter_mut().enumerate().take(ENTRIES as usize) {
        let addr = j as u64 * LARGE_PAGE_SIZE;
        if addr < window {
            *entry = addr | rw | PTE_PS;
        }
    }

    tables.push((BOOT_PML4_GPA, pml4));
    tables.push((BOOT_PHYSMAP_PDPT_GPA, physmap_pdpt));
    tables.push((BOOT_KERNEL_PDPT_GPA, kernel_pdpt));
    tables.push((BOOT_KERNEL_PD_GPA, kernel_pd));
    tables
}

/// Writes BootInfo, the page tables and the GDT into guest RAM.
pub fn write_boot_structures(mem: &GuestRam, params: &BootParams<'_>) -> Result<()> {
    // The reserved area may be reused RAM (a reboot): start from zeros.
    write_bytes(mem, 0, &vec![0u8; BOOT_RESERVED_END as usize])?;
    write_obj(mem, BOOT_INFO_GPA, &boot_info(params)?)?;
    for (gpa, table) in page_tables(params.mem_size) {
        write_obj(mem, gpa, &table)?;
    }
    write_obj(mem, BOOT_GDT_GPA, &GDT)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{create_guest_ram, read_obj};
    use lazarus_abi::layout::{IOAPIC_BASE, KERNEL_PHYS_BASE, KERNEL_VIRT_BASE, PHYSMAP_BASE};

    /// Walks the boot page tables in guest memory like the MMU would.
    fn translate(mem: &GuestRam, va: u64) -> Option<(u64, u64)> {
        let idx = |level: u32| (va >> (12 + 9 * level)) & 0x1ff;
        let pml4e: u64 = read_obj(mem, BOOT_PML4_GPA + idx(3) * 8)?;
        if pml4e & PTE_PRESENT == 0 {
            return None;
        }
        let pdpte: u64 = read_obj(mem, (pml4e & !0xfff) + idx(2) * 8)?;
        if pdpte & PTE_PRESENT == 0 {
            return None;
        }
        let pde: u64 = read_obj(mem, (pdpte & !0xfff) + idx(1) * 8)?;
        if pde & PTE_PRESENT == 0 || pde & PTE_PS == 0 {
            return None;
        }
        Some((
            (pde & !0x1f_ffff & !(1 << 63)) + (va & 0x1f_ffff),
            pde & 0xfff,
        ))
    }

    fn params(mem_size: u64) -> BootParams<'static> {
        BootParams {
            num_cpus: 1,
            mem_size,
            kernel_phys_start: KERNEL_PHYS_BASE,
            kernel_phys_end: KERNEL_PHYS_BASE + 0x5000,
            initramfs_phys: 0x20_0000,
            initramfs_len: 512,
            lapic_timer_hz: 1_000_000_000,
            cmdline: "console=ttyS0 quiet",
        }
    }

    #[test]
    fn mappings_match_the_layout() {
        let mem_size = 64u64 << 20;
        let mem = create_guest_ram(mem_size).unwrap();
        write_boot_structures(&mem, &params(mem_size)).unwrap();

        let (pa, flags) = translate(&mem, PHYSMAP_BASE + 0x1234).unwrap();
        assert_eq!(pa, 0x1234);
        assert_eq!(flags & (PTE_PCD | PTE_PWT | 4), 0, "cached, supervisor");
        let last = mem_size - 1;
        assert_eq!(translate(&mem, PHYSMAP_BASE + last).unwrap().0, last);
        assert!(translate(&mem, PHYSMAP_BASE + mem_size).is_none());

        let (pa, flags) = translate(&mem, PHYSMAP_BASE + IOAPIC_BASE).unwrap();
        assert_eq!(pa, IOAPIC_BASE);
        assert_eq!(flags & (PTE_PCD | PTE_PWT), PTE_PCD | PTE_PWT);
        assert!(translate(&mem, PHYSMAP_BASE + MMIO_WINDOW_END).is_none());
        assert!(translate(&mem, PHYSMAP_BASE + MMIO_WINDOW_START - 1).is_none());

        let (pa, _) = translate(&mem, KERNEL_VIRT_BASE + KERNEL_PHYS_BASE + 8).unwrap();
        assert_eq!(pa, KERNEL_PHYS_BASE + 8);
        assert!(translate(&mem, KERNEL_VIRT_BASE + mem_size).is_none());
        // No identity map.
        assert!(translate(&mem, KERNEL_PHYS_BASE).is_none());

        let gdt: [u64; 8] = read_obj(&mem, BOOT_GDT_GPA).unwrap();
        assert_eq!(gdt, GDT);
        let info: BootInfo = read_obj(&mem, BOOT_INFO_GPA).unwrap();
        assert_eq!(info.magic, BOOT_MAGIC);
        assert_eq!(info.mem_size, mem_size);
        assert_eq!(lazarus_abi::name_str(&info.cmdline), "console=ttyS0 quiet");
    }

    #[test]
    fn kernel_window_is_capped_at_one_gib() {
        let mem_size = 2u64 << 30;
        let tables = page_tables(mem_size);
        let (_, kpd) = tables
            .iter()
            .find(|(gpa, _)| *gpa == BOOT_KERNEL_PD_GPA)
            .unwrap();
        assert!(kpd.iter().all(|e| e & PTE_PRESENT != 0));
        let (_, pd1) = tables
            .iter()
            .find(|(gpa, _)| *gpa == BOOT_PHYSMAP_PD_GPA + PAGE_SIZE)
            .unwrap();
        assert!(pd1.iter().all(|e| e & PTE_PRESENT != 0));
        let (_, pd2) = tables
            .iter()
            .find(|(gpa, _)| *gpa == BOOT_PHYSMAP_PD_GPA + 2 * PAGE_SIZE)
            .unwrap();
        assert!(pd2.iter().all(|e| e & PTE_PRESENT == 0));
    }

    #[test]
    fn cmdline_limits() {
        assert!(validate_cmdline(&"x".repeat(255)).is_ok());
        assert!(validate_cmdline(&"x".repeat(256)).is_err());
        assert!(validate_cmdline("a\0b").is_err());
        let mut p = params(16 << 20);
        let long = "y".repeat(300);
        p.cmdline = &long;
        assert!(boot_info(&p).is_err());
    }
}
