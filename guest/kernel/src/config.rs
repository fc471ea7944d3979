//! Kernel command-line switches for the protection machinery, so that its
//! cost can be measured against the same image without it (`lazarus bench
//! overhead`). All on by default; `lazarus.protect=off` turns all off, or
//! one at a time: `lazarus.seal=off` (context seals checked at every
//! switch), `lazarus.heartbeat=off` (per-CPU heartbeats for the
//! hypervisor's watchdog; kernel time still advances),
//! `lazarus.replycheck=off` (extension replies checked against their
//! contract). `lazarus.console=tty` says the console is an interactive
//! terminal (see `console`). Unknown words are ignored, as Linux ignores
//! unknown parameters.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

const SEAL: u32 = 1;
const HEARTBEAT: u32 = 2;
const REPLY_CHECK: u32 = 4;

static ON: AtomicU32 = AtomicU32::new(SEAL | HEARTBEAT | REPLY_CHECK);
static TTY: AtomicBool = AtomicBool::new(false);

/// Reads the switches from the NUL-padded command line.
pub fn init(cmdline: &[u8]) {
    let len = cmdline
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(cmdline.len());
    let mut on = ON.load(Ordering::Relaxed);
    for word in cmdline[..len].split(|&b| b == b' ') {
        let off = match word {
            b"lazarus.protect=off" => SEAL | HEARTBEAT | REPLY_CHECK,
            b"lazarus.seal=off" => SEAL,
            b"lazarus.heartbeat=off" => HEARTBEAT,
            b"lazarus.replycheck=off" => REPLY_CHECK,
            b"lazarus.console=tty" => {
                TTY.store(true, Ordering::Relaxed);
                0
            }
            _ => 0,
        };
        on &= !off;
    }
    ON.store(on, Ordering::Relaxed);
    if on != SEAL | HEARTBEAT | REPLY_CHECK {
        crate::klog::kprintln!(
            "[kernel] protection: seals {}, heartbeat {}, reply checks {}",
            onoff(on & SEAL),
            onoff(on & HEARTBEAT),
            onoff(on & REPLY_CHECK)
        );
    }
}

fn onoff(bit: u32) -> &'static str {
    if bit != 0 { "on" } else { "off" }
}

/// Whether saved contexts are sealed and checked.
#[inline(always)]
pub fn seals() -> bool {
    ON.load(Ordering::Relaxed) & SEAL != 0
}

/// Whether the per-CPU heartbeats are kept.
#[inline(always)]
pub fn heartbeat() -> bool {
    ON.load(Ordering::Relaxed) & HEARTBEAT != 0
}

/// Whether extension replies are checked.
#[inline(always)]
pub fn reply_checks() -> bool {
    ON.load(Ordering::Relaxed) & REPLY_CHECK != 0
}

/// Whether the console is an interactive terminal.
pub fn console_tty() -> bool {
    TTY.load(Ordering::Relaxed)
}
