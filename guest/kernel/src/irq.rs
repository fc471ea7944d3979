//! Device interrupts for extensions (`ExtApi::irq_register`): handler `i`
//! in `KernelRoot::irqs` owns vector `VEC_DEVICE_BASE + i`, and its I/O
//! APIC pin is routed there (edge-triggered, CPU 0). The table lives in
//! the state root so that the repair can drop a reset extension's
//! handlers; the kernel then finds an interrupt with no handler and
//! ignores it, until the extension's init registers again.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::arch::apic;
use crate::state::k;
use lazarus_abi::layout::VEC_DEVICE_BASE;
use lazarus_abi::root::{IrqHandler, MAX_IRQS};
use lazarus_abi::syscall::errno::*;

/// Device vectors that arrived while their CPU waited for the big kernel
/// lock (bit `i`: handler `i`); run once the lock is taken.
static PENDING: AtomicU32 = AtomicU32::new(0);

/// The handler index of a device vector, if `v` is one.
pub fn index_of(v: u64) -> Option<usize> {
    let i = v.checked_sub(u64::from(VEC_DEVICE_BASE))? as usize;
    (i < MAX_IRQS).then_some(i)
}

pub fn register(ext: u32, gsi: u32, callback: u64, arg: u64) -> Result<i32, i64> {
    if !crate::platform::is_device_pin(gsi) {
        return Err(EINVAL);
    }
    let r = k();
    if r.irqs.iter().any(|h| h.in_use != 0 && h.gsi == gsi) {
        return Err(EBUSY);
    }
    let i = r.irqs.iter().position(|h| h.in_use == 0).ok_or(ENOSPC)?;
    r.irqs[i] = IrqHandler {
        in_use: 1,
        ext,
        gsi,
        _pad: 0,
        callback,
        arg,
        count: 0,
    };
    apic::ioapic_route(gsi, VEC_DEVICE_BASE + i as u8);
    Ok(i as i32)
}

pub fn unregister(id: i32) -> Result<(), i64> {
    let h = k()
        .irqs
        .get_mut(usize::try_from(id).map_err(|_| EINVAL)?)
        .ok_or(EINVAL)?;
    if h.in_use == 0 {
        return Err(EINVAL);
    }
    apic::ioapic_mask(h.gsi);
    *h = IrqHandler::default();
    Ok(())
}

pub fn remove_for_ext(ext: u32) {
    for i in 0..MAX_IRQS {
        if k().irqs[i].in_use != 0 && k().irqs[i].ext == ext {
            let _ = unregister(i as i32);
        }
    }
}

/// Notes device interrupt `i` for later (its CPU waits for the lock).
pub fn defer(i: usize) {
    PENDING.fetch_or(1 << i, Ordering::SeqCst);
}

/// Runs the handlers of interrupts that came while their CPU waited for
/// the lock. A plain load first, inline: this is on every kernel entry.
#[inline(always)]
pub fn run_deferred() {
    if PENDING.load(Ordering::Relaxed) != 0 {
        run_pending();
    }
}

fn run_pending() {
    let pending = PENDING.swap(0, Ordering::SeqCst);
    for i in 0..MAX_IRQS {
        if pending & (1 << i) != 0 {
            dispatch(i);
        }
    }
}

/// Runs handler `i` (the big kernel lock held) on behalf of its
/// extension, as timer callbacks run.
pub fn dispatch(i: usize) {
    let Some(h) = k().irqs.get(i).copied() else {
        return;
    };
    if h.in_use == 0 {
        // Its extension was reset: the pin may still fire once.
        return;
    }
    k().irqs[i].count += 1;
    // SAFETY: the extension registered this address as an
    // `extern "C" fn(u64)` inside its own loaded image (checked against
    // its text by the repair's invariants after every reset).
    let f: extern "C" fn(u64) = unsafe { core::mem::transmute(h.callback) };
    crate::ext::in_irq_of(h.ext, || f(h.arg));
}

/// Masks every device pin no handler owns (after a repair dropped a reset
/// extension's handlers: its device stays quiet until init registers
/// again).
pub fn mask_unhandled() {
    for i in 0..MAX_IRQS {
        if let Some(d) = crate::platform::device(i)
            && !k().irqs.iter().any(|h| h.in_use != 0 && h.gsi == d.gsi)
        {
            apic::ioapic_mask(d.gsi);
        }
    }
}
