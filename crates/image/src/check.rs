//! Checking a boot image's initramfs on the host, before a VM exists.
//!
//! The guest kernel finds `/init` in the archive and execs it; when that
//! fails it panics, and `lazarus run` reboots it forever. These checks
//! apply the kernel's own rules (`guest/kernel/src/initramfs.rs`,
//! `elf.rs`, `proc.rs`) so such an image is refused with a clear reason
//! instead. They live here, with the image the guest expects, because the
//! VMM must stay OS-agnostic.

use lazarus_abi::layout::{USER_HEAP_LIMIT, USER_IMAGE_BASE};

/// Bytes of a newc header (ASCII fields, no name).
const HEADER: usize = 110;
/// The newc magic (no-CRC variant, the only one the kernel reads).
const MAGIC: &[u8] = b"070701";
/// The name of the archive's last entry.
const TRAILER: &[u8] = b"TRAILER!!!";
/// The program the kernel starts, as named in the archive.
const INIT: &[u8] = b"init";

/// Why an initramfs cannot boot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitramfsError {
    /// The file has no bytes.
    #[error("empty file, not a cpio archive")]
    Empty,
    /// An entry does not start with the newc magic or has a non-hex field.
    #[error("not a newc cpio archive (bad header at byte {0})")]
    BadHeader(usize),
    /// An entry's header, name or data runs past the end of the file.
    #[error("truncated cpio archive (entry at byte {0} runs past the end)")]
    Truncated(usize),
    /// The archive ends without its `TRAILER!!!` entry.
    #[error("truncated cpio archive (no TRAILER!!! entry)")]
    NoTrailer,
    /// No entry is named `init` (the kernel's `/init`).
    #[error("no /init in the archive")]
    NoInit,
    /// `/init` is there but the kernel cannot exec it.
    #[error("/init is not an x86-64 executable the kernel can run: {0}")]
    BadInit(&'static str),
}

/// Checks that `cpio` is a whole newc archive whose `init` entry is an
/// ELF the guest kernel can exec.
pub fn check_initramfs(cpio: &[u8]) -> Result<(), InitramfsError> {
    if cpio.is_empty() {
        return Err(InitramfsError::Empty);
    }
    let mut init = None;
    let mut off = 0usize;
    loop {
        if off >= cpio.len() {
            return Err(InitramfsError::NoTrailer);
        }
        // Garbage says so even when shorter than a header.
        let rest = &cpio[off..];
        let m = rest.len().min(MAGIC.len());
        if rest[..m] != MAGIC[..m] {
            return Err(InitramfsError::BadHeader(off));
        }
        let h = rest.get(..HEADER).ok_or(InitramfsError::Truncated(off))?;
        let field = |at: usize| hex(&h[at..at + 8]).ok_or(InitramfsError::BadHeader(off));
        let filesize = field(54)?;
        let namesize = field(94)?;
        if namesize == 0 {
            return Err(InitramfsError::BadHeader(off));
        }
        let name_start = off + HEADER;
        let name_end = name_start
            .checked_add(namesize)
            .filter(|&e| e <= cpio.len())
            .ok_or(InitramfsError::Truncated(off))?;
        // The name's last byte is its NUL terminator.
        let name = &cpio[name_start..name_end - 1];
        let data_start = align4(name_end);
        let data_end = data_start
            .checked_add(filesize)
            .filter(|&e| e <= cpio.len())
            .ok_or(InitramfsError::Truncated(off))?;
        if name == TRAILER {
            break;
        }
        if name == INIT && init.is_none() {
            init = Some(&cpio[data_start..data_end]);
        }
        off = align4(data_end);
    }
    check_init(init.ok_or(InitramfsError::NoInit)?).map_err(InitramfsError::BadInit)
}

/// `n` rounded up to 4 (newc pads names and data to 4 bytes).
fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// An 8-digit hex header field.
fn hex(field: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(field).ok()?;
    usize::from_str_radix(text, 16).ok()
}

fn u16_at(d: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(d: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?))
}

fn u64_at(d: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?))
}

