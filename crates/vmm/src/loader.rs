//! Loading the guest kernel (an `ET_EXEC` x86-64 ELF) and the initramfs.
//!
//! Segments are placed by their *physical* address (`p_paddr`); the kernel
//! is linked at `KERNEL_VIRT_BASE + p_paddr`. Parsing ([`KernelImage::parse`])
//! is separate from loading so that a bad image is reported before any KVM
//! resource exists.

use lazarus_abi::layout::{BOOT_RESERVED_END, LARGE_PAGE_SIZE, kernel_virt_to_phys};
use object::elf::{EM_X86_64, ET_EXEC, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use tracing::debug;
use vm_memory::{Bytes, GuestAddress};

use crate::error::{Error, Result};
use crate::memory::{GuestRam, ram_size, range_in_ram};

// Defined with the other errors, so that `error.rs` imports nothing of the
// crate; still reachable at this path.
pub use crate::error::LoaderError;

/// One `PT_LOAD` segment, validated against the file.
#[derive(Clone, Debug)]
struct Segment<'a> {
    paddr: u64,
    memsz: u64,
    /// The bytes the file provides (`p_filesz` of them).
    contents: &'a [u8],
}

/// A parsed, validated kernel ELF (not yet placed in memory).
#[derive(Clone, Debug)]
pub struct KernelImage<'a> {
    segments: Vec<Segment<'a>>,
    /// Virtual entry point.
    pub entry: u64,
    /// Lowest physical address of any segment.
    pub phys_start: u64,
    /// One past the highest physical address of any segment (incl. .bss).
    pub phys_end: u64,
}

impl<'a> KernelImage<'a> {
    /// Parses and checks an ELF kernel image, independently of guest RAM.
    pub fn parse(data: &'a [u8]) -> std::result::Result<Self, LoaderError> {
        if !data.starts_with(b"\x7fELF") {
            return Err(LoaderError::NotElf);
        }
        // EI_CLASS = ELFCLASS64, EI_DATA = ELFDATA2LSB.
        if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
            return Err(LoaderError::Not64BitLittleEndian);
        }
        let header = object::elf::FileHeader64::<object::LittleEndian>::parse(data)
            .map_err(|e| LoaderError::Malformed(e.to_string()))?;
        let endian = header
            .endian()
            .map_err(|e| LoaderError::Malformed(e.to_string()))?;
        let machine = header.e_machine(endian);
        if machine != EM_X86_64 {
            return Err(LoaderError::WrongArch(machine));
        }
        let kind = header.e_type(endian);
        if kind != ET_EXEC {
            return Err(LoaderError::NotExecutable(kind));
        }
        let phdrs = header
            .program_headers(endian, data)
            .map_err(|e| LoaderError::Malformed(e.to_string()))?;

        let mut segments = Vec::new();
        for ph in phdrs.iter().filter(|ph| ph.p_type(endian) == PT_LOAD) {
            let paddr = ph.p_paddr(endian);
            let memsz = ph.p_memsz(endian);
            let filesz = ph.p_filesz(endian);
            if memsz == 0 {
                continue;
            }
            if filesz > memsz {
                return Err(LoaderError::SegmentFileSize {
                    paddr,
                    filesz,
                    memsz,
                });
            }
            let end = paddr
                .checked_add(memsz)
                .ok_or(LoaderError::SegmentOutsideRam {
                    start: paddr,
                    len: memsz,
                    mem_size: 0,
                })?;
            if paddr < BOOT_RESERVED_END {
                return Err(LoaderError::SegmentInBootArea { start: paddr, end });
            }
            let contents = ph.data(endian, data).map_err(|()| {
                LoaderError::Malformed(format!(
                    "segment at physical {paddr:#x} extends past the end of the file"
                ))
            })?;
            segments.push(Segment {
                paddr,
                memsz,
                contents,
            });
        }
        let phys_start = segments
            .iter()
            .map(|s| s.paddr)
            .min()
            .ok_or(LoaderError::NoLoadableSegments)?;
        let phys_end = segments
            .iter()
            .map(|s| s.paddr + s.memsz) // checked above
            .max()
            .ok_or(LoaderError::NoLoadableSegments)?;

