//! A guest that cannot boot must not make `lazarus run` reboot it forever:
//! it stops with exit code 3, one line saying why, and a bounded number of
//! complete dumps. A watchdog too short for the kernel to boot is refused.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lazarus_testkit::{path_str, require_kvm, temp_dir};

/// Long enough for a few boots on a loaded host, short enough that a
/// regression (rebooting forever) fails instead of hanging the suite.
const DEADLINE: Duration = Duration::from_secs(60);

/// One newc cpio entry (header, name, data, each padded to 4 bytes).
fn cpio_entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    let fields = [
        1,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The file `name` of a newc cpio archive.
fn cpio_file<'a>(cpio: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let field = |h: &[u8], at: usize| {
        std::str::from_utf8(&h[at..at + 8])
            .ok()
            .and_then(|x| usize::from_str_radix(x, 16).ok())
    };
    let mut off = 0;
    while off + 110 <= cpio.len() {
        let h = &cpio[off..off + 110];
        let (namesize, filesize) = (field(h, 94)?, field(h, 54)?);
        let entry = cpio.get(off + 110..off + 110 + namesize - 1)?;
        let data = (off + 110 + namesize + 3) & !3;
        if entry == name.as_bytes() {
            return cpio.get(data..data + filesize);
        }
        off = (data + filesize + 3) & !3;
    }
    None
}

/// An initramfs whose `/init` is a real program that exits at once (the
/// `crash` tool without arguments prints its usage): init exits, which the
/// kernel treats as a crash, at every boot.
fn unbootable_initramfs(dir: &Path) -> std::path::PathBuf {
    let init = cpio_file(lazarus_image::INITRAMFS, "bin/crash").expect("bin/crash in the image");
    let mut cpio = Vec::new();
    cpio_entry(&mut cpio, "init", 0o100755, init);
    cpio_entry(&mut cpio, "TRAILER!!!", 0, &[]);
    let path = dir.join("unbootable.cpio");
    std::fs::write(&path, cpio).expect("write the initramfs");
    path
}

/// Runs `lazarus` and kills it after [`DEADLINE`]; (status, stderr, time).
fn run_bounded(args: &[&str]) -> (ExitStatus, String, Duration) {
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .spawn()
        .expect("start lazarus");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for lazarus") {
            break status;
        }
        if t0.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lazarus still running after {DEADLINE:?}: it reboots forever");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = t0.elapsed();
    (status, reader.join().expect("stderr reader"), elapsed)
}

/// The files in the data directory's dumps folder.
fn dumps(data: &Path) -> Vec<String> {
    match std::fs::read_dir(data.join("dumps")) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn assert_gave_up(status: ExitStatus, stderr: &str, needle: &str) {
    assert_eq!(status.code(), Some(3), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("lazarus: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    assert!(errors[0].contains(needle), "{needle:?} not in:\n{stderr}");
}

#[test]
fn a_guest_that_cannot_boot_stops_after_one_retry() {
    require_kvm();
    let dir = temp_dir("bootfail");
    let initramfs = unbootable_initramfs(dir.path());
    let data = dir.path().join("data");
    let (status, stderr, took) = run_bounded(&[
        "run",
        "--memory",
        "64",
        "--initramfs",
        path_str(&initramfs),
        "--data-dir",
        path_str(&data),
    ]);
    assert_gave_up(status, &stderr, "before its shell prompt");
    assert!(stderr.contains("init exited"), "stderr:\n{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let files = dumps(&data);
    assert!(
        !files.iter().any(|f| f.ends_with(".partial")),
        "unfinished dumps: {files:?}"
    );
    // Two boots, one dump each (the second one written while giving up).
    let n = files.iter().filter(|f| !f.ends_with(".partial")).count();
    assert_eq!(n, 2, "dumps: {files:?}\nstderr:\n{stderr}");
}

#[test]
fn max_reboots_zero_stops_at_the_first_crash() {
    require_kvm();
    let dir = temp_dir("bootfail0");
    let initramfs = unbootable_initramfs(dir.path());
    let data = dir.path().join("data");
    let (status, stderr, _) = run_bounded(&[
        "run",
        "--memory",
        "64",
        "--max-reboots",
        "0",
        "--initramfs",
        path_str(&initramfs),
        "--data-dir",
        path_str(&data),
    ]);
    assert_gave_up(status, &stderr, "crash loop");
    let files = dumps(&data);
    assert!(!files.iter().any(|f| f.ends_with(".partial")), "{files:?}");
    assert_eq!(files.len(), 1, "dumps: {files:?}");
}

#[test]
fn a_watchdog_too_short_to_boot_is_refused() {
    let dir = temp_dir("wdshort");
    let data = dir.path().join("data");
    let (status, stderr, _) =
        run_bounded(&["run", "--watchdog-ms", "1", "--data-dir", path_str(&data)]);
    assert_eq!(status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("at least 50"), "stderr:\n{stderr}");
}
