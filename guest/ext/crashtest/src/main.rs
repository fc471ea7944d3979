#![no_std]
#![no_main]
use lazarus_extsdk as _;
#[unsafe(no_mangle)]
pub extern "C" fn _start() -> u64 {
    0
}
