//! A real `lazarus run` process (real KVM, real guest), driven through
//! its console.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use crate::require_kvm;

/// The shell's prompt.
pub const PROMPT: &str = "lazarus> ";

#[derive(Clone, Copy)]
enum Stream {
    Console,
    Host,
}

/// A `lazarus run` process, driven through its console (stdin/stdout),
/// with the hypervisor's own output (stderr) kept apart.
pub struct Guest {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<(Stream, Vec<u8>)>,
    /// Everything the guest console (stdout) printed so far.
    pub console: String,
    /// Everything the hypervisor itself (stderr) printed so far.
    pub host: String,
    /// Both streams in arrival order, for failure messages only: the
    /// hypervisor's lines can land in the middle of a console line.
    pub transcript: String,
    /// Read position in `console` for `cmd`/`expect`.
    pos: usize,
    sync_seq: u64,
    /// The default data directory, removed with the guest.
    _data: tempfile::TempDir,
}

impl Guest {
    /// Starts `lazarus run` (`bin`, from the test's
    /// `env!("CARGO_BIN_EXE_lazarus")`) with `extra` arguments and waits
    /// for the shell prompt. Dumps, reports and symbols go to a
    /// temporary data directory unless `extra` names one, never to the
    /// user's real one.
    pub fn spawn(bin: &str, extra: &[&str]) -> Guest {
        require_kvm();
        let data = crate::temp_dir("data");
        let mut child = Command::new(bin)
            .arg("run")
            .args(extra)
            .env("LAZARUS_DATA_DIR", data.path())
            // Never the developer's shared crash database.
            .env_remove("LAZARUS_CRASH_DB")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lazarus run");
        // Console and hypervisor output are kept apart: matching on a
        // merged stream fails whenever a host line splits a console line.
        let (tx, rx) = channel();
        let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout"));
        let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr"));
        for (which, mut stream) in [(Stream::Console, stdout), (Stream::Host, stderr)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send((which, buf[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        let mut g = Guest {
            child,
            stdin,
            rx,
            console: String::new(),
            host: String::new(),
            transcript: String::new(),
            pos: 0,
            sync_seq: 0,
            _data: data,
        };
        g.expect(PROMPT, Duration::from_secs(60));
        g
    }

    fn pump(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        match self.rx.recv_timeout(deadline - now) {
            Ok((which, chunk)) => {
                let text = String::from_utf8_lossy(&chunk);
                self.transcript.push_str(&text);
                match which {
                    Stream::Console => self.console.push_str(&text),
                    Stream::Host => self.host.push_str(&text),
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(10));
                false
            }
        }
    }

    /// Waits until `pat` appears after the read position; returns the text
    /// up to and including it and advances past it.
    pub fn expect(&mut self, pat: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.console[self.pos..].find(pat) {
                let end = self.pos + i + pat.len();
                let out = self.console[self.pos..end].to_string();
                self.pos = end;
                return out;
            }
            if !self.pump(deadline) && Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {pat:?}; console so far:\n{}",
                    self.transcript
                );
            }
        }
    }

    /// Waits until every line in `lines` has been printed in full on the
    /// console (anywhere after the read position), without consuming
    /// anything.
    pub fn wait_lines(&mut self, prefixes: &[&str], timeout: Duration) -> Vec<String> {
        self.wait_lines_in(Stream::Console, self.pos, prefixes, timeout)
    }

    /// Where the console text ends now, for [`Guest::wait_lines_since`].
    pub fn mark(&self) -> usize {
        self.console.len()
    }

    /// Like `wait_lines`, from `mark` on: for the lines of background jobs,
    /// which commands run meanwhile may have read past.
    pub fn wait_lines_since(
        &mut self,
        mark: usize,
        prefixes: &[&str],
        timeout: Duration,
    ) -> Vec<String> {
        self.wait_lines_in(Stream::Console, mark, prefixes, timeout)
    }

    /// Like `wait_lines`, for the hypervisor's own output (stderr).
    pub fn wait_host_lines(&mut self, prefixes: &[&str], timeout: Duration) -> Vec<String> {
        self.wait_lines_in(Stream::Host, 0, prefixes, timeout)
    }

    fn wait_lines_in(
        &mut self,
        which: Stream,
        from: usize,
        prefixes: &[&str],
        timeout: Duration,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<Option<String>> = prefixes
                .iter()
                .map(|p| {
                    let t = match which {
                        Stream::Console => self.console.get(from..).unwrap_or_default(),
                        Stream::Host => &self.host[..],
                    };
                    let i = t.find(p)?;
                    let rest = &t[i..];
                    let end = rest.find('\n')?;
                    Some(rest[..end].trim_end().to_string())
                })
                .collect();
            if found.iter().all(Option::is_some) {
                return found.into_iter().flatten().collect();
            }
            if !self.pump(deadline) && Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {prefixes:?}; console:\n{}",
                    self.transcript
                );
            }
        }
    }

    /// Collects whatever both streams print during `d`, without consuming
    /// anything (e.g. to check that nothing is printed).
    pub fn settle(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            self.pump(deadline);
        }
    }

    /// Writes `bytes` to the console as they are (bulk input, a paste).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write console");
        stdin.flush().expect("flush console");
    }

    /// Types `line` and Enter.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).expect("write console");
        stdin.write_all(b"\n").expect("write console");
        stdin.flush().expect("flush console");
    }

    /// Re-synchronises with the shell after asynchronous output (a crash,
    /// a background job): everything before the echoed marker is skipped.
    pub fn resync(&mut self) {
        self.sync_seq += 1;
        let marker = format!("resync-{}", self.sync_seq);
        self.send(&format!("echo {marker}"));
        self.expect(&format!("{marker}\n"), Duration::from_secs(60));
        self.expect(PROMPT, Duration::from_secs(60));
    }

    /// Runs one shell command and returns its output (without the prompt).
    pub fn cmd(&mut self, line: &str) -> String {
        self.cmd_timeout(line, Duration::from_secs(30))
    }

    /// [`Guest::cmd`] with a timeout.
    pub fn cmd_timeout(&mut self, line: &str, timeout: Duration) -> String {
        self.send(line);
        let out = self.expect(PROMPT, timeout);
        out.trim_end_matches(PROMPT).to_string()
    }

    /// The `lazarus run` process's id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Powers the guest off and returns the hypervisor's exit status.
    pub fn poweroff(mut self) -> ExitStatus {
        self.send("poweroff");
        self.wait(Duration::from_secs(30))
    }

    /// Waits for the process to exit (killing it after `timeout`).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                while self.pump(Instant::now() + Duration::from_millis(50)) {}
                return st;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("lazarus did not exit; console:\n{}", self.transcript);
            }
            self.pump(Instant::now() + Duration::from_millis(50));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `kv check: N intact, M lost`.
