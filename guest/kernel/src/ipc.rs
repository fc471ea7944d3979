//! Message passing and the service registry.

use crate::state::{current_pid, k, proc_by_pid};
use crate::uaccess::{self, KResult};
use crate::wait;
use lazarus_abi::root::*;
use lazarus_abi::syscall::IPC_MSG_MAX;
use lazarus_abi::syscall::errno::*;

fn alive(pid: u32) -> bool {
    proc_by_pid(pid).is_some_and(|p| !matches!(p.state, PS_ZOMBIE | PS_QUARANTINED | PS_RECLAIM))
}

pub fn send(dst: u32, buf: u64, len: u64) -> KResult<u64> {
    if len as usize > IPC_MSG_MAX {
        return Err(E2BIG);
    }
    if !alive(dst) {
        return Err(ESRCH);
    }
    let data = uaccess::slice(buf, len)?;
    let r = k();
    let i = r.msgs.iter().position(|m| m.in_use == 0).ok_or(EAGAIN)?;
    r.msg_seq += 1;
    let seq = r.msg_seq;
    let m = &mut r.msgs[i];
    m.in_use = 1;
    m.src = current_pid();
    m.dst = dst;
    m.len = len as u32;
    m.seq = seq;
    m.data[..data.len()].copy_from_slice(data);
    wait::wake_pid(dst, W_IPC);
    Ok(0)
}

pub fn recv(buf: u64, len: u64, src_out: u64) -> KResult<u64> {
    let me = current_pid();
    uaccess::check(buf, len, true)?;
    loop {
        let r = k();
        let mut best: Option<usize> = None;
        for (i, m) in r.msgs.iter().enumerate() {
            if m.in_use != 0 && m.dst == me && best.is_none_or(|b| m.seq < r.msgs[b].seq) {
                best = Some(i);
            }
        }
        if let Some(i) = best {
            let m = r.msgs[i];
            let n = (m.len as u64).min(len) as usize;
            uaccess::copy_to(buf, &m.data[..n])?;
            if src_out != 0 {
                uaccess::write_obj(src_out, &m.src)?;
            }
            k().msgs[i].in_use = 0;
            return Ok(n as u64);
        }
        wait::block(W_IPC, 0);
    }
}

/// Drops messages to a dead process.
pub fn drop_for(pid: u32) {
    for m in k().msgs.iter_mut() {
        if m.in_use != 0 && m.dst == pid {
            m.in_use = 0;
        }
    }
}

pub fn register(name: &[u8]) -> KResult<u64> {
    if name.is_empty() || name.len() > 16 {
        return Err(EINVAL);
    }
    let me = current_pid();
    let r = k();
    let mut free = None;
    for (i, s) in r.services.iter().enumerate() {
        let n = s.name.iter().position(|&c| c == 0).unwrap_or(16);
        if s.pid != 0 && &s.name[..n] == name {
            if alive(s.pid) && s.pid != me {
                return Err(EEXIST);
            }
            free = Some(i);
            break;
        }
        if free.is_none() && (s.pid == 0 || !alive(s.pid)) {
            free = Some(i);
        }
    }
    let i = free.ok_or(ENOSPC)?;
    let s = &mut k().services[i];
    s.pid = me;
    s.name = [0; 16];
    s.name[..name.len()].copy_from_slice(name);
    Ok(0)
}

pub fn lookup(name: &[u8]) -> KResult<u64> {
    for s in k().services.iter() {
        let n = s.name.iter().position(|&c| c == 0).unwrap_or(16);
        if s.pid != 0 && &s.name[..n] == name && alive(s.pid) {
            return Ok(s.pid as u64);
        }
    }
    Err(ENOENT)
}
