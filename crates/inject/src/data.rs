//! Faults in kernel data: Rio's wild writes and Nooks' stack corruption.
//!
//! Each writes eight random bytes over one aligned 64-bit word, the size
//! of a stray pointer store. Targets are found through the state root
//! alone: the root itself, the heap blocks its allocation map marks as
//! used, and the kernel stacks of live processes.

use core::mem::offset_of;

use lazarus_abi::layout::{
    KERNEL_VIRT_BASE, KSTACK_REGION, KSTACK_SIZE, KSTACK_STRIDE, PHYSMAP_BASE,
};
use lazarus_abi::root::{
    HEAP_BLOCK, HEAP_BLOCKS, HEAP_OWNER_KERNEL, KernelRoot, MAX_PROCS, PS_BLOCKED, PS_RUNNABLE,
    PS_RUNNING, Proc,
};
use lazarus_abi::trap::TRAPFRAME_SIZE;
use lazarus_guestmem::translate_range;
use lazarus_vmm::memory::read_bytes;
use rand::Rng;

use crate::code::pick;
use crate::fields::describe_root_offset;
use crate::{FaultType, Guest, InjectError, Injection, Structure, cstr, ext_name, hex};

const WORD: u64 = 8;
/// The root's header (magic, ABI version, size) is how the hypervisor
/// finds the root at all; it is not kernel data, so wild writes skip it.
const ROOT_HEADER: u64 = offset_of!(KernelRoot, header.heartbeat) as u64;
const ROOT_SIZE: u64 = size_of::<KernelRoot>() as u64;
/// Size of the kernel image window at [`KERNEL_VIRT_BASE`].
const KERNEL_WINDOW: u64 = 1 << 30;

/// Kernel virtual address of the root: it is a static of the kernel image,
/// so it lies in the image window (the physmap alias otherwise).
fn root_va(root_gpa: u64) -> u64 {
    if root_gpa < KERNEL_WINDOW {
        KERNEL_VIRT_BASE + root_gpa
    } else {
        PHYSMAP_BASE.wrapping_add(root_gpa)
    }
}

/// A word-aligned stretch of kernel data a wild write may hit.
struct Region {
    /// `None` for the root, else the heap block index.
    heap_block: Option<usize>,
    va: u64,
    gpa: u64,
    len: u64,
}

/// [`FaultType::WildWriteKernel`]: a random word of the state root (less
/// its header) or of an allocated heap block, all words equally likely.
pub(crate) fn wild_write_kernel(
    guest: &Guest<'_>,
    rng: &mut impl Rng,
) -> Result<Injection, InjectError> {
    let mut regions = vec![Region {
        heap_block: None,
        va: root_va(guest.root_gpa) + ROOT_HEADER,
        gpa: guest.root_gpa + ROOT_HEADER,
        len: ROOT_SIZE - ROOT_HEADER,
    }];
    regions.extend(heap_blocks(guest));
    let total: u64 = regions.iter().map(|r| r.len / WORD).sum();
    let mut word = rng.random_range(0..total);
    let region = regions
        .iter()
        .find(|r| {
            let words = r.len / WORD;
            if word < words {
                true
            } else {
                word -= words;
                false
            }
        })
        .ok_or(InjectError::BadAddress {
            gpa: guest.root_gpa,
            len: ROOT_SIZE,
        })?;
    let off = word * WORD;
    let target = match region.heap_block {
        None => describe_root_offset((ROOT_HEADER + off) as usize),
        Some(block) => {
            let owner = match guest.root.heap.owner.get(block).copied() {
                Some(HEAP_OWNER_KERNEL) => "kernel".to_string(),
                Some(0) | None => "nobody".to_string(),
                Some(slot) => {
                    let name = ext_name(guest.root, usize::from(slot) - 1);
                    if name.is_empty() {
                        format!("extension slot {}", slot - 1)
                    } else {
                        name
                    }
                }
            };
            let mut t = format!("heap[{block}]");
            if off != 0 {
                t.push_str(&format!("+{off:#x}"));
            }
            t.push_str(&format!(" (owner {owner})"));
            t
        }
    };
    word_write(
        guest,
        FaultType::WildWriteKernel,
        region.va + off,
        region.gpa + off,
        target,
        "wild write".to_string(),
        rng,
    )
}

/// Allocated heap blocks, per the allocation map in the root. Blocks that
/// are not mapped (the map and `MemStats` are guest data) are left out.
fn heap_blocks(guest: &Guest<'_>) -> Vec<Region> {
    let m = &guest.root.mem;
    let blocks = usize::try_from(m.heap_size / HEAP_BLOCK as u64)
        .unwrap_or(usize::MAX)
        .min(HEAP_BLOCKS);
    let mut out = Vec::new();
    if m.heap_start == 0 {
        return out;
    }
    for block in 0..blocks {
        let used = guest.root.heap.used[block / 64] >> (block % 64) & 1 == 1;
        if !used {
            continue;
        }
        let len = HEAP_BLOCK as u64;
        let Some(va) = m.heap_start.checked_add(block as u64 * len) else {
            break;
        };
        if !va.is_multiple_of(WORD) {
            continue;
        }
        if let Ok(gpa) = translate_range(guest.mem, guest.root.master_pml4, va, len) {
            out.push(Region {
                heap_block: Some(block),
                va,
                gpa,
                len,
            });
        }
    }
    out
}

