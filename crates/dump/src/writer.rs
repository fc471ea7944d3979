//! Writing a crashed guest as an ELF core file that gdb opens with the
//! kernel ELF (`gdb kernel.elf dump.core`).
//!
//! File layout: ELF header, program headers, one `PT_NOTE` segment (an
//! `NT_PRSTATUS` per vCPU, the crashed vCPU first so that it is gdb's
//! current thread, the `LAZARUS` JSON note, and the memory note saying
//! how much RAM the guest had and whether what is left out is zero), then
//! each captured run of guest-physical memory, stored once. Every
//! `PT_LOAD` points into those runs: the physmap and the kernel image
//! window map them linearly, and the page-table walks add the kernel
//! stacks, extensions and the crashed process's user half, each piece
//! pointing at the run that holds its physical frames.
//!
//! A dump holds what was captured, not a file of guest-RAM size: a crash
//! snapshot's few hundred KiB, or the non-zero pages of a stopped guest's
//! RAM. All-zero pages of what was captured are not stored but still read
//! as zero (the segments' `p_memsz` covers them with no file data, as ELF
//! allows); what was not captured is in no segment at all.

use std::fs::OpenOptions;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lazarus_abi::layout::{
    BOOT_PML4_GPA, EXT_REGION, EXT_SLOT_SIZE, KERNEL_VIRT_BASE, KSTACK_REGION, KSTACK_STRIDE,
    PAGE_SIZE, PHYSMAP_BASE,
};
use lazarus_abi::root::{CRASH_PANIC, MAX_EXTS, MAX_PROCS};
use lazarus_guestmem::{Limits, MemError, PageSize, PhysMemory, Run, check_range, mappings_with};
use object::elf::{EM_X86_64, ET_CORE, NT_PRSTATUS, PF_R, PF_W, PF_X, PT_LOAD, PT_NOTE};
use object::write::elf::{FileHeader, ProgramHeader, Writer};
use object::{Endianness, pod};
use zerocopy::IntoBytes;

use crate::error::DumpError;
use crate::note::{CrashNote, FORMAT_VERSION, MemoryNote, Regs};
use crate::prstatus::{Prstatus, SIGABRT, SIGFPE, SIGILL, SIGSEGV};
use crate::{NOTE_NAME_CORE, NOTE_NAME_LAZARUS, NT_LAZARUS_CRASH, NT_LAZARUS_MEMORY};

/// The guest memory a dump holds.
pub enum Memory<'a> {
    /// All of guest RAM from guest-physical 0 (a stopped guest). All-zero
    /// pages are left out of the file and read back as zero.
    Ram(&'a [u8]),
    /// Only these guest-physical ranges were captured (a crash-time
    /// snapshot): `(address, bytes)`, in any order. The rest of the
    /// guest's `ram_size` bytes is not in the dump (reading it fails: it
    /// was not captured, it is not known to be zero). Parts outside RAM
    /// or overlapping an earlier range are dropped.
    Captured {
        /// Bytes of RAM the guest had.
        ram_size: u64,
        /// The captured ranges.
        ranges: Vec<(u64, &'a [u8])>,
    },
}

/// What to dump.
pub struct DumpInput<'a> {
    /// Guest memory.
    pub memory: Memory<'a>,
    /// The crash note; its registers also become the `NT_PRSTATUS` notes.
    pub note: CrashNote,
}

