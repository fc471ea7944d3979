//! Pipes: fixed ring buffers in the state root, blocking at both ends.

use crate::state::k;
use crate::uaccess::{self, KResult};
use crate::wait;
use lazarus_abi::root::*;
use lazarus_abi::syscall::errno::*;

/// Takes a free pipe with one reader and one writer: the two ends the
/// caller installs as descriptors. Returns its index.
pub fn create() -> KResult<usize> {
    let r = k();
    let i = r.pipes.iter().position(|p| p.in_use == 0).ok_or(ENOSPC)?;
    let p = &mut r.pipes[i];
    p.in_use = 1;
    p.readers = 1;
    p.writers = 1;
    p.head = 0;
    p.len = 0;
    Ok(i)
}

/// Frees pipe `i` before any descriptor referred to it.
pub fn discard(i: usize) {
    k().pipes[i].in_use = 0;
}

pub fn close(i: usize, write_end: bool) {
    let p = &mut k().pipes[i];
    if write_end {
        p.writers = p.writers.saturating_sub(1);
    } else {
        p.readers = p.readers.saturating_sub(1);
    }
    if p.readers == 0 && p.writers == 0 {
        p.in_use = 0;
    }
    wait::wake_all(W_PIPE_READ, i as u32);
    wait::wake_all(W_PIPE_WRITE, i as u32);
}

pub fn read(i: usize, buf: u64, len: u64) -> KResult<u64> {
    if len == 0 {
        return Ok(0);
    }
    loop {
        let p = &mut k().pipes[i];
        if p.len > 0 {
            let n = (p.len).min(len) as usize;
            let mut tmp = [0u8; PIPE_BUF];
            for (j, t) in tmp.iter_mut().enumerate().take(n) {
                *t = p.buf[(p.head as usize + j) % PIPE_BUF];
            }
            p.head = (p.head + n as u64) % PIPE_BUF as u64;
            p.len -= n as u64;
            uaccess::copy_to(buf, &tmp[..n])?;
            wait::wake_all(W_PIPE_WRITE, i as u32);
            return Ok(n as u64);
        }
        if p.writers == 0 {
            return Ok(0);
        }
        wait::block(W_PIPE_READ, i as u32);
    }
}

pub fn write(i: usize, buf: u64, len: u64) -> KResult<u64> {
    let data = uaccess::slice(buf, len)?;
    let mut done = 0usize;
    while done < data.len() {
        let p = &mut k().pipes[i];
        if p.readers == 0 {
            return if done > 0 {
                Ok(done as u64)
            } else {
                Err(EPIPE)
            };
        }
        let space = PIPE_BUF - p.len as usize;
        if space == 0 {
            wait::block(W_PIPE_WRITE, i as u32);
            continue;
        }
        let n = space.min(data.len() - done);
        for (j, &b) in data[done..done + n].iter().enumerate() {
            p.buf[(p.head as usize + p.len as usize + j) % PIPE_BUF] = b;
        }
        p.len += n as u64;
        done += n;
        wait::wake_all(W_PIPE_READ, i as u32);
    }
    Ok(done as u64)
}
