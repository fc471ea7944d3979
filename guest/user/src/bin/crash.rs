//! `crash KIND`: asks the crashtest extension to crash the kernel in the
//! named way, on behalf of this process (which a recovery quarantines).
//! `crash list` names the kinds; `crash ping` checks the device.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use core::fmt::Write;

use lazarus_ulib::abi::dev::crashtest::{
    DEV, IOC_DEADLOCK, IOC_HOLD_LOCK, IOC_PEEK_PHYS, IOC_PING, IOC_POKE_PHYS, KINDS, PING_REPLY,
    kind_by_name,
};
use lazarus_ulib::io::ioctl;
use lazarus_ulib::process;
use lazarus_ulib::{Args, entry, ext, print, println};

entry!(main);

fn main(args: Args) -> i32 {
    let Some(kind) = args.get(1) else {
        println!("usage: crash KIND | list | ping");
        return 2;
    };
    let cmd = match kind {
        "list" => {
            let mut out = String::new();
            for (name, nr, what) in KINDS {
                let _ = writeln!(out, "  {name:<16} {nr:>4}  {what}");
            }
            print!("{out}");
            return 0;
        }
        "ping" => IOC_PING,
        "peek" | "poke" => return phys(&args),
        // The lock holder of the deadlock kind (started by it, below).
        "hold-lock" => IOC_HOLD_LOCK,
        _ => match kind_by_name(kind) {
            Some(cmd) => cmd,
            None => {
                println!("crash: unknown kind {kind} (try crash list)");
                return 2;
            }
        },
    };
    let fd = match ext::open_device(DEV) {
        Ok(fd) => fd,
        Err(e) => {
            println!("crash: {e}");
            return 1;
        }
    };
    if cmd == IOC_DEADLOCK {
        // Another process must hold the lock first: it sleeps in the
        // kernel holding it, and then we spin on it.
        if let Err(e) = process::spawn("/bin/crash", &["hold-lock"], Default::default()) {
            println!("crash: cannot start the lock holder: {e}");
            return 1;
        }
        process::sleep_ms(200);
    }
    if cmd != IOC_PING && cmd != IOC_HOLD_LOCK {
        println!("crash: triggering {kind}");
    }
    match ioctl(fd, cmd, 0) {
        Ok(r) if cmd == IOC_PING && r as i64 == PING_REPLY => {
            println!("crash: ping ok ({r:#x})");
            0
        }
        Ok(r) if cmd == IOC_PING => {
            println!("crash: ping returned {r:#x}, expected {PING_REPLY:#x}");
            1
        }
        // timer-fault returns; its crash follows on the next tick.
        Ok(r) => {
            println!("crash: {kind} returned {r:#x}");
            0
        }
        Err(e) => {
            println!("crash: {e}");
            1
        }
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `crash peek GPA` / `crash poke GPA VALUE`: one u64 of guest-physical
/// memory, through the crashtest driver's ioremap.
fn phys(args: &Args) -> i32 {
    let poke = args.get(1) == Some("poke");
    let (Some(gpa), value) = (
        args.get(2).and_then(parse_u64),
        args.get(3).and_then(parse_u64),
    ) else {
        println!("usage: crash peek GPA | crash poke GPA VALUE");
        return 2;
    };
    if poke && value.is_none() {
        println!("usage: crash poke GPA VALUE");
        return 2;
    }
    let fd = match ext::open_device(DEV) {
        Ok(fd) => fd,
        Err(e) => {
            println!("crash: {e}");
            return 1;
        }
    };
    let mut req = [gpa, value.unwrap_or(0)];
    let cmd = if poke { IOC_POKE_PHYS } else { IOC_PEEK_PHYS };
    match ioctl(fd, cmd, req.as_mut_ptr() as u64) {
        Ok(_) if poke => println!("poke {gpa:#x} = {:#x}: done", req[1]),
        Ok(_) => println!("peek {gpa:#x} = {:#x}", req[1]),
        Err(e) => {
            println!("crash: {e}");
            return 1;
        }
    }
    0
}
