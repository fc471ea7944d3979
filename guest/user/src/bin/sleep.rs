//! `sleep MS`: sleeps for MS milliseconds. A program, not a shell
//! built-in, so that it is a foreground job Ctrl-C can interrupt.
#![no_std]
#![no_main]

use lazarus_ulib::{Args, entry, eprintln, process};

entry!(main);

fn main(args: Args) -> i32 {
    let mut it = args.iter().skip(1);
    match (it.next().map(str::parse::<u64>), it.next()) {
        (Some(Ok(ms)), None) => {
            process::sleep_ms(ms);
            0
        }
        _ => {
            eprintln!("usage: sleep MS");
            2
        }
    }
}
