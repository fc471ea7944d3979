//! Round trips through a synthetic guest, and malformed dumps.

use std::path::{Path, PathBuf};

use lazarus_abi::layout::{
    BOOT_PML4_GPA, EXT_REGION, KERNEL_VIRT_BASE, KSTACK_REGION, KSTACK_SIZE, KSTACK_STRIDE,
    PHYSMAP_BASE,
};

use super::*;
use lazarus_guestmem::test_util::TableBuilder as Builder;

const MIB: usize = 1 << 20;
const W: u64 = 1 << 1;
const U: u64 = 1 << 2;
const NX: u64 = 1 << 63;

const USER_CR3: u64 = 0x5000;
const KSTACK_VA: u64 = KSTACK_REGION + KSTACK_STRIDE + (KSTACK_STRIDE - KSTACK_SIZE);
const KSTACK_PA: u64 = 0x20_0000;
const EXT_PA: u64 = 0x30_0000;
const USER_PA: u64 = 0x38_0000;

struct Guest {
    ram: Vec<u8>,
}

fn fill(ram: &mut [u8], pa: u64, len: usize, seed: u8) {
    for (i, b) in ram[pa as usize..pa as usize + len].iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8) | 1;
    }
}

/// 4 MiB of RAM with a master PML4 mapping one kernel-stack page and
/// three extension pages, and a process PML4 mapping one user page.
fn guest() -> Guest {
    let mut ram = vec![0u8; 4 * MIB];
    let mut b = Builder {
        ram: &mut ram,
        next: 0x10_0000,
    };
    b.map(BOOT_PML4_GPA, KSTACK_VA, KSTACK_PA, W | NX);
    for i in 0..3 {
        b.map(BOOT_PML4_GPA, EXT_REGION + i * 4096, EXT_PA + i * 4096, 0);
    }
    b.map(USER_CR3, 0x40_0000, USER_PA, U | W);
    fill(&mut ram, KSTACK_PA, 4096, 1);
    fill(&mut ram, EXT_PA, 3 * 4096, 2);
    fill(&mut ram, USER_PA, 4096, 3);
    fill(&mut ram, 0x1234, 16, 4);
    Guest { ram }
}

fn note() -> CrashNote {
    let exit0 = Regs {
        rip: 0xffff_ffff_8010_0100,
        rsp: KSTACK_VA + 0x800,
        cr3: USER_CR3,
        gs_base: 0x77,
        ..Regs::default()
    };
    let exit1 = Regs {
        rip: 0xffff_ffff_8010_0200,
        rax: 42,
        ..Regs::default()
    };
    CrashNote {
        format_version: FORMAT_VERSION,
        lazarus_version: "0.1.0".into(),
        time_unix_ms: 1_700_000_000_000,
        boot_id: "b00t".into(),
        detector: "pvpanic".into(),
        detail: "kernel oops".into(),
        crashed_vcpu: 0,
        root_gpa: Some(0x11_0000),
        kernel_build_id: Some("abcd".into()),
        extensions: vec![ExtLoad {
            slot: 0,
            name: "crashtest".into(),
            base: EXT_REGION,
            size: 3 * 4096,
            text_start: EXT_REGION + 0x1000,
            text_end: EXT_REGION + 0x2000,
            build_id: Some("ef01".into()),
        }],
        guest_record: Some(GuestRecord {
            seq: 1,
            kind: lazarus_abi::root::CRASH_OOPS,
            vector: 14,
            error_code: 0,
            cr2: 0,
            pid: 2,
            ext: 0,
            in_irq: 0,
            message: "oops: page fault".into(),
            frame: Regs {
                rip: EXT_REGION + 0x1010,
                rsp: KSTACK_VA + 0x700,
                rbp: KSTACK_VA + 0x780,
                rax: 5,
                cs: 0x10,
                ss: 0x18,
                ..Regs::default()
            },
        }),
        vcpus: vec![
            VcpuState { id: 0, regs: exit0 },
            VcpuState { id: 1, regs: exit1 },
        ],
    }
}

fn write(dir: &Path, g: &Guest, note: CrashNote) -> PathBuf {
    let path = dir.join("dump.core");
    let input = DumpInput {
        memory: Memory::Ram(&g.ram),
        note,
    };
    let n = write_core(&path, &input).expect("write");
    assert_eq!(n, std::fs::metadata(&path).unwrap().len());
    path
}

/// The segments at virtual addresses in `range`.
fn segments_in(d: &Dump, range: std::ops::Range<u64>) -> Vec<Segment> {
    d.segments()
        .iter()
        .filter(|s| range.contains(&s.vaddr))
        .copied()
        .collect()
}

