use std::vec;
use std::vec::Vec;

use super::entry::*;
use super::*;
use crate::test_util::TableBuilder;
use core::ops::Range;

const W: u64 = 1 << 1;
const U: u64 = 1 << 2;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const PML4: u64 = 0x1000;
/// Every entry sets these ignored bits: available 11:9 and 62:52.
const IGNORED: u64 = 0x7ff0_0000_0000_0e00;

fn ram(size: u64) -> Vec<u8> {
    vec![0u8; size as usize]
}

/// Every event of a walk.
fn events(
    mem: &[u8],
    cr3: u64,
    range: Range<u64>,
    limits: Limits,
) -> (Vec<Visit>, Result<(), WalkError>) {
    let mut out = Vec::new();
    let r = walk_range(mem, cr3, range, limits, |v| {
        out.push(v);
        VisitControl::Continue
    });
    (out, r)
}

fn leaves(v: &[Visit]) -> Vec<Leaf> {
    v.iter()
        .filter_map(|v| match v {
            Visit::Leaf(l) => Some(*l),
            _ => None,
        })
        .collect()
}

fn tables(v: &[Visit]) -> Vec<u64> {
    v.iter()
        .filter_map(|v| match v {
            Visit::Table { pa, .. } => Some(*pa),
            _ => None,
        })
        .collect()
}

fn skipped(v: &[Visit]) -> Vec<WalkError> {
    v.iter()
        .filter_map(|v| match v {
            Visit::Skipped { error, .. } => Some(*error),
            _ => None,
        })
        .collect()
}

#[test]
fn translates_4k_pages_with_permissions() {
    let mut r = ram(MIB);
    let mut b = TableBuilder {
        ram: &mut r,
        next: 0x10000,
    };
    let k = 0xffff_ff00_0000_0000u64;
    b.map(PML4, k, 0x8_0000, W | NX);
    b.map(PML4, 0x40_0000, 0x9_0000, U);
    b.map(PML4, 0x40_1000, 0x9_1000, U | W);
    let t = translate(&r[..], PML4, k + 0x123).unwrap();
    assert_eq!(
        t,
        Translation {
            pa: 0x8_0123,
            size: PageSize::Size4K,
            writable: true,
            user: false,
            executable: false
        }
    );
    assert_eq!(t.frame(), 0x8_0000);
    let t = translate(&r[..], PML4, 0x40_0fff).unwrap();
    assert_eq!(
        (t.pa, t.writable, t.user, t.executable),
        (0x9_0fff, false, true, true)
    );
    assert!(translate(&r[..], PML4, 0x40_1000).unwrap().writable);
    // PCID / PCD / PWT bits of CR3 are not address bits.
    assert_eq!(translate(&r[..], PML4 | 0xfff, k).unwrap().pa, 0x8_0000);
    assert_eq!(
        translate(&r[..], PML4, 0x40_2000),
        Err(WalkError::NotPresent { level: Level::Pt })
    );
    assert_eq!(
        translate(&r[..], PML4, 0x60_0000),
        Err(WalkError::NotPresent { level: Level::Pd })
    );
    assert_eq!(
        translate(&r[..], PML4, 0x4000_0000),
        Err(WalkError::NotPresent { level: Level::Pdpt })
    );
    assert_eq!(
        translate(&r[..], PML4, 0x80_0000_0000),
        Err(WalkError::NotPresent { level: Level::Pml4 })
    );
}

#[test]
fn translates_large_pages() {
    let mut r = ram(4 * MIB);
    let mut b = TableBuilder {
        ram: &mut r,
        next: 0x10000,
    };
    let big = 0xffff_8000_0020_0000u64;
    b.map_2m(PML4, big, 0x20_0000, W);
    // Bit 12 of a large-page entry is PAT, not an address bit.
    b.map_2m(PML4, big + 2 * MIB, 0x20_0000 | 1 << 12, 0);
    b.map_1g(PML4, 0x40_0000_0000, 0, U);
    let t = translate(&r[..], PML4, big + 0x1_2345).unwrap();
    assert_eq!(
        (t.pa, t.size, t.frame()),
        (0x21_2345, PageSize::Size2M, 0x20_0000)
    );
    assert_eq!(
        translate(&r[..], PML4, big + 2 * MIB + 8).unwrap().pa,
        0x20_0008
    );
    let t = translate(&r[..], PML4, 0x40_0000_0000 + 0x3f_fff8).unwrap();
    assert_eq!((t.pa, t.size, t.user), (0x3f_fff8, PageSize::Size1G, true));
    // The 1 GiB page reaches past the 4 MiB of memory: its bytes there do
    // not translate.
    assert_eq!(
        translate(&r[..], PML4, 0x40_0000_0000 + 4 * MIB),
        Err(WalkError::OutsideMemory { pa: 4 * MIB })
    );
}

