//! `run` and `wait`: spawning programs, pipelines and background jobs.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use lazarus_ulib::io::{self, close, pipe};
use lazarus_ulib::process::{self, Status, StdFds};
use lazarus_ulib::{Errno, println};

/// Background jobs not yet reaped.
pub struct Jobs {
    background: Vec<(u32, String)>,
    /// The console is a terminal: a foreground job is named to it, so
    /// that Ctrl-C ends the job (not the shell).
    tty: bool,
}

impl Jobs {
    pub fn new(tty: bool) -> Self {
        Jobs {
            background: Vec::new(),
            tty,
        }
    }

    /// `run A [ARGS] [| B [ARGS]]... [&]`.
    pub fn run(&mut self, args: &[&str]) {
        let (args, background) = match args.split_last() {
            Some((&"&", rest)) => (rest, true),
            _ => (args, false),
        };
        let stages: Vec<&[&str]> = args.split(|w| *w == "|").collect();
        if args.is_empty() || stages.iter().any(|s| s.is_empty()) || args.contains(&"&") {
            return super::usage("run");
        }
        let started = spawn_pipeline(&stages);
        if background {
            for (pid, name, _) in started {
                println!("[pid {pid}]");
                self.background.push((pid, name));
            }
        } else {
            let pids: Vec<u32> = started.iter().map(|s| s.0).collect();
            let named = self.tty && io::set_foreground(&pids).is_ok();
            self.wait_all(started);
            if named {
                let _ = io::set_foreground(&[]);
            }
        }
    }

    /// `wait [PID]`: waits for one background job or all of them.
    pub fn wait_command(&mut self, args: &[&str]) {
        match args {
            [] if self.background.is_empty() => println!("wait: no background jobs"),
            [] => {
                let all = core::mem::take(&mut self.background);
                self.wait_all(all.into_iter().map(|(p, n)| (p, n, true)).collect());
            }
            [pid] => match pid.parse::<u32>() {
                Ok(pid) => {
                    let name = match self.background.iter().position(|j| j.0 == pid) {
                        Some(i) => self.background.remove(i).1,
                        None => pid.to_string(),
                    };
                    self.wait_all(alloc::vec![(pid, name, true)]);
                }
                Err(_) => super::usage("wait"),
            },
            _ => super::usage("wait"),
        }
    }

    /// Waits until every process in `pids` has ended, reporting the ones
    /// that failed (and, with the flag set, every one); background jobs
    /// that end meanwhile are reaped and reported too.
    fn wait_all(&mut self, mut pids: Vec<(u32, String, bool)>) {
        while !pids.is_empty() {
            let (pid, status) = match process::wait(None) {
                Ok(r) => r,
                Err(Errno::ECHILD) => {
                    // Someone else reaped them (or they never existed).
                    for (pid, name, _) in pids {
                        println!("wait: {name} (pid {pid}): no child process");
                    }
                    return;
                }
                Err(e) => {
                    println!("wait: {e}");
                    return;
                }
            };
            if let Some(i) = pids.iter().position(|p| p.0 == pid) {
                let (_, name, verbose) = pids.remove(i);
                if verbose {
                    report(pid, &name, status);
                } else if status != 0 {
                    println!("{name}: {}", Status(status));
                }
            } else {
                self.reaped(pid, status);
            }
        }
    }

    /// Reaps and reports background jobs that have ended, without
    /// waiting, as a shell does before its prompt: an ended child keeps
    /// its memory (a quarantined one all of it) until it is reaped.
    pub fn reap_finished(&mut self) {
        if self.background.is_empty() {
            return;
        }
        while let Ok(Some((pid, status))) = process::try_wait(None) {
            self.reaped(pid, status);
        }
    }

    /// Reports a background job reaped while waiting for something else.
    fn reaped(&mut self, pid: u32, status: i32) {
        let name = match self.background.iter().position(|j| j.0 == pid) {
            Some(i) => self.background.remove(i).1,
            None => String::from("?"),
        };
        report(pid, &name, status);
    }
}

/// `[pid N] NAME: done`, or the failure.
fn report(pid: u32, name: &str, status: i32) {
    if status == 0 {
        println!("[pid {pid}] {name}: done");
    } else {
        println!("[pid {pid}] {name}: {}", Status(status));
    }
}

/// Spawns `stages` connected by pipes; returns (pid, name, report-success
/// flag) for each stage that started.
fn spawn_pipeline(stages: &[&[&str]]) -> Vec<(u32, String, bool)> {
    let mut started = Vec::new();
    let mut input: Option<i32> = None;
    for (i, stage) in stages.iter().enumerate() {
        let name = stage[0];
        let (next_input, output) = if i + 1 < stages.len() {
            match pipe() {
                Ok((r, w)) => (Some(r), Some(w)),
                Err(e) => {
                    println!("run: pipe: {e}");
                    break;
                }
            }
        } else {
            (None, None)
        };
        let path = format!("/bin/{name}");
        let fds = StdFds {
            stdin: input,
            stdout: output,
        };
        let spawned = process::spawn(&path, &stage[1..], fds);
        // The children hold their own references; ours would keep the
        // pipes open (no EOF for the reader).
        for fd in [input, output].into_iter().flatten() {
            let _ = close(fd);
        }
        input = next_input;
        match spawned {
            Ok(pid) => started.push((pid, String::from(name), false)),
            Err(e) => {
                println!("run: {name}: {e}");
                break;
            }
        }
    }
    if let Some(fd) = input {
        let _ = close(fd);
    }
    started
}
