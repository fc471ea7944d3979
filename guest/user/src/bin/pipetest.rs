//! `pipetest`: checks pipes and fd inheritance end to end: `echo` writing
//! into a pipe we read, then `echo | upper` into a pipe we read.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use lazarus_ulib::io::{close, pipe, read_to_end};
use lazarus_ulib::process::{self, StdFds};
use lazarus_ulib::{Args, entry, println};

entry!(main);

const WORDS: &[&str] = &["hello", "through", "a", "pipe"];

fn main(_args: Args) -> i32 {
    match run() {
        Ok(()) => {
            println!("pipetest: ok");
            0
        }
        Err(why) => {
            println!("pipetest: FAIL {why}");
            1
        }
    }
}

fn run() -> Result<(), String> {
    let expect = WORDS.join(" ") + "\n";
    let got = pipeline(&[("/bin/echo", WORDS)])?;
    if got != expect.as_bytes() {
        return Err(alloc::format!(
            "echo: got {:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    let got = pipeline(&[("/bin/echo", WORDS), ("/bin/upper", &[])])?;
    if got != expect.to_ascii_uppercase().as_bytes() {
        return Err(alloc::format!(
            "echo | upper: got {:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    Ok(())
}

/// Runs `stages` connected by pipes, the last one writing into a pipe this
/// process reads to the end; returns what it read.
fn pipeline(stages: &[(&str, &[&str])]) -> Result<Vec<u8>, String> {
    let fail = |what: &str, e| alloc::format!("{what}: {e}");
    let mut input = None;
    let mut pids = Vec::new();
    for (path, args) in stages {
        let (r, w) = pipe().map_err(|e| fail("pipe", e))?;
        let fds = StdFds {
            stdin: input,
            stdout: Some(w),
        };
        let spawned = process::spawn(path, args, fds);
        // Our copies of the write end (and the previous read end) must be
        // closed, or the reader never sees end of file.
        let _ = close(w);
        if let Some(fd) = input {
            let _ = close(fd);
        }
        input = Some(r);
        pids.push(spawned.map_err(|e| fail(path, e))?);
    }
    let r = input.ok_or("no stages")?;
    let mut out = Vec::new();
    let read = read_to_end(r, &mut out);
    let _ = close(r);
    read.map_err(|e| fail("read", e))?;
    for pid in pids {
        match process::wait(Some(pid)) {
            Ok((_, 0)) => {}
            Ok((_, s)) => return Err(alloc::format!("pid {pid}: {}", process::Status(s))),
            Err(e) => return Err(fail("wait", e)),
        }
    }
    Ok(out)
}
