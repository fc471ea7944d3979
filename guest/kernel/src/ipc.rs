//! Message passing and the service registry.

use crate::state::{current, current_pid, k, proc_by_pid};
use crate::uaccess::{self, KResult};
use crate::{sched, wait};
use lazarus_abi::root::*;
use lazarus_abi::syscall::errno::*;
use lazarus_abi::syscall::{IPC_FOREVER, IPC_MSG_MAX};

fn alive(pid: u32) -> bool {
    proc_by_pid(pid).is_some_and(|p| is_alive(p))
}

fn is_alive(p: &Proc) -> bool {
    !matches!(p.state, PS_ZOMBIE | PS_QUARANTINED | PS_RECLAIM)
}

pub fn send(dst: u32, buf: u64, len: u64) -> KResult<u64> {
    send_to(current_pid(), dst, buf, len, false).map(|_| 0)
}

/// Queues the message and wakes `dst` if it waits for one. `then_blocks`:
/// the sender receives next and nothing can be queued for it meanwhile,
/// so it blocks at once; then a waiting receiver is not queued to run but
/// returned, for the sender to hand its CPU to (`sched::hand_off`).
#[inline(always)]
fn send_to(src: u32, dst: u32, buf: u64, len: u64, then_blocks: bool) -> KResult<Option<u32>> {
    if len as usize > IPC_MSG_MAX {
        return Err(E2BIG);
    }
    let d = proc_by_pid(dst).filter(|p| is_alive(p)).ok_or(ESRCH)?;
    let r = k();
    let i = r.msgs.iter().position(|m| m.in_use == 0).ok_or(EAGAIN)?;
    // Filled before it is marked in use: a bad buffer leaves no message.
    uaccess::copy_in(&mut r.msgs[i].data[..len as usize], buf)?;
    r.msg_seq += 1;
    let seq = r.msg_seq;
    let m = &mut r.msgs[i];
    m.in_use = 1;
    m.src = src;
    m.dst = dst;
    m.len = len as u32;
    m.seq = seq;
    d.ipc_pending = d.ipc_pending.saturating_add(1);
    if d.state == PS_BLOCKED && d.wait_reason == W_IPC {
        if then_blocks {
            sched::wake_for_handoff(d);
            return Ok(Some(dst));
        }
        sched::wake(d);
    }
    Ok(None)
}

/// The oldest message queued for process `p`. The scan stops once it has
/// seen the messages its count promises; a count left too high (by a
/// repair that dropped messages) is corrected here.
fn oldest_for(p: &mut Proc) -> Option<usize> {
    let (me, pending) = (p.pid, p.ipc_pending);
    let r = k();
    let mut best: Option<usize> = None;
    let mut best_seq = u64::MAX;
    let mut seen = 0;
    for (i, m) in r.msgs.iter().enumerate() {
        if m.in_use != 0 && m.dst == me {
            if m.seq < best_seq {
                best = Some(i);
                best_seq = m.seq;
            }
            seen += 1;
            if seen >= pending {
                return best;
            }
        }
    }
    p.ipc_pending = seen;
    best
}

pub fn recv(buf: u64, len: u64, src_out: u64) -> KResult<u64> {
    let (out, src) = receive_buffers(buf, len, src_out)?;
    receive_into(&out, src.as_ref(), 0)
}

/// `recv` that gives up after `timeout_ms` (0: at once if nothing is
/// queued).
pub fn recv_timeout(buf: u64, len: u64, src_out: u64, timeout_ms: u64) -> KResult<u64> {
    let (out, src) = receive_buffers(buf, len, src_out)?;
    receive_into(&out, src.as_ref(), deadline_after(timeout_ms))
}

/// The tick a receive with `timeout_ms` gives up at.
fn deadline_after(timeout_ms: u64) -> u64 {
    let ticks = crate::tick::ticks_for_ms(timeout_ms).max(1);
    crate::state::now().saturating_add(ticks)
}

/// Sends, then receives, in one kernel entry: a client's request and its
/// wait for the reply, or a server's reply and its wait for the next
/// request (L4's call and reply-and-wait). Each kernel entry costs a few
/// hundred emulated instructions here, so a round trip takes two instead
/// of four. The receive buffers are checked first: a failure sends nothing.
pub fn sendrecv(dst: u32, buf: u64, len: u64, rbuf: u64, rlen: u64) -> KResult<u64> {
    let (out, _) = receive_buffers(rbuf, rlen, 0)?;
    let (me, queued) = caller()?;
    let next = send_to(me, dst, buf, len, queued == 0 && me != dst)?;
    let (src, n) = receive(&out, 0, next)?;
    Ok((u64::from(src) << 32) | n)
}

