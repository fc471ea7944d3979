//! Shared binary layouts of lazarus.
//!
//! The hypervisor, the guest kernel, kernel extensions, user programs and the
//! repair image all read and write these structures. Keeping exactly one
//! `#[repr(C)]` definition here is what lets the host diagnose a dump or
//! repair a kernel without guessing at offsets.
#![no_std]

pub mod boot;
pub mod dev;
pub mod ext;
pub mod hypercall;
pub mod layout;
pub mod repair;
pub mod root;
pub mod syscall;
pub mod trap;

/// Copies `src` into a fixed-size, NUL-padded name field, truncating.
pub const fn name16(src: &str) -> [u8; 16] {
    let b = src.as_bytes();
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < b.len() && i < 16 {
        out[i] = b[i];
        i += 1;
    }
    out
}

/// Fixed-size name fields are NUL-padded; this returns the meaningful part.
pub fn name_str(raw: &[u8]) -> &str {
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    core::str::from_utf8(&raw[..end]).unwrap_or("?")
}

/// Writes `src` into a NUL-padded field, truncating at a char boundary.
pub fn set_name(dst: &mut [u8], src: &str) {
    dst.fill(0);
    let mut n = src.len().min(dst.len());
    while !src.is_char_boundary(n) {
        n -= 1;
    }
    dst[..n].copy_from_slice(&src.as_bytes()[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_truncate() {
        let n = name16("kvstore");
        assert_eq!(name_str(&n), "kvstore");
        let mut f = [0u8; 4];
        set_name(&mut f, "abcdef");
        assert_eq!(&f, b"abcd");
        set_name(&mut f, "é€");
        assert_eq!(name_str(&f), "é");
    }
}
