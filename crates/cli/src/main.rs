//! `lazarus`: run the lazarus OS in its hypervisor, and measure it.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | the guest powered off cleanly (`run` exits with the guest's power-off status, 0 normally) |
//! | 1    | hypervisor or internal error (including a `--timeout` that expired) |
//! | 2    | usage error (bad command line) |
//! | 3    | the guest crashed |
//! | 4    | bad input: missing or corrupt kernel or initramfs, bad memory size |
//! | 5    | KVM unavailable: /dev/kvm missing or not accessible |
//! | 6    | `ctl`: the API socket cannot be reached |
//! | 7    | `ctl`: the server refused the request (4xx) |
//! | 8    | `ctl`: the server failed (5xx) |
//! | 9    | `run`, `demo`: the disk image is in use by another VM (`--disk`) |
//! | 10   | the shared crash database (`--crash-db`) cannot be reached |
//! | 0    | `run`: quit with Ctrl-A X on its terminal (as QEMU) |
//! | 128+N | `run`: quit on signal N (130: SIGINT, 143: SIGTERM, 129: SIGHUP) |
//!
//! Errors are reported as one line on stderr: `lazarus: error: ...`.
//! Logs go to stderr too; `RUST_LOG` selects them (default `warn`).
//!
//! # The console
//!
//! `lazarus run` connects the guest's serial console to stdin and stdout.
//! The host terminal stays in canonical (cooked) mode: it echoes what you
//! type and hands a line to the guest when you press Enter; Ctrl-C ends
//! lazarus itself. Input may also be piped: `printf 'ps\npoweroff\n' |
//! lazarus run` runs the commands and exits when the guest powers off.

mod api;
mod bench;
mod bench_io;
mod bench_ipc;
mod bench_overhead;
mod bench_recovery;
mod bench_vm;
mod campaign;
mod cli;
mod crashes_cmd;
mod ctl;
mod dashboard_cmd;
mod demo;
mod diagnose_cmd;
mod disk;
mod events;
mod exit;
mod image;
mod quit;
mod reboot_limit;
mod run;
mod terminal;

use std::process::ExitCode;

use crate::cli::{BenchCommand, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    init_logging();
    let result = match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Bench(BenchCommand::Boot(args)) => bench::boot(&args),
        Command::Bench(BenchCommand::Recovery(args)) => bench_recovery::run(&args),
        Command::Bench(BenchCommand::Ipc(args)) => bench_ipc::run(&args),
        Command::Bench(BenchCommand::Io(args)) => bench_io::run(&args),
        Command::Bench(BenchCommand::Overhead(args)) => bench_overhead::run(&args),
        Command::Crashes(args) => match crashes_cmd::run(&args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Diagnose(args) => match diagnose_cmd::run(&args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Dashboard(args) => dashboard_cmd::run(&args),
        Command::Ctl(args) => ctl::run(&args),
        Command::Campaign(args) => campaign::run(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lazarus: error: {}", exit::message(&e));
            ExitCode::from(exit::code(&e))
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
