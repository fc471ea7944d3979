//! The host terminal under `lazarus run`'s console, as QEMU's
//! `-nographic` and Cloud Hypervisor's tty console treat it: raw mode
//! while the guest runs, so that every key (Ctrl-C included) goes to the
//! guest, restored on every exit path; and QEMU's escape keys, Ctrl-A
//! then X to quit.
//!
//! Piped input is never touched: no raw mode, no escapes (bytes pass as
//! they are), and Ctrl-C reaches lazarus as SIGINT (see `run`).

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

/// The escape key: Ctrl-A.
pub const ESCAPE: u8 = 0x01;

/// What the console prints at start on a terminal.
pub const BANNER: &str =
    "lazarus: console on this terminal: Ctrl-C goes to the guest; Ctrl-A X quits, Ctrl-A H helps";

/// What Ctrl-A H prints (`\r\n`: the terminal is raw).
pub const HELP: &str = "\r\nlazarus console keys (after Ctrl-A):\r\n  x        quit (the guest stops; crash dumps being written are finished first)\r\n  h        this help\r\n  Ctrl-A   send Ctrl-A to the guest\r\n";

/// The terminal settings to put back, wherever lazarus exits from.
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Raw mode on standard input while it lives.
pub struct RawMode(());

impl RawMode {
    /// Puts standard input, if it is a terminal, in raw mode (QEMU's
    /// settings: no echo, no line editing, no signals from keys, no input
    /// translation; output processing kept so that `\n` still starts a
    /// line). `None` when it is not a terminal.
    pub fn enable() -> io::Result<Option<RawMode>> {
        let fd = io::stdin().as_raw_fd();
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(fd) } != 1 {
            return Ok(None);
        }
        // SAFETY: all-zero is a valid termios, filled in by tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid termios to write to.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let saved = t;
        t.c_iflag &= !(libc::IGNBRK
            | libc::BRKINT
            | libc::PARMRK
            | libc::ISTRIP
            | libc::INLCR
            | libc::IGNCR
            | libc::ICRNL
            | libc::IXON);
        t.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
        t.c_cflag = (t.c_cflag & !(libc::CSIZE | libc::PARENB)) | libc::CS8;
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        *lock() = Some(saved);
        // SAFETY: `t` is a valid termios for this terminal.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
            let e = io::Error::last_os_error();
            *lock() = None;
            return Err(e);
        }
        install_panic_hook();
        Ok(Some(RawMode(())))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<libc::termios>> {
    SAVED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Puts the terminal back as it was, if lazarus changed it (idempotent;
/// for exits that skip destructors too).
pub fn restore() {
    if let Some(t) = lock().take() {
        // SAFETY: `t` came from tcgetattr on this descriptor.
        unsafe { libc::tcsetattr(io::stdin().as_raw_fd(), libc::TCSANOW, &t) };
    }
}

/// A panic must not leave the terminal raw (the message would be
/// garbled, and the shell unusable afterwards).
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
}

/// What an escape sequence asks of lazarus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscapeAction {
    /// Ctrl-A X.
    Quit,
    /// Ctrl-A H.
    Help,
}

/// Finds Ctrl-A sequences in typed input (state kept across reads: the
/// two keys may come in two reads).
#[derive(Debug, Default)]
pub struct Escapes {
    armed: bool,
}

impl Escapes {
    /// Moves the bytes meant for the guest from `input` to `out` and the
    /// actions asked for to `actions`; bytes after a quit are dropped.
    /// Ctrl-A Ctrl-A sends one Ctrl-A; Ctrl-A then any other key is
    /// ignored, as in QEMU.
    pub fn filter(&mut self, input: &[u8], out: &mut Vec<u8>, actions: &mut Vec<EscapeAction>) {
        for &b in input {
            if !std::mem::take(&mut self.armed) {
                if b == ESCAPE {
                    self.armed = true;
                } else {
                    out.push(b);
                }
                continue;
            }
            match b {
                b'x' | b'X' => {
                    actions.push(EscapeAction::Quit);
                    return;
                }
                b'h' | b'H' | b'?' => actions.push(EscapeAction::Help),
                ESCAPE => out.push(ESCAPE),
                _ => {}
            }
        }
    }
}

/// Standard input with the escapes taken out: `on_action` runs for each
/// one, and a quit ends the input.
pub struct EscapeReader<R, F> {
    inner: R,
    escapes: Escapes,
    on_action: F,
    quit: bool,
    out: Vec<u8>,
}

impl<R: Read, F: FnMut(EscapeAction)> EscapeReader<R, F> {
    pub fn new(inner: R, on_action: F) -> Self {
        EscapeReader {
            inner,
            escapes: Escapes::default(),
            on_action,
            quit: false,
            out: Vec::new(),
        }
    }
}

impl<R: Read, F: FnMut(EscapeAction)> Read for EscapeReader<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.out.is_empty() {
                let n = self.out.len().min(buf.len());
                buf[..n].copy_from_slice(&self.out[..n]);
                self.out.drain(..n);
                return Ok(n);
            }
            if self.quit {
                return Ok(0);
            }
            let mut chunk = [0u8; 1024];
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                return Ok(0);
            }
            let mut actions = Vec::new();
            self.escapes
                .filter(&chunk[..n], &mut self.out, &mut actions);
            for a in actions {
                self.quit |= a == EscapeAction::Quit;
                (self.on_action)(a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[&[u8]]) -> (Vec<u8>, Vec<EscapeAction>) {
        let mut e = Escapes::default();
        let (mut out, mut actions) = (Vec::new(), Vec::new());
        for chunk in input {
            e.filter(chunk, &mut out, &mut actions);
        }
        (out, actions)
    }

    #[test]
    fn plain_bytes_and_ctrl_c_pass_through() {
        let (out, actions) = run(&[b"ps\r", b"\x03run worker\r"]);
        assert_eq!(out, b"ps\r\x03run worker\r");
        assert!(actions.is_empty());
    }

    #[test]
    fn ctrl_a_x_quits_even_split_across_reads_and_drops_the_rest() {
        assert_eq!(
            run(&[b"ab\x01xcd"]),
            (b"ab".to_vec(), vec![EscapeAction::Quit])
        );
        assert_eq!(
            run(&[b"ab\x01", b"Xcd"]),
            (b"ab".to_vec(), vec![EscapeAction::Quit])
        );
    }

    #[test]
    fn ctrl_a_twice_sends_one_and_other_keys_are_ignored() {
        assert_eq!(run(&[b"\x01\x01a\x01zb"]), (b"\x01ab".to_vec(), vec![]));
        assert_eq!(run(&[b"\x01h"]), (Vec::new(), vec![EscapeAction::Help]));
    }

    #[test]
    fn the_reader_ends_at_a_quit() {
        let mut actions = Vec::new();
        let mut r = EscapeReader::new(&b"ls\x01hps\x01xpoweroff\r"[..], |a| actions.push(a));
        let mut got = Vec::new();
        r.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"lsps");
        assert_eq!(actions, [EscapeAction::Help, EscapeAction::Quit]);
    }
}