/// Most program headers a dump carries: `e_phnum` is 16 bits and
/// `object`'s writer does not do the `PN_XNUM` extension. Page-table runs
/// beyond this are dropped (user mappings first, as they come last).
pub const MAX_SEGMENTS: usize = 0xff00;
/// The kernel image window maps at most this much RAM.
const KERNEL_WINDOW: u64 = 1 << 30;
/// Upper end of the lower (user) half of the address space.
const USER_END: u64 = 0x0000_8000_0000_0000;
/// At most this many 4 KiB leaves per walk (16 GiB of mappings): a
/// corrupted table cannot make the dump writer run away.
const MAX_LEAVES: usize = 1 << 22;
/// Full RAM is stored as at most this many runs of non-zero pages: zero
/// gaps between runs are closed, shortest first, until it fits. Each run
/// costs two program headers (physmap and kernel window), and the
/// page-table walks need room too.
const MAX_RAM_RUNS: usize = 4096;
/// Zero gaps shorter than this many pages are stored rather than making
/// another segment.
const MIN_GAP_PAGES: u64 = 4;

/// One stored run of guest-physical memory: `data` at `pa`, kept in the
/// file at `offset`; for full RAM, `zeros` bytes of zero follow it (the
/// gap to the next run, not stored).
struct Piece<'a> {
    pa: u64,
    data: &'a [u8],
    zeros: u64,
    offset: u64,
}

impl Piece<'_> {
    fn end(&self) -> u64 {
        self.pa + self.data.len() as u64 + self.zeros
    }
}

/// The memory being dumped, as the page walker reads it.
struct Image<'a> {
    size: u64,
    /// Sorted, disjoint; `zeros` set for full RAM.
    pieces: Vec<Piece<'a>>,
}

impl PhysMemory for Image<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        check_range(self.size, pa, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = pa + done as u64;
            let i = self.pieces.partition_point(|p| p.pa <= at);
            let p = i
                .checked_sub(1)
                .and_then(|i| self.pieces.get(i))
                .filter(|p| at < p.end())
                .ok_or(MemError::Unreadable { pa: at })?;
            let rel = (at - p.pa) as usize;
            let n = ((p.end() - at) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            let have = p.data.len().saturating_sub(rel).min(n);
            if have > 0 {
                out[..have].copy_from_slice(&p.data[rel..rel + have]);
            }
            out[have..].fill(0);
            done += n;
        }
        Ok(())
    }
}

/// Whether `page` is all zero: OR-folds 64-byte blocks (which the
/// compiler vectorizes) and stops at the first that is not.
fn is_zero(page: &[u8]) -> bool {
    page.chunks(64)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Runs of non-zero pages of `ram`, as byte ranges, with zero gaps of
/// fewer than `min_gap` pages closed.
fn nonzero_runs(ram: &[u8], min_gap: u64) -> Vec<Range<usize>> {
    let page = PAGE_SIZE as usize;
    let mut runs: Vec<Range<usize>> = Vec::new();
    for (i, chunk) in ram.chunks(page).enumerate() {
        if is_zero(chunk) {
            continue;
        }
        let (start, end) = (i * page, i * page + chunk.len());
        match runs.last_mut() {
            Some(last) if (start - last.end) as u64 <= min_gap * PAGE_SIZE => last.end = end,
            _ => runs.push(start..end),
        }
    }
    runs
}

/// Closes the shortest gaps until at most `max` runs are left.
fn coalesce(mut runs: Vec<Range<usize>>, max: usize) -> Vec<Range<usize>> {
    if runs.len() <= max {
        return runs;
    }
    let mut gaps: Vec<usize> = runs.windows(2).map(|w| w[1].start - w[0].end).collect();
    gaps.sort_unstable();
    // Close every gap up to the one that leaves `max` runs.
    let limit = gaps[runs.len() - max - 1];
    let mut out: Vec<Range<usize>> = Vec::with_capacity(max);
    for r in runs.drain(..) {
        match out.last_mut() {
            Some(last) if r.start - last.end <= limit => last.end = r.end,
            _ => out.push(r),
        }
    }
    out
}

/// The pieces of a known region of memory, `data` at `pa`: its runs of
/// non-zero pages (at most `max_runs`), each followed by the zeros up to
/// the next (and a leading piece of zeros if the region starts with some).
fn split<'a>(pa: u64, data: &'a [u8], max_runs: usize, out: &mut Vec<Piece<'a>>) {
    let runs = coalesce(nonzero_runs(data, MIN_GAP_PAGES), max_runs.max(1));
    let first = runs.first().map_or(data.len(), |r| r.start);
    if first > 0 {
        out.push(Piece {
            pa,
            data: &[],
            zeros: first as u64,
            offset: 0,
        });
    }
    for (i, r) in runs.iter().enumerate() {
        let next = runs.get(i + 1).map_or(data.len(), |n| n.start);
        out.push(Piece {
            pa: pa + r.start as u64,
            data: &data[r.clone()],
            zeros: (next - r.end) as u64,
            offset: 0,
        });
    }
}

