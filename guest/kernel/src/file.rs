//! Open device files (`KernelRoot::files`): what an open of an extension's
//! device means (who opened it, the position, the configuration) is kept
//! here by the kernel, not by the extension, so that an extension reset by
//! the repair can be handed its opens again and its clients never notice
//! (shadow drivers, OSDI'04). Descriptors duplicated from one open share
//! it, as POSIX's open file descriptions.

use crate::state::k;
use crate::uaccess::KResult;
use lazarus_abi::root::*;
use lazarus_abi::syscall::errno::*;
use lazarus_abi::syscall::{SEEK_CUR, SEEK_SET};

/// A new open file of extension `ext` with one reference.
pub fn alloc(ext: usize, opener: u32, aux: u64) -> KResult<usize> {
    let i = k()
        .files
        .iter()
        .position(|f| f.state == FILE_FREE)
        .ok_or(EMFILE)?;
    k().files[i] = OpenFile {
        state: FILE_OPEN,
        refs: 1,
        ext: ext as u32,
        opener,
        aux,
        ..OpenFile::default()
    };
    k().exts[ext].open_count += 1;
    Ok(i)
}

/// Open file `i`, if it is in use.
pub fn get(i: usize) -> Option<&'static mut OpenFile> {
    k().files.get_mut(i).filter(|f| f.state != FILE_FREE)
}

/// A descriptor of file `i` was duplicated.
pub fn retain(i: usize) {
    if let Some(f) = get(i) {
        f.refs += 1;
    }
}

/// Drops a descriptor's reference. The last one frees the file and
/// returns its extension and `aux`, for the extension's `close`.
pub fn release(i: usize) -> Option<(usize, u64)> {
    let f = get(i)?;
    f.refs = f.refs.saturating_sub(1);
    if f.refs > 0 {
        return None;
    }
    let (ext, aux) = (f.ext as usize, f.aux);
    *f = OpenFile::default();
    if let Some(e) = k().exts.get_mut(ext) {
        e.open_count = e.open_count.saturating_sub(1);
    }
    Some((ext, aux))
}

/// Frees file `i` without its extension (whose `aux` a reset made
/// meaningless).
pub fn discard(i: usize) {
    let f = &mut k().files[i];
    if let Some(e) = k().exts.get_mut(f.ext as usize) {
        e.open_count = e.open_count.saturating_sub(1);
    }
    *f = OpenFile::default();
}

/// Remembers the last argument of configuration ioctl `cmd`, replayed
/// when the file is reopened. A fifth kind of configuration is not
/// remembered: extensions declare at most `MAX_FILE_CONFIG`.
pub fn remember_config(i: usize, cmd: u64, arg: u64) {
    let Some(f) = get(i) else { return };
    let n = (f.config_len as usize).min(MAX_FILE_CONFIG);
    if let Some(c) = f.config[..n].iter_mut().find(|c| c.cmd == cmd) {
        c.arg = arg;
    } else if n < MAX_FILE_CONFIG {
        f.config[n] = FileConfig { cmd, arg };
        f.config_len = n as u32 + 1;
    }
}

/// `SYS_SEEK` on file `i`.
pub fn seek(i: usize, off: u64, whence: u64) -> KResult<u64> {
    let f = get(i).ok_or(EBADF)?;
    let at = match whence {
        SEEK_SET => off as i64,
        SEEK_CUR => (f.pos as i64).checked_add(off as i64).ok_or(EINVAL)?,
        _ => return Err(EINVAL),
    };
    if at < 0 {
        return Err(EINVAL);
    }
    f.pos = at as u64;
    Ok(f.pos)
}
