//! Reading a lazarus dump back.
//!
//! Only the headers and notes are loaded into memory; guest memory is read
//! from the file on demand (positioned reads), so opening a dump of a
//! large guest is cheap and needs no `unsafe` mmap. Every offset and size
//! comes from the file and is checked before use.
//!
//! [`Dump::from_bytes`] reads a dump held in memory with the same code, for
//! callers that have no file (tests, the fuzzer).
//!
//! Both formats read the same way: a segment says guest-physical
//! `[paddr, paddr + memsz)` (and `vaddr`) holds its file data, then zeros.
//! Dumps sized to their content carry a [`MemoryNote`] with the guest's RAM
//! size; older ones, without it, held all of RAM and its size is that of
//! the physmap segment.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lazarus_guestmem::{MemError, PhysMemory, check_range};
use object::LittleEndian;
use object::elf::{EM_X86_64, ET_CORE, FileHeader64, NT_PRSTATUS, PT_LOAD, PT_NOTE};
use object::read::elf::{FileHeader as _, NoteIterator, ProgramHeader as _};
use serde::Deserialize;
use zerocopy::FromBytes;

use crate::error::DumpError;
use crate::note::{CrashNote, FORMAT_VERSION, MemoryNote, Regs};
use crate::prstatus::Prstatus;
use crate::{NOTE_NAME_CORE, NOTE_NAME_LAZARUS, NT_LAZARUS_CRASH, NT_LAZARUS_MEMORY};

/// Largest note segment we load (the JSON note is a few KiB).
const MAX_NOTES: u64 = 64 << 20;
const EHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;

/// A `PT_LOAD` segment of the dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Kernel (or user) virtual address the segment maps.
    pub vaddr: u64,
    /// Guest-physical address of its first byte.
    pub paddr: u64,
    /// File offset of its data.
    pub offset: u64,
    /// Bytes of data in the file.
    pub filesz: u64,
    /// Bytes it covers in memory (bytes past `filesz` read as zero).
    pub memsz: u64,
    /// `PF_*` bits.
    pub flags: u32,
}

impl Segment {
    fn contains_virt(&self, va: u64) -> bool {
        va >= self.vaddr && va - self.vaddr < self.memsz
    }
    fn contains_phys(&self, pa: u64) -> bool {
        pa >= self.paddr && pa - self.paddr < self.memsz
    }
}

/// Where a dump's bytes are: positioned reads on a file, or a buffer.
#[derive(Debug)]
enum Source {
    File(File),
    Bytes(Vec<u8>),
}

impl Source {
    /// Fills `buf` from `offset`, like [`FileExt::read_exact_at`]: a read
    /// past the end is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Source::File(f) => f.read_exact_at(buf, offset),
            Source::Bytes(b) => {
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|start| b.get(start..start.checked_add(buf.len())?))
                    .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }
}

/// The path [`Dump::path`] reports for a dump read from memory.
pub const IN_MEMORY_PATH: &str = "(in memory)";

/// An opened dump.
#[derive(Debug)]
pub struct Dump {
    path: PathBuf,
    file: Source,
    len: u64,
    note: CrashNote,
    prstatus: Vec<(u32, Regs)>,
    segments: Vec<Segment>,
    /// Bytes of guest RAM in the dump (the extent of the physical view).
    ram_size: u64,
    /// What memory the dump holds; `None` in dumps of all of RAM written
    /// before dumps were sized to their content.
    memory: Option<MemoryNote>,
}

