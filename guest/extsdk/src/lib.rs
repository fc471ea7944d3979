//! Helpers for writing lazarus kernel extensions.
//!
//! An extension is a position-independent `#![no_std] #![no_main]` binary
//! that runs in ring 0 and talks to the kernel only through the
//! [`ExtApi`](lazarus_abi::ext::ExtApi) table it receives in `init`. Every
//! instruction in ring 0 is emulated on the development hosts (~0.5 µs
//! each), so keep device paths short. Use [`declare_extension!`] to emit
//! the entry point and descriptor:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! use lazarus_extsdk::{declare_extension, klog};
//!
//! fn init() -> i32 { klog!("hello: loaded"); 0 }
//! extern "C" fn exit() {}
//! extern "C" fn ioctl(_aux: u64, cmd: u64, _arg: u64) -> i64 { cmd as i64 }
//!
//! declare_extension! {
//!     name: "hello", device: "hello", init: init, exit: exit,
//!     open: None, read: None, write: None, ioctl: Some(ioctl), close: None,
//! }
//! ```
#![no_std]

pub mod api;
pub mod dev;
pub mod log;
pub mod mem;
mod panic;
pub mod sync;
pub mod timer;
pub mod user;

pub use api::api;
pub use lazarus_abi as abi;
pub use lazarus_abi::syscall::errno;

/// Emits the extension's entry point (`_start`, returning its descriptor)
/// and the descriptor itself.
///
/// `init` is a `fn() -> i32` (0 or a negative errno) called after the API
/// table is installed; `exit` is an `extern "C" fn()`; the device
/// operations are `Option`s of the `lazarus_abi::ext::Dev*` types.
/// Optional, in this order: `replay` (`REPLAY_*` bits), `replay_ioctls`
/// and `config_ioctls` (`ioctl_bit` masks), which say what the kernel may
/// issue again after the extension is reset (see `ExtDescriptor`).
#[macro_export]
macro_rules! declare_extension {
    (
        name: $name:literal,
        device: $dev:literal,
        init: $init:path,
        exit: $exit:path,
        open: $open:expr,
        read: $read:expr,
        write: $write:expr,
        ioctl: $ioctl:expr,
        close: $close:expr
        $(, replay: $replay:expr)?
        $(, replay_ioctls: $replay_ioctls:expr)?
        $(, config_ioctls: $config_ioctls:expr)? $(,)?
    ) => {
        extern "C" fn __lazarus_ext_init(api: &'static $crate::abi::ext::ExtApi) -> i32 {
            if let Err(e) = $crate::api::install(api) {
                return e;
            }
            let init: fn() -> i32 = $init;
            init()
        }

        static __LAZARUS_EXT_DESCRIPTOR: $crate::abi::ext::ExtDescriptor =
            $crate::abi::ext::ExtDescriptor {
                magic: $crate::abi::ext::EXT_MAGIC,
                api_version: $crate::abi::ext::EXT_API_VERSION,
                _pad: 0,
                name: $crate::abi::name16($name),
                dev_name: $crate::abi::name16($dev),
                init: __lazarus_ext_init,
                exit: $exit,
                open: $open,
                read: $read,
                write: $write,
                ioctl: $ioctl,
                close: $close,
                replay: 0 $(| $replay)?,
                _pad2: 0,
                replay_ioctls: 0 $(| $replay_ioctls)?,
                config_ioctls: 0 $(| $config_ioctls)?,
            };

        /// The ELF entry point: the kernel calls it after relocating the
        /// module and reads the descriptor it returns.
        #[unsafe(no_mangle)]
        pub extern "C" fn _start() -> *const $crate::abi::ext::ExtDescriptor {
            &__LAZARUS_EXT_DESCRIPTOR
        }
    };
}
