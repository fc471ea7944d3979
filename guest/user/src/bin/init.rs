//! pid 1: loads the disk driver (`virtblk`, when the machine has a disk),
//! starts the kvstore service and the shell, then reaps children forever,
//! restarting either if it ends.
#![no_std]
#![no_main]

use lazarus_ulib::process::{self, Status, StdFds};
use lazarus_ulib::{Args, Errno, entry, println};

entry!(main);

const KVSTORE: &str = "/bin/kvstore";
const SHELL: &str = "/bin/shell";
/// A child that ends sooner than this after starting is restarted at once
/// the first time, and after this long when it happens again in a row, so
/// a program that dies at once cannot spin init.
const RESPAWN_BACKOFF_MS: u64 = 1000;

/// A child init keeps running.
struct Daemon {
    path: &'static str,
    pid: Option<u32>,
    /// When it was last started.
    started_ms: Option<u64>,
    /// Consecutive lives shorter than the backoff.
    quick_deaths: u32,
}

impl Daemon {
    const fn new(path: &'static str) -> Daemon {
        Daemon {
            path,
            pid: None,
            started_ms: None,
            quick_deaths: 0,
        }
    }

    fn start(&mut self) {
        let quick = self
            .started_ms
            .is_some_and(|t| process::uptime_ms().saturating_sub(t) < RESPAWN_BACKOFF_MS);
        self.quick_deaths = if quick { self.quick_deaths + 1 } else { 0 };
        if self.quick_deaths > 1 {
            process::sleep_ms(RESPAWN_BACKOFF_MS);
        }
        self.started_ms = Some(process::uptime_ms());
        match process::spawn(self.path, &[], StdFds::default()) {
            Ok(pid) => self.pid = Some(pid),
            Err(e) => {
                println!("init: cannot start {}: {e}", self.path);
                self.pid = None;
            }
        }
    }
}

fn main(_args: Args) -> i32 {
    // The kvstore keeps its log on the disk.
    match lazarus_ulib::ext::load("virtblk") {
        Ok(_) | Err(Errno::EEXIST | Errno::ENODEV) => {}
        Err(e) => println!("init: cannot load the disk driver virtblk: {e}"),
    }
    let mut kv = Daemon::new(KVSTORE);
    let mut shell = Daemon::new(SHELL);
    kv.start();
    shell.start();
    loop {
        match process::wait(None) {
            Ok((pid, status)) => {
                let daemon = [&mut kv, &mut shell]
                    .into_iter()
                    .find(|d| d.pid == Some(pid));
                let name = daemon.as_ref().map_or("orphan", |d| d.path);
                if status != 0 {
                    println!("init: pid {pid} ({name}) ended: {}", Status(status));
                }
                if let Some(d) = daemon {
                    d.pid = None;
                    println!("init: restarting {}", d.path);
                    d.start();
                }
            }
            Err(Errno::ECHILD) => {
                // Nothing to reap: both daemons failed to start. Retry.
                for d in [&mut kv, &mut shell] {
                    if d.pid.is_none() {
                        d.start();
                    }
                }
                process::sleep_ms(RESPAWN_BACKOFF_MS);
            }
            Err(e) => {
                println!("init: wait: {e}");
                process::sleep_ms(RESPAWN_BACKOFF_MS);
            }
        }
    }
}
