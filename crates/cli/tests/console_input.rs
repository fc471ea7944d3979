//! Console input of any size and rate reaches the guest whole: the UART
//! holds the hypervisor's input back while the kernel's buffer is full
//! (flow control) instead of dropping it, and the shell refuses an
//! over-long line with a message instead of cutting it.

mod common;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The shell's longest line (`LINE_MAX` in the guest's ulib).
const LINE_MAX: usize = 1024;

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[test]
fn commands_piped_in_bulk_all_run_and_a_long_line_is_refused() {
    common::require_kvm();
    let data = common::temp_dir("bulk");
    let mut input = String::new();
    for i in 0..300 {
        input.push_str(&format!("echo piped-{i}\n"));
    }
    // 5 KB on one line, then more commands: refused, nothing else lost.
    input.push_str(&"x".repeat(5000));
    input.push('\n');
    input.push_str("echo after-the-long-line\npoweroff\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .arg("run")
        .env("LAZARUS_DATA_DIR", data.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lazarus");
    // All at once, from the first moment: the guest is still booting.
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write input");
    let out = child.wait_with_output().expect("wait for lazarus");
    let text = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}; console:\n{text}\n{log}",
        out.status
    );
    for i in 0..300 {
        assert!(
            text.contains(&format!("piped-{i}\n")),
            "piped-{i} lost; console:\n{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "shell: line too long (5000 bytes, at most {LINE_MAX}): not run"
        )),
        "{text}"
    );
    assert!(text.contains("after-the-long-line"), "{text}");
    assert!(!log.contains("resurrect"), "input cost a crash: {log}");
}

#[test]
fn a_mebibyte_of_input_and_a_64_kib_line_arrive_whole() {
    common::require_kvm();
    let mut g = common::boot();
    // Lines of every length from 0 to 300 bytes, one of 64 KiB, to 1 MiB.
    let mut data = Vec::with_capacity(1 << 20);
    let mut n = 0usize;
    while data.len() < (1 << 20) - 70_000 {
        data.extend((0..n % 301).map(|i| b'a' + ((i + n) % 26) as u8));
        data.push(b'\n');
        n += 1;
        if n == 1000 {
            data.extend(std::iter::repeat_n(b'L', 64 * 1024));
            data.push(b'\n');
        }
    }
    data.resize(1 << 20, b'z');
    data.push(b'\n');
    g.send("run csum");
    g.expect("csum: ready", Duration::from_secs(30));
    g.send_raw(&data);
    g.send_raw(b"END\n");
    let want = format!("csum: bytes={} fnv={:016x}", data.len(), fnv1a(&data));
    let got = g.wait_lines(&["csum: bytes="], Duration::from_secs(600));
    assert_eq!(got[0], want);
    g.resync();
    // The shell itself, handed the 64 KiB line.
    let out = g.cmd(&"L".repeat(64 * 1024));
    assert!(
        out.contains(&format!(
            "shell: line too long ({} bytes, at most {LINE_MAX}): not run",
            64 * 1024
        )),
        "{out}"
    );
    assert!(g.cmd("echo still-here").contains("still-here"));
    assert!(g.poweroff().success());
}
