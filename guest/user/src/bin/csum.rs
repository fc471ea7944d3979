//! `csum`: reads standard input up to a line `END` and prints how many
//! bytes came before it and their FNV-1a hash, so a test can prove that
//! bulk console input arrives whole: `csum: bytes=N fnv=HEX`. It says
//! `csum: ready` first, once it is reading.
#![no_std]
#![no_main]

use lazarus_ulib::io::{STDIN, read};
use lazarus_ulib::{Args, entry, println};

entry!(main);

/// The line that ends the input, with its newline.
const END: &[u8; 4] = b"END\n";
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn main(_args: Args) -> i32 {
    println!("csum: ready");
    let (mut hash, mut bytes) = (FNV_OFFSET, 0u64);
    // The last four bytes, not hashed yet: they may be the END line.
    let mut delay = [0u8; 4];
    let mut held = 0usize;
    // The byte before them (input starts at a line start).
    let mut before = b'\n';
    let mut buf = [0u8; 4096];
    loop {
        let n = match read(STDIN, &mut buf) {
            Ok(0) => {
                println!("csum: input ended before END");
                return 1;
            }
            Ok(n) => n,
            Err(e) => {
                println!("csum: read: {e}");
                return 1;
            }
        };
        for &b in &buf[..n] {
            if held == delay.len() {
                before = delay[0];
                hash = (hash ^ u64::from(before)).wrapping_mul(FNV_PRIME);
                bytes += 1;
                delay.copy_within(1.., 0);
                held -= 1;
            }
            delay[held] = b;
            held += 1;
            if held == delay.len() && &delay == END && before == b'\n' {
                println!("csum: bytes={bytes} fnv={hash:016x}");
                return 0;
            }
        }
    }
}