/// Segments made by the page-table walks (neither kernel window).
fn walked(d: &Dump) -> Vec<Segment> {
    d.segments()
        .iter()
        .filter(|s| {
            !(PHYSMAP_BASE..PHYSMAP_BASE + (1 << 40)).contains(&s.vaddr)
                && !(KERNEL_VIRT_BASE..KERNEL_VIRT_BASE + (1 << 30)).contains(&s.vaddr)
        })
        .copied()
        .collect()
}

fn read_virt(d: &Dump, va: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    d.read_virt(va, &mut b).expect("read_virt");
    b
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let g = guest();
    let path = write(dir.path(), &g, note());
    let d = Dump::open(&path).expect("open");
    assert_eq!(d.note(), &note());
    assert_eq!(d.ram_size(), g.ram.len() as u64);

    // The crashed vCPU shows the trap frame, with the exit-time segment
    // bases; the other vCPU its exit registers.
    let r0 = d.prstatus(0).unwrap();
    assert_eq!(r0.rip, EXT_REGION + 0x1010);
    assert_eq!((r0.rsp, r0.rax, r0.gs_base), (KSTACK_VA + 0x700, 5, 0x77));
    assert_eq!(d.prstatus(1).unwrap().rax, 42);
    assert!(d.prstatus(2).is_none());

    // Besides the two windows: one kernel-stack run, one coalesced
    // extension run and one user run.
    assert_eq!(walked(&d).len(), 3, "{:#x?}", d.segments());
    assert_eq!(
        d.memory(),
        Some(&MemoryNote {
            ram_size: g.ram.len() as u64,
            all_ram: true,
            stored_bytes: d.memory().unwrap().stored_bytes,
        })
    );
    let span = |va: u64, len: usize| &g.ram[va as usize..va as usize + len];
    assert_eq!(read_virt(&d, PHYSMAP_BASE + 0x1234, 16), span(0x1234, 16));
    assert_eq!(
        read_virt(&d, KERNEL_VIRT_BASE + 0x1234, 16),
        span(0x1234, 16)
    );
    assert_eq!(read_virt(&d, KSTACK_VA, 4096), span(KSTACK_PA, 4096));
    // Across the coalesced extension pages.
    assert_eq!(
        read_virt(&d, EXT_REGION + 4000, 5000),
        span(EXT_PA + 4000, 5000)
    );
    assert_eq!(read_virt(&d, 0x40_0000, 4096), span(USER_PA, 4096));
    // Zero pages read back as zeros.
    assert!(
        read_virt(&d, PHYSMAP_BASE + 0x38_1000, 8192)
            .iter()
            .all(|&b| b == 0)
    );
    let mut b = [0u8; 16];
    d.read_phys(EXT_PA, &mut b).unwrap();
    assert_eq!(&b[..], span(EXT_PA, 16));
    assert_eq!(
        d.read_u64_virt(KSTACK_VA).unwrap(),
        u64::from_le_bytes(span(KSTACK_PA, 8).try_into().unwrap())
    );
    assert_eq!(d.translate(USER_CR3, 0x40_0010), Some(USER_PA + 0x10));

    for (va, what) in [
        (EXT_REGION + 3 * 4096, "past the extension"),
        (0x1000, "user hole"),
        (KSTACK_REGION, "guard page"),
    ] {
        assert!(
            matches!(d.read_virt(va, &mut b), Err(DumpError::Unmapped { .. })),
            "{what}"
        );
    }
    assert!(matches!(
        d.read_phys(g.ram.len() as u64 - 8, &mut b),
        Err(DumpError::Unmapped { .. })
    ));
}

#[test]
fn zero_pages_are_left_out_and_read_as_zero() {
    let dir = tempfile::tempdir().unwrap();
    let g = guest();
    let path = write(dir.path(), &g, note());
    // 4 MiB of RAM, of which a few pages are not zero: the file holds
    // those (not a sparse file of RAM size).
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len < 256 * 1024, "a {len}-byte dump of 4 MiB of RAM");
    let d = Dump::open(&path).unwrap();
    let stored = d.memory().unwrap().stored_bytes;
    assert!(stored < len, "{stored} of {len}");
    // Every byte of RAM reads back as it was, zeros included, physically
    // and through the physmap.
    let mut all = vec![0u8; g.ram.len()];
    d.read_phys(0, &mut all).unwrap();
    assert!(all == g.ram, "physical view differs");
    d.read_virt(PHYSMAP_BASE, &mut all).unwrap();
    assert!(all == g.ram, "physmap view differs");
    assert_eq!(read_virt(&d, KERNEL_VIRT_BASE, 4096), &g.ram[..4096]);
}

