//! The kernel's API table, stored once by `init`.

use core::sync::atomic::{AtomicPtr, Ordering};

use lazarus_abi::ext::{EXT_API_VERSION, ExtApi};
use lazarus_abi::syscall::errno::EINVAL;

static API: AtomicPtr<ExtApi> = AtomicPtr::new(core::ptr::null_mut());

/// Stores the table the kernel passed to `init`; fails with `-EINVAL` if
/// its version is not the one this SDK was built for.
pub fn install(api: &'static ExtApi) -> Result<(), i32> {
    if api.version != EXT_API_VERSION {
        return Err(-(EINVAL as i32));
    }
    API.store((api as *const ExtApi).cast_mut(), Ordering::Release);
    Ok(())
}

/// The kernel's API table, if `init` has run.
pub fn try_api() -> Option<&'static ExtApi> {
    let p = API.load(Ordering::Acquire);
    // SAFETY: the only non-null value ever stored is a `&'static ExtApi`.
    unsafe { p.as_ref() }
}

/// The kernel's API table. The kernel calls `init` before anything else,
/// so this cannot fail in a correctly loaded extension; if it does, there
/// is no way to report it, and the CPU stops here for the watchdog.
pub fn api() -> &'static ExtApi {
    match try_api() {
        Some(api) => api,
        None => loop {
            core::hint::spin_loop();
        },
    }
}

/// Declares this extension broken (`ExtApi::failed`): the kernel resets
/// it, and the caller's request is issued again if it is replayable.
pub fn failed(why: &str) -> ! {
    (api().failed)(why.as_ptr(), why.len())
}
