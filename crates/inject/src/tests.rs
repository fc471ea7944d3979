//! Tests against a synthetic guest: 16 MiB of RAM holding a state root,
//! master page tables, two extensions with real x86 code, three processes
//! with kernel stacks and a kernel heap on a 2 MiB page.

use super::*;
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};
use lazarus_abi::layout::{
    EXT_REGION, EXT_SLOT_SIZE, KSTACK_REGION, KSTACK_SIZE, KSTACK_STRIDE, PHYSMAP_BASE,
};
use lazarus_abi::root::{
    ABI_VERSION, EXT_DISABLED, EXT_FREE, EXT_LIVE, HEAP_BLOCK, HEAP_BLOCKS, HEAP_OWNER_KERNEL,
    PS_BLOCKED, PS_FREE, PS_RUNNABLE, PS_RUNNING, ROOT_MAGIC,
};
use lazarus_abi::trap::TRAPFRAME_SIZE;
use lazarus_guestmem::translate_range;
use lazarus_vmm::memory::{create_guest_ram, write_bytes, write_obj};
use zerocopy::FromZeros;

pub(crate) const PAGE_FLAGS: u64 = 0x3; // present, writable
pub(crate) const LARGE: u64 = 0xa0_0000;
const RAM: u64 = 16 << 20;
const ROOT_GPA: u64 = 0x20_0000;
const PT_POOL: u64 = 0x1_0000;
const EXT_FRAMES: u64 = 0x80_0000;
const STACK_FRAMES: u64 = 0x90_0000;
const CRASHTEST: u64 = EXT_REGION;
const RAND: u64 = EXT_REGION + EXT_SLOT_SIZE;

/// One function of real compiler-like code, padded with int3 to 48 bytes.
const FUNC: &[u8] = &[
    0x55, // push rbp
    0x48, 0x89, 0xe5, // mov rbp, rsp
    0x89, 0xf8, // mov eax, edi
    0x01, 0xf0, // add eax, esi
    0x83, 0xf8, 0x0a, // cmp eax, 10
    0x7e, 0x05, // jle +5
    0xb9, 0x01, 0x00, 0x00, 0x00, // mov ecx, 1
    0xe8, 0x00, 0x00, 0x00, 0x00, // call +0
    0xeb, 0x02, // jmp +2
    0x31, 0xc0, // xor eax, eax
    0x48, 0x8d, 0x14, 0x48, // lea rdx, [rax+rcx*2]
    0x48, 0x85, 0xd2, // test rdx, rdx
    0x0f, 0x85, 0x00, 0x00, 0x00, 0x00, // jne +0
    0xff, 0xe0, // jmp rax
    0x5d, // pop rbp
    0xc3, // ret
    0xcc, 0xcc, 0xcc, 0xcc,
];

/// Guest RAM plus a bump allocator for page tables.
pub(crate) struct Builder {
    pub mem: GuestRam,
    pub pml4: u64,
    next_table: u64,
}

impl Builder {
    pub(crate) fn new() -> Self {
        let mem = create_guest_ram(RAM).expect("ram");
        let mut b = Self {
            mem,
            pml4: 0,
            next_table: PT_POOL,
        };
        b.pml4 = b.table();
        b
    }

    fn table(&mut self) -> u64 {
        let t = self.next_table;
        self.next_table += 0x1000;
        assert!(self.next_table <= 0x10_0000, "page-table pool exhausted");
        t
    }

    /// The table an entry at `at` points to, made if absent.
    fn next(&mut self, at: u64) -> u64 {
        let e: u64 = lazarus_vmm::memory::read_obj(&self.mem, at).expect("entry");
        if e & 1 != 0 {
            return e & 0x000f_ffff_ffff_f000;
        }
        let t = self.table();
        write_obj(&self.mem, at, &(t | PAGE_FLAGS)).expect("write entry");
        t
    }

    fn entry(table: u64, va: u64, level: u32) -> u64 {
        table + ((va >> (12 + 9 * level)) & 0x1ff) * 8
    }

