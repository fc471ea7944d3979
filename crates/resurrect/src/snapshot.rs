//! A crash-time snapshot of the guest memory a dump needs, taken in the
//! few hundred microseconds before the repair changes anything.
//!
//! Copying all of RAM would delay resumption by milliseconds (docs/PLATFORM.md:
//! ~13 GB/s at best), so, like makedumpfile's default filtering, the
//! snapshot holds kernel memory only: boot structures and page tables, the
//! kernel image (with its state root, per-CPU interrupt and idle stacks),
//! the kernel heap, every page mapped in the kernel's own regions (every
//! process's kernel stack, the extensions' code and data), the offending
//! process's memory, and each stopped vCPU's stack and code pages through
//! its own page tables (whatever stack it was on). Other processes' user
//! pages are left out. The copy goes into a pre-faulted buffer so that it
//! costs no page faults. A dump of the snapshot holds exactly these ranges
//! (`lazarus_dump::Memory::Captured`).

use lazarus_abi::layout::{
    BOOT_RESERVED_END, EXT_REGION, EXT_SLOT_SIZE, KSTACK_REGION, KSTACK_STRIDE, PAGE_SIZE,
    PHYSMAP_BASE,
};
use lazarus_abi::root::{KernelRoot, MAX_EXTS, MAX_PROCS};
use lazarus_guestmem::{Limits, PageSize, Visit, VisitControl, translate, walk_range};

use lazarus_vmm::memory::GuestRam;

/// Copied guest-physical ranges, sorted and disjoint.
#[derive(Debug, Default)]
pub struct MemSnapshot {
    /// Bytes of guest RAM the ranges are in.
    pub mem_size: u64,
    /// (guest-physical address, offset in `data`, length)
    pub ranges: Vec<(u64, usize, usize)>,
    /// The copied bytes, at the offsets `ranges` gives (after padding that
    /// page-aligns the first).
    pub data: Vec<u8>,
    /// Where `data` goes back when the snapshot is dropped.
    pool: Option<BufferPool>,
}

impl Drop for MemSnapshot {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(std::mem::take(&mut self.data));
        }
    }
}

impl MemSnapshot {
    /// Bytes copied.
    pub fn len(&self) -> usize {
        self.ranges.iter().map(|r| r.2).sum()
    }

    /// Whether nothing was copied.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The captured ranges with their bytes: `(guest-physical address,
    /// bytes)`, what a dump of the snapshot holds.
    pub fn captured(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.ranges
            .iter()
            .filter_map(|&(pa, off, len)| Some((pa, self.data.get(off..off.checked_add(len)?)?)))
    }
}

