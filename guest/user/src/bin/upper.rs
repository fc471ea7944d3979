//! `upper`: copies fd 0 to fd 1 upper-cased, until end of file.
#![no_std]
#![no_main]

use lazarus_ulib::io::{STDIN, STDOUT, read, write_all};
use lazarus_ulib::{Args, entry, eprintln};

entry!(main);

fn main(_args: Args) -> i32 {
    let mut buf = [0u8; 1024];
    loop {
        let n = match read(STDIN, &mut buf) {
            Ok(0) => return 0,
            Ok(n) => n,
            Err(e) => {
                eprintln!("upper: {e}");
                return 1;
            }
        };
        buf[..n].make_ascii_uppercase();
        if let Err(e) = write_all(STDOUT, &buf[..n]) {
            eprintln!("upper: {e}");
            return 1;
        }
    }
}