#[test]
fn fragmented_ram_is_coalesced_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    // Every other page non-zero, past the run budget.
    let mut g = guest();
    g.ram.resize(48 * MIB, 0);
    for page in (4 * MIB / 4096..48 * MIB / 4096).step_by(8) {
        g.ram[page * 4096 + 7] = 0x5a;
    }
    let path = write(dir.path(), &g, note());
    let d = Dump::open(&path).unwrap();
    let windows = segments_in(&d, PHYSMAP_BASE..PHYSMAP_BASE + (1 << 40));
    assert!(windows.len() <= 4097, "{} physmap segments", windows.len());
    let mut all = vec![0u8; g.ram.len()];
    d.read_phys(0, &mut all).unwrap();
    assert!(all == g.ram, "physical view differs");
}

/// The ranges a crash snapshot holds: the boot page tables, the walked
/// tables, the kernel stack and extension pages, one kernel data page.
fn captured_ranges(g: &Guest) -> Vec<(u64, &[u8])> {
    let r = |pa: u64, len: u64| (pa, &g.ram[pa as usize..(pa + len) as usize]);
    vec![
        r(EXT_PA, 3 * 4096),
        r(0, 0x10000),
        r(0x10_0000, 0x10000),
        r(KSTACK_PA, 4096),
    ]
}

#[test]
fn a_snapshot_dump_holds_what_was_captured_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let g = guest();
    let path = dir.path().join("snap.core");
    let input = DumpInput {
        memory: Memory::Captured {
            ram_size: g.ram.len() as u64,
            ranges: captured_ranges(&g),
        },
        note: note(),
    };
    let n = write_core(&path, &input).unwrap();
    let captured: u64 = captured_ranges(&g).iter().map(|r| r.1.len() as u64).sum();
    assert_eq!(n, std::fs::metadata(&path).unwrap().len());
    assert!(
        n < captured + 16 * 4096,
        "{n} bytes for {captured} captured"
    );
    let d = Dump::open(&path).unwrap();
    let memory = d.memory().unwrap();
    assert_eq!(
        (memory.ram_size, memory.all_ram),
        (g.ram.len() as u64, false)
    );
    // The all-zero pages of the captured ranges are not stored...
    assert!(memory.stored_bytes < captured, "{memory:?}");
    // ...but read as zero, unlike memory that was not captured.
    let mut z = [1u8; 64];
    d.read_phys(0x8000, &mut z).unwrap();
    assert_eq!(z, [0u8; 64]);
    assert_eq!(d.ram_size(), g.ram.len() as u64);
    let span = |pa: u64, len: usize| &g.ram[pa as usize..pa as usize + len];
    // The walks found the kernel stack and the extension through the
    // captured tables; the user page was not captured.
    assert_eq!(read_virt(&d, KSTACK_VA, 4096), span(KSTACK_PA, 4096));
    assert_eq!(
        read_virt(&d, EXT_REGION + 100, 3 * 4096 - 100),
        span(EXT_PA + 100, 3 * 4096 - 100)
    );
    assert_eq!(
        read_virt(&d, KERNEL_VIRT_BASE + 0x1234, 16),
        span(0x1234, 16)
    );
    let mut b = [0u8; 8];
    for (pa, what) in [(USER_PA, "user page"), (0x20_1000, "free RAM")] {
        assert!(
            matches!(d.read_phys(pa, &mut b), Err(DumpError::Unmapped { .. })),
            "{what}"
        );
        assert!(lazarus_guestmem::PhysMemory::read(&d, pa, &mut b).is_err());
    }
    assert!(d.read_virt(0x40_0000, &mut b).is_err());
}

#[test]
fn a_captured_range_outside_ram_or_overlapping_is_clipped() {
    let dir = tempfile::tempdir().unwrap();
    let g = guest();
    let path = dir.path().join("clip.core");
    let big = vec![7u8; 0x3000];
    let input = DumpInput {
        memory: Memory::Captured {
            ram_size: g.ram.len() as u64,
            ranges: vec![
                (0x1000, &g.ram[0x1000..0x3000]),
                (0x2000, &big[..]),
                (g.ram.len() as u64 - 0x1000, &big[..]),
                (u64::MAX - 10, &big[..]),
            ],
        },
        note: note(),
    };
    write_core(&path, &input).unwrap();
    let d = Dump::open(&path).unwrap();
    let mut b = vec![0u8; 0x2000];
    d.read_phys(0x1000, &mut b).unwrap();
    assert!(b == g.ram[0x1000..0x3000]);
    d.read_phys(0x3000, &mut b[..0x1000]).unwrap();
    assert!(b[..0x1000].iter().all(|&x| x == 7));
    d.read_phys(g.ram.len() as u64 - 0x1000, &mut b[..0x1000])
        .unwrap();
    assert!(d.read_phys(g.ram.len() as u64, &mut b[..1]).is_err());
}