/// The pieces of `memory`, without file offsets yet.
fn pieces<'a>(memory: &Memory<'a>) -> Image<'a> {
    let mut pieces: Vec<Piece<'a>> = Vec::new();
    match memory {
        Memory::Ram(ram) => {
            split(0, ram, MAX_RAM_RUNS, &mut pieces);
            Image {
                size: ram.len() as u64,
                pieces,
            }
        }
        Memory::Captured { ram_size, ranges } => {
            let mut sorted: Vec<(u64, &'a [u8])> = ranges.clone();
            sorted.sort_by_key(|r| r.0);
            let per_range = MAX_RAM_RUNS / sorted.len().max(1);
            let mut floor = 0;
            for (pa, data) in sorted {
                let end = pa.saturating_add(data.len() as u64).min(*ram_size);
                let start = pa.max(floor);
                if start >= end {
                    continue;
                }
                let from = (start - pa) as usize;
                let to = (end - pa) as usize;
                split(start, &data[from..to], per_range, &mut pieces);
                floor = end;
            }
            Image {
                size: *ram_size,
                pieces,
            }
        }
    }
}

struct Load {
    vaddr: u64,
    paddr: u64,
    offset: u64,
    filesz: u64,
    memsz: u64,
    flags: u32,
}

fn flags_of(m: &Run) -> u32 {
    let mut flags = PF_R;
    if m.writable {
        flags |= PF_W;
    }
    if m.executable {
        flags |= PF_X;
    }
    flags
}

/// Segments mapping `[pa, pa + len)` at `va`: a segment per piece it
/// overlaps, each pointing at that piece's data (and zeros); parts no
/// piece holds are left out.
fn map_range(img: &Image, va: u64, pa: u64, len: u64, flags: u32, out: &mut Vec<Load>) {
    let end = pa.saturating_add(len);
    let first = img.pieces.partition_point(|p| p.end() <= pa);
    for p in img.pieces[first..].iter().take_while(|p| p.pa < end) {
        let lo = pa.max(p.pa);
        let hi = end.min(p.end());
        if lo >= hi {
            continue;
        }
        let data_end = p.pa + p.data.len() as u64;
        out.push(Load {
            vaddr: va + (lo - pa),
            paddr: lo,
            offset: p.offset + lo.min(data_end) - p.pa,
            filesz: hi.min(data_end).saturating_sub(lo),
            memsz: hi - lo,
            flags,
        });
    }
}

/// The 4 KiB mappings of `cr3` in `range`, as runs contiguous both
/// virtually and physically. Large pages are left out: the regions walked
/// use 4 KiB pages only, and the kernel windows are dumped whole anyway.
/// Each table is read once (so at most one per page of RAM) and the leaves
/// are capped; whatever a corrupted table stops the walk at, the runs
/// found until then are kept.
fn runs(img: &Image, cr3: u64, range: Range<u64>) -> Vec<Run> {
    let limits = Limits {
        max_tables: (img.size / PAGE_SIZE) as usize + 1,
        max_leaves: MAX_LEAVES,
    };
    mappings_with(img, cr3, range, limits, |l| l.size == PageSize::Size4K).runs
}

