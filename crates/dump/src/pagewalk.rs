//! Walking a crashed guest's x86-64 page tables.
//!
//! The guest is not trusted and has just crashed, so its tables may be
//! garbage: entries may point past RAM, two entries may share a table (or
//! a table may point back at itself), and large pages may appear where we
//! expect 4 KiB ones. The walk skips all of that and bounds its work.

use std::collections::HashSet;
use std::ops::Range;

use lazarus_abi::layout::PAGE_SIZE;

const P: u64 = 1;
const W: u64 = 1 << 1;
const U: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;
/// Physical-address bits of an entry.
const ADDR: u64 = 0x000f_ffff_ffff_f000;
/// At most this many 4 KiB leaves per walk (16 GiB of mappings): a
/// corrupted table cannot make the dump writer run away.
const MAX_LEAVES: usize = 1 << 22;

/// Read access to guest-physical memory.
pub trait PhysMem {
    /// Bytes of RAM from guest-physical 0.
    fn ram_size(&self) -> u64;
    /// The little-endian quadword at `pa`, if it lies in RAM.
    fn read_u64(&self, pa: u64) -> Option<u64>;
}

impl PhysMem for [u8] {
    fn ram_size(&self) -> u64 {
        self.len() as u64
    }
    fn read_u64(&self, pa: u64) -> Option<u64> {
        let start = usize::try_from(pa).ok()?;
        let bytes = self.get(start..start.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

/// A run of virtual pages mapped to contiguous physical frames with the
/// same permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub va: u64,
    pub pa: u64,
    pub len: u64,
    pub writable: bool,
    pub executable: bool,
    pub user: bool,
}

/// Sign-extends a 48-bit virtual address to canonical form.
fn canonical(va: u64) -> u64 {
    if va & (1 << 47) != 0 {
        va | 0xffff_0000_0000_0000
    } else {
        va & 0x0000_ffff_ffff_ffff
    }
}

fn table_ok(mem: &(impl PhysMem + ?Sized), pa: u64) -> bool {
    pa.checked_add(PAGE_SIZE)
        .is_some_and(|end| end <= mem.ram_size())
}

struct Walk<'m, M: PhysMem + ?Sized> {
    mem: &'m M,
    range: Range<u64>,
    seen: HashSet<u64>,
    out: Vec<Mapping>,
    leaves: usize,
}

impl<M: PhysMem + ?Sized> Walk<'_, M> {
    /// Visits the table at `table` (level 3 = PML4 ... 0 = page table)
    /// covering virtual addresses from `base`. `flags` accumulates the
    /// restrictions of the upper levels (W and U must be set at every
    /// level, NX at any level forbids execution).
    fn table(&mut self, table: u64, level: u32, base: u64, w: bool, u: bool, nx: bool) {
        if !table_ok(self.mem, table) || !self.seen.insert(table) {
            return;
        }
        let span = 1u64 << (12 + 9 * level);
        for i in 0..512u64 {
            if self.leaves >= MAX_LEAVES {
                return;
            }
            let va = canonical(base.wrapping_add(i.wrapping_mul(span)));
            let end = va.wrapping_add(span);
            // Skip entries wholly outside the range (end may wrap to 0 at
            // the very top of the address space).
            if va >= self.range.end || (end != 0 && end <= self.range.start) {
                continue;
            }
            let Some(e) = self.mem.read_u64(table + i * 8) else {
                return;
            };
            if e & P == 0 {
                continue;
            }
            let (w, u, nx) = (w && e & W != 0, u && e & U != 0, nx || e & NX != 0);
            let pa = e & ADDR;
            if level == 0 {
                if table_ok(self.mem, pa) {
                    self.leaves += 1;
                    self.push(va, pa, w, u, !nx);
                }
            } else if e & PS == 0 {
                self.table(pa, level - 1, va, w, u, nx);
            }
            // A large page: the regions we walk use 4 KiB pages only, and
            // the kernel windows are dumped whole anyway; skip it.
        }
    }

    fn push(&mut self, va: u64, pa: u64, writable: bool, user: bool, executable: bool) {
        if let Some(last) = self.out.last_mut()
            && last.va.wrapping_add(last.len) == va
            && last.pa.wrapping_add(last.len) == pa
            && (last.writable, last.user, last.executable) == (writable, user, executable)
        {
            last.len += PAGE_SIZE;
            return;
        }
        self.out.push(Mapping {
            va,
            pa,
            len: PAGE_SIZE,
            writable,
            executable,
            user,
        });
    }
}

/// Every present 4 KiB mapping of `pml4` inside `range`, in address order,
/// coalesced into runs contiguous both virtually and physically.
pub fn mappings(mem: &(impl PhysMem + ?Sized), pml4: u64, range: Range<u64>) -> Vec<Mapping> {
    let mut walk = Walk {
        mem,
        range,
        seen: HashSet::new(),
        out: Vec::new(),
        leaves: 0,
    };
    walk.table(pml4 & ADDR, 3, 0, true, true, false);
    walk.out
}