/// A dump of the first format (one copy of all of RAM, no memory note),
/// written by the writer before dumps were sized to their content: 128
/// KiB of RAM, a kernel-stack page at 0x1a000, three extension pages at
/// 0x1b000 and a user page at 0x1e000.
const FORMAT1: &[u8] = include_bytes!("../testdata/format1-full-ram.dump");

#[test]
fn dumps_of_the_first_format_still_read() {
    let d = Dump::from_bytes(FORMAT1.to_vec()).expect("a format-1 dump");
    assert_eq!(d.memory(), None);
    assert_eq!(d.ram_size(), 0x20000);
    assert_eq!(d.note().detector, "pvpanic");
    // What `fill` wrote there.
    let expect = |len: usize, seed: u8| -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_add(i as u8) | 1).collect()
    };
    let kva = KSTACK_REGION + KSTACK_STRIDE - 4096;
    assert_eq!(read_virt(&d, kva, 4096), expect(4096, 1));
    assert_eq!(read_virt(&d, EXT_REGION, 3 * 4096), expect(3 * 4096, 2));
    assert_eq!(read_virt(&d, 0x40_0000, 4096), expect(4096, 3));
    assert_eq!(read_virt(&d, PHYSMAP_BASE + 0x1234, 16), expect(16, 4));
    let mut b = [0u8; 16];
    d.read_phys(0x1234, &mut b).unwrap();
    assert_eq!(b.to_vec(), expect(16, 4));
    // Zero pages of the RAM copy read as zero, physically too.
    let mut b = [1u8; 64];
    d.read_phys(0x1f000, &mut b).unwrap();
    assert_eq!(b, [0u8; 64]);
    assert!(d.read_phys(0x20000, &mut b).is_err());
    assert_eq!(d.translate(USER_CR3, 0x40_0010), Some(0x1e010));
}

#[test]
fn no_record_no_cr3_and_no_vcpus() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = note();
    n.guest_record = None;
    n.vcpus[0].regs.cr3 = 0;
    let path = write(dir.path(), &guest(), n.clone());
    let d = Dump::open(&path).unwrap();
    assert_eq!(d.prstatus(0).unwrap().rip, n.vcpus[0].regs.rip);
    // No user walk without a CR3.
    assert_eq!(walked(&d).len(), 2);
    n.vcpus.clear();
    let path = write(dir.path(), &guest(), n);
    let d = Dump::open(&path).unwrap();
    assert!(d.prstatus(0).is_none());
}

#[test]
fn page_tables_pointing_anywhere_do_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = guest();
    // Every PML4 entry of the master table points at garbage or itself.
    for i in 0..512u64 {
        let e = if i % 2 == 0 { 0x2000 | 3 } else { u64::MAX };
        let at = (BOOT_PML4_GPA + i * 8) as usize;
        g.ram[at..at + 8].copy_from_slice(&e.to_le_bytes());
    }
    let mut n = note();
    n.vcpus[0].regs.cr3 = u64::MAX;
    let path = write(dir.path(), &g, n);
    let d = Dump::open(&path).unwrap();
    assert_eq!(walked(&d).len(), 0, "{:#x?}", d.segments());
}

#[test]
fn writer_rejects_other_versions() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = note();
    n.format_version = 2;
    let err = write_core(
        &dir.path().join("x"),
        &DumpInput {
            memory: Memory::Ram(&[0; 4096]),
            note: n,
        },
    );
    assert!(matches!(
        err,
        Err(DumpError::UnsupportedVersion { found: 2, .. })
    ));
}

fn patched(src: &Path, dir: &Path, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut data = std::fs::read(src).unwrap();
    f(&mut data);
    let p = dir.join("patched.core");
    std::fs::write(&p, data).unwrap();
    p
}

fn find(data: &[u8], pat: &[u8]) -> usize {
    data.windows(pat.len())
        .position(|w| w == pat)
        .expect("pattern in dump")
}