        let entry = header.e_entry(endian);
        match kernel_virt_to_phys(entry) {
            Some(p) if (phys_start..phys_end).contains(&p) => {}
            _ => return Err(LoaderError::BadEntry(entry)),
        }
        Ok(Self {
            segments,
            entry,
            phys_start,
            phys_end,
        })
    }

    /// Checks that every segment fits in guest RAM of `mem_size` bytes.
    pub fn check_fits(&self, mem_size: u64) -> std::result::Result<(), LoaderError> {
        for s in &self.segments {
            if !range_in_ram(mem_size, s.paddr, s.memsz) {
                return Err(LoaderError::SegmentOutsideRam {
                    start: s.paddr,
                    len: s.memsz,
                    mem_size,
                });
            }
        }
        Ok(())
    }

    /// Copies the segments into guest RAM and zero-fills their .bss parts.
    pub fn load(&self, mem: &GuestRam) -> Result<()> {
        self.check_fits(ram_size(mem))?;
        for s in &self.segments {
            let contents = s.contents;
            debug!(
                paddr = format_args!("{:#x}", s.paddr),
                filesz = contents.len(),
                memsz = s.memsz,
                "loading kernel segment"
            );
            mem.write_slice(contents, GuestAddress(s.paddr))
                .map_err(|e| Error::GuestMemory(format!("loading kernel segment: {e}")))?;
            let bss_start = s.paddr + contents.len() as u64;
            let bss_len = s.memsz - contents.len() as u64;
            zero_fill(mem, bss_start, bss_len)?;
        }
        Ok(())
    }
}

fn zero_fill(mem: &GuestRam, start: u64, len: u64) -> Result<()> {
    const CHUNK: [u8; 4096] = [0; 4096];
    let mut at = start;
    let end = start.saturating_add(len);
    while at < end {
        let n = (end - at).min(CHUNK.len() as u64) as usize;
        mem.write_slice(&CHUNK[..n], GuestAddress(at))
            .map_err(|e| Error::GuestMemory(format!("zeroing kernel .bss: {e}")))?;
        at += n as u64;
    }
    Ok(())
}

/// Where the initramfs goes: the first 2 MiB boundary after the kernel.
pub fn initramfs_placement(kernel_end: u64, len: u64, mem_size: u64) -> Result<u64> {
    let start = kernel_end
        .checked_next_multiple_of(LARGE_PAGE_SIZE)
        .unwrap_or(u64::MAX);
    if !range_in_ram(mem_size, start, len) {
        return Err(Error::InitramfsTooLarge {
            len,
            start,
            mem_size,
        });
    }
    Ok(start)
}

/// Copies the initramfs into guest RAM after the kernel; returns its GPA.
pub fn load_initramfs(mem: &GuestRam, kernel_end: u64, data: &[u8]) -> Result<u64> {
    let start = initramfs_placement(kernel_end, data.len() as u64, ram_size(mem))?;
    mem.write_slice(data, GuestAddress(start))
        .map_err(|e| Error::GuestMemory(format!("loading initramfs: {e}")))?;
    Ok(start)
}

