//! Checked access to the current process's memory.
//!
//! The kernel runs on the process's page tables, so a user buffer is
//! directly addressable once every page of it is known to be mapped, user
//! and (for writes) writable: `check` walks the tables, and `slice` lends
//! the checked memory. Pages of the heap and stack that were never touched
//! are demand-mapped here, as the page-fault handler would. The hot paths
//! (IPC) copy instead, with a copy whose faults are recovered (`copy_in`,
//! `UserOut::write`), and walk nothing.

use core::arch::global_asm;

use crate::mm::paging::{self, U, W};
use crate::state::current;
use lazarus_abi::ext::DmaSeg;
use lazarus_abi::layout::{PAGE_SIZE, USER_IMAGE_BASE, USER_STACK_TOP};
use lazarus_abi::syscall::errno::{E2BIG, EFAULT};
use lazarus_abi::trap::{TrapFrame, VEC_PAGE_FAULT};

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

/// The guest-physical segments of the current process's buffer
/// `[va, va + len)`, checked as `check` does and merged where contiguous,
/// into `out`; returns how many (`E2BIG` if `out` is too short).
pub fn dma_segments(va: u64, len: u64, write: bool, out: &mut [DmaSeg]) -> KResult<usize> {
    check(va, len, write)?;
    let cr3 = current().ok_or(EFAULT)?.cr3;
    let end = va + len;
    let mut n: usize = 0;
    let mut at = va;
    while at < end {
        let chunk = (PAGE_SIZE - (at & (PAGE_SIZE - 1))).min(end - at);
        let (pa, _) = paging::translate(cr3, at).ok_or(EFAULT)?;
        match n.checked_sub(1).and_then(|last| out.get_mut(last)) {
            Some(s) if s.addr + s.len == pa => s.len += chunk,
            _ => {
                let s = out.get_mut(n).ok_or(E2BIG)?;
                *s = DmaSeg {
                    addr: pa,
                    len: chunk,
                };
                n += 1;
            }
        }
        at += chunk;
    }
    Ok(n)
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

// Copies to or from user memory without walking the page tables: the
// access runs, and a page fault at one of the marked instructions is
// either a first touch of the heap or stack (mapped, and the instruction
// resumes where it stopped) or a bad address, which `fixup` turns into
// EFAULT by resuming at `user_access_fault` (Linux's exception tables, in
// small). At ring-0 emulation speed a walk costs more than the copy it
// guards. The copy moves words: the emulator runs `rep movs` one element
// at a time, so bytes would cost eight times as much.
global_asm!(
    r#"
.global user_copy
.global user_copy_words
.global user_copy_bytes
.global user_probe
.global user_probe_read
.global user_probe_write
.global user_access_fault
// user_copy(dst: rdi, src: rsi, len: rdx) -> rax: 0, or -EFAULT
user_copy:
    mov rcx, rdx
    shr rcx, 3
user_copy_words:
    rep movsq
    mov rcx, rdx
    and rcx, 7
user_copy_bytes:
    rep movsb
    xor eax, eax
    ret
// user_probe(va: rdi) -> rax: 0, or -EFAULT. Reads the byte and writes
// it back: the page is mapped (first touches included) and writable.
user_probe:
user_probe_read:
    mov al, [rdi]
user_probe_write:
    mov [rdi], al
    xor eax, eax
    ret
user_access_fault:
    mov rax, -14
    ret
"#
);

unsafe extern "C" {
    fn user_copy(dst: *mut u8, src: *const u8, len: u64) -> i64;
    fn user_probe(va: u64) -> i64;
    static user_copy_words: u8;
    static user_copy_bytes: u8;
    static user_probe_read: u8;
    static user_probe_write: u8;
    static user_access_fault: u8;
}

/// The user range `[va, va + len)`, if it lies inside the user half's
/// program-and-stack window (the only place user pages are mapped).
fn user_range(va: u64, len: u64) -> KResult<()> {
    let end = va.checked_add(len).ok_or(EFAULT)?;
    if va < USER_IMAGE_BASE || end > USER_STACK_TOP {
        return Err(EFAULT);
    }
    Ok(())
}

fn probe(va: u64) -> KResult<()> {
    // SAFETY: `va` lies in the user window (checked by the caller), where
    // a fault is recovered by `fixup`; the byte is written back unchanged,
    // and no other CPU runs this single-threaded process meanwhile.
    match unsafe { user_probe(va) } {
        0 => Ok(()),
        _ => Err(EFAULT),
    }
}

/// Fills `dst` from user address `va`.
pub fn copy_in(dst: &mut [u8], va: u64) -> KResult<()> {
    user_range(va, dst.len() as u64)?;
    // SAFETY: the source lies in the user window, where a fault is
    // recovered by `fixup`; the destination is kernel memory the caller
    // lends.
    match unsafe { user_copy(dst.as_mut_ptr(), va as *const u8, dst.len() as u64) } {
        0 => Ok(()),
        _ => Err(EFAULT),
    }
}

/// A page fault in kernel mode: if it hit a user access, resumes it after
/// mapping a first-touched heap or stack page, or makes it return EFAULT.
/// False for any other kernel fault (a real kernel crash).
pub fn fixup(tf: &mut TrapFrame) -> bool {
    let marked = [
        (&raw const user_copy_words) as u64,
        (&raw const user_copy_bytes) as u64,
        (&raw const user_probe_read) as u64,
        (&raw const user_probe_write) as u64,
    ];
    if tf.vector != VEC_PAGE_FAULT || !marked.contains(&tf.rip) {
        return false;
    }
    let addr = crate::arch::cpu::read_cr2();
    let not_present = tf.error_code & 1 == 0;
    if !(not_present
        && (USER_IMAGE_BASE..USER_STACK_TOP).contains(&addr)
        && crate::mm::user::demand_map(addr))
    {
        tf.rip = (&raw const user_access_fault) as u64;
    }
    true
}

/// A user range made ready for writing before the caller blocks: in the
/// user window, and one byte of each of its pages read and written back,
/// which maps first-touched pages and proves them writable. Written later
/// with the fault-checked copy.
pub struct UserOut {
    va: u64,
    len: u64,
}

impl UserOut {
    /// `len` is clamped to a page, so probing the first and last byte
    /// covers every page (one or two) of the range.
    pub fn new(va: u64, len: u64) -> KResult<Self> {
        let len = len.min(PAGE_SIZE);
        user_range(va, len)?;
        if len > 0 {
            probe(va)?;
            let last = va + len - 1;
            if last / PAGE_SIZE != va / PAGE_SIZE {
                probe(last)?;
            }
        }
        Ok(UserOut { va, len })
    }

    /// Copies as much of `src` as fits; returns the bytes copied.
    #[inline(always)]
    pub fn write(&self, src: &[u8]) -> KResult<usize> {
        let n = src.len().min(self.len as usize);
        // SAFETY: `new` checked that the range lies in the user window,
        // where a fault is recovered by `fixup`; the source is kernel
        // memory the caller lends.
        match unsafe { user_copy(self.va as *mut u8, src.as_ptr(), n as u64) } {
            0 => Ok(n),
            _ => Err(EFAULT),
        }
    }
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
