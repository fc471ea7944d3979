//! `crash KIND`: asks the crashtest extension to crash the kernel in the
//! named way, on behalf of this process (which a recovery quarantines).
//! `crash list` names the kinds; `crash ping` checks the device.
//! `crash fail-silent` and `crash overlong-read` break the extension
//! without crashing anything and show it being caught and reset.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use core::fmt::Write;

use lazarus_ulib::abi::dev::crashtest::{
    DEV, FAILURES, IOC_BREAK_PING, IOC_BREAK_READ, IOC_DEADLOCK, IOC_HOLD_LOCK, IOC_PEEK_PHYS,
    IOC_PING, IOC_POKE_PHYS, KINDS, PING_REPLY, kind_by_name,
};
use lazarus_ulib::abi::syscall::complaint;
use lazarus_ulib::io::{close, ioctl, read};
use lazarus_ulib::process;
use lazarus_ulib::{Args, Errno, entry, ext, print, println};

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
            let _ = writeln!(out, "not crashes (the extension fails its callers):");
            for (name, nr, what) in FAILURES {
                let _ = writeln!(out, "  {name:<16} {nr:>4}  {what}");
            }
            print!("{out}");
            return 0;
        }
        "ping" => IOC_PING,
        "peek" | "poke" => return phys(&args),
        "fail-silent" => return fail_silent(),
        "overlong-read" => return overlong_read(),
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
    let Some(fd) = open() else {
        return 1;
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
    let Some(fd) = open() else {
        return 1;
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

fn open() -> Option<i32> {
    match ext::open_device(DEV) {
        Ok(fd) => Some(fd),
        Err(e) => {
            println!("crash: {e}");
            None
        }
    }
}

/// Pings the extension on a fresh descriptor: whether it answered right.
fn ping_ok() -> bool {
    let Some(fd) = open() else {
        return false;
    };
    let r = ioctl(fd, IOC_PING, 0);
    let _ = close(fd);
    matches!(r, Ok(r) if r as i64 == PING_REPLY)
}

/// Breaks the extension's pings, notices the wrong answer as any client
/// would, reports it, and checks that the reset extension answers again.
fn fail_silent() -> i32 {
    let Some(fd) = open() else {
        return 1;
    };
    // Reports the kernel must refuse: not a reason, not a device.
    let bad_reason = ext::complain(fd, 0);
    let not_device = ext::complain(1, complaint::BAD_REPLY);
    if bad_reason != Err(Errno::EINVAL) || not_device != Err(Errno::ENOTTY) {
        println!("crash: bad reports were not refused: {bad_reason:?}, {not_device:?}");
        return 1;
    }
    if let Err(e) = ioctl(fd, IOC_BREAK_PING, 0) {
        println!("crash: cannot break the extension: {e}");
        return 1;
    }
    let r = match ioctl(fd, IOC_PING, 0) {
        Ok(r) if r as i64 == PING_REPLY => {
            println!("crash: the broken extension still answers right");
            return 1;
        }
        Ok(r) => r,
        Err(e) => {
            println!("crash: ping failed: {e}");
            return 1;
        }
    };
    println!("crash: ping returned {r:#x}, expected {PING_REPLY:#x}; reporting the extension");
    if let Err(e) = ext::complain(fd, complaint::BAD_REPLY) {
        println!("crash: the report was refused: {e}");
        return 1;
    }
    // A second report moments later is refused: a client cannot keep the
    // extension in reset.
    match ext::complain(fd, complaint::BAD_REPLY) {
        Err(Errno::EAGAIN) => println!("crash: a second report right away was refused"),
        other => {
            println!("crash: a second report right away gave {other:?}, expected EAGAIN");
            return 1;
        }
    }
    let _ = close(fd);
    if ping_ok() {
        println!("crash: the extension was reset and answers right again");
        0
    } else {
        println!("crash: the extension still answers wrong after the report");
        1
    }
}

/// Makes the extension's read claim more than it was asked for; the
/// kernel must catch that, fail the read and have the extension reset.
fn overlong_read() -> i32 {
    let Some(fd) = open() else {
        return 1;
    };
    if let Err(e) = ioctl(fd, IOC_BREAK_READ, 0) {
        println!("crash: cannot break the extension: {e}");
        return 1;
    }
    let mut buf = [0u8; 64];
    match read(fd, &mut buf) {
        Ok(n) => {
            println!("crash: the overlong read returned {n}: the kernel did not catch it");
            return 1;
        }
        Err(e) => println!("crash: read failed: {e}"),
    }
    let _ = close(fd);
    let Some(fd) = open() else {
        return 1;
    };
    let r = read(fd, &mut buf);
    let _ = close(fd);
    match r {
        Ok(0) if ping_ok() => {
            println!("crash: the extension was reset and reads right again");
            0
        }
        other => {
            println!("crash: after the reset the extension read {other:?}");
            1
        }
    }
}