    pub(crate) fn map_4k(&mut self, va: u64, gpa: u64) {
        let pdpt = self.next(Self::entry(self.pml4, va, 3));
        let pd = self.next(Self::entry(pdpt, va, 2));
        let pt = self.next(Self::entry(pd, va, 1));
        write_obj(&self.mem, Self::entry(pt, va, 0), &(gpa | PAGE_FLAGS)).expect("pte");
    }

    pub(crate) fn map_2m(&mut self, va: u64, gpa: u64) {
        let pdpt = self.next(Self::entry(self.pml4, va, 3));
        let pd = self.next(Self::entry(pdpt, va, 2));
        write_obj(
            &self.mem,
            Self::entry(pd, va, 1),
            &(gpa | PAGE_FLAGS | 0x80),
        )
        .expect("pde");
    }
}

/// The synthetic guest and the root that was written into it.
struct Fixture {
    b: Builder,
    root: Box<KernelRoot>,
}

impl Fixture {
    fn mem(&self) -> &GuestRam {
        &self.b.mem
    }

    /// Rewrites the (possibly edited) root into guest memory.
    fn commit(&self) {
        write_obj(&self.b.mem, ROOT_GPA, &*self.root).expect("root");
    }

    fn ram(&self) -> Vec<u8> {
        read_bytes(&self.b.mem, 0, RAM).expect("ram")
    }
}

fn fixture() -> Fixture {
    let mut b = Builder::new();
    let mut root = KernelRoot::new_box_zeroed().expect("root");
    root.header.magic = ROOT_MAGIC;
    root.header.abi_version = ABI_VERSION;
    root.header.root_size = size_of::<KernelRoot>() as u32;
    root.master_pml4 = b.pml4;
    root.header.heartbeat = 1234;

    // crashtest: 4 pages, text in pages 1-2, which are not physically
    // adjacent, so one instruction straddles a discontinuity.
    let frames = [0x0, 0x3000, 0x1000, 0x2000];
    for (i, f) in frames.iter().enumerate() {
        b.map_4k(CRASHTEST + i as u64 * 0x1000, EXT_FRAMES + f);
    }
    let text: Vec<u8> = FUNC.iter().copied().cycle().take(0x2000).collect();
    write_bytes(&b.mem, EXT_FRAMES + 0x3000, &text[..0x1000]).expect("text");
    write_bytes(&b.mem, EXT_FRAMES + 0x1000, &text[0x1000..]).expect("text");
    root.exts[0].state = EXT_LIVE;
    root.exts[0].name = lazarus_abi::name16("crashtest");
    root.exts[0].base = CRASHTEST;
    root.exts[0].size = 0x4000;
    root.exts[0].text_start = CRASHTEST + 0x1000;
    root.exts[0].text_end = CRASHTEST + 0x3000;

    // rand: one page: `xor eax, eax; ret`, no branches.
    b.map_4k(RAND, EXT_FRAMES + 0x8000);
    let mut code = vec![0xccu8; 0x1000];
    code[..3].copy_from_slice(&[0x31, 0xc0, 0xc3]);
    write_bytes(&b.mem, EXT_FRAMES + 0x8000, &code).expect("rand");
    root.exts[1].state = EXT_LIVE;
    root.exts[1].name = lazarus_abi::name16("rand");
    root.exts[1].base = RAND;
    root.exts[1].size = 0x1000;
    root.exts[1].text_start = RAND;
    root.exts[1].text_end = RAND + 0x100;

    // A freed slot that still carries a name.
    root.exts[2].state = EXT_FREE;
    root.exts[2].name = lazarus_abi::name16("gone");

    // Processes 1-3 with kernel stacks full of recognisable words.
    for (slot, state, name) in [
        (1usize, PS_BLOCKED, "init"),
        (2, PS_RUNNABLE, "shell"),
        (3, PS_RUNNING, "worker"),
    ] {
        let top = KSTACK_REGION + slot as u64 * KSTACK_STRIDE + KSTACK_STRIDE;
        for page in 0..KSTACK_SIZE / 0x1000 {
            let frame = STACK_FRAMES + (slot as u64 * 4 + page) * 0x1000;
            b.map_4k(top - KSTACK_SIZE + page * 0x1000, frame);
            let words: Vec<u8> = (0..512u64)
                .flat_map(|w| (0x5a5a_0000_0000_0000 | (slot as u64) << 32 | w).to_le_bytes())
                .collect();
            write_bytes(&b.mem, frame, &words).expect("stack");
        }
        let p = &mut root.procs[slot];
        p.pid = slot as u32;
        p.state = state;
        p.name = lazarus_abi::name16(name);
        p.kstack_top = top;
        p.user_frame = top - TRAPFRAME_SIZE as u64;
        p.kctx_rsp = p.user_frame - 12 * 8;
    }

    // The heap: 2 MiB on one large page; blocks 3, 4 and 100 in use.
    b.map_2m(PHYSMAP_BASE + LARGE, LARGE);
    root.mem.heap_start = PHYSMAP_BASE + LARGE;
    root.mem.heap_size = (HEAP_BLOCK * HEAP_BLOCKS) as u64;
    for (block, owner) in [
        (3usize, HEAP_OWNER_KERNEL),
        (4, HEAP_OWNER_KERNEL),
        (100, 1),
    ] {
        root.heap.used[block / 64] |= 1 << (block % 64);
        root.heap.owner[block] = owner;
    }
    write_bytes(&b.mem, LARGE, &[0x77; 0x1_0000]).expect("heap");

    let f = Fixture { b, root };
    f.commit();
    f
}

