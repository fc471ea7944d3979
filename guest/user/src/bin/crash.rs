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
    DEV, FAILURES, IOC_BREAK_PING, IOC_BREAK_READ, IOC_DEADLOCK, IOC_HOLD_LOCK, IOC_IDT_WIPE,
    IOC_LOCK_A, IOC_LOCK_B, IOC_NULL_READ, IOC_PEEK_PHYS, IOC_PING, IOC_POKE_PHYS,
    IOC_SLEEP_IN_EXT, IOC_SPIN_LOCK_A, IOC_TIMER_FAULT, IOC_TRY_LOCK_B, IOC_UNLOCK, KINDS,
    PING_REPLY, SCENARIOS, kind_by_name,
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
            let _ = writeln!(out, "scenarios across processes and CPUs:");
            for (name, what) in SCENARIOS {
                let _ = writeln!(out, "  {name:<16}       {what}");
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
        "lock-waiter" => return lock_waiter(),
        "ext-victim" => return ext_victim(),
        "abba" => return abba(),
        "irq-fault-ap" => return irq_fault_ap(),
        "idt-wipe" => return idt_wipe(),
        // The other halves of the scenarios, started by them.
        "spin-lock-b" => return spin_lock_b(),
        "sleep-in-ext" => return sleep_in_ext(),
        "abba-partner" => return abba_partner(),
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

/// Runs `ioctl(cmd, arg)` on a fresh descriptor, printing a failure.
fn call(cmd: u64, arg: u64) -> Result<u64, Errno> {
    let fd = open().ok_or(Errno::ENODEV)?;
    let r = ioctl(fd, cmd, arg);
    let _ = close(fd);
    r
}

/// Starts `/bin/crash ROLE` in the background.
fn start(role: &str) -> bool {
    match process::spawn("/bin/crash", &[role], Default::default()) {
        Ok(_) => true,
        Err(e) => {
            println!("crash: cannot start {role}: {e}");
            false
        }
    }
}

/// Holds lock B, lets another process spin on it (on another CPU when
/// there is one), then faults holding it: the repair must release it so
/// that the spinner proceeds.
fn lock_waiter() -> i32 {
    if let Err(e) = call(IOC_LOCK_B, 0) {
        println!("crash: lock-waiter: cannot take lock B: {e}");
        return 1;
    }
    if !start("spin-lock-b") {
        return 1;
    }
    process::sleep_ms(300);
    println!("crash: triggering lock-waiter (fault holding lock B)");
    let r = call(IOC_NULL_READ, 0);
    println!("crash: the fault returned {r:?}");
    1
}

/// The spinner of `lock-waiter`: retries lock B from user mode, a system
/// call per attempt, until it has it (or gives up after 60 s). The reset
/// that follows the repair closes the device under it (today's extension
/// resets do), so it reopens it as any client would.
fn spin_lock_b() -> i32 {
    let start = process::uptime_ms();
    let mut tries = 0u64;
    let mut fd = None;
    loop {
        if process::uptime_ms().saturating_sub(start) > 60_000 {
            println!("crash: spin-lock-b: lock B never came free");
            return 1;
        }
        let Some(f) = fd.or_else(|| ext::open_device(DEV).ok()) else {
            process::yield_now();
            continue;
        };
        fd = Some(f);
        tries += 1;
        match ioctl(f, IOC_TRY_LOCK_B, 0) {
            Ok(_) => break,
            Err(Errno::EBUSY) => {}
            Err(Errno::ENODEV | Errno::EBADF) => {
                let _ = close(f);
                fd = None;
            }
            Err(e) => {
                println!("crash: spin-lock-b: {e}");
                return 1;
            }
        }
    }
    if let Some(f) = fd {
        let _ = ioctl(f, IOC_UNLOCK, 0);
        let _ = close(f);
    }
    println!("crash: spin-lock-b: got lock B after {tries} tries and released it");
    0
}

/// Faults while another process sleeps inside the same extension: that
/// process is a victim, not an offender.
fn ext_victim() -> i32 {
    if !start("sleep-in-ext") {
        return 1;
    }
    process::sleep_ms(300);
    println!("crash: triggering ext-victim (fault while another process is inside crashtest)");
    let r = call(IOC_NULL_READ, 0);
    println!("crash: the fault returned {r:?}");
    1
}

/// The victim of `ext-victim`: its call into the extension is unwound
/// by the reset; it carries on and finds the extension working.
fn sleep_in_ext() -> i32 {
    let r = call(IOC_SLEEP_IN_EXT, 10_000);
    match r {
        Ok(_) => {
            println!("crash: sleep-in-ext: the call completed without a repair");
            1
        }
        Err(e) => {
            let ok = ping_ok();
            println!("crash: sleep-in-ext: the call returned {e}; still running; ping ok: {ok}");
            if ok { 0 } else { 1 }
        }
    }
}

/// ABBA: this process holds A and waits for B; the partner holds B and
/// spins on A with interrupts off, locking up its CPU. The repair breaks
/// the cycle by quarantining the spinner; this process gets B.
fn abba() -> i32 {
    if let Err(e) = call(IOC_LOCK_A, 0) {
        println!("crash: abba: cannot take lock A: {e}");
        return 1;
    }
    if !start("abba-partner") {
        return 1;
    }
    process::sleep_ms(200);
    println!("crash: triggering abba (holding A, waiting for B)");
    let Some(fd) = open() else {
        return 1;
    };
    // The repair quarantines the spinner and resets the extension: this
    // process, waiting inside it, is its victim and its wait is unwound.
    match ioctl(fd, IOC_LOCK_B, 0) {
        Ok(_) => {
            let _ = ioctl(fd, IOC_UNLOCK, 0);
            println!("crash: abba: got lock B once the partner was gone");
            0
        }
        Err(e) => {
            // Our descriptor would keep a disabled extension from being
            // reloaded.
            let _ = close(fd);
            let ok = ping_ok();
            println!("crash: abba: the wait for lock B returned {e}; still running; ping ok: {ok}");
            if ok { 0 } else { 1 }
        }
    }
}

/// The partner of `abba`: takes B, then spins on A.
fn abba_partner() -> i32 {
    let Some(fd) = open() else {
        return 1;
    };
    if let Err(e) = ioctl(fd, IOC_LOCK_B, 0) {
        println!("crash: abba-partner: cannot take lock B: {e}");
        return 1;
    }
    process::sleep_ms(400);
    let r = ioctl(fd, IOC_SPIN_LOCK_A, 0);
    println!("crash: abba-partner: the spin returned {r:?}");
    1
}

/// The IDT every CPU shares wiped, and a fault: the other CPUs triple-
/// fault at their next interrupt, which the fault sends them at once.
fn idt_wipe() -> i32 {
    if process::cpus().map_or(1, |c| c.len()) < 2 {
        println!("crash: idt-wipe needs at least 2 vCPUs");
        return 2;
    }
    let Some(fd) = open() else {
        return 1;
    };
    println!("crash: wiping the IDT");
    let r = ioctl(fd, IOC_IDT_WIPE, 0);
    println!("crash: the wipe returned {r:?}");
    1
}

/// A fault in a timer callback (interrupt context) on the last CPU.
fn irq_fault_ap() -> i32 {
    let cpus = process::cpus().map_or(1, |c| c.len());
    if cpus < 2 {
        println!("crash: irq-fault-ap needs at least 2 vCPUs");
        return 2;
    }
    println!("crash: triggering irq-fault-ap on cpu {}", cpus - 1);
    let Some(fd) = open() else {
        return 1;
    };
    // The timer is armed on the CPU the call runs on: retry until the
    // scheduler has put this process there.
    let start = process::uptime_ms();
    loop {
        match ioctl(fd, IOC_TIMER_FAULT, cpus as u64) {
            Ok(_) => return 0,
            Err(Errno::EAGAIN) if process::uptime_ms().saturating_sub(start) < 30_000 => {
                process::sleep_ms(1);
            }
            Err(e) => {
                println!("crash: {e}");
                return 1;
            }
        }
    }
}
