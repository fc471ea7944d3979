//! Kernel log output and the console input buffer.

use crate::arch::serial;
use crate::state::k;
use core::fmt::{self, Write};
use lazarus_abi::root::CONSOLE_BUF;

/// Formats into a fixed buffer and writes it with one port exit.
pub struct LineBuf {
    buf: [u8; 256],
    len: usize,
}

impl LineBuf {
    pub const fn new() -> Self {
        Self {
            buf: [0; 256],
            len: 0,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

pub fn print_fmt(args: fmt::Arguments) {
    let mut b = LineBuf::new();
    let _ = b.write_fmt(args);
    serial::write(b.as_bytes());
}

#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => {
        $crate::console::print_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

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
