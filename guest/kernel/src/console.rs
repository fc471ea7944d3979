//! The console: the serial input buffer and console file descriptors.

use crate::arch::serial;
use crate::state::k;
use crate::uaccess::{self, KResult};
use crate::wait;
use lazarus_abi::root::{CONSOLE_BUF, W_CONSOLE};

/// Moves received serial bytes into the input ring (interrupt context),
/// as many as it has room for: bounded work per interrupt, and a full ring
/// leaves the rest in the UART, which holds the hypervisor's input back
/// until a reader makes room (`take` pulls it in then).
pub fn on_interrupt() {
    let ci = &mut k().console_in;
    let room = CONSOLE_BUF.saturating_sub(ci.len as usize);
    serial::drain(room, |b| {
        let tail = (ci.head + ci.len) as usize % CONSOLE_BUF;
        ci.buf[tail] = b;
        ci.len += 1;
    });
    if ci.len > 0 {
        wait::wake_all(W_CONSOLE, 0);
    }
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
