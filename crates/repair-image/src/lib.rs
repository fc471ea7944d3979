//! The hidden repair image (docs/ARCHITECTURE.md, "Resurrection").
//!
//! It lives in host memory, page-aligned so that the hypervisor can hand
//! it to KVM as a memory slot only while a crash is repaired. It holds:
//! the repair program (a static ring-3 ELF built from the same ABI crate
//! as the kernel), page tables that map the image and all guest RAM for
//! it, a mailbox, and pristine copies (with checksums) of the kernel's
//! code and read-only data and of every loaded extension as it was before
//! its init ran, and a table of their functions (symbols) at the addresses
//! they run at. The layout is `lazarus_abi::repair`'s.

mod buffer;
mod pagetables;

use lazarus_abi::repair::*;
use lazarus_abi::root::NONE;
use object::{Object, ObjectSegment, SegmentFlags};
use zerocopy::{FromBytes, IntoBytes};

pub use buffer::{SlotBuffer, SlotWindow};

/// Why an image could not be built or refreshed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The repair program does not parse as an ELF, or its entry point is
    /// outside the program area.
    #[error("the repair program is not a valid ELF: {0}")]
    BadProgram(String),
    /// A segment of the program lies outside the program area
    /// (`PROGRAM_VA` to `PROGRAM_VA + PROGRAM_MAX`); its extent in bytes.
    #[error("the repair program does not fit its area ({0} bytes)")]
    ProgramTooLarge(u64),
    /// The pristine copies and the symbol table do not fit the image.
    #[error("pristine copies need {need} bytes but the image has room for {room}")]
    NoRoom {
        /// Bytes needed.
        need: u64,
        /// Bytes available after `PRISTINE_OFFSET`.
        room: u64,
    },
    /// More sources than `MAX_PRISTINE` (the kernel and one per slot).
    #[error("too many pristine copies ({0})")]
    TooManyCopies(usize),
    /// Guest RAM is 0, above `MAX_MEMORY` or not a multiple of 2 MiB, so
    /// the image's page tables cannot map it.
    #[error("guest RAM of {0} bytes cannot be mapped for the repair program")]
    BadRamSize(u64),
    /// The image's memory (a memfd) could not be created or mapped.
    #[error("allocating the image: {0}")]
    Alloc(std::io::Error),
}

/// Code to keep a pristine copy of.
#[derive(Clone, Debug)]
pub struct PristineSource {
    /// Extension slot, or `NONE` for the kernel.
    pub ext_slot: u32,
    /// Kernel virtual address of `bytes[0]`.
    pub va: u64,
    /// The leading part of `bytes` that is code and read-only data.
    pub code_len: u64,
    /// The code as the kernel runs it (relocated, before any init ran).
    pub bytes: Vec<u8>,
    /// Functions in this code, at the addresses they run at.
    pub symbols: Vec<SymbolSource>,
}

/// A function for the image's symbol table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolSource {
    /// Kernel virtual address it runs at.
    pub addr: u64,
    /// Bytes of code (0 if unknown).
    pub size: u64,
    /// Demangled name; cut at [`SYMBOL_NAME_MAX`] bytes in the image.
    pub name: String,
}

/// Longest name kept; longer (generic-heavy) names are cut.
pub const SYMBOL_NAME_MAX: usize = 88;

impl PristineSource {
    /// The kernel's copy: all of `bytes`, at `va`, counts as code; no
    /// symbols yet.
    pub fn kernel(va: u64, bytes: Vec<u8>) -> Self {
        let code_len = bytes.len() as u64;
        Self {
            ext_slot: NONE,
            va,
            code_len,
            bytes,
            symbols: Vec::new(),
        }
    }
}

/// How much of the image each part uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageSize {
    /// Bytes in use in all (see [`RepairImage::size`]).
    pub total: u64,
    /// The repair program's segments.
    pub program: u64,
    /// The pristine copies (each rounded up to 16 bytes).
    pub pristine: u64,
    /// The symbol table and its names.
    pub symbols: u64,
    /// Functions in the symbol table.
    pub symbol_count: u32,
    /// The page-table area.
    pub page_tables: u64,
}