/// The segments of a dump: the two linear kernel windows over the stored
/// memory, then the page-table runs.
fn loads(img: &Image, note: &CrashNote) -> Vec<Load> {
    let mut out = Vec::new();
    map_range(img, PHYSMAP_BASE, 0, img.size, PF_R | PF_W, &mut out);
    map_range(
        img,
        KERNEL_VIRT_BASE,
        0,
        img.size.min(KERNEL_WINDOW),
        PF_R | PF_W | PF_X,
        &mut out,
    );
    let kstacks = KSTACK_REGION..KSTACK_REGION + MAX_PROCS as u64 * KSTACK_STRIDE;
    let exts = EXT_REGION..EXT_REGION + MAX_EXTS as u64 * EXT_SLOT_SIZE;
    let mut walked: Vec<Run> = Vec::new();
    for range in [kstacks, exts] {
        walked.extend(runs(img, BOOT_PML4_GPA, range));
    }
    if let Some(cr3) = note.vcpu(note.crashed_vcpu).map(|r| r.cr3)
        && cr3 != 0
    {
        walked.extend(runs(img, cr3, 0..USER_END));
    }
    for r in &walked {
        map_range(img, r.va, r.pa, r.len, flags_of(r), &mut out);
    }
    out.truncate(MAX_SEGMENTS - 1);
    out
}

/// The signal gdb reports for the crash ("Program terminated with...").
fn signal(note: &CrashNote) -> i16 {
    match &note.guest_record {
        Some(r) if r.kind == CRASH_PANIC => SIGABRT,
        Some(r) if r.vector == 0 => SIGFPE,
        Some(r) if r.vector == 6 => SIGILL,
        _ => SIGSEGV,
    }
}

/// The register notes, crashed vCPU first. Its registers are those at the
/// faulting instruction when the kernel recorded them (as kdump does), so
/// gdb's `bt` starts there; the exit-time registers stay in the JSON note.
fn prstatus_notes(note: &CrashNote) -> Vec<Prstatus> {
    let mut out = Vec::new();
    let crash: Option<Regs> = note.crash_regs();
    if let Some(regs) = &crash {
        out.push(Prstatus::new(note.crashed_vcpu, regs, signal(note)));
    }
    for v in &note.vcpus {
        if v.id != note.crashed_vcpu || crash.is_none() {
            out.push(Prstatus::new(v.id, &v.regs, 0));
        }
    }
    out
}

/// Appends one ELF note (4-byte aligned name and descriptor, as Linux
/// writes them in 64-bit cores).
fn push_note(buf: &mut Vec<u8>, name: &[u8], kind: u32, desc: &[u8]) -> Result<(), DumpError> {
    let too_big = || DumpError::Build(format!("note of {} bytes is too large", desc.len()));
    let header = object::elf::NoteHeader64::<Endianness> {
        n_namesz: object::U32::new(Endianness::Little, (name.len() + 1) as u32),
        n_descsz: object::U32::new(
            Endianness::Little,
            u32::try_from(desc.len()).map_err(|_| too_big())?,
        ),
        n_type: object::U32::new(Endianness::Little, kind),
    };
    buf.extend_from_slice(pod::bytes_of(&header));
    buf.extend_from_slice(name);
    buf.push(0);
    buf.resize(buf.len().next_multiple_of(4), 0);
    buf.extend_from_slice(desc);
    buf.resize(buf.len().next_multiple_of(4), 0);
    Ok(())
}

/// The contents of the `PT_NOTE` segment.
fn notes(note: &CrashNote, memory: &MemoryNote) -> Result<Vec<u8>, DumpError> {
    let mut buf = Vec::new();
    for p in prstatus_notes(note) {
        push_note(&mut buf, NOTE_NAME_CORE, NT_PRSTATUS, p.as_bytes())?;
    }
    let json = serde_json::to_vec(note).map_err(DumpError::Encode)?;
    push_note(&mut buf, NOTE_NAME_LAZARUS, NT_LAZARUS_CRASH, &json)?;
    let json = serde_json::to_vec(memory).map_err(DumpError::Encode)?;
    push_note(&mut buf, NOTE_NAME_LAZARUS, NT_LAZARUS_MEMORY, &json)?;
    Ok(buf)
}

