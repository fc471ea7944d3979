//! Builds every guest crate for `x86_64-unknown-none` and packs the
//! initramfs, so that a plain `cargo build` yields a bootable image.
//!
//! The guest needs per-crate code generation settings (the kernel and user
//! programs are static executables at fixed addresses, extensions are
//! position independent), which a single cargo invocation cannot express on
//! stable Rust; hence one nested cargo per group, each in its own target
//! directory so they never invalidate each other.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-none";

/// User programs placed in the initramfs as /bin/NAME (init as /init).
const USER_BINS: &[&str] = &[
    "init",
    "shell",
    "kvstore",
    "worker",
    "echo",
    "sleep",
    "upper",
    "pipetest",
    "sysprobe",
    "csum",
    "devtest",
    "blk",
    "extclient",
    "crash",
    "overhead",
    "kvbench",
    "kvload",
];
/// Extensions placed in the initramfs as /ext/NAME.ko.
const EXTENSIONS: &[&str] = &["rand", "ramdisk", "crashtest", "virtblk"];

struct Group {
    name: &'static str,
    packages: Vec<String>,
    rustflags: &'static str,
    /// Debug info level: full for code gdb and the diagnoser symbolize
    /// (kernel, extensions); none for user programs, which would otherwise
    /// bloat the initramfs tenfold.
    debug: &'static str,
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest
        .join("../..")
        .canonicalize()
        .expect("workspace root");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let guest_target = root.join("target").join("guest");

    for dir in [
        "guest",
        "crates/abi",
        "crates/guestmem",
        "Cargo.toml",
        "Cargo.lock",
        "rust-toolchain.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    // Frame pointers and unwind tables make backtraces of a dump work (our
    // diagnoser walks frame pointers, gdb uses the tables); the build id
    // lets a dump name the exact binaries it needs for symbols.
    let common =
        "-C force-frame-pointers=yes -C force-unwind-tables=yes -C link-arg=--build-id=sha1";
    let groups = [
        Group {
            name: "kernel",
            packages: vec!["lazarus-kernel".into()],
            rustflags: "-C relocation-model=static",
            debug: "2",
        },
        Group {
            name: "user",
            packages: vec!["lazarus-user".into(), "lazarus-repair".into()],
            rustflags: "-C relocation-model=static -C code-model=small",
            debug: "0",
        },
        Group {
            name: "ext",
            packages: EXTENSIONS
                .iter()
                .map(|e| format!("lazarus-ext-{e}"))
                .collect(),
            rustflags: "-C relocation-model=pic",
            debug: "2",
        },
    ];

    for g in &groups {
        build_group(&root, &guest_target, g, common);
    }

    let bin = |group: &str, name: &str| {
        guest_target
            .join(group)
            .join(TARGET)
            .join("release")
            .join(name)
    };

    let kernel = bin("kernel", "lazarus-kernel");
    copy(&kernel, &out.join("kernel.elf"));
    // The repair program is not in the initramfs: the hypervisor keeps it
    // in the hidden repair image.
    copy(&bin("user", "lazarus-repair"), &out.join("repair.elf"));

    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for b in USER_BINS {
        let dest = if *b == "init" {
            "init".to_string()
        } else {
            format!("bin/{b}")
        };
        files.push((dest, bin("user", b)));
    }
    for e in EXTENSIONS {
        files.push((format!("ext/{e}.ko"), bin("ext", e)));
    }
    write_cpio(&files, &out.join("initramfs.cpio"));
}

fn build_group(root: &Path, guest_target: &Path, g: &Group, common: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // The outer cargo exports variables (RUSTC_WORKSPACE_WRAPPER from
    // clippy, RUSTFLAGS, jobserver...) that must not leak into the guest.
    cmd.env_clear();
    for keep in [
        "PATH",
        "HOME",
        "RUSTUP_HOME",
        "CARGO_HOME",
        "RUSTUP_TOOLCHAIN",
        "TERM",
        "TMPDIR",
    ] {
        if let Ok(v) = std::env::var(keep) {
            cmd.env(keep, v);
        }
    }
    cmd.current_dir(root)
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--target-dir")
        .arg(guest_target.join(g.name))
        .env("RUSTFLAGS", format!("{common} {}", g.rustflags))
        .env("CARGO_PROFILE_RELEASE_DEBUG", g.debug)
        .env(
            "CARGO_PROFILE_RELEASE_STRIP",
            if g.debug == "0" { "debuginfo" } else { "none" },
        )
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "2")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort");
    for p in &g.packages {
        cmd.arg("-p").arg(p);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo for the guest: {e}"));
    if !status.success() {
        panic!(
            "building the guest {} failed (is the target installed? run `rustup target add {TARGET}`)",
            g.name
        );
    }
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
}

fn write_cpio(files: &[(String, PathBuf)], dest: &Path) {
    let mut inputs = Vec::new();
    for (i, (name, path)) in files.iter().enumerate() {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let builder = cpio::newc::Builder::new(name)
            .ino(i as u32 + 1)
            .mode(0o100755)
            .nlink(1);
        inputs.push((builder, std::io::Cursor::new(data)));
    }
    let file =
        std::fs::File::create(dest).unwrap_or_else(|e| panic!("create {}: {e}", dest.display()));
    cpio::write_cpio(inputs.into_iter(), file).unwrap_or_else(|e| panic!("write initramfs: {e}"));
}