/// Where things were placed in guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    /// Guest RAM in bytes.
    pub mem_size: u64,
    /// vCPUs the VM has.
    pub vcpus: u32,
    /// Virtual entry point of the kernel.
    pub kernel_entry: u64,
    /// Physical extent of the loaded kernel image.
    pub kernel_phys_start: u64,
    /// End of it (exclusive).
    pub kernel_phys_end: u64,
    /// Where the initramfs was placed.
    pub initramfs_phys: u64,
    /// Its length.
    pub initramfs_len: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::memory::create_guest_ram;
    use lazarus_abi::layout::{KERNEL_PHYS_BASE, KERNEL_VIRT_BASE};
    use vm_memory::Bytes;

    /// Builds a minimal ET_EXEC x86-64 ELF with one PT_LOAD segment.
    pub(crate) fn build_elf(paddr: u64, code: &[u8], memsz: u64, entry_off: u64) -> Vec<u8> {
        let mut elf = vec![0u8; 0x78];
        elf[0..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // 64-bit
        elf[5] = 1; // little endian
        elf[6] = 1; // version
        elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf[20..24].copy_from_slice(&1u32.to_le_bytes());
        elf[24..32].copy_from_slice(
            &KERNEL_VIRT_BASE
                .wrapping_add(paddr)
                .wrapping_add(entry_off)
                .to_le_bytes(),
        );
        elf[32..40].copy_from_slice(&0x40u64.to_le_bytes()); // e_phoff
        elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 0x40;
        elf[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        elf[ph + 4..ph + 8].copy_from_slice(&7u32.to_le_bytes()); // RWX
        let offset = 0x1000u64;
        elf[ph + 8..ph + 16].copy_from_slice(&offset.to_le_bytes());
        elf[ph + 16..ph + 24].copy_from_slice(&KERNEL_VIRT_BASE.wrapping_add(paddr).to_le_bytes());
        elf[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
        elf[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        elf[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes());
        elf[ph + 48..ph + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        elf.resize(offset as usize, 0);
        elf.extend_from_slice(code);
        elf
    }

    #[test]
    fn parses_and_loads_with_bss() {
        let elf = build_elf(KERNEL_PHYS_BASE, &[0xf4, 0xeb, 0xfd], 0x3000, 0);
        let img = KernelImage::parse(&elf).unwrap();
        assert_eq!(img.phys_start, KERNEL_PHYS_BASE);
        assert_eq!(img.phys_end, KERNEL_PHYS_BASE + 0x3000);
        assert_eq!(img.entry, KERNEL_VIRT_BASE + KERNEL_PHYS_BASE);
        let mem = create_guest_ram(16 << 20).unwrap();
        // Dirty the .bss area to see it zeroed.
        mem.write_slice(&[0xaa; 16], GuestAddress(KERNEL_PHYS_BASE + 0x10))
            .unwrap();
        img.load(&mem).unwrap();
        let mut buf = [0u8; 19];
        mem.read_slice(&mut buf, GuestAddress(KERNEL_PHYS_BASE))
            .unwrap();
        assert_eq!(&buf[..3], &[0xf4, 0xeb, 0xfd]);
        assert!(buf[3..].iter().all(|&b| b == 0));
    }

    #[test]
    fn rejects_bad_images() {
        assert_eq!(
            KernelImage::parse(b"garbage").unwrap_err(),
            LoaderError::NotElf
        );
        assert_eq!(KernelImage::parse(b"").unwrap_err(), LoaderError::NotElf);

        let mut elf32 = build_elf(KERNEL_PHYS_BASE, &[0xf4], 0x1000, 0);
        elf32[4] = 1;
        assert_eq!(
            KernelImage::parse(&elf32).unwrap_err(),
            LoaderError::Not64BitLittleEndian
        );

        let mut arm = build_elf(KERNEL_PHYS_BASE, &[0xf4], 0x1000, 0);
        arm[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert_eq!(
            KernelImage::parse(&arm).unwrap_err(),
            LoaderError::WrongArch(183)
        );

        let mut dynamic = build_elf(KERNEL_PHYS_BASE, &[0xf4], 0x1000, 0);
        dynamic[16..18].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(
            KernelImage::parse(&dynamic).unwrap_err(),
            LoaderError::NotExecutable(3)
        );

        let truncated = build_elf(KERNEL_PHYS_BASE, &[0xf4; 64], 0x1000, 0);
        assert!(matches!(
            KernelImage::parse(&truncated[..0x1010]).unwrap_err(),
            LoaderError::Malformed(_)
        ));
        assert!(matches!(
            KernelImage::parse(&truncated[..0x50]).unwrap_err(),
            LoaderError::Malformed(_)
        ));

        let boot = build_elf(0x8000, &[0xf4], 0x1000, 0);
        assert!(matches!(
            KernelImage::parse(&boot).unwrap_err(),
            LoaderError::SegmentInBootArea { .. }
        ));

        let bad_entry = build_elf(KERNEL_PHYS_BASE, &[0xf4], 0x1000, 0x2000);
        assert!(matches!(
            KernelImage::parse(&bad_entry).unwrap_err(),
            LoaderError::BadEntry(_)
        ));

        let overflow = build_elf(u64::MAX - 0x10, &[0xf4], 0x1000, 0);
        assert!(KernelImage::parse(&overflow).is_err());

        let big = build_elf(KERNEL_PHYS_BASE, &[0xf4], 64 << 20, 0);
        let img = KernelImage::parse(&big).unwrap();
        assert!(matches!(
            img.check_fits(16 << 20).unwrap_err(),
            LoaderError::SegmentOutsideRam { .. }
        ));
        let mem = create_guest_ram(16 << 20).unwrap();
        assert!(img.load(&mem).is_err());
    }

    #[test]
    fn initramfs_goes_after_the_kernel() {
        let mem_size = 16u64 << 20;
        assert_eq!(
            initramfs_placement(0x10_1234, 100, mem_size).unwrap(),
            0x20_0000
        );
        assert_eq!(
            initramfs_placement(0x20_0000, 100, mem_size).unwrap(),
            0x20_0000
        );
        assert!(initramfs_placement(0x20_0000, mem_size, mem_size).is_err());
        assert!(initramfs_placement(u64::MAX - 5, 1, mem_size).is_err());
        let mem = create_guest_ram(mem_size).unwrap();
        let at = load_initramfs(&mem, 0x10_0100, b"070701").unwrap();
        let mut buf = [0u8; 6];
        mem.read_slice(&mut buf, GuestAddress(at)).unwrap();
        assert_eq!(&buf, b"070701");
    }
}