#[test]
fn reserved_bits_are_errors() {
    let mut r = ram(MIB);
    let mut b = TableBuilder {
        ram: &mut r,
        next: 0x10000,
    };
    // PS in a PML4 entry.
    b.set(PML4, 0x2000 | PS | 1);
    assert_eq!(
        translate(&r[..], PML4, 0x1234),
        Err(WalkError::ReservedBit {
            level: Level::Pml4,
            entry: 0x2000 | PS | 1
        })
    );
    let mut b = TableBuilder {
        ram: &mut r,
        next: 0x10000,
    };
    b.set(PML4, 0);
    // A 2 MiB frame that is not 2 MiB aligned (bit 13 set).
    b.map_2m(PML4, 0x4000_0000, 0x20_0000 | 1 << 13, 0);
    assert!(matches!(
        translate(&r[..], PML4, 0x4000_0000),
        Err(WalkError::ReservedBit {
            level: Level::Pd,
            ..
        })
    ));
    // A 1 GiB frame with bit 29 set.
    let mut b = TableBuilder {
        ram: &mut r,
        next: 0x30000,
    };
    b.map_1g(PML4, 0x80_0000_0000, 1 << 29, 0);
    assert!(matches!(
        translate(&r[..], PML4, 0x80_0000_0000),
        Err(WalkError::ReservedBit {
            level: Level::Pdpt,
            ..
        })
    ));
    // A walk reports them as skipped and goes on.
    let (v, res) = events(&r[..], PML4, 0..u64::MAX, Limits::DEFAULT);
    assert_eq!(res, Ok(()));
    assert!(leaves(&v).is_empty());
    assert_eq!(skipped(&v).len(), 2);
}

#[test]
fn ignored_bits_are_masked() {
    let mut r = ram(MIB);
    let pdpt = 0x2000u64;
    let pd = 0x3000u64;
    let pt = 0x4000u64;
    let va = 0xffff_ff00_0000_5000u64;
    let mut b = TableBuilder {
        ram: &mut r,
        next: 0x10000,
    };
    let slot = |t: u64, level: u32| t + ((va >> (12 + 9 * level)) & 0x1ff) * 8;
    b.set(slot(PML4, 3), pdpt | IGNORED | 0x7);
    b.set(slot(pdpt, 2), pd | IGNORED | NX | 0x7);
    b.set(slot(pd, 1), pt | IGNORED | 0x7);
    b.set(slot(pt, 0), 0x7_0000 | IGNORED | 0x7);
    let t = translate(&b.ram[..], PML4, va + 0x10).unwrap();
    assert_eq!(
        (t.pa, t.executable, t.writable, t.user),
        (0x7_0010, false, true, true)
    );
    let (v, res) = events(&b.ram[..], PML4, va..va + 1, Limits::DEFAULT);
    assert_eq!(res, Ok(()));
    assert_eq!(tables(&v), vec![PML4, pdpt, pd, pt]);
    assert_eq!(
        leaves(&v),
        vec![Leaf {
            va,
            pa: 0x7_0000,
            size: PageSize::Size4K,
            writable: true,
            user: true,
            executable: false
        }]
    );
    // Bits 51:48 are address bits: set, they point past memory.
    b.set(slot(pt, 0), 0x7_0000 | 1 << 51 | 0x7);
    assert_eq!(
        translate(&b.ram[..], PML4, va),
        Err(WalkError::OutsideMemory {
            pa: 0x8_0000_0007_0000
        })
    );
}