pub fn kv_check(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("kv check:") && l.contains("intact"))
        .unwrap_or_else(|| panic!("no kv check line in {out:?}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("number"))
        .collect();
    assert_eq!(nums.len(), 2, "unexpected kv check line {line:?}");
    (nums[0], nums[1])
}

/// Busy ticks (ticks not idle) of each online CPU, from the shell's `cpus`.
pub fn cpu_busy_ticks(out: &str) -> Vec<u64> {
    let rows: Vec<u64> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 || f[1] != "online" {
                return None;
            }
            let ticks: u64 = f[3].parse().ok()?;
            let idle: u64 = f[4].parse().ok()?;
            Some(ticks.saturating_sub(idle))
        })
        .collect();
    assert!(!rows.is_empty(), "no CPU rows in:\n{out}");
    rows
}

impl Guest {
    /// Every online CPU does work while `wait` runs (e.g. waiting for
    /// workers to report progress): its busy ticks grow.
    pub fn every_cpu_progresses(&mut self, wait: impl FnOnce(&mut Guest)) {
        let before = cpu_busy_ticks(&self.cmd("cpus"));
        wait(self);
        self.resync();
        let after = cpu_busy_ticks(&self.cmd("cpus"));
        assert_eq!(before.len(), after.len(), "{}", self.transcript);
        for (cpu, (b, a)) in before.iter().zip(&after).enumerate() {
            assert!(
                a > b,
                "cpu {cpu} did no work ({b} -> {a} busy ticks):\n{}",
                self.transcript
            );
        }
    }
}
