//! Building page tables in a RAM image, for tests of code that walks them
//! (feature `test-util`). Test code: it panics on misuse.

/// Present, writable, user: what intermediate entries get.
const TABLE_FLAGS: u64 = 0b111;
const PRESENT: u64 = 1;
const PS: u64 = 1 << 7;

/// Builds 4-level page tables inside `ram` (guest-physical 0 is
/// `ram[0]`), taking new table frames from `next` upwards. `ram` is
/// expected to be zeroed where tables are allocated.
pub struct TableBuilder<'a> {
    /// The RAM image.
    pub ram: &'a mut [u8],
    /// Guest-physical address of the next table frame to hand out.
    pub next: u64,
}

impl TableBuilder<'_> {
    /// Writes the quadword `v` at `pa`.
    pub fn set(&mut self, pa: u64, v: u64) {
        let i = usize::try_from(pa).expect("address");
        self.ram[i..i + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// The quadword at `pa`.
    pub fn get(&self, pa: u64) -> u64 {
        let i = usize::try_from(pa).expect("address");
        u64::from_le_bytes(self.ram[i..i + 8].try_into().expect("8 bytes"))
    }

    /// Hands out a new (zeroed) table frame.
    pub fn table(&mut self) -> u64 {
        let t = self.next;
        self.next += 4096;
        assert!(self.next <= self.ram.len() as u64, "out of table frames");
        t
    }

    /// The table `levels` below the PML4 at `cr3` on the path of `va`
    /// (1 = PDPT, 2 = PD, 3 = PT), made present-writable-user if absent.
    fn descend(&mut self, cr3: u64, va: u64, levels: u32) -> u64 {
        let mut t = cr3 & crate::ADDR_MASK;
        for level in (4 - levels..4).rev() {
            let slot = t + ((va >> (12 + 9 * level)) & 0x1ff) * 8;
            let e = self.get(slot);
            t = if e & PRESENT == 0 {
                let f = self.table();
                self.set(slot, f | TABLE_FLAGS);
                f
            } else {
                e & crate::ADDR_MASK
            };
        }
        t
    }

    /// Maps the 4 KiB page at `va` to `pa` with `flags` (present added).
    pub fn map(&mut self, cr3: u64, va: u64, pa: u64, flags: u64) {
        let pt = self.descend(cr3, va, 3);
        self.set(pt + ((va >> 12) & 0x1ff) * 8, pa | flags | PRESENT);
    }

    /// Maps the 2 MiB page at `va` to `pa` with `flags` (present and PS
    /// added).
    pub fn map_2m(&mut self, cr3: u64, va: u64, pa: u64, flags: u64) {
        let pd = self.descend(cr3, va, 2);
        self.set(pd + ((va >> 21) & 0x1ff) * 8, pa | flags | PS | PRESENT);
    }

    /// Maps the 1 GiB page at `va` to `pa` with `flags` (present and PS
    /// added).
    pub fn map_1g(&mut self, cr3: u64, va: u64, pa: u64, flags: u64) {
        let pdpt = self.descend(cr3, va, 1);
        self.set(pdpt + ((va >> 30) & 0x1ff) * 8, pa | flags | PS | PRESENT);
    }
}