/// Translates `va` through `pml4` (4 KiB, 2 MiB and 1 GiB pages).
pub fn translate(mem: &(impl PhysMem + ?Sized), pml4: u64, va: u64) -> Option<u64> {
    let mut table = pml4 & ADDR;
    for level in (0..4u32).rev() {
        if !table_ok(mem, table) {
            return None;
        }
        let index = (va >> (12 + 9 * level)) & 0x1ff;
        let e = mem.read_u64(table + index * 8)?;
        if e & P == 0 {
            return None;
        }
        let size = 1u64 << (12 + 9 * level);
        if level == 0 || (e & PS != 0 && level < 3) {
            return Some((e & ADDR & !(size - 1)) + (va & (size - 1)));
        }
        table = e & ADDR;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds page tables inside a RAM image, allocating table frames
    /// from `next`.
    pub struct Builder<'a> {
        pub ram: &'a mut [u8],
        pub next: u64,
    }

    impl Builder<'_> {
        pub fn set(&mut self, pa: u64, v: u64) {
            let i = pa as usize;
            self.ram[i..i + 8].copy_from_slice(&v.to_le_bytes());
        }
        pub fn get(&self, pa: u64) -> u64 {
            let i = pa as usize;
            u64::from_le_bytes(self.ram[i..i + 8].try_into().unwrap())
        }
        /// Maps `va` to `pa` (4 KiB) with `flags` (P added).
        pub fn map(&mut self, pml4: u64, va: u64, pa: u64, flags: u64) {
            let mut t = pml4;
            for level in (1..4).rev() {
                let slot = t + ((va >> (12 + 9 * level)) & 0x1ff) * 8;
                let e = self.get(slot);
                t = if e & P == 0 {
                    let f = self.next;
                    self.next += PAGE_SIZE;
                    self.set(slot, f | P | W | U);
                    f
                } else {
                    e & ADDR
                };
            }
            self.set(t + ((va >> 12) & 0x1ff) * 8, pa | flags | P);
        }
    }

    #[test]
    fn walks_coalesces_and_translates() {
        let mut ram = vec![0u8; 1 << 20];
        let mut b = Builder {
            ram: &mut ram,
            next: 0x10000,
        };
        let pml4 = 0x1000;
        let k = 0xffff_ff00_0000_0000u64;
        // Three pages contiguous in both spaces, then a physical gap.
        for i in 0..3 {
            b.map(pml4, k + i * 4096, 0x80000 + i * 4096, W | NX);
        }
        b.map(pml4, k + 3 * 4096, 0x90000, W | NX);
        // A user page.
        b.map(pml4, 0x40_0000, 0xa0000, U);
        // A page outside the requested range.
        b.map(pml4, 0xffff_ffff_c000_0000, 0xb0000, 0);
        // An entry pointing past RAM.
        b.map(pml4, k + 0x10_0000, 0x4000_0000, W);
        let m = mappings(&ram[..], pml4, k..k + 0x100_0000);
        assert_eq!(
            m,
            vec![
                Mapping {
                    va: k,
                    pa: 0x80000,
                    len: 3 * 4096,
                    writable: true,
                    executable: false,
                    user: false
                },
                Mapping {
                    va: k + 3 * 4096,
                    pa: 0x90000,
                    len: 4096,
                    writable: true,
                    executable: false,
                    user: false
                },
            ]
        );
        let user = mappings(&ram[..], pml4, 0..0x0000_8000_0000_0000);
        assert_eq!(user.len(), 1);
        assert_eq!(
            (user[0].va, user[0].pa, user[0].user),
            (0x40_0000, 0xa0000, true)
        );
        assert_eq!(translate(&ram[..], pml4, k + 4096 + 5), Some(0x81005));
        assert_eq!(translate(&ram[..], pml4, 0x50_0000), None);
    }

    #[test]
    fn survives_loops_and_garbage() {
        let mut ram = vec![0u8; 1 << 16];
        let mut b = Builder {
            ram: &mut ram,
            next: 0x8000,
        };
        // Every entry of every level points at the PML4 itself.
        for i in 0..512 {
            b.set(0x1000 + i * 8, 0x1000 | P | W);
        }
        assert!(mappings(&ram[..], 0x1000, 0..u64::MAX).len() <= 512);
        // All ones: large pages and addresses past RAM everywhere.
        let ff = vec![0xffu8; 1 << 16];
        assert!(mappings(&ff[..], 0x1000, 0..u64::MAX).is_empty());
        assert_eq!(translate(&ff[..], 0x1000, 0x1234), None);
        // A PML4 past RAM.
        assert!(mappings(&ram[..], 0x10_0000, 0..u64::MAX).is_empty());
    }
}