#[test]
fn canonical_addresses() {
    for va in [0, 0x7fff_ffff_ffff, 0xffff_8000_0000_0000, u64::MAX] {
        assert!(is_canonical(va), "{va:#x}");
    }
    for va in [
        0x8000_0000_0000,
        0xffff_7fff_ffff_ffff,
        0x0001_0000_0000_0000,
        1 << 63,
    ] {
        assert!(!is_canonical(va), "{va:#x}");
        assert_eq!(
            translate(&[0u8; 8192][..], 0, va),
            Err(WalkError::NonCanonical { va })
        );
    }
    // The walk sign-extends PML4 slots 256.. into the upper half.
    let mut r = ram(MIB);
    let mut b = TableBuilder {
        ram: &mut r,
        next: 0x10000,
    };
    b.map(PML4, 0xffff_8000_0000_0000, 0x5000, 0);
    b.map(PML4, 0xffff_ffff_ffff_f000, 0x6000, 0);
    b.map(PML4, 0x7fff_ffff_f000, 0x7000, 0);
    let (v, _) = events(&r[..], PML4, 0..u64::MAX, Limits::DEFAULT);
    let got: Vec<u64> = leaves(&v).iter().map(|l| l.va).collect();
    assert_eq!(
        got,
        vec![
            0x7fff_ffff_f000,
            0xffff_8000_0000_0000,
            0xffff_ffff_ffff_f000
        ]
    );
    // The lower half only.
    let (v, _) = events(&r[..], PML4, 0..0x8000_0000_0000, Limits::DEFAULT);
    assert_eq!(leaves(&v).len(), 1);
    let (v, _) = events(
        &r[..],
        PML4,
        0xffff_ffff_ffff_f000..u64::MAX,
        Limits::DEFAULT,
    );
    assert_eq!(leaves(&v)[0].pa, 0x6000);
}

#[test]
fn entries_past_memory() {
    // Not a whole number of pages, so that frames can straddle the end.
    let size = 0x1_0800;
    let mut r = ram(size);
    let mut b = TableBuilder {
        ram: &mut r,
        next: 0x2000,
    };
    // A PDPT past memory, one straddling its end.
    b.set(PML4, 0x4000_0000 | 3);
    b.set(PML4 + 8, 0x1_0000 | 3);
    let k = 0x100_0000_0000u64;
    // A page straddling the end, one past it, one inside.
    b.map(PML4, k, 0x1_0000, W);
    b.map(PML4, k + 0x1000, 0x2_0000, W);
    b.map(PML4, k + 0x2000, 0xf000, W);
    assert_eq!(
        translate(&r[..], PML4, 0x10),
        Err(WalkError::OutsideMemory { pa: 0x4000_0000 })
    );
    assert_eq!(
        translate(&r[..], PML4, 0x80_0000_0000),
        Err(WalkError::OutsideMemory { pa: 0x1_0000 })
    );
    // Translation needs the byte in memory, not the whole page.
    assert_eq!(
        translate(&r[..], PML4, k + 0x7ff).map(|t| t.pa),
        Ok(0x1_07ff)
    );
    assert_eq!(
        translate(&r[..], PML4, k + 0x800),
        Err(WalkError::OutsideMemory { pa: 0x1_0800 })
    );
    assert_eq!(
        translate(&r[..], PML4, k + 0x1000),
        Err(WalkError::OutsideMemory { pa: 0x2_0000 })
    );
    assert_eq!(
        translate(&r[..], PML4, k + 0x2008).map(|t| t.pa),
        Ok(0xf008)
    );
    // CR3 past memory, straddling its end, at the top of the address space.
    for cr3 in [0x2_0000, 0x1_0000, u64::MAX] {
        assert!(matches!(
            translate(&r[..], cr3, 0),
            Err(WalkError::OutsideMemory { .. })
        ));
        assert!(matches!(
            walk_range(&r[..], cr3, 0..u64::MAX, Limits::DEFAULT, |_| {
                VisitControl::Continue
            }),
            Err(WalkError::OutsideMemory { .. })
        ));
    }
    // A walk reports only whole pages in memory and skips the rest.
    let (v, res) = events(&r[..], PML4, 0..u64::MAX, Limits::DEFAULT);
    assert_eq!(res, Ok(()));
    let l = leaves(&v);
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].va, l[0].pa), (k + 0x2000, 0xf000));
    assert_eq!(
        skipped(&v),
        vec![
            WalkError::OutsideMemory { pa: 0x4000_0000 },
            WalkError::OutsideMemory { pa: 0x1_0000 },
            WalkError::OutsideMemory { pa: 0x1_0000 },
            WalkError::OutsideMemory { pa: 0x2_0000 },
        ]
    );
    // No memory at all.
    assert!(translate(&[][..], 0, 0).is_err());
}

