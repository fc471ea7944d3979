//! Which pages of guest RAM hold data, from the host's page map:
//! `PAGEMAP_SCAN` on `/proc/self/pagemap` (Linux 6.7), or reading the
//! page map's entries on older kernels. Untouched pages and the shared
//! zero page hold nothing and are neither copied nor compared.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use tracing::debug;
use zerocopy::IntoBytes;

/// Host page size (guest RAM is mapped with 4 KiB pages).
pub(super) const PAGE: usize = 4096;
/// `/proc/self/pagemap` entry bits: page present in RAM, page swapped out.
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;

/// Reusable buffers for reading the page map.
#[derive(Default)]
pub(super) struct PageMapBufs {
    /// PAGEMAP_SCAN output.
    regions: Vec<PageRegion>,
    /// Raw page map entries (the fallback).
    entries: Vec<u64>,
}

/// `struct pm_scan_arg` of `<linux/fs.h>` (Linux 6.7).
#[repr(C)]
#[derive(Debug, Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xc000_0000 | (96 << 16) | (0x66 << 8) | 16;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// Mapped to the shared zero page: reads as zero, holds nothing.
const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// Regions per PAGEMAP_SCAN call.
pub(super) const SCAN_REGIONS: usize = 512;

/// `/proc/self/pagemap`, opened once per process.
pub(super) fn pagemap_file() -> Option<&'static File> {
    static FILE: OnceLock<Option<File>> = OnceLock::new();
    FILE.get_or_init(|| {
        File::open("/proc/self/pagemap")
            .inspect_err(|e| debug!("cannot open /proc/self/pagemap, copying all of RAM: {e}"))
            .ok()
    })
    .as_ref()
}

/// Fills `populated` with which pages of `[base, base + len)` hold data
/// (present or swapped out, and not the shared zero page). `false` when
/// the page map cannot be read.
pub(super) fn read_populated(
    base: usize,
    len: usize,
    bufs: &mut PageMapBufs,
    populated: &mut Vec<bool>,
) -> bool {
    let Some(file) = pagemap_file() else {
        return false;
    };
    populated.clear();
    populated.resize(len / PAGE, false);
    match scan_populated(file, base, len, &mut bufs.regions, populated) {
        Ok(()) => return true,
        Err(e) => debug!("PAGEMAP_SCAN failed, reading the page map: {e}"),
    }
    bufs.entries.resize(len / PAGE, 0);
    let offset = (base / PAGE) as u64 * 8;
    if let Err(e) = file.read_exact_at(bufs.entries.as_mut_bytes(), offset) {
        debug!("cannot read /proc/self/pagemap, copying all of RAM: {e}");
        return false;
    }
    for (p, &e) in populated.iter_mut().zip(&bufs.entries) {
        *p = e & (PM_PRESENT | PM_SWAPPED) != 0;
    }
    true
}

/// The page map as ranges (PAGEMAP_SCAN, Linux 6.7): it skips the
/// unmapped parts of RAM without producing an entry per page. `populated`
/// must be all `false` and hold one entry per page.
pub(super) fn scan_populated(
    file: &File,
    base: usize,
    len: usize,
    regions: &mut Vec<PageRegion>,
    populated: &mut [bool],
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    regions.resize(SCAN_REGIONS, PageRegion::default());
    let (lo, hi) = (base as u64, (base + len) as u64);
    let mut at = lo;
    while at < hi {
        let mut arg = PmScanArg {
            size: size_of::<PmScanArg>() as u64,
            start: at,
            end: hi,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO,
            ..Default::default()
        };
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points to
        // `regions`, `vec_len` entries of the kernel's page_region layout;
        // the kernel writes at most that many and reads only [at, hi),
        // our own mapping.
        let n = unsafe { libc::ioctl(file.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
        let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
        for r in regions.get(..n).unwrap_or_default() {
            if r.categories & PAGE_IS_PFNZERO != 0 {
                continue;
            }
            let first = (r.start.max(lo) - lo) as usize / PAGE;
            let last = (r.end.min(hi).saturating_sub(lo) as usize).div_ceil(PAGE);
            if let Some(pages) = populated.get_mut(first..last) {
                pages.fill(true);
            }
        }
        if arg.walk_end <= at {
            return Err(std::io::Error::other("PAGEMAP_SCAN made no progress"));
        }
        at = arg.walk_end;
    }
    Ok(())
}
