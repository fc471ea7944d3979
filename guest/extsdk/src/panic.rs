//! A Rust panic in an extension is a kernel panic: the message goes to the
//! kernel's `panic`, which records the crash for diagnosis.

use core::fmt::Write;
use core::panic::PanicInfo;

use crate::log::{FixedBuf, LOG_LINE};

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let mut msg = FixedBuf::<LOG_LINE>::new();
    let _ = match info.location() {
        Some(l) => write!(msg, "{}:{}: {}", l.file(), l.line(), info.message()),
        None => write!(msg, "{}", info.message()),
    };
    match crate::api::try_api() {
        Some(api) => (api.panic)(msg.as_bytes().as_ptr(), msg.as_bytes().len()),
        None => loop {
            core::hint::spin_loop();
        },
    }
}
