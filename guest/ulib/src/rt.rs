//! Process entry and the panic handler.

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::args::Args;
use crate::process::exit;

unsafe extern "Rust" {
    /// Defined by the program through [`crate::entry!`].
    safe fn __lazarus_main(args: Args) -> i32;
}

/// The argument block, kept for the panic message's program name.
static ARGS_PTR: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static ARGS_LEN: AtomicUsize = AtomicUsize::new(0);

/// The ELF entry point, first in `.text` (user.ld puts `.text.start` at
/// the image base). The kernel enters with RSP 16-byte aligned; the `call`
/// gives `start_rust` the ABI's entry alignment (RSP + 8 aligned), and a
/// zero RBP ends frame-pointer backtraces here.
#[unsafe(naked)]
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.start")]
pub extern "C" fn _start() -> ! {
    core::arch::naked_asm!(
        "xor ebp, ebp",
        "call {start}",
        // start_rust never returns; a privileged instruction kills us if
        // it somehow did.
        "hlt",
        start = sym start_rust,
    )
}

/// Rust side of `_start`: RDI and RSI still hold the kernel's argument
/// pointer and length.
extern "C" fn start_rust(ptr: *const u8, len: usize) -> ! {
    let raw: &'static [u8] = if ptr.is_null() {
        &[]
    } else {
        ARGS_PTR.store(ptr.cast_mut(), Ordering::Relaxed);
        ARGS_LEN.store(len, Ordering::Relaxed);
        // SAFETY: the kernel maps `len` bytes of arguments at `ptr` on the
        // initial stack, above the frame of `_start`, which never returns;
        // nothing writes them afterwards.
        unsafe { core::slice::from_raw_parts(ptr, len) }
    };
    exit(__lazarus_main(Args::from_raw(raw)))
}

/// The program's arguments, for code that did not keep them.
pub(crate) fn args() -> Args {
    let ptr = ARGS_PTR.load(Ordering::Relaxed);
    if ptr.is_null() {
        return Args::from_raw(&[]);
    }
    // SAFETY: set once in `start_rust` from the kernel's argument block,
    // which stays valid for the life of the process.
    Args::from_raw(unsafe { core::slice::from_raw_parts(ptr, ARGS_LEN.load(Ordering::Relaxed)) })
}

/// Status a panicking program exits with, like Rust's std.
pub const PANIC_EXIT_STATUS: i32 = 101;

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let prog = args().program();
    match info.location() {
        Some(loc) => crate::eprintln!(
            "{prog}: panicked at {}:{}: {}",
            loc.file(),
            loc.line(),
            info.message()
        ),
        None => crate::eprintln!("{prog}: panicked: {}", info.message()),
    }
    exit(PANIC_EXIT_STATUS)
}
