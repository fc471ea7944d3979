//! Prints what a fuzz input stands for: `cargo run -p lazarus-fuzz-harness
//! --example describe -- TARGET FILE` (the structured targets, hypercall
//! and serial, decode their operations; the others print the bytes).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, file] = args.as_slice() else {
        eprintln!("usage: describe TARGET FILE");
        return ExitCode::from(2);
    };
    let data = match std::fs::read(file) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{file}: {e}");
            return ExitCode::from(1);
        }
    };
    match target.as_str() {
        "hypercall" => println!("{}", lazarus_fuzz_harness::hypercall::describe(&data)),
        "serial" => println!("{}", lazarus_fuzz_harness::serial::describe(&data)),
        _ => println!("{:?}", String::from_utf8_lossy(&data)),
    }
    ExitCode::SUCCESS
}
