//! Checked access to the current process's memory.
//!
//! The kernel runs on the process's page tables, so a user buffer is
//! directly addressable once every page of it is known to be mapped, user
//! and (for writes) writable. Pages of the heap and stack that were never
//! touched are demand-mapped here, as the page-fault handler would.

use crate::mm::paging::{self, U, W};
use crate::state::current;
use lazarus_abi::layout::{PAGE_SIZE, USER_IMAGE_BASE, USER_STACK_TOP};
use lazarus_abi::syscall::errno::EFAULT;

pub type KResult<T> = Result<T, i64>;

pub fn check(va: u64, len: u64, write: bool) -> KResult<()> {
    if len == 0 {
        return Ok(());
    }
    let end = va.checked_add(len).ok_or(EFAULT)?;
    if va < USER_IMAGE_BASE || end > USER_STACK_TOP {
        return Err(EFAULT);
    }
    let cr3 = current().ok_or(EFAULT)?.cr3;
    let mut page = va & !(PAGE_SIZE - 1);
    while page < end {
        match paging::translate(cr3, page) {
            Some((_, f)) if f & U != 0 && (!write || f & W != 0) => {}
            Some(_) => return Err(EFAULT),
            None => {
                if !crate::mm::user::demand_map(page) {
                    return Err(EFAULT);
                }
            }
        }
        page += PAGE_SIZE;
    }
    Ok(())
}

/// A checked view of user memory, valid until the process's mappings change.
pub fn slice(va: u64, len: u64) -> KResult<&'static [u8]> {
    check(va, len, false)?;
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: every page in range was just checked to be mapped and user.
    Ok(unsafe { core::slice::from_raw_parts(va as *const u8, len as usize) })
}

pub fn slice_mut(va: u64, len: u64) -> KResult<&'static mut [u8]> {
    check(va, len, true)?;
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: every page in range was just checked to be mapped, user and
    // writable; the process is not running while the kernel holds this.
    Ok(unsafe { core::slice::from_raw_parts_mut(va as *mut u8, len as usize) })
}

pub fn copy_to(va: u64, src: &[u8]) -> KResult<()> {
    slice_mut(va, src.len() as u64)?.copy_from_slice(src);
    Ok(())
}

pub fn copy_from(dst: &mut [u8], va: u64) -> KResult<()> {
    dst.copy_from_slice(slice(va, dst.len() as u64)?);
    Ok(())
}

pub fn write_obj<T: zerocopy::IntoBytes + zerocopy::Immutable>(va: u64, v: &T) -> KResult<()> {
    copy_to(va, v.as_bytes())
}
