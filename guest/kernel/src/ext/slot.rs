//! An extension's slot: its descriptor, and running its code on its
//! behalf.

use crate::state::{current, k};
use lazarus_abi::ext::ExtDescriptor;
use lazarus_abi::root::{EXT_LIVE, EXT_LOADING, ExtSlot};

/// The descriptor of an extension that is loaded or being loaded.
pub fn descriptor(slot: usize) -> Option<&'static ExtDescriptor> {
    let s = &k().exts[slot];
    if s.state != EXT_LIVE && s.state != EXT_LOADING {
        return None;
    }
    descriptor_unchecked(s)
}

/// Device operations need a live extension: not one being loaded, reset
/// (waiting for its init to run again) or disabled.
pub fn live_descriptor(slot: usize) -> Option<&'static ExtDescriptor> {
    let s = &k().exts[slot];
    if s.state != EXT_LIVE {
        return None;
    }
    descriptor_unchecked(s)
}

fn descriptor_unchecked(s: &ExtSlot) -> Option<&'static ExtDescriptor> {
    if s.descriptor == 0 {
        return None;
    }
    // SAFETY: the loader validated that the descriptor lies inside the
    // module image and carries the right magic; the image stays mapped
    // while the slot is in use.
    Some(unsafe { &*(s.descriptor as *const ExtDescriptor) })
}

/// Runs `f` with the current process marked as executing in `slot`, so a
/// crash inside is attributed to the extension, and with `call` (a
/// `CALL_*`) saying what the repair does with the system call if it
/// resets the extension meanwhile.
pub fn in_ext<R>(slot: usize, call: u32, f: impl FnOnce() -> R) -> R {
    let prev = current().map(|p| {
        let prev = (p.cur_ext, p.ext_call);
        p.cur_ext = slot as u32;
        p.ext_call = call;
        prev
    });
    let r = f();
    if let (Some(p), Some((ext, call))) = (current(), prev) {
        p.cur_ext = ext;
        p.ext_call = call;
    }
    r
}

/// Runs `f` in interrupt context on behalf of extension `ext` (its timer
/// callbacks, device interrupts and deferred init): a fault inside blames
/// the extension, not the process the CPU interrupted.
pub fn in_irq_of<R>(ext: u32, f: impl FnOnce() -> R) -> R {
    let cpu = crate::state::this_cpu();
    cpu.in_irq += 1;
    cpu.irq_ext = ext;
    let r = f();
    let cpu = crate::state::this_cpu();
    cpu.in_irq -= 1;
    cpu.irq_ext = lazarus_abi::root::NONE;
    r
}
