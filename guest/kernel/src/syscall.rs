//! System-call dispatch. Entered from the #UD handler when ring 3 executed
//! `ud2` (see lazarus_abi::syscall for the convention).

use crate::state::{current_pid, k};
use crate::uaccess::{self, KResult};
use crate::{ext, fd, ipc, proc, sched, wait};
use lazarus_abi::root::*;
use lazarus_abi::syscall::errno::*;
use lazarus_abi::syscall::*;
use lazarus_abi::trap::TrapFrame;

/// Runs the system call in `tf` for the current process, which entered on
/// CPU `me`.
pub fn dispatch(tf: &mut TrapFrame, me: usize) {
    let nr = tf.rax;
    let (a0, a1, a2, a3, a4, a5) = (tf.rdi, tf.rsi, tf.rdx, tf.r10, tf.r8, tf.r9);
    k().cpus[me].syscalls += 1;
    if let Some(p) = crate::state::current() {
        p.syscall_nr = nr;
        p.kernel_entry_tick = crate::state::now().max(1);
        p.user_frame = tf as *mut TrapFrame as u64;
    }
    let r = call(nr, [a0, a1, a2, a3, a4, a5]);
    tf.rax = match r {
        Ok(v) => v,
        Err(e) => (-e) as u64,
    };
    // The same process (its own kernel stack), perhaps on another CPU now.
    if let Some(p) = crate::state::current() {
        p.syscall_nr = u64::MAX;
        p.kernel_entry_tick = 0;
        p.user_frame = 0;
    }
}

fn path_arg(ptr: u64, len: u64) -> KResult<&'static [u8]> {
    if len as usize > PATH_MAX {
        return Err(E2BIG);
    }
    uaccess::slice(ptr, len)
}

fn call(nr: u64, [a0, a1, a2, a3, a4, a5]: [u64; 6]) -> KResult<u64> {
    match nr {
        SYS_EXIT => {
            proc::exit(current_pid(), a0 as i32);
            Ok(0)
        }
        SYS_READ => fd::read(a0, a1, a2),
        SYS_WRITE => fd::write(a0, a1, a2),
        SYS_OPEN => fd::open(path_arg(a0, a1)?),
        SYS_CLOSE => fd::close(a0),
        SYS_IOCTL => fd::ioctl(a0, a1, a2),
        SYS_SEEK => fd::seek(a0, a1, a2),
        SYS_EXT_COMPLAIN => fd::complain(a0, a1),
        SYS_SPAWN => spawn(a0, a1, a2, a3, a4),
        SYS_WAIT => {
            if a2 & !WNOHANG != 0 {
                return Err(EINVAL);
            }
            let Some((pid, status)) = proc::wait(a0 as i64, a2 & WNOHANG != 0)? else {
                return Ok(0);
            };
            if a1 != 0 {
                uaccess::write_obj(a1, &status)?;
            }
            Ok(pid as u64)
        }
        SYS_YIELD => {
            sched::yield_now();
            Ok(0)
        }
        SYS_SLEEP => {
            let ticks = crate::tick::ticks_for_ms(a0);
            wait::sleep_ticks(ticks);
            Ok(0)
        }
        SYS_GETPID => Ok(current_pid() as u64),
        SYS_PIPE => {
            uaccess::check(a0, 8, true)?;
            let (r, w) = fd::pipe()?;
            uaccess::write_obj(a0, &[r as i32, w as i32])?;
            Ok(0)
        }
        SYS_SBRK => proc::sbrk(a0 as i64),
        SYS_PS => ps(a0, a1),
        SYS_EXT_LOAD => ext::load(path_arg(a0, a1)?),
        SYS_EXT_UNLOAD => ext::unload(path_arg(a0, a1)?),
        SYS_EXT_LIST => ext::list(a0, a1),
        SYS_IPC_SEND => ipc::send(a0 as u32, a1, a2),
        SYS_IPC_RECV => ipc::recv(a0, a1, a2),
        SYS_IPC_RECV_TIMEOUT => ipc::recv_timeout(a0, a1, a2, a3),
        SYS_IPC_SENDRECV => ipc::sendrecv(a0 as u32, a1, a2, a3, a4),
        SYS_IPC_REPLY_WAIT => ipc::reply_wait(a0 as u32, a1, a2, a3, a4, a5),
        SYS_SVC_REGISTER => ipc::register(path_arg(a0, a1)?),
        SYS_SVC_LOOKUP => ipc::lookup(path_arg(a0, a1)?),
        SYS_POWEROFF => {
            crate::smp::stop_others();
            crate::hypercall::call(lazarus_abi::hypercall::HC_POWEROFF, [a0, 0, 0, 0, 0]);
            crate::arch::cpu::halt_forever()
        }
        SYS_UPTIME => Ok(crate::state::now() * crate::tick::MS_PER_TICK),
        SYS_KILL => proc::kill(a0 as u32).map(|_| 0),
        SYS_DUP => fd::dup(a0),
        SYS_RECOVERIES => recoveries(a0, a1),
        SYS_CPUS => cpus(a0, a1),
        _ => Err(ENOSYS),
    }
}

