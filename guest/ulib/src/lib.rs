//! The lazarus user runtime: process entry, system-call wrappers, a heap
//! over `SYS_SBRK`, console I/O and the kvstore client.
//!
//! A program is a `#![no_std] #![no_main]` binary that names its main
//! function with [`entry!`]:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! use lazarus_ulib::{entry, println, Args};
//! entry!(main);
//! fn main(args: Args) -> i32 {
//!     println!("hello from {}", args.program());
//!     0
//! }
//! ```
#![no_std]

extern crate alloc;

pub mod args;
pub mod checksum;
pub mod ext;
pub mod heap;
pub mod io;
pub mod ipc;
pub mod kv;
pub mod process;
mod rt;
pub mod syscall;

pub use args::Args;
pub use lazarus_abi as abi;
pub use syscall::{Errno, Result};

/// Declares the program's main function, `fn(Args) -> i32`; its return
/// value becomes the exit status.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// Called by the runtime's `_start`.
        #[unsafe(no_mangle)]
        pub fn __lazarus_main(args: $crate::Args) -> i32 {
            let main: fn($crate::Args) -> i32 = $main;
            main(args)
        }
    };
}