/// The kernel's checks on a program it spawns: a little-endian ELF64 for
/// x86-64, `ET_EXEC`, program headers and loadable segments in the file
/// and in the user image area, the entry point inside them.
fn check_init(elf: &[u8]) -> Result<(), &'static str> {
    const TRUNCATED: &str = "truncated ELF header";
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file");
    }
    if elf.get(4..6) != Some([2u8, 1].as_slice()) {
        return Err("not a little-endian 64-bit ELF");
    }
    if u16_at(elf, 18).ok_or(TRUNCATED)? != 62 {
        return Err("not for x86-64");
    }
    if u16_at(elf, 16).ok_or(TRUNCATED)? != 2 {
        return Err("not a static executable (ET_EXEC)");
    }
    if u16_at(elf, 54).ok_or(TRUNCATED)? != 56 {
        return Err("unexpected program header size");
    }
    let entry = u64_at(elf, 24).ok_or(TRUNCATED)?;
    let phoff = usize::try_from(u64_at(elf, 32).ok_or(TRUNCATED)?).map_err(|_| TRUNCATED)?;
    let phnum = usize::from(u16_at(elf, 56).ok_or(TRUNCATED)?);
    let mut image_end = 0u64;
    for i in 0..phnum {
        let o = phoff
            .checked_add(i * 56)
            .filter(|o| o.checked_add(56).is_some_and(|end| end <= elf.len()))
            .ok_or("program headers run past the end of the file")?;
        let bad = "a segment runs past the end of the file or the user image area";
        let kind = u32_at(elf, o).ok_or(bad)?;
        let offset = u64_at(elf, o + 8).ok_or(bad)?;
        let vaddr = u64_at(elf, o + 16).ok_or(bad)?;
        let filesz = u64_at(elf, o + 32).ok_or(bad)?;
        let memsz = u64_at(elf, o + 40).ok_or(bad)?;
        let end = vaddr.checked_add(memsz).ok_or(bad)?;
        if filesz > memsz || offset.checked_add(filesz).ok_or(bad)? > elf.len() as u64 {
            return Err(bad);
        }
        // PT_LOAD; the kernel skips empty ones.
        if kind != 1 || memsz == 0 {
            continue;
        }
        if vaddr < USER_IMAGE_BASE || end > USER_HEAP_LIMIT {
            return Err(bad);
        }
        image_end = image_end.max(end);
    }
    if entry < USER_IMAGE_BASE || entry >= image_end {
        return Err("the entry point is outside its loaded segments");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One newc entry (magic, sizes; the other fields zero).
    fn entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0o100755,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        )
        .into_bytes();
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in files {
            out.extend(entry(name, data));
        }
        out.extend(entry("TRAILER!!!", b""));
        out
    }

    /// The default image's `/init`.
    fn real_init() -> Vec<u8> {
        let mut init = None;
        let mut rest = crate::INITRAMFS;
        // The default image is well-formed; find its init by name.
        while let Some(at) = rest.windows(6).position(|w| w == MAGIC) {
            rest = &rest[at..];
            let namesize = hex(&rest[94..102]).unwrap();
            let filesize = hex(&rest[54..62]).unwrap();
            let data = align4(HEADER + namesize);
            if &rest[HEADER..HEADER + namesize - 1] == INIT {
                init = Some(rest[data..data + filesize].to_vec());
                break;
            }
            rest = &rest[align4(data + filesize)..];
        }
        init.expect("the default image has an init")
    }

    #[test]
    fn the_default_image_passes() {
        assert_eq!(check_initramfs(crate::INITRAMFS), Ok(()));
        let init = real_init();
        assert_eq!(check_initramfs(&archive(&[("init", &init)])), Ok(()));
    }

    #[test]
    fn bad_archives_are_refused() {
        use InitramfsError::*;
        assert_eq!(check_initramfs(b""), Err(Empty));
        assert_eq!(check_initramfs(&[0u8; 512]), Err(BadHeader(0)));
        assert_eq!(check_initramfs(&crate::INITRAMFS[..50]), Err(Truncated(0)));
        let whole = archive(&[("init", &real_init())]);
        assert!(matches!(
            check_initramfs(&whole[..whole.len() / 2]),
            Err(Truncated(_))
        ));
        let no_trailer = entry("init", &real_init());
        assert_eq!(check_initramfs(&no_trailer), Err(NoTrailer));
        assert_eq!(check_initramfs(&archive(&[("bin/sh", b"x")])), Err(NoInit));
        // The kernel looks up "init", not "./init".
        assert_eq!(check_initramfs(&archive(&[("./init", b"x")])), Err(NoInit));
    }

    #[test]
    fn bad_init_programs_are_refused() {
        let bad = |init: &[u8]| check_initramfs(&archive(&[("init", init)]));
        assert!(matches!(
            bad(b"#!/bin/sh\n"),
            Err(InitramfsError::BadInit(_))
        ));
        let good = real_init();
        let mut arm = good.clone();
        arm[18] = 183; // EM_AARCH64
        assert_eq!(bad(&arm), Err(InitramfsError::BadInit("not for x86-64")));
        let mut dynamic = good.clone();
        dynamic[16] = 3; // ET_DYN
        assert!(matches!(bad(&dynamic), Err(InitramfsError::BadInit(_))));
        assert!(matches!(bad(&good[..100]), Err(InitramfsError::BadInit(_))));
        assert!(matches!(
            bad(&good[..good.len() / 2]),
            Err(InitramfsError::BadInit(_))
        ));
    }
}