/// Gives each piece with data its place in the data area (offsets from
/// the area's page-aligned start, each congruent to its address modulo a
/// page, as ELF wants); returns the area's length.
fn place(img: &mut Image) -> u64 {
    let mut at = 0u64;
    for p in img.pieces.iter_mut().filter(|p| !p.data.is_empty()) {
        p.offset = at.next_multiple_of(PAGE_SIZE) + p.pa % PAGE_SIZE;
        at = p.offset + p.data.len() as u64;
    }
    at
}

/// The headers and notes, and the file offset where the data area goes.
fn headers(loads: &mut [Load], notes: &[u8]) -> Result<(Vec<u8>, u64), DumpError> {
    let mut buf = Vec::new();
    let mut w = Writer::new(Endianness::Little, true, &mut buf);
    w.reserve_file_header();
    w.reserve_program_headers((loads.len() + 1) as u32);
    let notes_off = w.reserve(notes.len(), 4);
    let data_off = (w.reserved_len() as u64).next_multiple_of(PAGE_SIZE);
    let build = |e: object::write::Error| DumpError::Build(e.to_string());
    w.write_file_header(&FileHeader {
        os_abi: object::elf::ELFOSABI_NONE,
        abi_version: 0,
        e_type: ET_CORE,
        e_machine: EM_X86_64,
        e_entry: 0,
        e_flags: 0,
    })
    .map_err(build)?;
    w.write_align_program_headers();
    w.write_program_header(&ProgramHeader {
        p_type: PT_NOTE,
        p_flags: PF_R,
        p_offset: notes_off as u64,
        p_vaddr: 0,
        p_paddr: 0,
        p_filesz: notes.len() as u64,
        p_memsz: 0,
        p_align: 4,
    });
    for l in loads.iter_mut() {
        l.offset += data_off;
        w.write_program_header(&ProgramHeader {
            p_type: PT_LOAD,
            p_flags: l.flags,
            p_offset: l.offset,
            p_vaddr: l.vaddr,
            p_paddr: l.paddr,
            p_filesz: l.filesz,
            p_memsz: l.memsz,
            p_align: PAGE_SIZE,
        });
    }
    w.write_align(4);
    w.write(notes);
    Ok((buf, data_off))
}

/// A sibling path to write to before renaming, so that `path` is either
/// absent or a complete dump.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Writes the crash as an ELF core file at `path` (replacing it) and
/// returns the file's size in bytes: the headers, the notes and the
/// memory stored (see the module documentation), not the guest's RAM size.
pub fn write_core(path: &Path, input: &DumpInput) -> Result<u64, DumpError> {
    if input.note.format_version != FORMAT_VERSION {
        return Err(DumpError::UnsupportedVersion {
            found: input.note.format_version,
            supported: FORMAT_VERSION,
        });
    }
    let mut img = pieces(&input.memory);
    let data_len = place(&mut img);
    let stored: u64 = img.pieces.iter().map(|p| p.data.len() as u64).sum();
    let memory = MemoryNote {
        ram_size: img.size,
        all_ram: matches!(input.memory, Memory::Ram(_)),
        stored_bytes: stored,
    };
    let mut loads = loads(&img, &input.note);
    let notes = notes(&input.note, &memory)?;
    let (headers, data_off) = headers(&mut loads, &notes)?;
    let total = data_off + data_len;
    let tmp = partial_path(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(&headers)?;
        for p in img.pieces.iter().filter(|p| !p.data.is_empty()) {
            file.write_all_at(p.data, data_off + p.offset)?;
        }
        file.set_len(total)?;
        file.flush()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(DumpError::io(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(DumpError::io(path))?;
    Ok(total)
}