#[test]
fn self_referencing_tables_are_cycles() {
    let mut r = ram(MIB);
    let mut b = TableBuilder {
        ram: &mut r,
        next: 0x10000,
    };
    // Every entry points back at the PML4.
    for i in 0..512 {
        b.set(PML4 + i * 8, PML4 | 3);
    }
    assert_eq!(
        translate(&r[..], PML4, 0x1234),
        Err(WalkError::Cycle { table: PML4 })
    );
    let (v, res) = events(&r[..], PML4, 0..u64::MAX, Limits::DEFAULT);
    assert_eq!(res, Ok(()));
    assert_eq!(tables(&v), vec![PML4]);
    assert_eq!(skipped(&v).len(), 512);
    assert!(
        skipped(&v)
            .iter()
            .all(|e| *e == WalkError::Cycle { table: PML4 })
    );

    // A PD entry pointing at its PDPT: a cycle two levels down.
    let mut r = ram(MIB);
    let mut b = TableBuilder {
        ram: &mut r,
        next: 0x10000,
    };
    b.map(PML4, 0x20_0000, 0x5000, 0);
    let pdpt = b.get(PML4) & ADDR_MASK;
    let pd = b.get(pdpt) & ADDR_MASK;
    b.set(pd + 8, pdpt | 3);
    assert_eq!(
        translate(&b.ram[..], PML4, 0x20_0000),
        Err(WalkError::Cycle { table: pdpt })
    );
    assert_eq!(
        translate(&b.ram[..], PML4, 0).map(|t| t.pa),
        Err(WalkError::NotPresent { level: Level::Pd })
    );
    // A leaf mapping a page-table frame is not a cycle.
    b.map(PML4, 0x1000, pd, 0);
    assert_eq!(translate(&b.ram[..], PML4, 0x1008).unwrap().pa, pd + 8);
}

/// One table per level, every entry of each pointing at the next: 512^3
/// page tables' worth of paths and 512^4 leaves.
fn shared_tables() -> Vec<u8> {
    let mut r = ram(MIB);
    let mut b = TableBuilder {
        ram: &mut r,
        next: 0x10000,
    };
    for (t, next) in [
        (PML4, 0x2000),
        (0x2000, 0x3000),
        (0x3000, 0x4000),
        (0x4000, 0x5000),
    ] {
        for i in 0..512 {
            b.set(t + i * 8, next | 3);
        }
    }
    r
}

#[test]
fn shared_tables_are_bounded() {
    let r = shared_tables();
    let limits = Limits {
        max_tables: 100,
        max_leaves: 1 << 20,
    };
    let (v, res) = events(&r[..], PML4, 0..u64::MAX, limits);
    assert_eq!(res, Err(WalkError::Budget));
    assert_eq!(tables(&v).len(), 100);
    let limits = Limits {
        max_tables: 1 << 20,
        max_leaves: 1000,
    };
    let (v, res) = events(&r[..], PML4, 0..u64::MAX, limits);
    assert_eq!(res, Err(WalkError::Budget));
    assert_eq!(leaves(&v).len(), 1000);
    // The default budget finishes quickly too.
    let mut n = 0u64;
    let res = walk_range(&r[..], PML4, 0..u64::MAX, Limits::DEFAULT, |_| {
        n += 1;
        VisitControl::Continue
    });
    assert_eq!(res, Err(WalkError::Budget));
    assert!(n <= (Limits::DEFAULT.max_tables + Limits::DEFAULT.max_leaves) as u64);
    // A visitor skipping tables it has seen reads each once.
    let mut seen = Vec::new();
    let mut leaves = 0;
    let res = walk_range(&r[..], PML4, 0..u64::MAX, Limits::DEFAULT, |v| match v {
        Visit::Table { pa, .. } if seen.contains(&pa) => VisitControl::Skip,
        Visit::Table { pa, .. } => {
            seen.push(pa);
            VisitControl::Continue
        }
        Visit::Leaf(_) => {
            leaves += 1;
            VisitControl::Continue
        }
        Visit::Skipped { .. } => VisitControl::Continue,
    });
    assert_eq!(res, Ok(()));
    assert_eq!(seen, vec![PML4, 0x2000, 0x3000, 0x4000]);
    assert_eq!(leaves, 512);
}

