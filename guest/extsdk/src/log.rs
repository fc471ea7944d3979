//! Kernel log output: `klog!` formats into a fixed stack buffer and makes
//! one `log` call, with no allocation.

use core::fmt;

/// Bytes of one `klog!` line; longer lines are truncated.
pub const LOG_LINE: usize = 128;

/// A truncating `fmt::Write` into a fixed buffer.
pub struct FixedBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> FixedBuf<N> {
    /// An empty buffer of `N` bytes.
    pub const fn new() -> Self {
        FixedBuf {
            buf: [0; N],
            len: 0,
        }
    }

    /// The text written so far (truncated at `N` bytes).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Ends the text with a newline, replacing the last byte if full.
    pub fn push_newline(&mut self) {
        if N == 0 {
            return;
        }
        if self.len == N {
            self.len -= 1;
        }
        self.buf[self.len] = b'\n';
        self.len += 1;
    }
}

impl<const N: usize> Default for FixedBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes raw bytes to the kernel log.
pub fn log_bytes(msg: &[u8]) {
    (crate::api().log)(msg.as_ptr(), msg.len());
}

#[doc(hidden)]
pub fn _klog(args: fmt::Arguments) {
    let mut line = FixedBuf::<LOG_LINE>::new();
    // A plain string skips the (emulated, so slow) formatting machinery.
    let _ = match args.as_str() {
        Some(s) => fmt::Write::write_str(&mut line, s),
        None => fmt::Write::write_fmt(&mut line, args),
    };
    line.push_newline();
    log_bytes(line.as_bytes());
}

/// Logs one line (at most [`LOG_LINE`] bytes, newline added) to the
/// kernel log.
#[macro_export]
macro_rules! klog {
    ($($arg:tt)*) => { $crate::log::_klog(format_args!($($arg)*)) };
}
