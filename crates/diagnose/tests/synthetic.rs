//! Diagnosis of synthetic dumps: a RAM image holding the real kernel and
//! crashtest images, a hand-built stack and kernel root. No KVM needed.

use std::path::{Path, PathBuf};

use lazarus_abi::layout::{
    BOOT_PML4_GPA, EXT_REGION, EXT_SLOT_SIZE, KERNEL_VIRT_BASE, KSTACK_REGION, KSTACK_SIZE,
    KSTACK_STRIDE,
};
use lazarus_abi::root::*;
use lazarus_abi::set_name;
use lazarus_diagnose::{CrashKind, Frame, Report, diagnose};
use lazarus_dump::{
    CrashNote, Dump, DumpInput, ExtLoad, GuestRecord, Memory, Regs, VcpuState, write_core,
};
use lazarus_symbols::SymbolStore;
use object::{Object, ObjectSegment, ObjectSymbol};
use zerocopy::{FromZeros, IntoBytes};

const RAM: usize = 8 << 20;
const ROOT_GPA: u64 = 0x40_0000;
const EXT_PA: u64 = 0x50_0000;
const TABLES_PA: u64 = 0x60_0000;
const STACK_PA: u64 = 0x70_0000;
/// Slot 2's kernel stack: its lowest mapped page.
const STACK_VA: u64 = KSTACK_REGION + 2 * KSTACK_STRIDE + (KSTACK_STRIDE - KSTACK_SIZE);

fn crashtest_elf() -> Vec<u8> {
    lazarus_symbols::initramfs_modules(lazarus_image::INITRAMFS)
        .unwrap()
        .into_iter()
        .find(|m| m.name == "crashtest")
        .unwrap()
        .elf
}

/// Link address of the first symbol whose demangled name is `name`.
fn sym(elf: &[u8], name: &str) -> u64 {
    sym_range(elf, name).start
}

fn sym_range(elf: &[u8], name: &str) -> std::ops::Range<u64> {
    let file = object::File::parse(elf).unwrap();
    let s = file
        .symbols()
        .find(|s| {
            s.name()
                .is_ok_and(|n| format!("{:#}", rustc_demangle::demangle(n)) == name)
        })
        .unwrap_or_else(|| panic!("{name} not found"));
    s.address()..s.address() + s.size()
}

struct Setup {
    ext_slot: u32,
    pid: u32,
    record: Option<GuestRecord>,
    detector: &'static str,
    /// Builds the root.
    root: Box<dyn Fn(&mut KernelRoot)>,
    exit_regs: Option<Regs>,
    /// Where the crash happened: the start of this crashtest function, or
    /// (with `fault_at_end`) just past its end, where a noreturn call's
    /// return address lies.
    fault_fn: &'static str,
    fault_at_end: bool,
}

struct Built {
    path: PathBuf,
    store: SymbolStore,
    _dir: tempfile::TempDir,
}

fn put(ram: &mut [u8], pa: u64, v: u64) {
    ram[pa as usize..pa as usize + 8].copy_from_slice(&v.to_le_bytes());
}

fn map(ram: &mut [u8], next: &mut u64, va: u64, pa: u64) {
    let mut t = BOOT_PML4_GPA;
    for level in (1..4).rev() {
        let slot = t + ((va >> (12 + 9 * level)) & 0x1ff) * 8;
        let e = u64::from_le_bytes(ram[slot as usize..slot as usize + 8].try_into().unwrap());
        t = if e & 1 == 0 {
            let f = *next;
            *next += 4096;
            put(ram, slot, f | 3);
            f
        } else {
            e & 0x000f_ffff_ffff_f000
        };
    }
    put(ram, t + ((va >> 12) & 0x1ff) * 8, pa | 3);
}

fn kernel_fn(name: &str) -> u64 {
    sym(lazarus_image::KERNEL_ELF, name)
}

