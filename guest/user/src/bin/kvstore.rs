#![no_std]
#![no_main]
use lazarus_ulib as _;
#[unsafe(no_mangle)]
pub extern "C" fn main() -> i32 {
    0
}
