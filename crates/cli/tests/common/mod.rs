//! The `lazarus` binary under test, driven through lazarus-testkit.
#![allow(dead_code, unused_imports)]

pub use lazarus_testkit::{
    Guest, PROMPT, cpu_busy_ticks, kv_check, kv_log, path_str, require_kvm, temp_dir,
};

/// `lazarus run` with the default options, at its shell prompt.
pub fn boot() -> Guest {
    boot_with(&[])
}

/// `lazarus run EXTRA...`, at its shell prompt.
pub fn boot_with(extra: &[&str]) -> Guest {
    Guest::spawn(env!("CARGO_BIN_EXE_lazarus"), extra)
}

/// Waits until init loaded `virtblk` at boot (its first line says so).
pub fn driver_loaded(g: &mut Guest) {
    g.cmd("echo sync");
    assert!(
        g.console.contains("virtblk: /dev/vda: "),
        "{}",
        g.transcript
    );
}

/// A `lazarus dashboard` process, killed when dropped.
pub struct Dashboard(std::process::Child);

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `lazarus dashboard --data-dir DATA EXTRA...` on a free port; its base
/// URL (`http://127.0.0.1:PORT/`), from the first line it prints.
pub fn start_dashboard(data: &std::path::Path, extra: &[&str]) -> (Dashboard, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args(["dashboard", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lazarus dashboard");
    let mut line = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut line)
        .expect("read the dashboard's first line");
    let server = Dashboard(child);
    let url = line
        .trim()
        .strip_prefix("lazarus: dashboard on ")
        .unwrap_or_else(|| panic!("the dashboard did not start: {line:?}"))
        .to_string();
    (server, url)
}
