//! Kernel locks that record their owner process and CPU, in the state
//! root's lock table.
//! A contended lock blocks the caller (the kernel is not preemptible, so a
//! holder only loses the CPU by blocking itself).

use crate::state::{current_pid, k};
use crate::wait;
use lazarus_abi::root::*;
use lazarus_abi::syscall::errno::*;

pub fn create(name: &[u8], ext: u32) -> Result<i32, i64> {
    let r = k();
    let i = r
        .locks
        .iter()
        .position(|l| l.state == LOCK_UNUSED)
        .ok_or(ENOSPC)?;
    let l = &mut r.locks[i];
    *l = KLock {
        state: LOCK_FREE,
        ext,
        owner_cpu: NONE,
        ..KLock::default()
    };
    let n = name.len().min(l.name.len());
    l.name[..n].copy_from_slice(&name[..n]);
    Ok(i as i32)
}

fn get(id: i32) -> Result<&'static mut KLock, i64> {
    let l = k()
        .locks
        .get_mut(usize::try_from(id).map_err(|_| EINVAL)?)
        .ok_or(EINVAL)?;
    if l.state == LOCK_UNUSED {
        Err(EINVAL)
    } else {
        Ok(l)
    }
}

/// Takes a free lock for `me`.
fn take(l: &mut KLock, me: u32) {
    l.state = LOCK_HELD;
    l.owner = me;
    l.owner_cpu = crate::arch::percpu::id() as u32;
    l.acquired_tick = crate::state::now();
    l.acquisitions += 1;
}

pub fn acquire(id: i32) -> Result<(), i64> {
    let me = current_pid();
    loop {
        let l = get(id)?;
        if l.state == LOCK_FREE {
            take(l, me);
            return Ok(());
        }
        if l.owner == me {
            return Err(EBUSY); // would deadlock on itself
        }
        l.waiters += 1;
        wait::block(W_LOCK, id as u32);
        if let Ok(l) = get(id) {
            l.waiters = l.waiters.saturating_sub(1);
        }
    }
}

/// Non-blocking acquire; a failure marks the caller as spinning on `id`.
pub fn try_acquire(id: i32) -> Result<(), i64> {
    let me = current_pid();
    let l = get(id)?;
    if l.state == LOCK_FREE {
        take(l, me);
        if let Some(p) = crate::state::current() {
            p.spinning_on = NONE;
        }
        return Ok(());
    }
    if let Some(p) = crate::state::current() {
        p.spinning_on = id as u32;
    }
    Err(EBUSY)
}

pub fn release(id: i32) -> Result<(), i64> {
    let l = get(id)?;
    if l.state != LOCK_HELD || l.owner != current_pid() {
        return Err(EPERM);
    }
    l.state = LOCK_FREE;
    l.owner = 0;
    l.owner_cpu = NONE;
    wait::wake_all(W_LOCK, id as u32);
    Ok(())
}

/// Releases every lock `pid` holds (it died) and wakes the waiters.
pub fn release_all(pid: u32) {
    for i in 0..MAX_LOCKS {
        let l = &mut k().locks[i];
        if l.state == LOCK_HELD && l.owner == pid {
            l.state = LOCK_FREE;
            l.owner = 0;
            l.owner_cpu = NONE;
            wait::wake_all(W_LOCK, i as u32);
        }
    }
}

/// Destroys the locks an extension created (it is being unloaded).
pub fn destroy_for_ext(ext: u32) {
    for i in 0..MAX_LOCKS {
        let l = &mut k().locks[i];
        if l.state != LOCK_UNUSED && l.ext == ext {
            *l = KLock::default();
            wait::wake_all(W_LOCK, i as u32);
        }
    }
}
