//! Bad input to the `lazarus` binary: each case must exit with its
//! documented code and one clear line on stderr, never a panic. Only
//! `timeout_zero_means_none` boots a kernel.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Runs lazarus with a data directory of its own: the cases run at once,
/// and two VMs in one data directory would share its disk, which the
/// second is refused (exit code 9) before it reaches the error tested.
fn lazarus(args: &[&str]) -> Output {
    let data = tempfile::Builder::new()
        .prefix("lazarus-cli-data-")
        .tempdir()
        .expect("temporary data directory");
    Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .env("LAZARUS_DATA_DIR", data.path())
        .output()
        .expect("run lazarus")
}

/// A scratch file unique to this test process.
fn scratch(name: &str, contents: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("lazarus-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("write scratch file");
    path
}

/// Asserts the exit code and that stderr is one `lazarus: error:` line
/// containing `needle`.
fn expect_error(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {stderr}");
    assert!(lines[0].starts_with("lazarus: error: "), "{stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr}");
}

#[test]
fn missing_kernel_file() {
    let out = lazarus(&["run", "--kernel", "/nonexistent/kernel.elf"]);
    expect_error(&out, 4, "kernel image '/nonexistent/kernel.elf'");
}

#[test]
fn garbage_kernel_file() {
    let path = scratch("garbage.elf", b"this is not an ELF file at all");
    let out = lazarus(&["run", "--kernel", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    expect_error(&out, 4, "not an ELF file");
}

#[test]
fn truncated_kernel_file() {
    let mut elf = lazarus_image::KERNEL_ELF[..200].to_vec();
    elf.truncate(200);
    let path = scratch("truncated.elf", &elf);
    let out = lazarus(&["run", "--kernel", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    expect_error(&out, 4, "kernel image");
}

#[test]
fn missing_initramfs_file() {
    let out = lazarus(&["run", "--initramfs", "/nonexistent/initramfs.cpio"]);
    expect_error(&out, 4, "initramfs '/nonexistent/initramfs.cpio'");
}

#[test]
fn too_little_memory() {
    let out = lazarus(&["run", "--memory", "4"]);
    expect_error(&out, 4, "memory");
    let out = lazarus(&["run", "--memory", "17"]);
    expect_error(&out, 4, "multiple of 2 MiB");
    let out = lazarus(&["run", "--memory", "18446744073709551615"]);
    expect_error(&out, 4, "memory");
}

/// Asserts a usage error (exit 2, as clap's) that names `arg` and
/// contains `needle`, without a panic.
fn expect_usage_error(out: &Output, arg: &str, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: invalid value"), "{stderr}");
    assert!(first.contains(arg) && first.contains(needle), "{stderr}");
}

/// Every command that boots a guest (they share the image options).
const BOOTING_COMMANDS: &[&[&str]] = &[
    &["run"],
    &["demo"],
    &["bench", "boot"],
    &["bench", "recovery"],
    &["bench", "ipc"],
    &["bench", "overhead"],
    &["campaign"],
];

/// Every command that boots a VM takes `--vcpus` from 1 to MAX_VCPUS and
/// refuses anything else before reading an image or opening KVM.
#[test]
fn bad_vcpu_count() {
    let max = lazarus_vmm::MAX_VCPUS;
    let range = format!("a VM has 1 to {max} vCPUs");
    let too_many = (max + 1).to_string();
    for cmd in BOOTING_COMMANDS {
        for bad in ["0", too_many.as_str(), "two"] {
            let mut args = cmd.to_vec();
            args.extend(["--vcpus", bad]);
            let out = lazarus(&args);
            expect_usage_error(&out, "--vcpus", &range);
        }
    }
    // The largest count passes the parser (the missing kernel stops the
    // run before a VM is built).
    let max = max.to_string();
    let out = lazarus(&["run", "--vcpus", &max, "--kernel", "/nonexistent/k"]);
    expect_error(&out, 4, "kernel image");
    let out = lazarus(&["campaign", "--vcpus", &max, "--kernel", "/nonexistent/k"]);
    expect_error(&out, 4, "kernel image");
}

#[test]
fn kvm_unavailable() {
    let out = lazarus(&["run", "--kvm-device", "/nonexistent/kvm"]);
    expect_error(&out, 5, "KVM is not available");
}

#[test]
fn bench_reports_bad_input_too() {
    let out = lazarus(&["bench", "boot", "--runs", "1", "--kernel", "/nonexistent/k"]);
    expect_error(&out, 4, "kernel image");
    let out = lazarus(&["bench", "boot", "--runs", "1", "--memory", "4"]);
    expect_error(&out, 4, "memory");
}

#[test]
fn usage_errors_exit_2() {
    let out = lazarus(&["run", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = lazarus(&["bench", "boot", "--runs", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = lazarus(&[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_documents_exit_codes() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["bench", "boot", "--help"],
    ] {
        let out = lazarus(args);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Exit codes"), "{text}");
        assert!(text.contains("KVM unavailable"), "{text}");
    }
    let out = lazarus(&["run", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--memory"));
    assert!(text.contains("raw mode"), "{text}");
    assert!(text.contains("Ctrl-A X quits"), "{text}");
    assert!(text.contains("128+N"), "{text}");
}

/// `--vcpus` is listed, with its default, by every command that boots.
#[test]
fn help_lists_vcpus_with_its_default() {
    let default = format!("[default: {}]", lazarus_vmm::config::DEFAULT_VCPUS);
    for cmd in BOOTING_COMMANDS {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = lazarus(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("--vcpus <N>"))
            .take_while(|l| !l.trim_start().starts_with("--kernel"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(line.contains(&default), "{args:?}: {text}");
    }
}

/// Runs `lazarus run --initramfs` on `contents`, which must be refused.
fn bad_initramfs(contents: &[u8], needle: &str) {
    let dir = lazarus_testkit::temp_dir("cli-initramfs");
    let path = dir.path().join("initramfs.cpio");
    std::fs::write(&path, contents).expect("write initramfs");
    let out = lazarus(&["run", "--initramfs", lazarus_testkit::path_str(&path)]);
    expect_error(&out, 4, needle);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("initramfs '"), "{stderr}");
}

#[test]
fn initramfs_is_checked_before_boot() {
    let good = lazarus_image::INITRAMFS;
    bad_initramfs(b"", "empty file");
    bad_initramfs(b"this is not a cpio archive, not even close, no no no no no no no no no no no no no no no no no no no no", "not a newc cpio archive");
    bad_initramfs(&good[..good.len() / 2], "truncated cpio archive");
    // The default archive's first entry is init: its name at byte 110
    // (after the header), its ELF at 116 (4-byte aligned).
    assert_eq!(&good[110..115], b"init\0");
    let mut renamed = good.to_vec();
    renamed[110..114].copy_from_slice(b"tini");
    bad_initramfs(&renamed, "no /init");
    let mut not_elf = good.to_vec();
    not_elf[117] = b'X';
    bad_initramfs(&not_elf, "/init is not an x86-64 executable");
}

/// Cut inside its section headers (or its debug info), the kernel still
/// boots as far as the loader cares, but the resurrector cannot read it:
/// that is bad input too, not an internal error.
#[test]
fn kernel_truncated_in_its_section_headers() {
    let elf = lazarus_image::KERNEL_ELF;
    let dir = lazarus_testkit::temp_dir("cli-kernel");
    let path = dir.path().join("kernel.elf");
    for n in [
        elf.len() - 1,
        elf.len() - 100,
        elf.len() - 2000,
        elf.len() / 2,
    ] {
        std::fs::write(&path, &elf[..n]).expect("write kernel");
        let out = lazarus(&["run", "--kernel", lazarus_testkit::path_str(&path)]);
        expect_error(&out, 4, "kernel image '");
    }
}

/// A device that never ends is refused after a bounded read, not read
/// until memory runs out.
#[test]
fn endless_inputs_are_bounded() {
    let started = std::time::Instant::now();
    let out = lazarus(&["run", "--kernel", "/dev/zero"]);
    expect_error(&out, 4, "kernel image '/dev/zero': larger than 256 MiB");
    let out = lazarus(&["run", "--memory", "64", "--initramfs", "/dev/zero"]);
    expect_error(&out, 4, "initramfs '/dev/zero': larger than 64 MiB");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn explicit_symbol_store_must_exist() {
    let out = lazarus(&[
        "diagnose",
        "/nonexistent/dump.core",
        "--symbols",
        "/nonexistent/symbols",
    ]);
    expect_error(
        &out,
        4,
        "symbol store '/nonexistent/symbols': not a directory",
    );
}

#[test]
fn help_lists_every_exit_code() {
    let out = lazarus(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for code in 0..=8 {
        assert!(
            text.contains(&format!("\n  {code}  ")),
            "exit code {code} missing: {text}"
        );
    }
    let out = lazarus(&["run", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 means no timeout"), "{text}");
}

/// `--timeout 0` means no timeout: the guest boots and powers off (a zero
/// deadline used to end the run before the guest started). Boots a guest.
#[test]
fn timeout_zero_means_none() {
    use std::io::Write;
    let data = lazarus_testkit::temp_dir("cli-timeout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args([
            "run",
            "--timeout",
            "0",
            "--data-dir",
            lazarus_testkit::path_str(data.path()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .spawn()
        .expect("run lazarus");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"poweroff\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
}

/// A control-socket path longer than a Unix socket address holds could be
/// bound but never reached: it is refused before the guest boots.
#[test]
fn api_socket_path_too_long_is_refused() {
    let long = std::env::temp_dir().join("s".repeat(120));
    let long = long.to_str().expect("utf-8 temp dir");
    let out = lazarus(&["run", "--api-sock", long, "--timeout", "30"]);
    expect_error(&out, 4, "a socket path is at most 107 bytes");
    assert!(!std::path::Path::new(long).exists());
}
