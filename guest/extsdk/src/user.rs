//! Copies between kernel memory and the calling process, with the kernel
//! checking the user range. Device operations run in the caller's context,
//! so a `user_buf` argument is an address in that process.

/// Copies `src` to user address `dst`; `Err(-errno)` on a bad range.
pub fn copy_to_user(dst: u64, src: &[u8]) -> Result<(), i64> {
    match (crate::api().copy_to_user)(dst, src.as_ptr(), src.len()) {
        0 => Ok(()),
        e => Err(e),
    }
}

/// Fills `dst` from user address `src`; `Err(-errno)` on a bad range.
pub fn copy_from_user(dst: &mut [u8], src: u64) -> Result<(), i64> {
    match (crate::api().copy_from_user)(dst.as_mut_ptr(), src, dst.len()) {
        0 => Ok(()),
        e => Err(e),
    }
}
