//! Writing a crashed guest as an ELF core file that gdb opens with the
//! kernel ELF (`gdb kernel.elf dump.core`).
//!
//! File layout: ELF header, program headers, one `PT_NOTE` segment (an
//! `NT_PRSTATUS` per vCPU, the crashed vCPU first so that it is gdb's
//! current thread, then the `LAZARUS` JSON note), then guest RAM stored
//! once at a page-aligned offset. Every `PT_LOAD` points into that RAM
//! copy: the physmap and the kernel image window cover it linearly, and
//! the page-table walks add the kernel stacks, extensions and the crashed
//! process's user half, each run pointing at its physical frames.
//!
//! Pages of RAM that are all zero are not written: the file is extended
//! with `set_len` and those pages stay holes, so an idle 128 MiB guest
//! takes a few MiB of disk while every reader still sees the zeros.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lazarus_abi::layout::{
    BOOT_PML4_GPA, EXT_REGION, EXT_SLOT_SIZE, KERNEL_VIRT_BASE, KSTACK_REGION, KSTACK_STRIDE,
    PAGE_SIZE, PHYSMAP_BASE,
};
use lazarus_abi::root::{CRASH_PANIC, MAX_EXTS, MAX_PROCS};
use lazarus_guestmem::{Limits, PageSize, Run, mappings_with};
use object::elf::{EM_X86_64, ET_CORE, NT_PRSTATUS, PF_R, PF_W, PF_X, PT_LOAD, PT_NOTE};
use object::write::elf::{FileHeader, ProgramHeader, Writer};
use object::{Endianness, pod};
use zerocopy::IntoBytes;

use crate::error::DumpError;
use crate::note::{CrashNote, FORMAT_VERSION, Regs};
use crate::prstatus::{Prstatus, SIGABRT, SIGFPE, SIGILL, SIGSEGV};
use crate::{NOTE_NAME_CORE, NOTE_NAME_LAZARUS, NT_LAZARUS_CRASH};

/// What to dump.
pub struct DumpInput<'a> {
    /// Guest RAM, guest-physical `0..len`.
    pub ram: &'a [u8],
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

struct Load {
    vaddr: u64,
    paddr: u64,
    len: u64,
    flags: u32,
}

impl From<&Run> for Load {
    fn from(m: &Run) -> Self {
        let mut flags = PF_R;
        if m.writable {
            flags |= PF_W;
        }
        if m.executable {
            flags |= PF_X;
        }
        Load {
            vaddr: m.va,
            paddr: m.pa,
            len: m.len,
            flags,
        }
    }
}

/// The 4 KiB mappings of `cr3` in `range`, as runs contiguous both
/// virtually and physically. Large pages are left out: the regions walked
/// use 4 KiB pages only, and the kernel windows are dumped whole anyway.
/// Each table is read once (so at most one per page of RAM) and the leaves
/// are capped; whatever a corrupted table stops the walk at, the runs
/// found until then are kept.
fn runs(ram: &[u8], cr3: u64, range: Range<u64>) -> Vec<Load> {
    let limits = Limits {
        max_tables: ram.len() / PAGE_SIZE as usize + 1,
        max_leaves: MAX_LEAVES,
    };
    mappings_with(ram, cr3, range, limits, |l| l.size == PageSize::Size4K)
        .runs
        .iter()
        .map(Load::from)
        .collect()
}

/// The segments of a dump of `ram`: the two linear kernel windows, then
/// the page-table runs.
fn loads(ram: &[u8], note: &CrashNote) -> Vec<Load> {
    let size = ram.len() as u64;
    let mut out = vec![
        Load {
            vaddr: PHYSMAP_BASE,
            paddr: 0,
            len: size,
            flags: PF_R | PF_W,
        },
        Load {
            vaddr: KERNEL_VIRT_BASE,
            paddr: 0,
            len: size.min(KERNEL_WINDOW),
            flags: PF_R | PF_W | PF_X,
        },
    ];
    let kstacks = KSTACK_REGION..KSTACK_REGION + MAX_PROCS as u64 * KSTACK_STRIDE;
    let exts = EXT_REGION..EXT_REGION + MAX_EXTS as u64 * EXT_SLOT_SIZE;
    for range in [kstacks, exts] {
        out.extend(runs(ram, BOOT_PML4_GPA, range));
    }
    if let Some(cr3) = note.vcpu(note.crashed_vcpu).map(|r| r.cr3)
        && cr3 != 0
    {
        out.extend(runs(ram, cr3, 0..USER_END));
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
fn notes(note: &CrashNote) -> Result<Vec<u8>, DumpError> {
    let mut buf = Vec::new();
    for p in prstatus_notes(note) {
        push_note(&mut buf, NOTE_NAME_CORE, NT_PRSTATUS, p.as_bytes())?;
    }
    let json = serde_json::to_vec(note).map_err(DumpError::Encode)?;
    push_note(&mut buf, NOTE_NAME_LAZARUS, NT_LAZARUS_CRASH, &json)?;
    Ok(buf)
}

/// The headers and notes, and the file offset where RAM goes.
fn headers(input: &DumpInput) -> Result<(Vec<u8>, u64), DumpError> {
    let loads = loads(input.ram, &input.note);
    let notes = notes(&input.note)?;
    let mut buf = Vec::new();
    let mut w = Writer::new(Endianness::Little, true, &mut buf);
    w.reserve_file_header();
    w.reserve_program_headers((loads.len() + 1) as u32);
    let notes_off = w.reserve(notes.len(), 4);
    let ram_off = w.reserve(input.ram.len(), PAGE_SIZE as usize) as u64;
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
    for l in &loads {
        w.write_program_header(&ProgramHeader {
            p_type: PT_LOAD,
            p_flags: l.flags,
            p_offset: ram_off + l.paddr,
            p_vaddr: l.vaddr,
            p_paddr: l.paddr,
            p_filesz: l.len,
            p_memsz: l.len,
            p_align: PAGE_SIZE,
        });
    }
    w.write_align(4);
    w.write(&notes);
    Ok((buf, ram_off))
}

/// Writes `ram` at `offset`, leaving all-zero pages as holes.
fn write_sparse(file: &File, ram: &[u8], offset: u64) -> std::io::Result<()> {
    let page = PAGE_SIZE as usize;
    let mut run_start: Option<usize> = None;
    let mut i = 0;
    while i < ram.len() {
        let end = (i + page).min(ram.len());
        let zero = ram[i..end].iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(i),
            (true, Some(s)) => {
                file.write_all_at(&ram[s..i], offset + s as u64)?;
                run_start = None;
            }
            _ => {}
        }
        i = end;
    }
    if let Some(s) = run_start {
        file.write_all_at(&ram[s..], offset + s as u64)?;
    }
    Ok(())
}

/// A sibling path to write to before renaming, so that `path` is either
/// absent or a complete dump.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Writes the crash as an ELF core file at `path` (replacing it) and
/// returns the file's size in bytes (holes included).
pub fn write_core(path: &Path, input: &DumpInput) -> Result<u64, DumpError> {
    if input.note.format_version != FORMAT_VERSION {
        return Err(DumpError::UnsupportedVersion {
            found: input.note.format_version,
            supported: FORMAT_VERSION,
        });
    }
    let (headers, ram_off) = headers(input)?;
    let total = ram_off + input.ram.len() as u64;
    let tmp = partial_path(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(&headers)?;
        file.set_len(total)?;
        write_sparse(&file, input.ram, ram_off)?;
        file.flush()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(DumpError::io(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(DumpError::io(path))?;
    Ok(total)
}