/// [`FaultType::WildWriteStruct`]: a random word of one root table.
pub(crate) fn wild_write_struct(
    guest: &Guest<'_>,
    structure: Option<Structure>,
    rng: &mut impl Rng,
) -> Result<Injection, InjectError> {
    let structure = match structure {
        Some(s) => s,
        None => *pick(rng, &Structure::ALL).ok_or(InjectError::Malformed)?,
    };
    let range = structure.byte_range();
    let words = (range.end - range.start) / WORD;
    if words == 0 {
        return Err(InjectError::Malformed);
    }
    let off = range.start + rng.random_range(0..words) * WORD;
    word_write(
        guest,
        FaultType::WildWriteStruct,
        root_va(guest.root_gpa) + off,
        guest.root_gpa + off,
        describe_root_offset(off as usize),
        format!("wild write into {structure}"),
        rng,
    )
}

/// [`FaultType::CorruptStack`]: a random word of the live part of a
/// process's kernel stack, `[kctx_rsp, kstack_top)`: the context saved by
/// `switch_context`, the kernel frames above it and the user trap frame.
/// Switched-out processes are preferred, since only for them is that
/// range exactly what is live; the running process is chosen only when
/// there is no other (its `kctx_rsp` dates from its last switch).
pub(crate) fn corrupt_stack(
    guest: &Guest<'_>,
    rng: &mut impl Rng,
) -> Result<Injection, InjectError> {
    let usable = |p: &&Proc, states: &[u32]| states.contains(&p.state) && stack_ok(p);
    let mut procs: Vec<&Proc> = guest
        .root
        .procs
        .iter()
        .filter(|p| usable(p, &[PS_RUNNABLE, PS_BLOCKED]))
        .collect();
    if procs.is_empty() {
        procs = guest
            .root
            .procs
            .iter()
            .filter(|p| usable(p, &[PS_RUNNING]))
            .collect();
    }
    let p = *pick(rng, &procs).ok_or(InjectError::NoLiveProcess)?;
    let words = (p.kstack_top - p.kctx_rsp) / WORD;
    let va = p.kctx_rsp + rng.random_range(0..words) * WORD;
    let gpa = translate_range(guest.mem, guest.root.master_pml4, va, WORD)
        .map_err(|_| InjectError::Unmapped { va })?;
    let target = format!(
        "pid {} ({}) kstack top-{:#x}",
        p.pid,
        cstr(&p.name),
        p.kstack_top - va
    );
    word_write(
        guest,
        FaultType::CorruptStack,
        va,
        gpa,
        target,
        stack_word_name(p, va),
        rng,
    )
}

/// Whether the saved stack pointer and top are plausible: aligned, inside
/// the kernel-stack region, at most one stack apart.
fn stack_ok(p: &Proc) -> bool {
    let region_end = KSTACK_REGION + MAX_PROCS as u64 * KSTACK_STRIDE;
    let (top, rsp) = (p.kstack_top, p.kctx_rsp);
    top.is_multiple_of(WORD)
        && rsp.is_multiple_of(WORD)
        && top > KSTACK_REGION
        && top <= region_end
        && rsp < top
        && top - rsp <= KSTACK_SIZE
}

/// What the stack word at `va` holds, as far as the layout tells.
fn stack_word_name(p: &Proc, va: u64) -> String {
    const SAVED: [&str; 7] = ["r15", "r14", "r13", "r12", "rbx", "rbp", "return address"];
    const FRAME: [&str; 22] = [
        "r15",
        "r14",
        "r13",
        "r12",
        "r11",
        "r10",
        "r9",
        "r8",
        "rbp",
        "rdi",
        "rsi",
        "rdx",
        "rcx",
        "rbx",
        "rax",
        "vector",
        "error_code",
        "rip",
        "cs",
        "rflags",
        "rsp",
        "ss",
    ];
    let index = ((va - p.kctx_rsp) / WORD) as usize;
    if let Some(name) = SAVED.get(index) {
        return format!("saved {name} of switch_context");
    }
    let frame = p.user_frame;
    if frame != 0 && va >= frame && va - frame < TRAPFRAME_SIZE as u64 {
        let field = FRAME.get(((va - frame) / WORD) as usize).unwrap_or(&"?");
        return format!("user trap frame .{field}");
    }
    "kernel stack word".to_string()
}

/// Plans the overwrite of the word at `gpa` with eight random bytes that
/// differ from the current ones.
fn word_write(
    guest: &Guest<'_>,
    fault: FaultType,
    va: u64,
    gpa: u64,
    target: String,
    what: String,
    rng: &mut impl Rng,
) -> Result<Injection, InjectError> {
    let before =
        read_bytes(guest.mem, gpa, WORD).ok_or(InjectError::BadAddress { gpa, len: WORD })?;
    let mut after = vec![0u8; before.len()];
    rng.fill(&mut after[..]);
    if after == before {
        after[0] = !after[0];
    }
    let detail = format!(
        "{what}: {:#018x} [{}] -> {:#018x} [{}]",
        le64(&before),
        hex(&before),
        le64(&after),
        hex(&after)
    );
    Ok(Injection {
        fault,
        target,
        va,
        gpa,
        before,
        after,
        detail,
    })
}

fn le64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = bytes.len().min(8);
    word[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(word)
}