#[test]
fn walk_reports_tables_leaves_and_stops() {
    let mut r = ram(8 * MIB);
    let mut b = TableBuilder {
        ram: &mut r,
        next: 0x10000,
    };
    let k = 0xffff_ff00_0000_0000u64;
    b.map(PML4, k + 0x1000, 0x8_0000, W);
    b.map(PML4, k + 0x2000, 0x8_1000, W);
    b.map_2m(PML4, k + 0x20_0000, 0x40_0000, 0);
    b.map(PML4, 0x40_0000, 0x9_0000, U);
    // A 2 MiB page only partly in the range is reported whole.
    let (v, res) = events(&r[..], PML4, k + 0x2000..k + 0x20_1000, Limits::DEFAULT);
    assert_eq!(res, Ok(()));
    let l = leaves(&v);
    assert_eq!(l.len(), 2);
    assert_eq!((l[0].va, l[0].pa), (k + 0x2000, 0x8_1000));
    assert_eq!(
        (l[1].va, l[1].pa, l[1].size),
        (k + 0x20_0000, 0x40_0000, PageSize::Size2M)
    );
    // Tables are reported before their contents, with the first VA they map.
    assert_eq!(
        v[..4],
        [
            Visit::Table {
                pa: PML4,
                level: Level::Pml4,
                va: 0
            },
            Visit::Table {
                pa: 0x10000,
                level: Level::Pdpt,
                va: k
            },
            Visit::Table {
                pa: 0x11000,
                level: Level::Pd,
                va: k
            },
            Visit::Table {
                pa: 0x12000,
                level: Level::Pt,
                va: k
            },
        ]
    );
    // Stop ends the walk at once, successfully.
    let mut n = 0;
    let res = walk_range(&r[..], PML4, 0..u64::MAX, Limits::DEFAULT, |v| {
        if matches!(v, Visit::Leaf(_)) {
            n += 1;
            return VisitControl::Stop;
        }
        VisitControl::Continue
    });
    assert_eq!((res, n), (Ok(()), 1));
    // Skipping the root reads nothing.
    let mut n = 0;
    let res = walk_range(&r[..], PML4, 0..u64::MAX, Limits::DEFAULT, |_| {
        n += 1;
        VisitControl::Skip
    });
    assert_eq!((res, n), (Ok(()), 1));
    // An empty range visits nothing.
    let (v, res) = events(&r[..], PML4, 5..5, Limits::DEFAULT);
    assert_eq!((v.len(), res), (0, Ok(())));
}

