//! The cpio (newc) initramfs the hypervisor placed in RAM.
//!
//! Hand-written: newc is 110-byte ASCII headers, and a lookup here runs as
//! emulated ring-0 code, so it does exactly one pass and nothing else.

use crate::mm::phys_to_virt;

static mut ARCHIVE: (u64, u64) = (0, 0);

pub fn init(phys: u64, len: u64) {
    // SAFETY: boot is single-threaded.
    unsafe { ARCHIVE = (phys_to_virt(phys), len) };
}

fn archive() -> &'static [u8] {
    // SAFETY: the hypervisor placed `len` bytes there and the frames are
    // reserved, so nothing else writes them.
    unsafe {
        let (va, len) = ARCHIVE;
        if va == 0 {
            return &[];
        }
        core::slice::from_raw_parts(va as *const u8, len as usize)
    }
}

fn hex(field: &[u8]) -> Option<usize> {
    let mut v = 0usize;
    for &c in field {
        let d = (c as char).to_digit(16)? as usize;
        v = (v << 4) | d;
    }
    Some(v)
}

/// Finds a file by path (without a leading '/').
pub fn find(path: &[u8]) -> Option<&'static [u8]> {
    let a = archive();
    let mut off = 0usize;
    while off + 110 <= a.len() {
        let h = &a[off..off + 110];
        if &h[..6] != b"070701" {
            return None;
        }
        let filesize = hex(&h[54..62])?;
        let namesize = hex(&h[94..102])?;
        let name_start = off + 110;
        let name_end = name_start.checked_add(namesize)?;
        if name_end > a.len() || namesize == 0 {
            return None;
        }
        let name = &a[name_start..name_end - 1];
        let data_start = (name_end + 3) & !3;
        let data_end = data_start.checked_add(filesize)?;
        if data_end > a.len() {
            return None;
        }
        if name == b"TRAILER!!!" {
            return None;
        }
        if name == path {
            return Some(&a[data_start..data_end]);
        }
        off = (data_end + 3) & !3;
    }
    None
}
