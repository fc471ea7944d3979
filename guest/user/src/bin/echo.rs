//! `echo ARGS...`: prints its arguments, space-separated, to fd 1.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use lazarus_ulib::io::{STDOUT, write_all};
use lazarus_ulib::{Args, entry, eprintln};

entry!(main);

fn main(args: Args) -> i32 {
    let mut line = Vec::new();
    for (i, a) in args.iter().skip(1).enumerate() {
        if i > 0 {
            line.push(b' ');
        }
        line.extend_from_slice(a.as_bytes());
    }
    line.push(b'\n');
    match write_all(STDOUT, &line) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("echo: {e}");
            1
        }
    }
}