/// A server's reply and its wait for the next request (see
/// `SYS_IPC_REPLY_WAIT`). Without it a server with a deadline (the
/// kvstore's pending log flush) needs a clock call, a send and a timed
/// receive per request: two more kernel entries, and a plain wake-up that
/// hands the client to another CPU instead of this one.
pub fn reply_wait(
    dst: u32,
    buf: u64,
    len: u64,
    rbuf: u64,
    rlen: u64,
    until_ms: u64,
) -> KResult<u64> {
    let (out, _) = receive_buffers(rbuf, rlen, 0)?;
    // Tick 0 would mean "no deadline" to `receive`.
    let deadline = match until_ms {
        IPC_FOREVER => 0,
        ms => crate::tick::ticks_for_ms(ms).max(1),
    };
    let expired = deadline != 0 && crate::state::now() >= deadline;
    let (me, queued) = caller()?;
    // A hand-off needs a caller sure to block: nothing is queued for it,
    // nor will be (no send to itself; no other CPU sends while this one
    // holds the big lock).
    let next = match send_to(me, dst, buf, len, !expired && queued == 0 && me != dst) {
        Ok(next) => next,
        Err(ESRCH) => None,
        Err(e) => return Err(e),
    };
    if expired {
        return Err(ETIMEDOUT);
    }
    let (src, n) = receive(&out, deadline, next)?;
    Ok((u64::from(src) << 32) | n)
}

/// The calling process's pid and how many messages are queued for it.
fn caller() -> KResult<(u32, u32)> {
    current().map(|p| (p.pid, p.ipc_pending)).ok_or(ESRCH)
}

/// Checked once, before blocking. No message is longer than IPC_MSG_MAX,
/// so no more of the buffer is touched.
fn receive_buffers(
    buf: u64,
    len: u64,
    src_out: u64,
) -> KResult<(uaccess::UserOut, Option<uaccess::UserOut>)> {
    let out = uaccess::UserOut::new(buf, len.min(IPC_MSG_MAX as u64))?;
    let src = match src_out {
        0 => None,
        va => Some(uaccess::UserOut::new(va, 4)?),
    };
    Ok((out, src))
}

/// [`receive`], writing the sender's pid to `src`.
fn receive_into(
    out: &uaccess::UserOut,
    src: Option<&uaccess::UserOut>,
    deadline: u64,
) -> KResult<u64> {
    let (from, n) = receive(out, deadline, None)?;
    if let Some(src) = src {
        // Cannot fail after `UserOut::new` (see `receive`).
        src.write(&from.to_ne_bytes())?;
    }
    Ok(n)
}

/// Blocks for the oldest message queued for the caller, until tick
/// `deadline` (0: forever); returns its sender and length. `next`: a
/// process `send_to` woke for a hand-off, which gets this CPU when the
/// caller blocks (it always does: see `reply_wait`).
#[inline(always)]
fn receive(out: &uaccess::UserOut, deadline: u64, next: Option<u32>) -> KResult<(u32, u64)> {
    if let Some(pid) = next {
        // Straight to the wait, with no test that could return first and
        // leave `pid` runnable but in no queue: nothing is queued for the
        // caller (see `reply_wait`), and a deadline passed meanwhile (the
        // boot CPU's tick runs on) is seen once it wakes.
        wait::block_until_then(W_IPC, 0, deadline, Some(pid));
    }
    loop {
        // Fetched again after every wait, as the state root's rule asks.
        let p = current().ok_or(ESRCH)?;
        if let Some(i) = (p.ipc_pending > 0).then(|| oldest_for(p)).flatten() {
            let m = &mut k().msgs[i];
            // This cannot fail after `UserOut::new` (only the process's
            // own system calls change its mappings); if it did, the
            // message would stay queued.
            let n = out.write(&m.data[..(m.len as usize).min(m.data.len())])?;
            let from = m.src;
            m.in_use = 0;
            p.ipc_pending = p.ipc_pending.saturating_sub(1);
            return Ok((from, n as u64));
        }
        if deadline != 0 && crate::state::now() >= deadline {
            return Err(ETIMEDOUT);
        }
        wait::block_until(W_IPC, 0, deadline);
    }
}

/// Drops messages to a dead process.
pub fn drop_for(pid: u32) {
    for m in k().msgs.iter_mut() {
        if m.in_use != 0 && m.dst == pid {
            m.in_use = 0;
        }
    }
    if let Some(p) = proc_by_pid(pid) {
        p.ipc_pending = 0;
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