/// Writes a dump: the kernel image at its physical addresses, crashtest
/// mapped at extension slot `ext_slot`, a kernel stack whose frame chain
/// is crashtest's ioctl <- the kernel's trap_dispatch, and the root.
fn build(s: &Setup) -> Built {
    let mut ram = vec![0u8; RAM];
    let kernel = object::File::parse(lazarus_image::KERNEL_ELF).unwrap();
    for seg in kernel.segments() {
        let data = seg.data().unwrap();
        let pa = seg.address() - KERNEL_VIRT_BASE;
        ram[pa as usize..pa as usize + data.len()].copy_from_slice(data);
    }
    let ext = crashtest_elf();
    let ext_file = object::File::parse(&*ext).unwrap();
    let mut ext_size = 0;
    for seg in ext_file.segments() {
        let data = seg.data().unwrap();
        ram[(EXT_PA + seg.address()) as usize..(EXT_PA + seg.address()) as usize + data.len()]
            .copy_from_slice(data);
        ext_size = ext_size.max(seg.address() + seg.size());
    }
    let ext_size = ext_size.next_multiple_of(4096);
    let base = EXT_REGION + u64::from(s.ext_slot) * EXT_SLOT_SIZE;
    let mut next = TABLES_PA;
    for off in (0..ext_size).step_by(4096) {
        map(&mut ram, &mut next, base + off, EXT_PA + off);
    }
    map(&mut ram, &mut next, STACK_VA, STACK_PA);

    // Frame chain: rbp0 -> (rbp1, return into crashtest's ioctl),
    // rbp1 -> (rbp2, return into trap_dispatch), rbp2 -> (0, 0).
    let (rbp0, rbp1, rbp2) = (STACK_VA + 0x100, STACK_VA + 0x200, STACK_VA + 0x300);
    let ioctl = base + sym(&ext, "crashtest::ioctl") + 0x10;
    let dispatch = kernel_fn("trap_dispatch") + 0x10;
    // A kernel helper's frame whose caller is the faulting function, for
    // samples taken inside a kernel function the extension called.
    put(&mut ram, STACK_PA + 0x80, rbp0);
    put(
        &mut ram,
        STACK_PA + 0x88,
        base + sym(&ext, "crashtest::faults::null_read") + 5,
    );
    // A return address into soft_lockup where a function's prologue
    // would find it.
    put(
        &mut ram,
        STACK_PA + 0x40,
        base + sym(&ext, "crashtest::faults::soft_lockup") + 5,
    );
    put(&mut ram, STACK_PA + 0x100, rbp1);
    put(&mut ram, STACK_PA + 0x108, ioctl);
    put(&mut ram, STACK_PA + 0x200, rbp2);
    put(&mut ram, STACK_PA + 0x208, dispatch);

    let mut root = KernelRoot::new_box_zeroed().unwrap();
    root.header.magic = ROOT_MAGIC;
    root.header.abi_version = ABI_VERSION;
    root.header.root_size = size_of::<KernelRoot>() as u32;
    root.mem_size = RAM as u64;
    let text = kernel
        .sections()
        .find(|x| object::ObjectSection::name(x) == Ok(".text"))
        .unwrap();
    root.kernel_text_start = object::ObjectSection::address(&text);
    root.kernel_text_end = root.kernel_text_start + object::ObjectSection::size(&text);
    for p in root.procs.iter_mut() {
        p.cur_ext = NONE;
        p.spinning_on = NONE;
    }
    for l in root.locks.iter_mut() {
        l.ext = NONE;
    }
    let p = &mut root.procs[KernelRoot::slot_of(s.pid)];
    p.pid = s.pid;
    p.state = PS_RUNNING;
    set_name(&mut p.name, "crash");
    p.cur_ext = s.ext_slot;
    p.syscall_nr = 9;
    let e = &mut root.exts[s.ext_slot as usize];
    e.state = EXT_LIVE;
    set_name(&mut e.name, "crashtest");
    e.base = base;
    e.size = ext_size;
    root.cpus[0].current = s.pid;
    let l = &mut root.locks[1];
    l.state = LOCK_HELD;
    l.owner = s.pid;
    l.ext = s.ext_slot;
    set_name(&mut l.name, "crashtest");
    (s.root)(&mut root);
    ram[ROOT_GPA as usize..ROOT_GPA as usize + size_of::<KernelRoot>()]
        .copy_from_slice(root.as_bytes());

    let text_lo = ext_file
        .segments()
        .filter(|x| x.flags() == object::SegmentFlags::Elf { p_flags: 5 })
        .map(|x| x.address())
        .min()
        .unwrap();
    let text_hi = ext_file
        .segments()
        .filter(|x| x.flags() == object::SegmentFlags::Elf { p_flags: 5 })
        .map(|x| x.address() + x.size())
        .max()
        .unwrap();
    let f = sym_range(&ext, s.fault_fn);
    let fault_rip = base + if s.fault_at_end { f.end } else { f.start };
    let mut record = s.record.clone();
    if let Some(r) = &mut record
        && r.frame.rip == 0
    {
        r.frame.rip = fault_rip;
        r.frame.rbp = rbp0;
        r.frame.rsp = rbp0 - 0x20;
        r.frame.cs = 0x10;
    }
    let exit = s.exit_regs.clone().unwrap_or(Regs {
        rip: fault_rip,
        rbp: rbp0,
        rsp: rbp0 - 0x20,
        ..Regs::default()
    });
    let note = CrashNote {
        format_version: lazarus_dump::FORMAT_VERSION,
        lazarus_version: "test".into(),
        time_unix_ms: 1,
        boot_id: format!("boot-{}", s.pid),
        detector: s.detector.into(),
        detail: "synthetic".into(),
        crashed_vcpu: 0,
        root_gpa: Some(ROOT_GPA),
        kernel_build_id: lazarus_symbols::build_id_of(lazarus_image::KERNEL_ELF),
        extensions: vec![ExtLoad {
            slot: s.ext_slot,
            name: "crashtest".into(),
            base,
            size: ext_size,
            text_start: base + text_lo,
            text_end: base + text_hi,
            build_id: lazarus_symbols::build_id_of(&ext),
        }],
        guest_record: record,
        vcpus: vec![VcpuState { id: 0, regs: exit }],
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dump.core");
    write_core(
        &path,
        &DumpInput {
            memory: Memory::Ram(&ram),
            note,
        },
    )
    .unwrap();
    let store = SymbolStore::new(dir.path().join("symbols"));
    store.add(lazarus_image::KERNEL_ELF, "kernel").unwrap();
    store.add(&ext, "crashtest").unwrap();
    Built {
        path,
        store,
        _dir: dir,
    }
}

fn oops(vector: u64, error_code: u64, cr2: u64) -> Option<GuestRecord> {
    Some(GuestRecord {
        seq: 1,
        kind: CRASH_OOPS,
        vector,
        error_code,
        cr2,
        pid: 0,
        ext: NONE,
        in_irq: 0,
        message: "oops".into(),
        frame: Regs::default(),
    })
}

fn setup(record: Option<GuestRecord>) -> Setup {
    Setup {
        ext_slot: 0,
        pid: 2,
        record,
        detector: "pvpanic",
        root: Box::new(|_| {}),
        exit_regs: None,
        fault_fn: "crashtest::faults::null_read",
        fault_at_end: false,
    }
}

fn run(s: Setup) -> Report {
    let mut s = s;
    if let Some(r) = &mut s.record {
        r.pid = s.pid;
        r.ext = s.ext_slot;
    }
    let b = build(&s);
    diagnose(&Dump::open(&b.path).unwrap(), &b.store).unwrap()
}

fn run_with_store(s: Setup, store: impl Fn(&Path) -> SymbolStore) -> Report {
    let b = build(&s);
    diagnose(
        &Dump::open(&b.path).unwrap(),
        &store(b.path.parent().unwrap()),
    )
    .unwrap()
}

#[test]
fn null_deref_in_an_extension() {
    let r = run(setup(oops(14, 0, 0)));
    assert_eq!(r.kind, CrashKind::NullDeref, "{}", r.render_text());
    assert_eq!(r.exception.as_deref(), Some("page fault"));
    assert_eq!(r.fault_address, Some(0));
    assert_eq!(
        r.title,
        "null-deref in crashtest!crashtest::faults::null_read"
    );
    assert_eq!(r.signature.len(), 16);
    let p = r.process.as_ref().unwrap();
    assert_eq!(
        (p.pid, p.name.as_str(), p.state.as_str()),
        (2, "crash", "running")
    );
    assert_eq!(p.syscall, Some(9));
    let e = r.extension.as_ref().unwrap();
    assert_eq!((e.slot, e.name.as_str()), (0, "crashtest"));
    assert_eq!(r.locks_held.len(), 1);
    assert_eq!(r.locks_held[0].name, "crashtest");
    assert_eq!(r.locks_held[0].extension.as_deref(), Some("crashtest"));

    let names: Vec<String> = r.backtrace.iter().map(Frame::location).collect();
    assert_eq!(
        names,
        [
            "crashtest!crashtest::faults::null_read",
            "crashtest!crashtest::ioctl",
            "kernel!trap_dispatch"
        ],
        "{}",
        r.render_text()
    );
    assert_eq!(r.backtrace[1].offset, Some(0x10));
    assert!(
        r.backtrace[2]
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with("trap.rs"))
    );
    let insn = r.faulting_instruction.as_ref().unwrap();
    assert!(
        !insn.bytes.is_empty() && insn.disassembly != "(bad)",
        "{insn:?}"
    );
    assert!(
        insn.symbol
            .as_deref()
            .unwrap()
            .starts_with("crashtest!crashtest::faults::null_read")
    );
    assert!(r.notes.is_empty(), "{:?}", r.notes);

    let text = r.render_text();
    for want in [
        "null-deref",
        "crash",
        "crashtest (slot 0)",
        "#0",
        "trap_dispatch",
        &r.signature,
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    let json: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(json["kind"], "null-deref");
    assert!(json["interrupted_process"].is_null());
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn signatures_ignore_load_addresses_and_pids_but_not_the_bug() {
    let a = run(setup(oops(14, 0, 0)));
    let mut s = setup(oops(14, 0, 0));
    s.ext_slot = 5;
    s.pid = 70;
    let b = run(s);
    assert_ne!(a.backtrace[0].address, b.backtrace[0].address);
    assert_eq!(a.signature, b.signature);
    let c = run(setup(oops(14, 2, 0xbad_0000_0000)));
    assert_eq!(c.kind, CrashKind::WildWrite);
    assert_ne!(a.signature, c.signature);
}

#[test]
fn missing_symbols_degrade_to_module_offsets() {
    let empty = |dir: &Path| SymbolStore::new(dir.join("nothing"));
    let a = run_with_store(setup(oops(14, 0, 0)), empty);
    assert_eq!(a.kind, CrashKind::NullDeref);
    assert!(a.backtrace[0].function.is_none());
    assert!(a.backtrace[0].location().starts_with("crashtest+0x"));
    assert!(a.title.starts_with("null-deref in crashtest+0x"));
    assert!(
        a.notes
            .iter()
            .any(|n| n.contains("not in the symbol store"))
    );
    let mut s = setup(oops(14, 0, 0));
    s.ext_slot = 3;
    let b = run_with_store(s, empty);
    assert_eq!(a.signature, b.signature);
}

#[test]
fn a_corrupted_root_is_reported_not_fatal() {
    let mut s = setup(oops(13, 0, 0));
    s.root = Box::new(|r| r.header.magic = 0xdead);
    let r = run(s);
    assert_eq!(r.kind, CrashKind::GeneralProtection);
    assert!(r.process.is_none());
    assert!(
        r.notes.iter().any(|n| n.contains("bad magic")),
        "{:?}",
        r.notes
    );
    // The extension still comes from the record and the note.
    assert_eq!(r.extension.unwrap().name, "crashtest");
}

#[test]
fn a_root_of_another_abi_version_or_size_is_not_used() {
    let mut s = setup(oops(13, 0, 0));
    s.root = Box::new(|r| r.header.abi_version += 1);
    let r = run(s);
    assert!(r.process.is_none());
    assert!(
        r.notes.iter().any(|n| n.contains("ABI version")),
        "{:?}",
        r.notes
    );
    let mut s = setup(oops(13, 0, 0));
    s.root = Box::new(|r| r.header.root_size = 8);
    let r = run(s);
    assert!(r.process.is_none());
    assert!(
        r.notes.iter().any(|n| n.contains("root size 8")),
        "{:?}",
        r.notes
    );
}

#[test]
fn irq_faults_blame_no_process() {
    let mut rec = oops(14, 0, 0);
    rec.as_mut().unwrap().in_irq = 1;
    let r = run(setup(rec));
    assert_eq!(r.kind, CrashKind::IrqFault);
    assert!(r.process.is_none());
    assert_eq!(r.interrupted_process.as_ref().unwrap().name, "crash");
    assert!(r.locks_held.is_empty());
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["process"].is_null());
}

fn soft_lockup() -> Option<GuestRecord> {
    let mut r = oops(32, 0, 0);
    r.as_mut().unwrap().kind = CRASH_SOFT_LOCKUP;
    r
}

#[test]
fn deadlock_needs_a_held_lock_and_a_live_owner() {
    // Spinning on lock 3, held by live pid 9.
    let mut s = setup(soft_lockup());
    s.root = Box::new(|r| {
        r.procs[2].spinning_on = 3;
        let o = &mut r.procs[9];
        o.pid = 9;
        o.state = PS_BLOCKED;
        set_name(&mut o.name, "holder");
        r.locks[3].state = LOCK_HELD;
        r.locks[3].owner = 9;
        set_name(&mut r.locks[3].name, "table");
    });
    let r = run(s);
    assert_eq!(r.kind, CrashKind::Deadlock, "{}", r.render_text());
    let w = r.spinning_on.as_ref().unwrap();
    assert_eq!((w.lock.id, w.owner_pid, w.recursive), (3, 9, false));
    assert_eq!(w.owner_name.as_deref(), Some("holder"));
    assert!(r.render_text().contains("spinning on"));

    // Spinning on a lock it holds itself: a recursive deadlock.
    let mut s = setup(soft_lockup());
    s.root = Box::new(|r| r.procs[2].spinning_on = 1);
    let r = run(s);
    assert_eq!(r.kind, CrashKind::Deadlock);
    assert!(r.spinning_on.unwrap().recursive);

    // The lock is free, or its holder is gone: a plain soft lockup.
    let mut s = setup(soft_lockup());
    s.root = Box::new(|r| r.procs[2].spinning_on = 4);
    assert_eq!(run(s).kind, CrashKind::SoftLockup);
    let mut s = setup(soft_lockup());
    s.root = Box::new(|r| {
        r.procs[2].spinning_on = 3;
        r.locks[3].state = LOCK_HELD;
        r.locks[3].owner = 11;
    });
    assert_eq!(run(s).kind, CrashKind::SoftLockup);
    assert_eq!(run(setup(soft_lockup())).kind, CrashKind::SoftLockup);
}

#[test]
fn watchdog_lockups_use_the_current_process() {
    let mut s = setup(None);
    s.detector = "watchdog";
    let r = run(s);
    assert_eq!(r.kind, CrashKind::HardLockup);
    assert_eq!(r.process.as_ref().unwrap().pid, 2);
    // Sampled inside the extension: the title names its function.
    assert_eq!(
        r.title,
        "hard-lockup in crashtest!crashtest::faults::null_read"
    );

    let mut s = setup(None);
    s.detector = "watchdog";
    s.root = Box::new(|r| r.procs[2].spinning_on = 1);
    assert_eq!(run(s).kind, CrashKind::Deadlock);
}

#[test]
fn lockup_signatures_start_at_the_extension() {
    // The same lockup sampled in the kernel (inside a helper the extension
    // called) and in the extension's loop.
    let mut s = setup(soft_lockup());
    let mut rec = soft_lockup().unwrap();
    rec.frame.rip = kernel_fn("trap_dispatch") + 3;
    rec.frame.rbp = STACK_VA + 0x80;
    s.record = Some(rec);
    let in_kernel = run(s);
    assert_eq!(in_kernel.backtrace.len(), 4, "{}", in_kernel.render_text());
    let in_ext = run(setup(soft_lockup()));
    assert_eq!(in_kernel.backtrace[0].module.as_deref(), Some("kernel"));
    assert_eq!(in_kernel.signature, in_ext.signature);
    assert_eq!(in_kernel.title, in_ext.title);
}

#[test]
fn classification_rules() {
    let mut s = setup(oops(8, 0, 0));
    let mut rec = oops(8, 0, 0).unwrap();
    rec.frame.rip = 0;
    s.record = Some(rec);
    assert_eq!(run(s).kind, CrashKind::DoubleFault);

    let mut rec = oops(8, 0, 0).unwrap();
    rec.frame.rip = kernel_fn("trap_dispatch");
    rec.frame.rsp = KSTACK_REGION + 2 * KSTACK_STRIDE + 0x10; // in the guard
    let mut s = setup(None);
    s.record = Some(rec);
    assert_eq!(run(s).kind, CrashKind::StackOverflow);

    for (vector, kind) in [
        (6, CrashKind::InvalidOpcode),
        (0, CrashKind::DivideError),
        (13, CrashKind::GeneralProtection),
        (14, CrashKind::NullDeref),
        (3, CrashKind::Unknown),
    ] {
        assert_eq!(run(setup(oops(vector, 0, 0))).kind, kind, "vector {vector}");
    }
    assert_eq!(run(setup(oops(14, 0, 0x5000))).kind, CrashKind::PageFault);
    for (k, kind) in [
        (CRASH_PANIC, CrashKind::Panic),
        (CRASH_LIST_CORRUPTION, CrashKind::ListCorruption),
        (CRASH_NONE, CrashKind::Unknown),
    ] {
        let mut rec = oops(0, 0, 0);
        rec.as_mut().unwrap().kind = k;
        assert_eq!(run(setup(rec)).kind, kind);
    }
    for (det, kind) in [
        ("triple-fault", CrashKind::TripleFault),
        ("kvm-internal-error", CrashKind::KvmInternalError),
        ("entry-failure", CrashKind::Unknown),
        ("pvpanic", CrashKind::Unknown),
    ] {
        let mut s = setup(None);
        s.detector = det;
        assert_eq!(run(s).kind, kind, "{det}");
    }
}

#[test]
fn garbage_registers_give_a_short_report() {
    let mut s = setup(None);
    s.detector = "triple-fault";
    s.exit_regs = Some(Regs {
        rip: 0xdead_beef,
        rbp: 0x1234_5678,
        ..Regs::default()
    });
    let r = run(s);
    assert_eq!(r.kind, CrashKind::TripleFault);
    assert_eq!(r.backtrace.len(), 1);
    assert_eq!(r.backtrace[0].location(), "?");
    assert!(r.faulting_instruction.is_none());
    assert_eq!(r.title, "triple-fault at 0xdeadbeef");
}

#[test]
fn extension_panics_name_the_caller_of_the_panic_api() {
    // The extension API reports the return address into its caller, which
    // lies just past the end of the (noreturn) caller.
    let mut rec = oops(0, 0, 0);
    rec.as_mut().unwrap().kind = CRASH_PANIC;
    let mut s = setup(rec);
    s.fault_fn = "crashtest::faults::panic";
    s.fault_at_end = true;
    let r = run(s);
    assert_eq!(r.kind, CrashKind::Panic);
    assert_eq!(
        r.backtrace[0].location(),
        "crashtest!crashtest::faults::panic",
        "{}",
        r.render_text()
    );
    assert_eq!(r.title, "panic in crashtest!crashtest::faults::panic");
    assert!(r.exception.is_none());
}

#[test]
fn titles_blame_the_extension_frame_when_the_kernel_reports() {
    // A crash detected in the kernel on behalf of an extension call.
    let mut rec = oops(0, 0, 0);
    rec.as_mut().unwrap().kind = CRASH_LIST_CORRUPTION;
    let mut s = setup(rec);
    s.record.as_mut().unwrap().frame = Regs {
        rip: kernel_fn("trap_dispatch") + 3,
        rbp: STACK_VA + 0x80,
        ..Regs::default()
    };
    let r = run(s);
    assert_eq!(r.kind, CrashKind::ListCorruption);
    assert_eq!(r.backtrace[0].module.as_deref(), Some("kernel"));
    assert_eq!(
        r.title,
        "list-corruption in crashtest!crashtest::faults::null_read"
    );
}

#[test]
fn lockups_sampled_in_a_prologue_keep_the_caller() {
    let mut s = setup(soft_lockup());
    s.fault_fn = "crashtest::faults::soft_lockup";
    let in_ext = run(s);
    let names: Vec<String> = in_ext.backtrace.iter().map(Frame::location).collect();
    assert_eq!(
        names,
        [
            "crashtest!crashtest::faults::soft_lockup",
            "crashtest!crashtest::ioctl",
            "kernel!trap_dispatch"
        ]
    );
    // Sampled at the first and second instruction of a kernel function
    // the extension called: rbp is still the extension's.
    for (offset, rsp) in [(0, STACK_VA + 0x40), (1, STACK_VA + 0x38)] {
        let mut s = setup(soft_lockup());
        let mut rec = soft_lockup().unwrap();
        rec.frame.rip = kernel_fn("trap_dispatch") + offset;
        rec.frame.rsp = rsp;
        rec.frame.rbp = STACK_VA + 0x100;
        s.record = Some(rec);
        let r = run(s);
        let names: Vec<String> = r.backtrace.iter().map(Frame::location).collect();
        assert_eq!(
            names,
            [
                "kernel!trap_dispatch",
                "crashtest!crashtest::faults::soft_lockup",
                "crashtest!crashtest::ioctl",
                "kernel!trap_dispatch"
            ],
            "offset {offset}"
        );
        assert_eq!(r.signature, in_ext.signature, "offset {offset}");
    }
}

#[test]
fn extension_failures_blame_the_extension_not_the_caller() {
    let mut rec = oops(0, 0, 0);
    let r0 = rec.as_mut().unwrap();
    r0.kind = CRASH_EXT_FAILED;
    r0.message = "extension crashtest failed pid 2: returned a wrong reply".into();
    let r = run(setup(rec));
    assert_eq!(r.kind, CrashKind::ExtensionFailure);
    assert!(r.process.is_none(), "the caller is the victim");
    assert_eq!(r.interrupted_process.as_ref().unwrap().name, "crash");
    assert_eq!(r.extension.as_ref().unwrap().name, "crashtest");
    assert_eq!(r.title, "extension-failure in crashtest");
    // Bucketed by extension and what it did, not by the kernel's path.
    let mut other = oops(0, 0, 0);
    let o = other.as_mut().unwrap();
    o.kind = CRASH_EXT_FAILED;
    o.message = "extension crashtest failed pid 7: returned more bytes than asked for".into();
    assert_ne!(run(setup(other)).signature, r.signature);
}

#[test]
fn corrupted_contexts_blame_the_process_not_its_extension() {
    let mut rec = oops(0, 0, 0);
    let r0 = rec.as_mut().unwrap();
    r0.kind = CRASH_CONTEXT_CORRUPT;
    r0.pid = 2;
    // The process was blocked inside the extension (its `cur_ext` is the
    // extension's slot) when its saved state was corrupted, and the
    // kernel's record names no extension: the extension is not to blame.
    let b = build(&setup(rec));
    let r = diagnose(&Dump::open(&b.path).unwrap(), &b.store).unwrap();
    assert_eq!(r.kind, CrashKind::ContextCorruption);
    assert_eq!(r.process.as_ref().unwrap().name, "crash");
    assert!(r.extension.is_none(), "{:?}", r.extension);
}
