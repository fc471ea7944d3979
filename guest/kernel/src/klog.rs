//! Kernel log output: a line is formatted into a fixed buffer and written
//! with one port exit.

use crate::arch::serial;
use core::fmt::{self, Write};

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

macro_rules! kprintln {
    ($($arg:tt)*) => {
        $crate::klog::print_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use kprintln;