fn read_at(file: &Source, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, DumpError> {
    let mut buf = vec![0u8; usize::try_from(len).map_err(|_| DumpError::Malformed("size".into()))?];
    file.read_exact_at(&mut buf, offset)
        .map_err(DumpError::io(path))?;
    Ok(buf)
}

fn malformed(e: object::read::Error) -> DumpError {
    DumpError::Malformed(e.to_string())
}

/// Just the version, read before the rest so that a newer note with other
/// fields is reported as a version mismatch, not as bad JSON.
#[derive(Deserialize)]
struct VersionOnly {
    format_version: u32,
}

impl Dump {
    /// Opens and validates a dump: ELF core for x86-64, every segment
    /// inside the file, a valid `LAZARUS` note of a supported version.
    pub fn open(path: &Path) -> Result<Dump, DumpError> {
        let file = File::open(path).map_err(DumpError::io(path))?;
        let len = file.metadata().map_err(DumpError::io(path))?.len();
        Self::parse(Source::File(file), path.to_path_buf(), len)
    }

    /// Validates a dump held in memory, as [`Dump::open`] does a file; its
    /// [`Dump::path`] is [`IN_MEMORY_PATH`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Dump, DumpError> {
        let len = bytes.len() as u64;
        Self::parse(Source::Bytes(bytes), PathBuf::from(IN_MEMORY_PATH), len)
    }

    /// The checks of [`Dump::open`] on a dump of `len` bytes in `file`.
    fn parse(file: Source, path_buf: PathBuf, len: u64) -> Result<Dump, DumpError> {
        let path = path_buf.as_path();

        // ELF header.
        let ident = read_at(&file, path, 0, len.min(EHDR_SIZE))?;
        if ident.len() < 4 || ident[..4] != object::elf::ELFMAG {
            return Err(DumpError::NotElf);
        }
        if len < EHDR_SIZE {
            return Err(DumpError::TruncatedHeaders {
                need: EHDR_SIZE,
                len,
            });
        }
        if ident[4] != object::elf::ELFCLASS64 || ident[5] != object::elf::ELFDATA2LSB {
            return Err(DumpError::WrongClass);
        }
        let ehdr = FileHeader64::<LittleEndian>::parse(&*ident).map_err(malformed)?;
        let e = LittleEndian;
        if ehdr.e_type(e) != ET_CORE {
            return Err(DumpError::NotCore(ehdr.e_type(e)));
        }
        if ehdr.e_machine(e) != EM_X86_64 {
            return Err(DumpError::WrongMachine(ehdr.e_machine(e)));
        }
        let phnum = u64::from(ehdr.e_phnum(e));
        if phnum == u64::from(object::elf::PN_XNUM) {
            return Err(DumpError::Malformed("extended program header count".into()));
        }
        if phnum > 0 && u64::from(ehdr.e_phentsize(e)) != PHDR_SIZE {
            return Err(DumpError::Malformed(format!(
                "program header size {}",
                ehdr.e_phentsize(e)
            )));
        }
        let phoff = ehdr.e_phoff(e);
        let need = phoff
            .checked_add(phnum * PHDR_SIZE)
            .ok_or_else(|| DumpError::Malformed("program header offset".into()))?;
        if need > len {
            return Err(DumpError::TruncatedHeaders { need, len });
        }

        // Program headers: read the file up to their end so `object` can
        // parse them in place.
        let head = read_at(&file, path, 0, need)?;
        let ehdr = FileHeader64::<LittleEndian>::parse(&*head).map_err(malformed)?;
        let phdrs = ehdr.program_headers(e, &*head).map_err(malformed)?;

        let mut segments = Vec::new();
        let mut note: Option<CrashNote> = None;
        let mut prstatus = Vec::new();
        let mut memory: Option<MemoryNote> = None;
        for (index, ph) in phdrs.iter().enumerate() {
            let (offset, filesz) = (ph.p_offset(e), ph.p_filesz(e));
            let end = offset
                .checked_add(filesz)
                .ok_or_else(|| DumpError::Malformed(format!("segment {index} offset overflows")))?;
            if end > len {
                return Err(DumpError::TruncatedSegment { index, end, len });
            }
            match ph.p_type(e) {
                PT_LOAD => {
                    if ph.p_memsz(e) < filesz {
                        return Err(DumpError::Malformed(format!(
                            "segment {index} has memsz < filesz"
                        )));
                    }
                    segments.push(Segment {
                        vaddr: ph.p_vaddr(e),
                        paddr: ph.p_paddr(e),
                        offset,
                        filesz,
                        memsz: ph.p_memsz(e),
                        flags: ph.p_flags(e),
                    });
                }
                PT_NOTE => {
                    if filesz > MAX_NOTES {
                        return Err(DumpError::Malformed(format!(
                            "note segment of {filesz} bytes"
                        )));
                    }
                    let data = read_at(&file, path, offset, filesz)?;
                    let align = ph.p_align(e).max(4);
                    parse_notes(&data, align, &mut note, &mut memory, &mut prstatus)?;
                }
                _ => {}
            }
        }
        let note = note.ok_or(DumpError::MissingNote)?;
        let ram_size = match &memory {
            Some(m) => m.ram_size,
            None => segments
                .iter()
                .filter(|s| s.paddr == 0)
                .map(|s| s.filesz)
                .max()
                .unwrap_or(0),
        };
        Ok(Dump {
            path: path_buf,
            file,
            len,
            note,
            prstatus,
            segments,
            ram_size,
            memory,
        })
    }

    /// What memory the dump holds, for dumps sized to their content;
    /// `None` for an older dump of all of RAM.
    pub fn memory(&self) -> Option<&MemoryNote> {
        self.memory.as_ref()
    }

    /// Where the dump was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the dump file in bytes.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// The hypervisor's account of the crash.
    pub fn note(&self) -> &CrashNote {
        &self.note
    }

    /// The registers gdb sees for vCPU `vcpu` (for the crashed vCPU, those
    /// at the faulting instruction when the kernel recorded them).
    pub fn prstatus(&self, vcpu: u32) -> Option<Regs> {
        self.prstatus
            .iter()
            .find(|(v, _)| *v == vcpu)
            .map(|(_, r)| r.clone())
    }

    /// The `PT_LOAD` segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Bytes of guest RAM in the dump.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// Reads guest memory at kernel virtual address `va` through the
    /// dump's segments (bytes beyond a segment's file data read as zero).
    pub fn read_virt(&self, va: u64, buf: &mut [u8]) -> Result<(), DumpError> {
        let mut done = 0usize;
        while done < buf.len() {
            let addr = va
                .checked_add(done as u64)
                .ok_or(DumpError::Unmapped { addr: va })?;
            let seg = self
                .segments
                .iter()
                .find(|s| s.contains_virt(addr))
                .ok_or(DumpError::Unmapped { addr })?;
            let rel = addr - seg.vaddr;
            let n = ((seg.memsz - rel) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            if rel < seg.filesz {
                let in_file = ((seg.filesz - rel) as usize).min(n);
                self.file
                    .read_exact_at(&mut out[..in_file], seg.offset + rel)
                    .map_err(DumpError::io(&self.path))?;
                out[in_file..].fill(0);
            } else {
                out.fill(0);
            }
            done += n;
        }
        Ok(())
    }

    /// Reads guest-physical memory: what a segment holds (its file data,
    /// then zeros up to its `memsz`). Memory the dump did not capture is
    /// [`DumpError::Unmapped`].
    pub fn read_phys(&self, pa: u64, buf: &mut [u8]) -> Result<(), DumpError> {
        let mut done = 0usize;
        while done < buf.len() {
            let addr = pa
                .checked_add(done as u64)
                .ok_or(DumpError::Unmapped { addr: pa })?;
            // Segments that map the same frames agree; prefer one with file
            // data at `addr`, and the most of it.
            let seg = self
                .segments
                .iter()
                .filter(|s| s.contains_phys(addr))
                .max_by_key(|s| (addr - s.paddr < s.filesz, s.filesz))
                .ok_or(DumpError::Unmapped { addr })?;
            let rel = addr - seg.paddr;
            let n = ((seg.memsz - rel) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            if rel < seg.filesz {
                let in_file = ((seg.filesz - rel) as usize).min(n);
                self.file
                    .read_exact_at(&mut out[..in_file], seg.offset + rel)
                    .map_err(DumpError::io(&self.path))?;
                out[in_file..].fill(0);
            } else {
                out.fill(0);
            }
            done += n;
        }
        Ok(())
    }

    /// Reads a little-endian quadword at a kernel virtual address.
    pub fn read_u64_virt(&self, va: u64) -> Result<u64, DumpError> {
        let mut b = [0u8; 8];
        self.read_virt(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Translates `va` through the page tables at `cr3` found in the dump
    /// (for address spaces other than the ones the dump maps).
    pub fn translate(&self, cr3: u64, va: u64) -> Option<u64> {
        lazarus_guestmem::translate(self, cr3, va)
            .ok()
            .map(|t| t.pa)
    }
}

/// The dumped RAM as guest-physical memory `[0, ram_size)`, for the page
/// walker and the state-root reader.
impl PhysMemory for Dump {
    fn size(&self) -> u64 {
        self.ram_size
    }

    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        check_range(self.ram_size, pa, buf.len() as u64)?;
        self.read_phys(pa, buf)
            .map_err(|_| MemError::Unreadable { pa })
    }
}

fn parse_notes(
    data: &[u8],
    align: u64,
    note: &mut Option<CrashNote>,
    memory: &mut Option<MemoryNote>,
    prstatus: &mut Vec<(u32, Regs)>,
) -> Result<(), DumpError> {
    let e = LittleEndian;
    let bad = |what: &'static str, reason: String| DumpError::BadNote { what, reason };
    let mut iter = NoteIterator::<FileHeader64<LittleEndian>>::new(e, align, data)
        .map_err(|err| bad("note segment", err.to_string()))?;
    while let Some(n) = iter
        .next()
        .map_err(|err| bad("note segment", err.to_string()))?
    {
        match (n.name(), n.n_type(e)) {
            (name, NT_PRSTATUS) if name == NOTE_NAME_CORE => {
                let p = Prstatus::read_from_prefix(n.desc())
                    .map(|(p, _)| p)
                    .map_err(|_| bad("NT_PRSTATUS", format!("{} bytes", n.desc().len())))?;
                if let Some(vcpu) = p.vcpu() {
                    prstatus.push((vcpu, Regs::from(&p.pr_reg)));
                }
            }
            (name, NT_LAZARUS_CRASH) if name == NOTE_NAME_LAZARUS => {
                let v: VersionOnly =
                    serde_json::from_slice(n.desc()).map_err(DumpError::InvalidNote)?;
                if v.format_version != FORMAT_VERSION {
                    return Err(DumpError::UnsupportedVersion {
                        found: v.format_version,
                        supported: FORMAT_VERSION,
                    });
                }
                *note = Some(serde_json::from_slice(n.desc()).map_err(DumpError::InvalidNote)?);
            }
            (name, NT_LAZARUS_MEMORY) if name == NOTE_NAME_LAZARUS => {
                *memory = Some(
                    serde_json::from_slice(n.desc())
                        .map_err(|e| bad("LAZARUS memory", e.to_string()))?,
                );
            }
            _ => {}
        }
    }
    Ok(())
}