fn spawn(path: u64, path_len: u64, args: u64, args_len: u64, fds: u64) -> KResult<u64> {
    let path = path_arg(path, path_len)?;
    if args_len as usize > ARGS_MAX {
        return Err(E2BIG);
    }
    let args = uaccess::slice(args, args_len)?;
    let console = Fd {
        kind: FD_CONSOLE,
        obj: 0,
    };
    let mut child = [console; 2];
    if fds != 0 {
        let mut map = [0i32; 2];
        let raw = uaccess::slice(fds, 8)?;
        map[0] = i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        map[1] = i32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
        for (c, &m) in child.iter_mut().zip(map.iter()) {
            if m >= 0 {
                *c = fd::get(m as u64)?;
            }
        }
    }
    let pid = proc::spawn(&proc::SpawnArgs {
        path,
        args,
        fds: child,
    })?;
    Ok(pid as u64)
}

fn ps(buf: u64, max: u64) -> KResult<u64> {
    let mut n = 0u64;
    let sz = core::mem::size_of::<ProcInfo>() as u64;
    uaccess::check(buf, max.checked_mul(sz).ok_or(EINVAL)?, true)?;
    for i in 0..MAX_PROCS {
        let p = k().procs[i];
        if p.state == PS_FREE || n >= max {
            continue;
        }
        let info = ProcInfo {
            pid: p.pid,
            parent: p.parent,
            state: p.state,
            exit_status: p.exit_status,
            name: p.name,
            ticks: p.ticks,
            mem_pages: p.mem_pages,
            cpu: p.last_cpu,
            _pad: 0,
        };
        uaccess::write_obj(buf + n * sz, &info)?;
        n += 1;
    }
    Ok(n)
}

fn cpus(buf: u64, max: u64) -> KResult<u64> {
    let sz = core::mem::size_of::<CpuInfo>() as u64;
    let n = (crate::smp::count() as u64).min(max);
    uaccess::check(buf, n * sz, true)?;
    for i in 0..n {
        let c = k().cpus[i as usize];
        let info = CpuInfo {
            cpu: i as u32,
            online: c.online,
            current: c.current,
            _pad: 0,
            ticks: c.ticks,
            idle_ticks: c.idle_ticks,
            context_switches: c.context_switches,
            syscalls: c.syscalls,
            bkl_waits: c.bkl_waits,
        };
        uaccess::write_obj(buf + i * sz, &info)?;
    }
    Ok(n)
}

fn recoveries(buf: u64, max: u64) -> KResult<u64> {
    let log = k().recovery;
    let n = log.count.min(MAX_RECOVERIES as u64).min(max);
    let sz = core::mem::size_of::<RecoveryRecord>() as u64;
    for i in 0..n {
        let seq = log.count - n + i;
        uaccess::write_obj(
            buf + i * sz,
            &log.records[(seq % MAX_RECOVERIES as u64) as usize],
        )?;
    }
    Ok(n)
}
