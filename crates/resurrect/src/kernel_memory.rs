//! The guest kernel's own memory accounting, for metrics and soak tests.

use std::mem::offset_of;

use lazarus_abi::root::{HEAP_BLOCK, HEAP_BLOCKS, HeapMap, KernelRoot, MemStats};
use lazarus_guestmem::{RootError, read_root_field};
use lazarus_vmm::memory::GuestRam;

/// The guest kernel's memory accounting, from its state root
/// ([`KernelRoot::mem`] and [`KernelRoot::heap`]). Guest-controlled data:
/// plausible at best, never trusted for anything but reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestKernelMemory {
    /// Physical frames (4 KiB) managed by the kernel, and those in use.
    pub frames_total: u64,
    /// See `frames_total`.
    pub frames_used: u64,
    /// Kernel heap size and the bytes its allocator counts as in use.
    pub heap_size_bytes: u64,
    /// See `heap_size_bytes`.
    pub heap_used_bytes: u64,
    /// Heap blocks marked allocated in the allocation map.
    pub heap_blocks_used: u64,
    /// The size of one heap block (a constant, not a usage figure):
    /// `heap_blocks_used * heap_block_bytes` is the heap in use by the map.
    pub heap_block_bytes: u64,
}

/// The kernel's memory accounting, read from its state root at `root_gpa`
/// (the root header is checked first).
pub fn guest_kernel_memory(mem: &GuestRam, root_gpa: u64) -> Result<GuestKernelMemory, RootError> {
    // Each read checks the header (magic, version, size, bounds) first.
    let stats: MemStats = read_root_field(mem, root_gpa, offset_of!(KernelRoot, mem))?;
    let used: [u64; HEAP_BLOCKS / 64] = read_root_field(
        mem,
        root_gpa,
        offset_of!(KernelRoot, heap) + offset_of!(HeapMap, used),
    )?;
    let blocks: u64 = used.iter().map(|w| u64::from(w.count_ones())).sum();
    Ok(GuestKernelMemory {
        frames_total: stats.frames_total,
        frames_used: stats.frames_total.saturating_sub(stats.frames_free),
        heap_size_bytes: stats.heap_size,
        heap_used_bytes: stats.heap_used,
        heap_blocks_used: blocks,
        heap_block_bytes: HEAP_BLOCK as u64,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lazarus_abi::root::{ABI_VERSION, ROOT_MAGIC};
    use lazarus_guestmem::ROOT_SIZE;
    use lazarus_vmm::memory::{create_guest_ram, write_obj};
    use zerocopy::FromZeros;

    /// Writes a valid root header at `gpa`.
    pub(crate) fn plant_root(mem: &GuestRam, gpa: u64) {
        let mut root = KernelRoot::new_box_zeroed().unwrap();
        root.header.magic = ROOT_MAGIC;
        root.header.abi_version = ABI_VERSION;
        root.header.root_size = ROOT_SIZE as u32;
        root.header.heartbeat = 42;
        write_obj(mem, gpa, &*root).unwrap();
    }

    #[test]
    fn guest_memory_from_the_root() {
        let mem = create_guest_ram(16 << 20).expect("ram");
        let gpa = 0x10_0000;
        assert_eq!(guest_kernel_memory(&mem, gpa).ok(), None, "no root");
        plant_root(&mem, gpa);
        let stats = MemStats {
            frames_total: 100,
            frames_free: 30,
            heap_size: 1 << 20,
            heap_used: 3 * HEAP_BLOCK as u64,
            ..Default::default()
        };
        write_obj(&mem, gpa + offset_of!(KernelRoot, mem) as u64, &stats).expect("write");
        let used_at = gpa + (offset_of!(KernelRoot, heap) + offset_of!(HeapMap, used)) as u64;
        write_obj(&mem, used_at, &0b1011u64).expect("write");
        let g = guest_kernel_memory(&mem, gpa).expect("guest");
        assert_eq!(g.frames_used, 70);
        assert_eq!(g.heap_used_bytes, 768);
        assert_eq!(g.heap_blocks_used, 3);
        // A root near the end of RAM is rejected, not read out of bounds.
        assert!(guest_kernel_memory(&mem, (16 << 20) - 64).is_err());
    }
}
