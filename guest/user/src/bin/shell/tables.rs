//! `ps` and `lsmod`: kernel tables, printed with one write each.

use alloc::string::String;
use core::fmt::Write;

use lazarus_ulib::abi::name_str;
use lazarus_ulib::abi::root::{ext_state_name, proc_state_name};
use lazarus_ulib::{ext, print, println, process};

pub fn ps() {
    let rows = match process::ps() {
        Ok(rows) => rows,
        Err(e) => return println!("ps: {e}"),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5} {:>5} {:<11} {:>3} {:>8} {:>8} NAME",
        "PID", "PPID", "STATE", "CPU", "TICKS", "MEM"
    );
    for p in rows {
        let _ = writeln!(
            out,
            "{:>5} {:>5} {:<11} {:>3} {:>8} {:>7}K {}",
            p.pid,
            p.parent,
            proc_state_name(p.state),
            p.cpu,
            p.ticks,
            p.mem_pages * 4,
            name_str(&p.name)
        );
    }
    print!("{out}");
}

pub fn cpus() {
    let rows = match process::cpus() {
        Ok(rows) => rows,
        Err(e) => return println!("cpus: {e}"),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>3} {:<7} {:>7} {:>9} {:>9} {:>5} {:>9} {:>9} {:>9}",
        "CPU", "STATE", "CURRENT", "TICKS", "IDLE", "IDLE%", "SWITCHES", "SYSCALLS", "BKLWAITS"
    );
    for c in rows {
        let current = match (c.online, c.current) {
            (0, _) => "-".into(),
            (_, 0) => "idle".into(),
            (_, pid) => alloc::format!("{pid}"),
        };
        let idle_pct = (c.idle_ticks * 100).checked_div(c.ticks).unwrap_or(0);
        let _ = writeln!(
            out,
            "{:>3} {:<7} {:>7} {:>9} {:>9} {:>4}% {:>9} {:>9} {:>9}",
            c.cpu,
            if c.online != 0 { "online" } else { "offline" },
            current,
            c.ticks,
            c.idle_ticks,
            idle_pct,
            c.context_switches,
            c.syscalls,
            c.bkl_waits
        );
    }
    print!("{out}");
}

pub fn lsmod() {
    let rows = match ext::list() {
        Ok(rows) => rows,
        Err(e) => return println!("lsmod: {e}"),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>4} {:<9} {:<12} {:<12} {:<18} {:>8} {:>7}",
        "SLOT", "STATE", "NAME", "DEVICE", "BASE", "SIZE", "CRASHES"
    );
    for e in rows {
        let _ = writeln!(
            out,
            "{:>4} {:<9} {:<12} {:<12} {:#018x} {:>8} {:>7}",
            e.slot,
            ext_state_name(e.state),
            name_str(&e.name),
            name_str(&e.dev_name),
            e.base,
            e.size,
            e.crash_count
        );
    }
    print!("{out}");
}

/// `recoveries`: the kernel's log of resurrections, with what happened to
/// the device calls and open files of a reset extension (replayed or failed
/// with EIO; reopened or broken).
pub fn recoveries() {
    let rows = match process::recoveries() {
        Ok(rows) => rows,
        Err(e) => return println!("recoveries: {e}"),
    };
    if rows.is_empty() {
        return println!("no recoveries");
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>4} {:>8} {:<20} {:<12} {:>5} {:<12} {:>10} {:>8} {:>4} {:>8} {:>6}",
        "SEQ",
        "TICK",
        "KIND",
        "EXTENSION",
        "PID",
        "PROCESS",
        "LATENCY",
        "REPLAYED",
        "EIO",
        "REOPENED",
        "BROKEN"
    );
    for r in rows {
        let latency = if r.latency_ns == 0 {
            String::from("-")
        } else {
            alloc::format!(
                "{}.{:03}ms",
                r.latency_ns / 1_000_000,
                (r.latency_ns / 1000) % 1000
            )
        };
        let pid = if r.pid == 0 {
            String::from("-")
        } else {
            alloc::format!("{}", r.pid)
        };
        let _ = writeln!(
            out,
            "{:>4} {:>8} {:<20} {:<12} {:>5} {:<12} {:>10} {:>8} {:>4} {:>8} {:>6}",
            r.seq,
            r.tick,
            lazarus_ulib::abi::repair::kind_name(r.kind),
            name_str(&r.ext_name),
            pid,
            name_str(&r.name),
            latency,
            r.calls_replayed,
            r.calls_failed,
            r.files_reopened,
            r.files_broken
        );
    }
    print!("{out}");
}