/// The repair image (see the crate docs): built once per VM, its pristine
/// copies refreshed whenever kernel code changes, its mailbox filled
/// before every repair.
pub struct RepairImage {
    buf: SlotBuffer,
    /// Writable segments of the program, to reset before every run.
    rw_template: Vec<(u64, Vec<u8>)>,
    entry: u64,
    program_end: u64,
    pristine: [Pristine; MAX_PRISTINE],
    pristine_bytes: u64,
    /// Where the symbol table is and how big (see `RepairHeader`).
    symbols: SymbolArea,
    generation: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct SymbolArea {
    offset: u64,
    count: u32,
    names_offset: u64,
    names_len: u32,
    bytes: u64,
}

impl RepairImage {
    /// Lays out the program and the page tables for `mem_size` of RAM.
    pub fn new(program_elf: &[u8], mem_size: u64) -> Result<Self, ImageError> {
        let mut buf = SlotBuffer::new(SLOT_SIZE as usize).map_err(ImageError::Alloc)?;
        let elf =
            object::File::parse(program_elf).map_err(|e| ImageError::BadProgram(e.to_string()))?;
        let mut rw_template = Vec::new();
        let mut program_end = PROGRAM_OFFSET;
        for seg in elf.segments() {
            let (va, memsz) = (seg.address(), seg.size());
            let data = seg
                .data()
                .map_err(|e| ImageError::BadProgram(e.to_string()))?;
            let end = va
                .checked_add(memsz)
                .ok_or(ImageError::ProgramTooLarge(memsz))?;
            if va < PROGRAM_VA || end > PROGRAM_VA + PROGRAM_MAX || (data.len() as u64) > memsz {
                return Err(ImageError::ProgramTooLarge(end.saturating_sub(PROGRAM_VA)));
            }
            let off = va - IMAGE_VA;
            let mut bytes = data.to_vec();
            bytes.resize(memsz as usize, 0);
            buf.write(off, &bytes);
            if let SegmentFlags::Elf { p_flags } = seg.flags()
                && p_flags & object::elf::PF_W != 0
            {
                rw_template.push((off, bytes));
            }
            program_end = program_end.max(end - IMAGE_VA);
        }
        let entry = elf.entry();
        if !(PROGRAM_VA..PROGRAM_VA + PROGRAM_MAX).contains(&entry) {
            return Err(ImageError::BadProgram(format!(
                "entry {entry:#x} outside the program area"
            )));
        }
        pagetables::build(&mut buf, mem_size).ok_or(ImageError::BadRamSize(mem_size))?;
        let mut img = Self {
            buf,
            rw_template,
            entry,
            program_end,
            pristine: [Pristine::default(); MAX_PRISTINE],
            pristine_bytes: 0,
            symbols: SymbolArea::default(),
            generation: 0,
        };
        img.write_header();
        Ok(img)
    }

    /// Replaces the pristine copies and the symbol table (the kernel's
    /// code changed: an extension was loaded or unloaded).
    pub fn set_pristine(&mut self, sources: &[PristineSource]) -> Result<(), ImageError> {
        if sources.len() > MAX_PRISTINE {
            return Err(ImageError::TooManyCopies(sources.len()));
        }
        let (table_bytes, names) = symbol_table(sources);
        let copies: u64 = sources
            .iter()
            .map(|s| (s.bytes.len() as u64).div_ceil(16) * 16)
            .sum();
        let need = copies + table_bytes.len() as u64 + (names.len() as u64).div_ceil(16) * 16;
        let room = SLOT_SIZE - PRISTINE_OFFSET;
        if need > room {
            return Err(ImageError::NoRoom { need, room });
        }
        let mut table = [Pristine::default(); MAX_PRISTINE];
        let mut off = PRISTINE_OFFSET;
        for (t, s) in table.iter_mut().zip(sources) {
            self.buf.write(off, &s.bytes);
            let code_len = s.code_len.min(s.bytes.len() as u64);
            *t = Pristine {
                ext_slot: s.ext_slot,
                _pad: 0,
                va: s.va,
                len: s.bytes.len() as u64,
                image_offset: off,
                code_len,
                checksum: fnv1a(&s.bytes[..code_len as usize]),
            };
            off += (s.bytes.len() as u64).div_ceil(16) * 16;
        }
        let symbols_offset = off;
        self.buf.write(symbols_offset, &table_bytes);
        let names_offset = symbols_offset + table_bytes.len() as u64;
        self.buf.write(names_offset, &names);
        self.symbols = SymbolArea {
            offset: symbols_offset,
            count: (table_bytes.len() / size_of::<ImageSymbol>()) as u32,
            names_offset,
            names_len: names.len() as u32,
            bytes: need - copies,
        };
        self.pristine = table;
        self.pristine_bytes = copies;
        self.generation += 1;
        self.write_header();
        Ok(())
    }