#[test]
fn ranges_translate_only_when_contiguous() {
    let mut r = ram(8 * MIB);
    let mut b = TableBuilder {
        ram: &mut r,
        next: 0x10000,
    };
    let va = 0xffff_ff00_0001_0000u64;
    b.map(PML4, va, 0x5_0000, W);
    b.map(PML4, va + 0x1000, 0x5_1000, W);
    b.map(PML4, va + 0x2000, 0x4_0000, W);
    assert_eq!(
        translate_range(&b.ram[..], PML4, va + 0xffc, 8),
        Ok(0x5_0ffc)
    );
    assert_eq!(translate_range(&b.ram[..], PML4, va, 0x2000), Ok(0x5_0000));
    assert_eq!(
        translate_range(&b.ram[..], PML4, va + 0x1ffc, 8),
        Err(WalkError::Discontiguous { va: va + 0x2000 })
    );
    assert_eq!(
        translate_range(&b.ram[..], PML4, va + 0x2ffc, 8),
        Err(WalkError::NotPresent { level: Level::Pt })
    );
    assert_eq!(
        translate_range(&b.ram[..], PML4, va, 0),
        Err(WalkError::BadRange { va, len: 0 })
    );
    assert_eq!(
        translate_range(&b.ram[..], PML4, u64::MAX, 2),
        Err(WalkError::BadRange {
            va: u64::MAX,
            len: 2
        })
    );
    // Across two physically adjacent 2 MiB pages.
    let big = 0xffff_8000_0000_0000u64;
    b.map_2m(PML4, big, 0x20_0000, 0);
    b.map_2m(PML4, big + 2 * MIB, 0x40_0000, 0);
    assert_eq!(
        translate_range(&b.ram[..], PML4, big + 0x1f_fff0, 0x20),
        Ok(0x3f_fff0)
    );
    assert_eq!(
        translate_range(&b.ram[..], PML4, big, 4 * MIB),
        Ok(0x20_0000)
    );
    // Into the non-canonical hole.
    b.map(PML4, 0x7fff_ffff_f000, 0x6000, 0);
    assert_eq!(
        translate_range(&b.ram[..], PML4, 0x7fff_ffff_fff0, 0x20),
        Err(WalkError::NonCanonical {
            va: 0x8000_0000_0000
        })
    );
    // A 1 GiB page reaching past memory.
    b.map_1g(PML4, GIB, 0, 0);
    assert_eq!(
        translate_range(&b.ram[..], PML4, GIB + 8 * MIB - 8, 8),
        Ok(8 * MIB - 8)
    );
    assert_eq!(
        translate_range(&b.ram[..], PML4, GIB + 8 * MIB - 8, 9),
        Err(WalkError::OutsideMemory { pa: 8 * MIB - 8 })
    );
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The translation a walk's leaf promises for its first byte.
fn leaf_translation(l: &Leaf) -> Translation {
    Translation {
        pa: l.pa,
        size: l.size,
        writable: l.writable,
        user: l.user,
        executable: l.executable,
    }
}

/// Random tables whose entries mostly point inside memory, with random
/// flag bits: nothing panics, everything reported is in memory and within
/// the limits, and the walk and `translate` agree.
#[test]
fn random_tables_never_panic() {
    let size: u64 = 64 * 1024;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut r = ram(size);
    let limits = Limits {
        max_tables: 64,
        max_leaves: 256,
    };
    let (mut translated, mut deep_walks, mut all_leaves) = (0, 0, 0);
    for round in 0..3000 {
        // Rewrite part of memory each round: entries pointing at frames in
        // memory, at bytes in or past it, or all garbage, with random flag
        // and ignored bits.
        for _ in 0..256 {
            let at = (rng.next() % (size / 8)) * 8;
            let flags = rng.next() & (0xfff | NX | 0x7ff0_0000_0000_0000);
            let e = match rng.next() % 8 {
                0 => rng.next(),
                1 => (rng.next() % size) | flags,
                2 => (rng.next() % (size * 4)) | flags | 1,
                _ => ((rng.next() % (size / 4096)) * 4096) | flags | 1,
            };
            r[at as usize..at as usize + 8].copy_from_slice(&e.to_le_bytes());
        }
        let cr3 = if round % 10 == 0 {
            rng.next()
        } else {
            (rng.next() % size) & ADDR_MASK
        };
        let (start, end) = if round % 2 == 0 {
            (0, u64::MAX)
        } else {
            let start = rng.next();
            (start, start.saturating_add(rng.next() >> (rng.next() % 64)))
        };
        let (mut t, mut found) = (0, Vec::new());
        let _ = walk_range(&r[..], cr3, start..end, limits, |v| {
            match v {
                Visit::Table { pa, .. } => {
                    t += 1;
                    assert!(pa + 4096 <= size);
                }
                Visit::Leaf(leaf) => {
                    assert!(leaf.pa + leaf.size.bytes() <= size);
                    assert!(is_canonical(leaf.va));
                    assert_eq!(leaf.va & (leaf.size.bytes() - 1), 0);
                    assert!(leaf.va < end && leaf.va + (leaf.size.bytes() - 1) >= start);
                    found.push(leaf);
                }
                Visit::Skipped { .. } => {}
            }
            VisitControl::Continue
        });
        assert!(t <= limits.max_tables && found.len() <= limits.max_leaves);
        deep_walks += usize::from(t > 3);
        all_leaves += found.len();
        // Every leaf the walk found translates to the same page.
        for l in found.iter().take(8) {
            let last = l.va + (l.size.bytes() - 1);
            assert_eq!(translate(&r[..], cr3, l.va), Ok(leaf_translation(l)));
            assert_eq!(
                translate(&r[..], cr3, last).map(|t| t.pa),
                Ok(l.pa + (last - l.va))
            );
            assert_eq!(translate_range(&r[..], cr3, l.va, l.size.bytes()), Ok(l.pa));
        }
        // And a random address translates iff a walk of it finds a leaf.
        let va = match found.first() {
            Some(l) if round % 3 == 0 => l.va + rng.next() % l.size.bytes(),
            _ => rng.next(),
        };
        let t = translate(&r[..], cr3, va);
        let (v, _) = events(&r[..], cr3, va..va + 1, Limits::DEFAULT);
        match (t, leaves(&v).as_slice()) {
            (Ok(t), [l]) => {
                translated += 1;
                assert_eq!(t.pa, l.pa + (va - l.va));
                assert_eq!(t.size, l.size);
            }
            // A page only partly in memory translates but is not a leaf.
            (Ok(t), []) => {
                assert!(skipped(&v).contains(&WalkError::OutsideMemory { pa: t.frame() }))
            }
            (Err(_), []) => {}
            (t, l) => panic!("translate {t:?} but walk {l:?}"),
        }
        let _ = translate_range(&r[..], cr3, va, rng.next() % 0x3000);
    }
    // The loop exercised real walks, not only garbage at the root.
    assert!(
        translated > 100 && deep_walks > 100 && all_leaves > 1000,
        "{translated} {deep_walks} {all_leaves}"
    );
    // All ones: every entry present, large, reserved, past memory.
    let ff = vec![0xffu8; size as usize];
    assert!(translate(&ff[..], 0x1000, 0x1234).is_err());
    let (v, _) = events(&ff[..], 0x1000, 0..u64::MAX, Limits::DEFAULT);
    assert!(leaves(&v).is_empty());
}

#[cfg(feature = "alloc")]
mod runs {
    use super::*;

    #[test]
    fn mappings_coalesce_runs() {
        let mut r = ram(MIB);
        let mut b = TableBuilder {
            ram: &mut r,
            next: 0x10000,
        };
        let k = 0xffff_ff00_0000_0000u64;
        // Three pages contiguous in both spaces, then a physical gap.
        for i in 0..3 {
            b.map(PML4, k + i * 4096, 0x8_0000 + i * 4096, W | NX);
        }
        b.map(PML4, k + 3 * 4096, 0x9_0000, W | NX);
        b.map(PML4, 0x40_0000, 0xa_0000, U);
        b.map(PML4, 0xffff_ffff_c000_0000, 0xb_0000, 0);
        b.map(PML4, k + 0x10_0000, 0x4000_0000, W);
        let m = mappings(&r[..], PML4, k..k + 0x100_0000, Limits::DEFAULT);
        assert_eq!(
            m.runs,
            vec![
                Run {
                    va: k,
                    pa: 0x8_0000,
                    len: 3 * 4096,
                    writable: true,
                    user: false,
                    executable: false
                },
                Run {
                    va: k + 3 * 4096,
                    pa: 0x9_0000,
                    len: 4096,
                    writable: true,
                    user: false,
                    executable: false
                },
            ]
        );
        assert_eq!(m.tables, vec![PML4, 0x10000, 0x11000, 0x12000]);
        assert_eq!(m.error, None);
        let user = mappings_with(&r[..], PML4, 0..0x8000_0000_0000, Limits::DEFAULT, |l| {
            l.user
        });
        assert_eq!(user.runs.len(), 1);
        assert_eq!((user.runs[0].va, user.runs[0].pa), (0x40_0000, 0xa_0000));
        // Shared tables are read once each.
        let s = shared_tables();
        let m = mappings(&s[..], PML4, 0..u64::MAX, Limits::DEFAULT);
        assert_eq!(m.tables, vec![PML4, 0x2000, 0x3000, 0x4000]);
        assert_eq!(m.runs.len(), 512);
        assert_eq!(m.error, None);
        // A root past memory.
        let m = mappings(&r[..], 1 << 40, 0..u64::MAX, Limits::DEFAULT);
        assert!(m.runs.is_empty());
        assert_eq!(m.error, Some(WalkError::OutsideMemory { pa: 1 << 40 }));
    }
}
