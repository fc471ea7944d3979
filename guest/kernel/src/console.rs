//! The console input buffer.

use crate::arch::serial;
use crate::state::k;
use lazarus_abi::root::CONSOLE_BUF;

/// Moves received serial bytes into the input ring (interrupt context).
pub fn on_interrupt() {
    let ci = &mut k().console_in;
    serial::drain(|b| {
        if (ci.len as usize) < CONSOLE_BUF {
            let tail = (ci.head + ci.len) as usize % CONSOLE_BUF;
            ci.buf[tail] = b;
            ci.len += 1;
        }
    });
    if ci.len > 0 {
        crate::sched::wake_all(lazarus_abi::root::W_CONSOLE, 0);
    }
}

/// Takes up to `out.len()` buffered input bytes.
pub fn take(out: &mut [u8]) -> usize {
    let ci = &mut k().console_in;
    let n = (ci.len as usize).min(out.len());
    for o in out.iter_mut().take(n) {
        *o = ci.buf[ci.head as usize % CONSOLE_BUF];
        ci.head = (ci.head + 1) % CONSOLE_BUF as u64;
    }
    ci.len -= n as u64;
    n
}
