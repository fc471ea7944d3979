//! The console: the serial input buffer and console file descriptors.
//!
//! On an interactive terminal (`config::console_tty`: the hypervisor put
//! the host's terminal in raw mode) the console is a small tty: Ctrl-C
//! ends the foreground job the shell named (`tty::SET_FOREGROUND`), as a
//! Unix tty sends SIGINT to its foreground process group (at the next
//! kernel entry: `trap` asks `take_interrupt`); with no job it
//! is input like any byte (the shell's line reader drops the line). The
//! shell echoes and edits lines itself (`LineReader`), as a shell with
//! readline does.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::arch::serial;
use crate::state::k;
use crate::uaccess::{self, KResult};
use crate::wait;
use lazarus_abi::root::{CONSOLE_BUF, W_CONSOLE};
use lazarus_abi::syscall::errno::ENOTSUP;
use lazarus_abi::syscall::tty;

/// Ctrl-C.
const INTR: u8 = 0x03;

/// A Ctrl-C came for the foreground job (see `take_interrupt`).
static INTR_PENDING: AtomicBool = AtomicBool::new(false);

/// The foreground job's processes (0: free).
static FOREGROUND: [AtomicU32; tty::MAX_FOREGROUND] =
    [const { AtomicU32::new(0) }; tty::MAX_FOREGROUND];

/// Moves received serial bytes into the input ring (interrupt context),
/// as many as it has room for: bounded work per interrupt, and a full ring
/// leaves the rest in the UART, which holds the hypervisor's input back
/// until a reader makes room (`take` pulls it in then).
pub fn on_interrupt() {
    let ci = &mut k().console_in;
    let room = CONSOLE_BUF.saturating_sub(ci.len as usize);
    let intr =
        crate::config::console_tty() && FOREGROUND.iter().any(|p| p.load(Ordering::Relaxed) != 0);
    let mut interrupted = false;
    serial::drain(room, |b| {
        if intr && b == INTR {
            interrupted = true;
            return;
        }
        let tail = (ci.head + ci.len) as usize % CONSOLE_BUF;
        ci.buf[tail] = b;
        ci.len += 1;
    });
    if ci.len > 0 {
        wait::wake_all(W_CONSOLE, 0);
    }
    if interrupted {
        interrupt_foreground();
    }
}

/// Notes a Ctrl-C for the foreground job, if there is one: the next
/// kernel entry ends it (`take_interrupt`), where ending the current
/// process is safe.
fn interrupt_foreground() {
    if FOREGROUND.iter().any(|p| p.load(Ordering::Relaxed) != 0) {
        serial::write(b"^C\n");
        INTR_PENDING.store(true, Ordering::SeqCst);
    }
}

/// The foreground job a Ctrl-C asked to end since the last call (the job
/// is forgotten), if one did.
pub fn take_interrupt() -> Option<[u32; tty::MAX_FOREGROUND]> {
    // A plain load first: this runs on every kernel entry.
    if !INTR_PENDING.load(Ordering::Relaxed) || !INTR_PENDING.swap(false, Ordering::SeqCst) {
        return None;
    }
    Some(FOREGROUND.each_ref().map(|p| p.swap(0, Ordering::Relaxed)))
}

/// `ioctl` on a console descriptor (`tty::*`).
pub fn ioctl(cmd: u64, arg: u64) -> KResult<u64> {
    match cmd {
        tty::IS_TERMINAL => Ok(u64::from(crate::config::console_tty())),
        tty::SET_FOREGROUND => {
            let mut raw = [0u8; 4 * tty::MAX_FOREGROUND];
            if arg != 0 {
                uaccess::copy_in(&mut raw, arg)?;
            }
            for (slot, pid) in FOREGROUND.iter().zip(raw.chunks_exact(4)) {
                let pid = u32::from_le_bytes([pid[0], pid[1], pid[2], pid[3]]);
                slot.store(pid, Ordering::Relaxed);
            }
            // A Ctrl-C typed after the command, before its job was named,
            // is meant for it.
            if crate::config::console_tty() && take_typed_intr() {
                interrupt_foreground();
            }
            Ok(0)
        }
        _ => Err(ENOTSUP),
    }
}

/// Takes the first Ctrl-C out of the input ring, if one is there.
fn take_typed_intr() -> bool {
    let ci = &mut k().console_in;
    let len = ci.len as usize;
    let at = |i: usize| (ci.head as usize + i) % CONSOLE_BUF;
    let Some(i) = (0..len).find(|&i| ci.buf[at(i)] == INTR) else {
        return false;
    };
    for j in i..len - 1 {
        ci.buf[at(j)] = ci.buf[at(j + 1)];
    }
    ci.len -= 1;
    true
}
/// Takes up to `out.len()` buffered input bytes.
fn take(out: &mut [u8]) -> usize {
    let ci = &mut k().console_in;
    let n = (ci.len as usize).min(out.len());
    for o in out.iter_mut().take(n) {
        *o = ci.buf[ci.head as usize % CONSOLE_BUF];
        ci.head = (ci.head + 1) % CONSOLE_BUF as u64;
    }
    ci.len -= n as u64;
    if n > 0 {
        // Room again: input the UART held back (no interrupt comes for
        // it, as the hypervisor raises one only for new bytes).
        on_interrupt();
    }
    n
}

/// Reads console input into the (checked) user buffer, blocking until
/// there is some.
pub fn read(buf: u64, len: u64) -> KResult<u64> {
    if len == 0 {
        return Ok(0);
    }
    loop {
        let mut tmp = [0u8; 256];
        let want = (len as usize).min(tmp.len());
        let n = take(&mut tmp[..want]);
        if n > 0 {
            uaccess::copy_to(buf, &tmp[..n])?;
            return Ok(n as u64);
        }
        crate::boot::note_waiting_for_input();
        wait::block(W_CONSOLE, 0);
    }
}

/// Writes the user buffer to the serial port.
pub fn write(buf: u64, len: u64) -> KResult<u64> {
    let s = uaccess::slice(buf, len)?;
    serial::write(s);
    Ok(len)
}
