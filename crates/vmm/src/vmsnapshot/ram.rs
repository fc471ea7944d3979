//! The snapshot's copy of guest RAM: only the pages that hold data are
//! copied out, and a restore copies those back and zeroes the pages that
//! got data only after the snapshot.

use std::sync::Mutex;

use vm_memory::{GuestAddress, GuestMemoryBackend};

use super::pagemap::{PAGE, PageMapBufs, read_populated};
use crate::console::lock;
use crate::error::{Error, Result};
use crate::memory::GuestRam;

/// Guest RAM: an image of all of it, of which only the populated pages
/// are meaningful (the others were zero).
pub(super) struct RamImage {
    /// The image, `len` bytes at the guest-physical offsets, inside this
    /// buffer from its first page boundary on: page-aligned copies avoid
    /// a `memcpy` slow path (on this AMD host, glibc's `rep movsb` is ~15x
    /// slower when the destination sits 16 bytes past the source modulo
    /// 4 KiB, where a plain heap buffer would put it). Only the pages a
    /// copy ever wrote are backed by host memory: they fault in once, and
    /// a recycled image copies into them without faults.
    buf: Vec<u8>,
    start: usize,
    pub(super) len: usize,
    /// Per 4 KiB page: whether it held data (else it was zero).
    pub(super) populated: Vec<bool>,
    /// Page map read buffers.
    pagemap: PageMapBufs,
    /// Page map read buffers for restores, and RAM's pages then.
    scratch: Mutex<(PageMapBufs, Vec<bool>)>,
}

impl RamImage {
    pub(super) fn new(len: usize) -> Self {
        // Zeroed allocation: fresh pages, not touched until written.
        let buf = vec![0u8; len + PAGE];
        let start = buf.as_ptr().align_offset(PAGE);
        Self {
            start: if start < PAGE { start } else { 0 },
            buf,
            len,
            populated: Vec::new(),
            pagemap: PageMapBufs::default(),
            scratch: Mutex::new((PageMapBufs::default(), Vec::new())),
        }
    }

    pub(super) fn populated_bytes(&self) -> usize {
        self.populated.iter().filter(|&&p| p).count() * PAGE
    }

    pub(super) fn image(&self) -> &[u8] {
        self.buf
            .get(self.start..self.start + self.len)
            .unwrap_or_default()
    }

    fn image_mut(&mut self) -> &mut [u8] {
        self.buf
            .get_mut(self.start..self.start + self.len)
            .unwrap_or_default()
    }
}

/// Guest RAM's host address, checked to be one mapping of `len` bytes.
pub(super) fn ram_base(mem: &GuestRam, len: usize) -> Result<*mut u8> {
    if mem.num_regions() != 1 || !mem.check_range(GuestAddress(0), len) {
        return Err(Error::GuestMemory(
            "guest RAM is not one mapping of its full size".into(),
        ));
    }
    mem.get_host_address(GuestAddress(0))
        .map_err(|e| Error::GuestMemory(format!("no host mapping for RAM: {e}")))
}

/// Maximal runs of `true`: (first page, page count).
pub(super) fn runs(flags: &[bool]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let start = i + flags.get(i..)?.iter().position(|&f| f)?;
        let len = flags[start..].iter().take_while(|&&f| f).count();
        i = start + len;
        Some((start, len))
    })
}

/// What restoring one run of pages takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PageOp {
    /// Copy the snapshot's pages back.
    Copy,
    /// Zero them: they held data now but not at the snapshot.
    Zero,
}

/// Runs of pages to restore: (first page, page count, what to do). Pages
/// empty in both the snapshot and now are left alone. `now` is `None`
/// when the current state is unknown (then all non-snapshot pages are
/// zeroed).
pub(super) fn restore_plan(saved: &[bool], now: Option<&[bool]>) -> Vec<(usize, usize, PageOp)> {
    let mut plan: Vec<(usize, usize, PageOp)> = Vec::new();
    for (i, &s) in saved.iter().enumerate() {
        let op = if s {
            PageOp::Copy
        } else if now.is_none_or(|n| n.get(i).copied().unwrap_or(true)) {
            PageOp::Zero
        } else {
            continue;
        };
        match plan.last_mut() {
            Some((start, len, last)) if *last == op && *start + *len == i => *len += 1,
            _ => plan.push((i, 1, op)),
        }
    }
    plan
}

/// Copies guest RAM into the image.
pub(super) fn copy_ram_out(mem: &GuestRam, len: usize, ram: &mut RamImage) -> Result<()> {
    let base = ram_base(mem, len)?;
    if ram.image().len() != len {
        return Err(Error::GuestMemory(
            "snapshot buffer has the wrong size".into(),
        ));
    }
    let ok = read_populated(base as usize, len, &mut ram.pagemap, &mut ram.populated);
    if !ok {
        ram.populated.clear();
        ram.populated.resize(len / PAGE, true);
    }
    let dst = ram.image_mut().as_mut_ptr();
    for (page, pages) in runs(&ram.populated) {
        let (off, n) = (page * PAGE, pages * PAGE);
        // SAFETY: `runs` yields page ranges inside `populated`, which has
        // len / PAGE entries, so [off, off + n) is inside both guest RAM
        // (one mapping of `len` bytes, checked by `ram_base`) and the image
        // (`len` bytes, checked above). The vCPUs are stopped (the caller holds the `Vm`),
        // so no one writes guest RAM during the copy; the two never overlap.
        unsafe { std::ptr::copy_nonoverlapping(base.add(off), dst.add(off), n) };
    }
    Ok(())
}

/// Copies the image back into guest RAM, zeroing what was empty then.
pub(super) fn copy_ram_in(mem: &GuestRam, len: usize, ram: &RamImage) -> Result<()> {
    let base = ram_base(mem, len)?;
    if ram.image().len() != len || ram.populated.len() != len / PAGE {
        return Err(Error::SnapshotMismatch(format!(
            "it holds {} bytes of RAM, the VM has {len}",
            ram.len
        )));
    }
    let mut scratch = lock(&ram.scratch);
    let (pagemap, now) = &mut *scratch;
    let known = read_populated(base as usize, len, pagemap, now);
    let plan = restore_plan(&ram.populated, known.then_some(now.as_slice()));
    let src = ram.image().as_ptr();
    for (page, pages, op) in plan {
        let (off, n) = (page * PAGE, pages * PAGE);
        // SAFETY: `restore_plan` yields page ranges inside `ram.populated`
        // (len / PAGE entries, checked above), so [off, off + n)
        // is inside guest RAM (one mapping of `len` bytes, checked by
        // `ram_base`) and inside the image (`len` bytes). The vCPUs are
        // stopped; raw pointers are used because other holders of the RAM
        // (a background dump writer) may read it meanwhile.
        unsafe {
            match op {
                PageOp::Copy => std::ptr::copy_nonoverlapping(src.add(off), base.add(off), n),
                PageOp::Zero => std::ptr::write_bytes(base.add(off), 0, n),
            }
        }
    }
    Ok(())
}