#[test]
fn malformed_dumps_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), &guest(), note());
    let open = |f: &dyn Fn(&mut Vec<u8>)| Dump::open(&patched(&good, dir.path(), f));

    assert!(matches!(open(&|d| d[0] = b'X'), Err(DumpError::NotElf)));
    assert!(matches!(open(&|d| d[4] = 1), Err(DumpError::WrongClass)));
    assert!(matches!(open(&|d| d[16] = 2), Err(DumpError::NotCore(2))));
    assert!(matches!(
        open(&|d| d[18] = 3),
        Err(DumpError::WrongMachine(3))
    ));
    assert!(matches!(
        open(&|d| {
            let i = find(d, b"{\"format_version\"");
            d[i] = b'X';
        }),
        Err(DumpError::InvalidNote(_))
    ));
    assert!(matches!(
        open(&|d| {
            let i = find(d, b"\"format_version\":1");
            d[i + 17] = b'7';
        }),
        Err(DumpError::UnsupportedVersion { found: 7, .. })
    ));
    assert!(matches!(
        open(&|d| {
            let i = find(d, b"LAZARUS\0");
            d[i] = b'X';
        }),
        Err(DumpError::MissingNote)
    ));
    // A note header claiming more data than the segment holds.
    assert!(matches!(
        open(&|d| {
            let i = find(d, b"LAZARUS\0") - 12 + 4;
            d[i..i + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        }),
        Err(DumpError::BadNote { .. })
    ));
    // A program header pointing far past the end of the file.
    assert!(matches!(
        open(&|d| {
            let ph = 64 + 56 + 8; // p_offset of the first PT_LOAD
            d[ph..ph + 8].copy_from_slice(&(u64::MAX - 4).to_le_bytes());
        }),
        Err(DumpError::Malformed(_) | DumpError::TruncatedSegment { .. })
    ));
}

#[test]
fn truncated_dumps_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), &guest(), note());
    let len = std::fs::metadata(&good).unwrap().len() as usize;
    let notes_at = find(&std::fs::read(&good).unwrap(), b"CORE\0");
    for cut in [
        0,
        3,
        4,
        20,
        63,
        64,
        100,
        notes_at,
        notes_at + 200,
        0x1800,
        len / 2,
        len - 1,
    ] {
        let r = Dump::open(&patched(&good, dir.path(), |d| d.truncate(cut)));
        match r {
            Err(
                DumpError::NotElf
                | DumpError::TruncatedHeaders { .. }
                | DumpError::TruncatedSegment { .. },
            ) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn random_corruption_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), &guest(), note());
    let data = std::fs::read(&good).unwrap();
    let head = find(&data, b"LAZARUS\0") + 600;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let flips: Vec<(usize, u8)> = (0..1 + next() % 4)
            .map(|_| ((next() as usize) % head, next() as u8))
            .collect();
        let p = patched(&good, dir.path(), |d| {
            for (at, v) in &flips {
                d[*at] = *v;
            }
        });
        if let Ok(d) = Dump::open(&p) {
            // Reading through whatever segments survived must not panic.
            let mut b = [0u8; 64];
            for s in d.segments().to_vec() {
                let _ = d.read_virt(s.vaddr, &mut b);
                let _ = d.read_phys(s.paddr, &mut b);
            }
        }
    }
}

#[test]
fn bytes_read_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), &guest(), note());
    let data = std::fs::read(&good).unwrap();
    let d = Dump::from_bytes(data.clone()).expect("from_bytes");
    let f = Dump::open(&good).expect("open");
    assert_eq!(d.path(), Path::new(IN_MEMORY_PATH));
    assert_eq!(d.note(), f.note());
    assert_eq!(d.segments(), f.segments());
    assert_eq!(d.file_len(), f.file_len());
    assert_eq!(
        (d.prstatus(0), d.prstatus(1)),
        (f.prstatus(0), f.prstatus(1))
    );
    assert_eq!(
        read_virt(&d, KSTACK_VA, 4096),
        read_virt(&f, KSTACK_VA, 4096)
    );
    assert_eq!(d.translate(USER_CR3, 0x40_0010), Some(USER_PA + 0x10));
    // The same typed errors, truncated or not.
    let notes_at = find(&data, b"CORE\0");
    for cut in [0, 3, 63, 100, notes_at, data.len() - 1] {
        let from_file = Dump::open(&patched(&good, dir.path(), |d| d.truncate(cut)));
        let from_bytes = Dump::from_bytes(data[..cut].to_vec());
        assert_eq!(
            format!("{:?}", from_bytes.map(|_| ())),
            format!("{:?}", from_file.map(|_| ())),
            "cut at {cut}"
        );
    }
}