fn inject(f: &Fixture, seed: u64, spec: &FaultSpec) -> Result<Injection, InjectError> {
    Injector::new(seed).inject(f.mem(), ROOT_GPA, spec)
}

fn decode_at(bytes: &[u8], ip: u64) -> Instruction {
    Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE).decode()
}

/// Instruction start addresses of the crashtest text (linear sweep).
fn crashtest_starts() -> Vec<u64> {
    let text: Vec<u8> = FUNC.iter().copied().cycle().take(0x2000).collect();
    let mut d = Decoder::with_ip(64, &text, CRASHTEST + 0x1000, DecoderOptions::NONE);
    let mut out = Vec::new();
    while d.can_decode() {
        out.push(d.ip());
        let _ = d.decode();
    }
    out
}

#[test]
fn same_seed_same_injection_different_seeds_differ() {
    for fault in FaultType::ALL {
        let spec = FaultSpec::new(fault);
        let a = inject(&fixture(), 7, &spec).expect("inject");
        let b = inject(&fixture(), 7, &spec).expect("inject");
        assert_eq!(a, b, "{fault}");
        let f = fixture();
        let all: Vec<Injection> = (0..16)
            .map(|seed| {
                let inj = inject(&f, seed, &spec).expect("inject");
                inj.revert(f.mem()).expect("revert");
                inj
            })
            .collect();
        assert!(
            all.iter().any(|i| *i != all[0]),
            "{fault}: every seed made the same fault"
        );
    }
    // A sequence from one injector replays too.
    let run = || {
        let f = fixture();
        let mut inj = Injector::new(99);
        FaultType::ALL
            .iter()
            .chain(FaultType::ALL.iter())
            .map(|&fault| {
                inj.inject(f.mem(), ROOT_GPA, &FaultSpec::new(fault))
                    .expect("inject")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

/// Every fault changes exactly the bytes it reports, at the address it
/// reports, and reverting restores the whole of memory.
#[test]
fn each_fault_changes_exactly_what_it_reports() {
    let f = fixture();
    let pristine = f.ram();
    for fault in FaultType::ALL {
        for seed in 0..6 {
            let inj = inject(&f, seed, &FaultSpec::new(fault)).expect("inject");
            let now = f.ram();
            let (start, end) = (inj.gpa as usize, inj.gpa as usize + inj.after.len());
            assert_eq!(inj.before.len(), inj.after.len());
            assert_ne!(inj.before, inj.after, "{fault} {seed}: no change");
            assert_eq!(&pristine[start..end], &inj.before[..], "{fault}: before");
            assert_eq!(&now[start..end], &inj.after[..], "{fault}: after");
            assert!(
                pristine[..start] == now[..start],
                "{fault}: bytes below changed"
            );
            assert!(
                pristine[end..] == now[end..],
                "{fault}: bytes above changed"
            );
            // The reported VA maps to the reported GPA.
            let root_va = lazarus_abi::layout::KERNEL_VIRT_BASE + ROOT_GPA;
            let gpa = if (root_va..root_va + size_of::<KernelRoot>() as u64).contains(&inj.va) {
                Some(inj.va - root_va + ROOT_GPA)
            } else {
                translate_range(f.mem(), f.b.pml4, inj.va, inj.after.len() as u64).ok()
            };
            assert_eq!(gpa, Some(inj.gpa), "{fault}: {inj:?}");
            assert!(inj.is_present(f.mem()));
            inj.revert(f.mem()).expect("revert");
            assert!(!inj.is_present(f.mem()));
            assert!(
                f.ram() == pristine,
                "{fault}: revert did not restore memory"
            );
        }
    }
}

#[test]
fn code_faults_hit_real_instructions() {
    let f = fixture();
    let starts = crashtest_starts();
    for fault in [
        FaultType::BitFlip,
        FaultType::ReplaceInstruction,
        FaultType::CorruptRegister,
        FaultType::DeleteBranch,
    ] {
        for seed in 0..20 {
            let inj = inject(&f, seed, &FaultSpec::new(fault).with_ext("crashtest")).expect("x");
            inj.revert(f.mem()).expect("revert");
            assert!(
                starts.contains(&inj.va),
                "{fault}: {:#x} is no boundary",
                inj.va
            );
            assert_eq!(inj.target, format!("crashtest+{:#x}", inj.va - CRASHTEST));
            let before = decode_at(&inj.before, inj.va);
            assert!(!before.is_invalid());
            assert_eq!(before.len(), inj.before.len(), "{fault}: whole instruction");
            assert_ne!(before.mnemonic(), Mnemonic::Int3, "{fault}: padding");
            if fault == FaultType::BitFlip {
                let flipped: u32 = inj
                    .before
                    .iter()
                    .zip(&inj.after)
                    .map(|(a, b)| (a ^ b).count_ones())
                    .sum();
                assert!((1..=2).contains(&flipped), "{flipped} bits flipped");
            }
        }
    }
}

#[test]
fn delete_branch_puts_nops_over_a_real_jump() {
    let f = fixture();
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let inj = inject(&f, seed, &FaultSpec::new(FaultType::DeleteBranch)).expect("inject");
        inj.revert(f.mem()).expect("revert");
        let jump = decode_at(&inj.before, inj.va);
        assert!(crate::code::is_jump(&jump), "{}", inj.detail);
        seen.insert(jump.mnemonic());
        let mut d = Decoder::with_ip(64, &inj.after, inj.va, DecoderOptions::NONE);
        let mut len = 0;
        while d.can_decode() {
            let nop = d.decode();
            assert_eq!(nop.mnemonic(), Mnemonic::Nop, "{}", inj.detail);
            len += nop.len();
        }
        assert_eq!(len, inj.before.len());
    }
    // jle, jmp short, jne and jmp rax all get picked; calls never.
    assert!(seen.contains(&Mnemonic::Jle) && seen.contains(&Mnemonic::Jne));
    assert!(seen.contains(&Mnemonic::Jmp));
    assert!(!seen.contains(&Mnemonic::Call));
}

#[test]
fn register_corruption_changes_only_modrm_register_bits() {
    let f = fixture();
    for seed in 0..40 {
        let inj = inject(&f, seed, &FaultSpec::new(FaultType::CorruptRegister)).expect("inject");
        inj.revert(f.mem()).expect("revert");
        let diff: Vec<usize> = (0..inj.before.len())
            .filter(|&i| inj.before[i] != inj.after[i])
            .collect();
        assert_eq!(diff.len(), 1, "{}", inj.detail);
        let at = diff[0];
        assert_eq!(
            Some(at),
            crate::code::modrm_offset(&inj.before),
            "{}",
            inj.detail
        );
        let x = inj.before[at] ^ inj.after[at];
        assert!(
            x & 0xc0 == 0 && (x & 0x38 == 0 || x & 0x07 == 0),
            "{:#x} touches more than one ModRM register field",
            x
        );
        let (a, b) = (
            decode_at(&inj.before, inj.va),
            decode_at(&inj.after, inj.va),
        );
        assert_eq!(a.code(), b.code());
        assert_eq!(a.len(), b.len());
        let regs = |i: &Instruction| -> Vec<_> {
            (0..i.op_count())
                .filter(|&n| i.op_kind(n) == OpKind::Register)
                .map(|n| i.op_register(n))
                .collect()
        };
        let changed = regs(&a)
            .iter()
            .zip(regs(&b))
            .filter(|(x, y)| *x != y)
            .count();
        assert_eq!(changed, 1, "{}", inj.detail);
    }
}

#[test]
fn wild_write_struct_lands_in_the_chosen_structure() {
    let f = fixture();
    for structure in Structure::ALL {
        let range = structure.byte_range();
        assert!(!range.is_empty(), "{structure}");
        for seed in 0..10 {
            let spec = FaultSpec::new(FaultType::WildWriteStruct).with_structure(structure);
            let inj = inject(&f, seed, &spec).expect("inject");
            inj.revert(f.mem()).expect("revert");
            let off = inj.gpa - ROOT_GPA;
            assert!(
                off >= range.start && off + 8 <= range.end,
                "{structure}: {off:#x} outside {range:?}"
            );
            assert_eq!(off % 8, 0);
            assert!(
                inj.target.starts_with(&format!("root.{structure}")),
                "{}",
                inj.target
            );
        }
    }
    // Unspecified: some structure, and not always the same one.
    let mut hit = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let inj = inject(&f, seed, &FaultSpec::new(FaultType::WildWriteStruct)).expect("x");
        inj.revert(f.mem()).expect("revert");
        let off = inj.gpa - ROOT_GPA;
        let s = Structure::ALL
            .into_iter()
            .find(|s| s.byte_range().contains(&off))
            .expect("in some structure");
        hit.insert(s);
    }
    assert!(hit.len() > 3, "{hit:?}");
}

#[test]
fn wild_write_kernel_hits_root_data_or_live_heap() {
    let f = fixture();
    let root = ROOT_GPA + offset_of_heartbeat()..ROOT_GPA + size_of::<KernelRoot>() as u64;
    let blocks: Vec<_> = [3u64, 4, 100]
        .iter()
        .map(|b| LARGE + b * HEAP_BLOCK as u64..LARGE + (b + 1) * HEAP_BLOCK as u64)
        .collect();
    for seed in 0..50 {
        let inj = inject(&f, seed, &FaultSpec::new(FaultType::WildWriteKernel)).expect("x");
        inj.revert(f.mem()).expect("revert");
        assert_eq!(inj.after.len(), 8);
        assert_eq!(inj.gpa % 8, 0);
        let in_root = root.contains(&inj.gpa) && inj.gpa + 8 <= root.end;
        let in_heap = blocks
            .iter()
            .any(|b| b.contains(&inj.gpa) && inj.gpa + 8 <= b.end);
        assert!(in_root || in_heap, "{inj:?}");
    }
    // With the root made tiny in comparison (many heap blocks in use), the
    // heap gets hit and is named by block and owner.
    let mut f = fixture();
    for w in f.root.heap.used.iter_mut() {
        *w = u64::MAX;
    }
    f.root.heap.owner[..].fill(HEAP_OWNER_KERNEL);
    f.commit();
    let heap_hits: Vec<Injection> = (0..20)
        .map(|seed| inject(&f, seed, &FaultSpec::new(FaultType::WildWriteKernel)).expect("x"))
        .filter(|i| i.target.starts_with("heap["))
        .collect();
    assert!(!heap_hits.is_empty());
    for i in heap_hits {
        assert!(i.target.ends_with("(owner kernel)"), "{}", i.target);
        assert!((LARGE..LARGE + (HEAP_BLOCK * HEAP_BLOCKS) as u64).contains(&i.gpa));
        assert_eq!(i.va - PHYSMAP_BASE, i.gpa);
    }
}

fn offset_of_heartbeat() -> u64 {
    core::mem::offset_of!(KernelRoot, header.heartbeat) as u64
}

#[test]
fn stack_corruption_hits_a_switched_out_process() {
    let f = fixture();
    let mut pids = std::collections::BTreeSet::new();
    for seed in 0..30 {
        let inj = inject(&f, seed, &FaultSpec::new(FaultType::CorruptStack)).expect("x");
        inj.revert(f.mem()).expect("revert");
        let p = f
            .root
            .procs
            .iter()
            .find(|p| p.state != PS_FREE && inj.target.starts_with(&format!("pid {} ", p.pid)))
            .expect("a process");
        assert_ne!(p.state, PS_RUNNING, "the running process was picked");
        assert!((p.kctx_rsp..p.kstack_top).contains(&inj.va), "{inj:?}");
        assert_eq!(inj.va % 8, 0);
        pids.insert(p.pid);
    }
    assert_eq!(pids.into_iter().collect::<Vec<_>>(), vec![1, 2]);
    // The saved context is named.
    let mut f = fixture();
    f.root.procs[1].state = PS_FREE;
    f.root.procs[2].kctx_rsp = f.root.procs[2].kstack_top - 8 * 7;
    f.root.procs[2].user_frame = 0;
    f.commit();
    let inj = inject(&f, 3, &FaultSpec::new(FaultType::CorruptStack)).expect("x");
    assert!(inj.target.starts_with("pid 2 (shell)"), "{}", inj.target);
    assert!(inj.detail.contains("of switch_context"), "{}", inj.detail);
    // Only the running process left: it is used.
    f.root.procs[2].state = PS_FREE;
    f.commit();
    let inj = inject(&f, 3, &FaultSpec::new(FaultType::CorruptStack)).expect("x");
    assert!(inj.target.starts_with("pid 3 (worker)"), "{}", inj.target);
    // Hostile stack pointers are not followed.
    f.root.procs[3].kctx_rsp = f.root.procs[3].kstack_top - KSTACK_SIZE - 8;
    f.commit();
    let before = f.ram();
    let err = inject(&f, 3, &FaultSpec::new(FaultType::CorruptStack)).unwrap_err();
    assert!(matches!(err, InjectError::NoLiveProcess), "{err}");
    assert!(f.ram() == before);
}

#[test]
fn revert_only_undoes_its_own_bytes() {
    let f = fixture();
    let inj = inject(&f, 5, &FaultSpec::new(FaultType::WildWriteStruct)).expect("x");
    // Reverting twice is harmless.
    inj.revert(f.mem()).expect("revert");
    inj.revert(f.mem()).expect("revert again");
    // Once the guest has written something else there, it is left alone.
    let inj = inject(&f, 6, &FaultSpec::new(FaultType::BitFlip)).expect("x");
    let other: Vec<u8> = inj.after.iter().map(|b| b.wrapping_add(1)).collect();
    write_bytes(f.mem(), inj.gpa, &other).expect("write");
    let err = inj.revert(f.mem()).unwrap_err();
    assert!(matches!(err, InjectError::Changed { .. }), "{err}");
    assert_eq!(
        read_bytes(f.mem(), inj.gpa, other.len() as u64),
        Some(other)
    );
    // A malformed record is refused.
    let mut bad = inj.clone();
    bad.after.pop();
    assert!(matches!(bad.revert(f.mem()), Err(InjectError::Malformed)));
    bad.gpa = u64::MAX - 2;
    bad.after = bad.before.clone();
    assert!(matches!(
        bad.revert(f.mem()),
        Err(InjectError::BadAddress { .. })
    ));
}

#[test]
fn errors_are_typed_and_write_nothing() {
    let f = fixture();
    let pristine = f.ram();
    let code = FaultSpec::new(FaultType::BitFlip);
    let check = |f: &Fixture, root_gpa: u64, spec: &FaultSpec| -> InjectError {
        let err = Injector::new(1)
            .inject(f.mem(), root_gpa, spec)
            .unwrap_err();
        assert!(!err.to_string().is_empty());
        err
    };
    assert!(matches!(
        check(&f, ROOT_GPA, &code.clone().with_ext("nope")),
        InjectError::ExtNotLoaded(n) if n == "nope"
    ));
    assert!(matches!(
        check(&f, ROOT_GPA, &code.clone().with_ext("gone")),
        InjectError::ExtNotLoaded(_)
    ));
    assert!(matches!(
        check(&f, 0, &code),
        InjectError::NoRoot {
            source: RootError::NotRegistered,
            ..
        }
    ));
    assert!(matches!(
        check(&f, ROOT_GPA + 0x1000, &code),
        InjectError::NoRoot {
            source: RootError::BadMagic(_),
            ..
        }
    ));
    assert!(matches!(
        check(&f, RAM - 8, &code),
        InjectError::NoRoot { .. }
    ));
    let branch = FaultSpec::new(FaultType::DeleteBranch).with_ext("rand");
    assert!(matches!(
        check(&f, ROOT_GPA, &branch),
        InjectError::NoSuitableInstruction { fault: FaultType::DeleteBranch, ref ext } if ext == "rand"
    ));
    assert!(f.ram() == pristine);

    // Hostile extension slots.
    let mut f = fixture();
    f.root.exts[1].text_end = RAND + 0x2000; // past the image
    f.commit();
    assert!(matches!(
        check(&f, ROOT_GPA, &code.clone().with_ext("rand")),
        InjectError::BadExtension { slot: 1, .. }
    ));
    f.root.exts[1].size = 0x3000;
    f.commit();
    assert!(matches!(
        check(&f, ROOT_GPA, &code.clone().with_ext("rand")),
        InjectError::Unmapped { va } if va == RAND + 0x1000
    ));
    f.root.exts[1].base = EXT_REGION - 0x1000; // below the region
    f.root.exts[1].text_start = EXT_REGION;
    f.commit();
    assert!(matches!(
        check(&f, ROOT_GPA, &code.clone().with_ext("rand")),
        InjectError::BadExtension { .. }
    ));
    f.root.exts[1].base = u64::MAX - 0x1000;
    f.commit();
    assert!(matches!(
        check(&f, ROOT_GPA, &code.clone().with_ext("rand")),
        InjectError::BadExtension { .. }
    ));
    // Nothing loaded (a disabled extension is not picked at random).
    for e in f.root.exts.iter_mut() {
        e.state = EXT_FREE;
    }
    f.root.exts[0].state = EXT_DISABLED;
    f.commit();
    assert!(matches!(
        check(&f, ROOT_GPA, &code),
        InjectError::NoExtension
    ));
    // ... but it can be named.
    inject(&f, 1, &code.clone().with_ext("crashtest")).expect("disabled but named");
}

#[test]
fn random_extension_is_a_live_one() {
    let f = fixture();
    let mut names = std::collections::BTreeSet::new();
    for seed in 0..20 {
        let inj = inject(&f, seed, &FaultSpec::new(FaultType::ReplaceInstruction)).expect("x");
        inj.revert(f.mem()).expect("revert");
        names.insert(inj.target.split('+').next().unwrap_or_default().to_string());
    }
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["crashtest".to_string(), "rand".to_string()]
    );
}

#[test]
fn names_parse_display_and_serialize() {
    for f in FaultType::ALL {
        assert_eq!(f.name().parse::<FaultType>().expect("parse"), f);
        assert_eq!(f.to_string(), f.name());
        assert_eq!(serde_json::to_string(&f).expect("json"), format!("\"{f}\""));
        assert!(!f.description().is_empty());
    }
    assert_eq!(
        FaultType::ALL.iter().filter(|f| f.targets_code()).count(),
        4
    );
    for s in Structure::ALL {
        assert_eq!(s.name().parse::<Structure>().expect("parse"), s);
        assert_eq!(serde_json::to_string(&s).expect("json"), format!("\"{s}\""));
    }
    let err = "bitflip".parse::<FaultType>().unwrap_err();
    assert!(err.to_string().contains("bit-flip"), "{err}");
    assert!("stack".parse::<Structure>().is_err());
    let f = fixture();
    let inj = inject(&f, 1, &FaultSpec::new(FaultType::CorruptRegister)).expect("x");
    let json = serde_json::to_string(&inj).expect("json");
    assert!(json.contains("\"fault\":\"corrupt-register\""), "{json}");
    assert_eq!(
        serde_json::from_str::<Injection>(&json).expect("parse"),
        inj
    );
    let spec = FaultSpec::new(FaultType::WildWriteStruct).with_structure(Structure::Locks);
    let back: FaultSpec =
        serde_json::from_str(&serde_json::to_string(&spec).expect("json")).expect("parse");
    assert_eq!(back, spec);
}

/// Prints one injection of each kind (`cargo test -- --nocapture`), so
/// the reports can be read.
#[test]
fn show_samples() {
    let f = fixture();
    let mut inj = Injector::new(2024);
    for fault in FaultType::ALL {
        let i = inj
            .inject(f.mem(), ROOT_GPA, &FaultSpec::new(fault))
            .expect("inject");
        println!(
            "{fault}: {} va={:#x} gpa={:#x}\n    {}",
            i.target, i.va, i.gpa, i.detail
        );
        i.revert(f.mem()).expect("revert");
    }
}

/// The guest-physical address the walker gives for `va` under `pml4` (the injector's
/// view of `lazarus_guestmem::translate` over guest RAM).
fn translate(mem: &GuestRam, pml4: u64, va: u64) -> Option<u64> {
    lazarus_guestmem::translate(mem, pml4, va)
        .ok()
        .map(|t| t.pa)
}

#[test]
fn walks_small_and_large_pages() {
    let mut b = Builder::new();
    let va = 0xffff_ff00_0000_3000;
    b.map_4k(va, 0x0050_7000);
    assert_eq!(translate(&b.mem, b.pml4, va + 0x123), Some(0x0050_7123));
    assert_eq!(translate(&b.mem, b.pml4, va + 0x1000), None);
    let big = 0xffff_8000_0060_0000;
    b.map_2m(big, LARGE);
    assert_eq!(
        translate(&b.mem, b.pml4, big + 0x1_2345),
        Some(LARGE + 0x1_2345)
    );
    assert_eq!(
        translate_range(&b.mem, b.pml4, big + 0xff8, 16).ok(),
        Some(LARGE + 0xff8)
    );
    // Non-canonical and hostile entries read as unmapped.
    assert_eq!(translate(&b.mem, b.pml4, 0x0000_8000_0000_0000), None);
    let hostile = 0xffff_ff80_0000_0000;
    let pml4_slot = (hostile >> 39) & 0x1ff;
    write_obj(
        &b.mem,
        b.pml4 + pml4_slot * 8,
        &(0x7fff_ffff_f000u64 | PAGE_FLAGS),
    )
    .unwrap();
    assert_eq!(translate(&b.mem, b.pml4, hostile), None);
}

#[test]
fn ranges_must_be_physically_contiguous() {
    let mut b = Builder::new();
    let va = 0xffff_ff00_0001_0000;
    b.map_4k(va, 0x0050_0000);
    b.map_4k(va + 0x1000, 0x0050_1000);
    b.map_4k(va + 0x2000, 0x0040_0000);
    assert_eq!(
        translate_range(&b.mem, b.pml4, va + 0xffc, 8).ok(),
        Some(0x0050_0ffc)
    );
    assert_eq!(translate_range(&b.mem, b.pml4, va + 0x1ffc, 8).ok(), None);
    assert_eq!(translate_range(&b.mem, b.pml4, va + 0x2ffc, 8).ok(), None);
    assert_eq!(translate_range(&b.mem, b.pml4, va, 0).ok(), None);
}