    fn write_header(&mut self) {
        let h = RepairHeader {
            magic: HEADER_MAGIC,
            version: REPAIR_VERSION,
            pristine_count: self.pristine.iter().filter(|p| p.len != 0).count() as u32,
            image_size: self.size().total,
            generation: self.generation,
            symbols_offset: self.symbols.offset,
            names_offset: self.symbols.names_offset,
            symbol_count: self.symbols.count,
            names_len: self.symbols.names_len,
        };
        self.buf.write(MAILBOX_OFFSET, h.as_bytes());
    }

    /// Resets the program's writable state and fills in the mailbox for
    /// one run. `input.pristine` is filled in here.
    pub fn prepare(&mut self, mut input: RepairInput) {
        for (off, bytes) in &self.rw_template {
            self.buf.write(*off, bytes);
        }
        input.pristine = self.pristine;
        self.buf.write(INPUT_OFFSET, input.as_bytes());
        self.buf
            .fill(PLAN_OFFSET, core::mem::size_of::<ResumePlan>(), 0);
    }

    /// The plan the program left in the mailbox.
    pub fn plan(&self) -> ResumePlan {
        let bytes = self
            .buf
            .read(PLAN_OFFSET, core::mem::size_of::<ResumePlan>());
        // Every bit pattern is a valid ResumePlan; a short read cannot
        // happen (the offset is a constant inside the buffer).
        ResumePlan::read_from_bytes(bytes).unwrap_or_else(|_| ResumePlan::new_zeroed_plan())
    }

    /// The program's entry point and initial stack pointer.
    pub fn entry(&self) -> (u64, u64) {
        (self.entry, IMAGE_VA + STACK_OFFSET + STACK_SIZE)
    }

    /// Guest-physical address of the image's PML4.
    pub fn cr3(&self) -> u64 {
        SLOT_GPA + PAGE_TABLES_OFFSET
    }

    /// Bytes the image really uses: mailbox, page tables, stack, program
    /// and pristine copies (the slot's unused gaps are not counted).
    pub fn size(&self) -> ImageSize {
        let program = self.program_end - PROGRAM_OFFSET;
        ImageSize {
            total: PAGE_TABLES_OFFSET
                + PAGE_TABLES_SIZE
                + STACK_SIZE
                + program
                + self.pristine_bytes
                + self.symbols.bytes,
            program,
            pristine: self.pristine_bytes,
            symbols: self.symbols.bytes,
            symbol_count: self.symbols.count,
            page_tables: PAGE_TABLES_SIZE,
        }
    }

    /// Times the pristine copies were replaced (`RepairHeader::generation`).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Host address and length of the slot memory, for KVM.
    pub fn host_region(&self) -> (*mut u8, u64) {
        (self.buf.as_ptr(), SLOT_SIZE)
    }

    /// The image's memory, to show it in a [`SlotWindow`].
    pub fn buffer(&self) -> &SlotBuffer {
        &self.buf
    }

    /// The image bytes (for tests and inspection).
    pub fn bytes(&self) -> &[u8] {
        self.buf.read(0, SLOT_SIZE as usize)
    }
}

/// The sorted [`ImageSymbol`] array of all sources (as bytes) and the
/// names it points into. Symbols outside their source's code are dropped:
/// the program trusts the table to name only code it has a copy of.
fn symbol_table(sources: &[PristineSource]) -> (Vec<u8>, Vec<u8>) {
    let mut all: Vec<&SymbolSource> = sources
        .iter()
        .flat_map(|s| {
            let end = s.va.saturating_add(s.code_len);
            s.symbols
                .iter()
                .filter(move |f| f.addr >= s.va && f.addr < end)
        })
        .collect();
    all.sort_by_key(|f| f.addr);
    all.dedup_by_key(|f| f.addr);
    let mut names = Vec::new();
    let mut table = Vec::with_capacity(all.len() * size_of::<ImageSymbol>());
    for f in all {
        let mut n = f.name.len().min(SYMBOL_NAME_MAX);
        while !f.name.is_char_boundary(n) {
            n -= 1;
        }
        let sym = ImageSymbol {
            addr: f.addr,
            size: u32::try_from(f.size).unwrap_or(u32::MAX),
            name_off: names.len() as u32,
            name_len: n as u32,
            _pad: 0,
        };
        names.extend_from_slice(&f.name.as_bytes()[..n]);
        table.extend_from_slice(sym.as_bytes());
    }
    (table, names)
}

trait ZeroedPlan {
    fn new_zeroed_plan() -> Self;
}

impl ZeroedPlan for ResumePlan {
    fn new_zeroed_plan() -> Self {
        <ResumePlan as zerocopy::FromZeros>::new_zeroed()
    }
}

#[cfg(test)]
mod tests;