/// Pre-faulted buffers, reused between crashes: a snapshot returns its
/// buffer when dropped, wherever that happens (e.g. after a background
/// thread wrote the dump).
#[derive(Clone, Default, Debug)]
pub struct BufferPool {
    free: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl BufferPool {
    /// A pool with `n` buffers of `size` bytes, every page touched.
    pub fn prefaulted(n: usize, size: usize) -> Self {
        let pool = Self::default();
        for _ in 0..n {
            pool.give_back(vec![0x5a_u8; size]);
        }
        pool
    }

    fn take(&self) -> Vec<u8> {
        let mut b = lock(&self.free).pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Returns a buffer for reuse.
    pub fn give_back(&self, mut b: Vec<u8>) {
        if b.capacity() == 0 {
            return;
        }
        b.clear();
        lock(&self.free).push(b);
    }
}

/// Adds the page tables and 4 KiB leaf frames mapping [va_lo, va_hi)
/// under `pml4` (huge pages are skipped: they map the linear windows).
/// A crashed guest's tables are untrusted: the one walker bounds its work
/// and skips what points outside RAM; each table is read once.
fn walk(ram: &[u8], pml4: u64, va_lo: u64, va_hi: u64, out: &mut Vec<(u64, u64)>) {
    let limits = Limits {
        max_tables: 4096,
        max_leaves: 1 << 20,
    };
    let mut seen = std::collections::HashSet::new();
    // A walk cut short by its budget keeps what it found.
    let _ = walk_range(ram, pml4, va_lo..va_hi, limits, |v| match v {
        Visit::Table { pa, .. } if !seen.insert(pa) => VisitControl::Skip,
        Visit::Table { pa, .. } => {
            out.push((pa, PAGE_SIZE));
            VisitControl::Continue
        }
        Visit::Leaf(l) if l.size == PageSize::Size4K => {
            out.push((l.pa, PAGE_SIZE));
            VisitControl::Continue
        }
        _ => VisitControl::Continue,
    });
}

/// Where a stopped vCPU was: the snapshot keeps its stack and the code it
/// ran, found through its own page tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuView {
    /// Its page-table root.
    pub cr3: u64,
    /// Its stack pointer.
    pub rsp: u64,
    /// Its instruction pointer.
    pub rip: u64,
}

/// Stack kept above a vCPU's stack pointer: a kernel stack's size and
/// more (an interrupt stack, an idle stack), and the frames a backtrace
/// walks.
const STACK_WINDOW: u64 = 32 * 1024;

/// Adds the pages of `cpu`'s stack (from its stack pointer up to the first
/// unmapped page, at most [`STACK_WINDOW`]) and of the instruction at its
/// RIP (which may cross into the next page).
fn cpu_pages(ram: &[u8], cpu: &CpuView, out: &mut Vec<(u64, u64)>) {
    let page = |va: u64| {
        translate(ram, cpu.cr3, va & !(PAGE_SIZE - 1))
            .ok()
            .map(|t| t.pa & !(PAGE_SIZE - 1))
    };
    let lo = cpu.rsp & !(PAGE_SIZE - 1);
    for i in 0..STACK_WINDOW / PAGE_SIZE {
        match page(lo.wrapping_add(i * PAGE_SIZE)) {
            Some(pa) => out.push((pa, PAGE_SIZE)),
            None => break,
        }
    }
    for va in [cpu.rip, cpu.rip.wrapping_add(15)] {
        if let Some(pa) = page(va) {
            out.push((pa, PAGE_SIZE));
        }
    }
}

/// Takes the snapshot. `offender_cr3` is the faulting process's PML4;
/// `cpus` are the stopped vCPUs, the crashed one first.
pub fn take(
    mem: &GuestRam,
    mem_size: u64,
    root: &KernelRoot,
    kernel_phys: (u64, u64),
    offender_cr3: Option<u64>,
    cpus: &[CpuView],
    pool: &BufferPool,
) -> MemSnapshot {
    let t_start = std::time::Instant::now();
    // SAFETY: every vCPU is stopped while the crash handler runs.
    let Some(ram) = (unsafe { lazarus_vmm::memory::ram_bytes(mem) }) else {
        return MemSnapshot::default();
    };
    let mut want: Vec<(u64, u64)> = vec![
        (0, BOOT_RESERVED_END),
        (kernel_phys.0, kernel_phys.1 - kernel_phys.0),
    ];
    let heap = root.mem.heap_start.wrapping_sub(PHYSMAP_BASE);
    if heap < mem_size && root.mem.heap_size <= mem_size - heap {
        // Only heap pages the guest ever touched: the rest are zero, and
        // reading them would fault them in on the host.
        resident_pages(ram, heap, root.mem.heap_size, &mut want);
    }
    let pml4 = root.master_pml4;
    walk(
        ram,
        pml4,
        KSTACK_REGION,
        KSTACK_REGION + MAX_PROCS as u64 * KSTACK_STRIDE,
        &mut want,
    );
    walk(
        ram,
        pml4,
        EXT_REGION,
        EXT_REGION + MAX_EXTS as u64 * EXT_SLOT_SIZE,
        &mut want,
    );
    if let Some(cr3) = offender_cr3.filter(|&c| c != pml4) {
        walk(ram, cr3, 0, 0x0000_8000_0000_0000, &mut want);
    }
    for cpu in cpus {
        cpu_pages(ram, cpu, &mut want);
    }
    // Sort, clip to RAM, merge.
    want.retain(|&(pa, len)| len > 0 && pa < mem_size);
    want.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (pa, len) in want {
        let end = (pa + len).min(mem_size);
        match merged.last_mut() {
            Some((_, hi)) if pa <= *hi => *hi = (*hi).max(end),
            _ => merged.push((pa, end)),
        }
    }
    let t_copy = std::time::Instant::now();
    let mut data = pool.take();
    // Copies into a page-aligned destination run many times faster on
    // these hosts than into glibc's 16-byte-offset large allocations.
    let pad = data
        .as_ptr()
        .align_offset(PAGE_SIZE as usize)
        .min(data.capacity());
    data.resize(pad, 0);
    let mut ranges = Vec::with_capacity(merged.len());
    for (lo, hi) in merged {
        let off = data.len();
        data.extend_from_slice(&ram[lo as usize..hi as usize]);
        ranges.push((lo, off, (hi - lo) as usize));
    }
    tracing::debug!(
        plan_us = t_copy.duration_since(t_start).as_micros() as u64,
        copy_us = t_copy.elapsed().as_micros() as u64,
        ranges = ranges.len(),
        capacity = data.capacity(),
        "snapshot profile"
    );
    MemSnapshot {
        mem_size,
        ranges,
        data,
        pool: Some(pool.clone()),
    }
}

/// Adds the pages of [pa, pa+len) that are resident in host memory.
fn resident_pages(ram: &[u8], pa: u64, len: u64, out: &mut Vec<(u64, u64)>) {
    let page = PAGE_SIZE as usize;
    let start = pa as usize & !(page - 1);
    let pages = (len as usize).div_ceil(page);
    let Some(base) = ram.get(start..start + pages * page) else {
        return;
    };
    let mut vec = vec![0u8; pages];
    // SAFETY: `base` is a page-aligned part of our own mapping (guest RAM
    // mappings are page aligned) and `vec` has one byte per page.
    let rc = unsafe {
        libc::mincore(
            base.as_ptr() as *mut libc::c_void,
            pages * page,
            vec.as_mut_ptr(),
        )
    };
    if rc != 0 {
        out.push((pa, len));
        return;
    }
    for (i, v) in vec.iter().enumerate() {
        if v & 1 != 0 {
            out.push((start as u64 + (i * page) as u64, PAGE_SIZE));
        }
    }
}

/// Locks a mutex, shrugging off poison (the data is plain buffers).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The snapshot as guest-physical memory: what was copied reads back,
/// anything else is unreadable (not zero: it was not captured).
impl lazarus_guestmem::PhysMemory for MemSnapshot {
    fn size(&self) -> u64 {
        self.mem_size
    }

    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), lazarus_guestmem::MemError> {
        let len = buf.len() as u64;
        lazarus_guestmem::check_range(self.mem_size, pa, len)?;
        // Ranges are sorted and disjoint: the last one starting at or
        // before `pa` is the only candidate.
        let i = self.ranges.partition_point(|r| r.0 <= pa);
        let src = i
            .checked_sub(1)
            .and_then(|i| self.ranges.get(i))
            .filter(|&&(start, _, n)| pa - start + len <= n as u64)
            .and_then(|&(start, off, _)| {
                let from = off + (pa - start) as usize;
                self.data.get(from..from + buf.len())
            })
            .ok_or(lazarus_guestmem::MemError::Unreadable { pa })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazarus_guestmem::{MemError, PhysMemory};

    #[test]
    fn a_snapshot_reads_back_only_what_it_holds() {
        let snap = MemSnapshot {
            mem_size: 0x10000,
            ranges: vec![(0x1000, 0, 0x100), (0x3000, 0x100, 0x1000)],
            data: (0..0x1100u32).map(|i| i as u8).collect(),
            pool: None,
        };
        let mut b = [0u8; 4];
        snap.read(0x1010, &mut b).expect("held");
        assert_eq!(b, [0x10, 0x11, 0x12, 0x13]);
        snap.read(0x3000, &mut b).expect("held");
        assert_eq!(b, [0x00, 0x01, 0x02, 0x03]);
        assert_eq!(
            snap.read(0x10fe, &mut b),
            Err(MemError::Unreadable { pa: 0x10fe })
        );
        assert!(snap.read(0x2000, &mut b).is_err());
        assert!(snap.read(0x0, &mut b).is_err());
        assert!(snap.read(0xfffe, &mut b).is_err());
        assert!(snap.read(u64::MAX - 1, &mut b).is_err());
    }
}
