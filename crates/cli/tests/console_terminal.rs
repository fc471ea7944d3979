//! `lazarus run` on a real terminal (a pseudo-terminal) behaves like
//! QEMU's `-nographic` console: raw mode (the guest echoes), Ctrl-C
//! interrupts the guest's foreground job instead of killing lazarus,
//! Ctrl-A X quits, and the terminal is as it was afterwards. Without a
//! terminal, SIGINT quits cleanly, after the crash dumps are written.

mod common;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// A pseudo-terminal: the test holds the master side.
struct Pty {
    master: File,
    output: Receiver<Vec<u8>>,
    seen: String,
}

impl Pty {
    /// Runs `script` under `sh` with the terminal's slave side as its
    /// standard input, output and error.
    fn spawn(script: &str, env: &[(&str, &str)]) -> (Pty, Child) {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors; the null arguments ask
        // for default settings.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned both descriptors, now owned here.
        let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .envs(env.iter().copied())
            .stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave))
            .spawn()
            .expect("spawn sh");
        let mut reader = master.try_clone().expect("dup master");
        let (tx, output) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let pty = Pty {
            master,
            output,
            seen: String::new(),
        };
        (pty, child)
    }

    /// Waits for `pat` in the output; returns everything seen so far.
    fn expect(&mut self, pat: &str) -> &str {
        let deadline = Instant::now() + T;
        while !self.seen.contains(pat) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("{pat:?} never came; terminal:\n{}", self.seen),
            }
        }
        &self.seen
    }

    /// Forgets what was seen (the next `expect` looks at new output only).
    fn clear(&mut self) {
        self.seen.clear();
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).expect("type");
    }
}

#[test]
fn on_a_terminal_ctrl_c_interrupts_the_guest_job_and_ctrl_a_x_quits() {
    common::require_kvm();
    let data = common::temp_dir("tty");
    let dir = tempfile::tempdir().expect("tempdir");
    let (before, after) = (dir.path().join("before"), dir.path().join("after"));
    let script = format!(
        "stty -g > '{}'; '{}' run; echo \"exit=$?\"; stty -g > '{}'",
        before.display(),
        env!("CARGO_BIN_EXE_lazarus"),
        after.display()
    );
    let data_env = data.path().to_str().expect("utf-8 path");
    let (mut tty, mut child) = Pty::spawn(&script, &[("LAZARUS_DATA_DIR", data_env)]);
    tty.expect("Ctrl-A X quits");
    tty.expect(common::PROMPT);

    // The terminal is raw: the guest's shell echoes what is typed (and
    // its line editing erases with backspace).
    tty.clear();
    tty.type_keys(b"echo hellp\x7fo\r");
    tty.expect("hello\r\n");

    // Ctrl-C ends the foreground job, not lazarus, and the prompt is back.
    tty.type_keys(b"run worker w0 900\r");
    tty.expect("worker w0: round");
    tty.clear();
    tty.type_keys(b"\x03");
    tty.expect("worker: interrupted");
    tty.expect(common::PROMPT);
    tty.clear();
    tty.type_keys(b"sleep 600000\r");
    tty.expect("sleep 600000\r\n");
    tty.type_keys(b"\x03");
    tty.expect("sleep: interrupted");
    tty.clear();
    tty.type_keys(b"echo still here\r");
    tty.expect("still here\r\n");

    // Ctrl-A H helps; Ctrl-A X quits with status 0, the terminal restored.
    tty.type_keys(b"\x01h");
    tty.expect("Ctrl-A   send Ctrl-A to the guest");
    tty.type_keys(b"\x01x");
    tty.expect("quitting (Ctrl-A X)");
    tty.expect("exit=0");
    let status = child.wait().expect("wait sh");
    assert!(status.success(), "{status:?}");
    let (b, a) = (
        std::fs::read_to_string(&before).expect("before"),
        std::fs::read_to_string(&after).expect("after"),
    );
    assert!(!b.trim().is_empty());
    assert_eq!(b, a, "the terminal settings were not restored");
}

#[test]
fn without_a_terminal_sigint_quits_after_writing_the_crash_dumps() {
    let data = common::temp_dir("sigint");
    let mut g = common::boot_with(&["--data-dir", common::path_str(data.path())]);
    g.cmd("kv fill 5");
    g.send("crash null-read");
    g.expect("[lazarus] resurrected after ", T);
    // SAFETY: signals our own child process.
    let rc = unsafe { libc::kill(g.pid() as i32, libc::SIGINT) };
    assert_eq!(rc, 0);
    let status = g.wait(T);
    assert_eq!(status.code(), Some(130), "{}", g.transcript);
    assert!(
        g.host.contains("quitting (SIGINT)"),
        "no message: {}",
        g.transcript
    );
    // The resurrected crash's dump was written in full before the exit.
    let dumps: Vec<_> = std::fs::read_dir(data.path().join("dumps"))
        .expect("dumps directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(dumps.iter().any(|d| d.ends_with(".core")), "{dumps:?}");
    assert!(dumps.iter().all(|d| !d.ends_with(".partial")), "{dumps:?}");
}
