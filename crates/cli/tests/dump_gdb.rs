//! The real thing: crash the real guest under KVM, dump it as an ELF core,
//! open the dump with the real gdb, and diagnose it with `lazarus
//! diagnose`. Needs /dev/kvm and gdb (scripts/setup.sh installs it); fails
//! rather than skips without them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use lazarus_abi::root::EXT_FREE;
use lazarus_dump::{CrashNote, DumpInput, ExtLoad, GuestRecord, Regs, VcpuState, write_core};
use lazarus_symbols::SymbolStore;
use lazarus_vmm::kvm_bindings::{kvm_regs, kvm_sregs};
use lazarus_vmm::{CaptureBuffer, ConsoleInput, ConsoleOutput, VmConfig, VmOutcome};
use vm_memory::{Bytes, GuestAddress};

/// The dumps every test here reads, made once per test process.
struct Dumps {
    dir: PathBuf,
    symbols: PathBuf,
    null_read: [PathBuf; 2],
    wild_write: PathBuf,
}

fn to_regs(r: Option<&kvm_regs>, s: Option<&kvm_sregs>) -> Regs {
    let mut o = Regs::default();
    if let Some(r) = r {
        (o.rax, o.rbx, o.rcx, o.rdx) = (r.rax, r.rbx, r.rcx, r.rdx);
        (o.rsi, o.rdi, o.rbp, o.rsp) = (r.rsi, r.rdi, r.rbp, r.rsp);
        (o.r8, o.r9, o.r10, o.r11) = (r.r8, r.r9, r.r10, r.r11);
        (o.r12, o.r13, o.r14, o.r15) = (r.r12, r.r13, r.r14, r.r15);
        (o.rip, o.rflags) = (r.rip, r.rflags);
    }
    if let Some(s) = s {
        (o.cs, o.ss, o.ds) = (
            s.cs.selector.into(),
            s.ss.selector.into(),
            s.ds.selector.into(),
        );
        (o.es, o.fs, o.gs) = (
            s.es.selector.into(),
            s.fs.selector.into(),
            s.gs.selector.into(),
        );
        (o.fs_base, o.gs_base) = (s.fs.base, s.gs.base);
        (o.cr0, o.cr2, o.cr3, o.cr4, o.efer) = (s.cr0, s.cr2, s.cr3, s.cr4, s.efer);
    }
    o
}

/// Boots the built-in image, runs `crash KIND` and writes the crash as a
/// dump at `path`, the way `lazarus run` does.
fn crash_dump(kind: &str, path: &Path, store: &SymbolStore) {
    common::require_kvm();
    let console = CaptureBuffer::new();
    let mut config = VmConfig::new(lazarus_image::KERNEL_ELF, lazarus_image::INITRAMFS);
    config.console_out = ConsoleOutput::Capture(console.clone());
    config.console_in = ConsoleInput::from_bytes(format!("run crash {kind}\n").as_bytes());
    config.timeout = Some(Duration::from_secs(180));
    let mut vm = lazarus_testkit::boot_vm(config);
    let info = match vm.run().expect("run the VM") {
        VmOutcome::Crash(info) => info,
        other => panic!(
            "expected a crash, got {other:?}; console:\n{}",
            console.text()
        ),
    };
    let root = lazarus_guestmem::read_root(vm.memory(), vm.root_gpa().expect("a root"))
        .expect("the kernel root");
    let kernel_build_id = lazarus_symbols::build_id_of(lazarus_image::KERNEL_ELF);
    let modules = lazarus_symbols::initramfs_modules(lazarus_image::INITRAMFS).unwrap();
    let extensions = root
        .exts
        .iter()
        .enumerate()
        .filter(|(_, e)| e.state != EXT_FREE)
        .map(|(slot, e)| {
            let name = lazarus_abi::name_str(&e.name).to_string();
            ExtLoad {
                slot: slot as u32,
                build_id: modules
                    .iter()
                    .find(|m| m.name == name)
                    .and_then(|m| m.build_id.clone()),
                name,
                base: e.base,
                size: e.size,
                text_start: e.text_start,
                text_end: e.text_end,
            }
        })
        .collect();
    let note = CrashNote {
        format_version: lazarus_dump::FORMAT_VERSION,
        lazarus_version: env!("CARGO_PKG_VERSION").into(),
        time_unix_ms: 0,
        boot_id: path.display().to_string(),
        detector: "pvpanic".into(),
        detail: info.summary(),
        crashed_vcpu: info.vcpu,
        root_gpa: vm.root_gpa(),
        kernel_build_id,
        extensions,
        guest_record: Some(GuestRecord::from(&root.crash)),
        vcpus: vec![VcpuState {
            id: info.vcpu,
            regs: to_regs(info.regs.as_ref(), info.sregs.as_ref()),
        }],
    };
    let mut ram = vec![0u8; vm.layout().mem_size as usize];
    vm.memory()
        .read_slice(&mut ram, GuestAddress(0))
        .expect("read guest RAM");
    write_core(path, &DumpInput { ram: &ram, note }).expect("write the dump");
    // What `lazarus run` stores for every boot.
    store.add(lazarus_image::KERNEL_ELF, "kernel").unwrap();
    store.add_initramfs(lazarus_image::INITRAMFS).unwrap();
}

fn dumps() -> &'static Dumps {
    static DUMPS: OnceLock<Dumps> = OnceLock::new();
    DUMPS.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dump_gdb");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let symbols = dir.join("symbols");
        let store = SymbolStore::new(&symbols);
        let null_read = [dir.join("null-read-1.core"), dir.join("null-read-2.core")];
        for p in &null_read {
            crash_dump("null-read", p, &store);
        }
        let wild_write = dir.join("wild-write.core");
        crash_dump("wild-write", &wild_write, &store);
        Dumps {
            dir,
            symbols,
            null_read,
            wild_write,
        }
    })
}

fn lazarus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run lazarus")
}

fn diagnose_json(dump: &Path) -> serde_json::Value {
    let d = dumps();
    let out = lazarus(&[
        "diagnose",
        "--json",
        "--symbols",
        d.symbols.to_str().unwrap(),
        dump.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "lazarus diagnose failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn gdb_backtrace_starts_at_the_faulting_extension_function() {
    let d = dumps();
    let report = diagnose_json(&d.null_read[0]);
    let ext = &report["extension"];
    let base = ext["base"].as_u64().expect("extension base");
    let build_id = ext["build_id"].as_str().expect("extension build id");
    let store = SymbolStore::new(&d.symbols);
    let crashtest = store.find(build_id).expect("crashtest in the store");
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-ex"])
        .arg(format!(
            "add-symbol-file {} -o {base:#x}",
            crashtest.display()
        ))
        .args(["-ex", "bt"])
        .arg(lazarus_image::KERNEL_ELF_PATH)
        .arg(&d.null_read[0])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run gdb ({e}): install it (scripts/setup.sh does) to run this test")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gdb failed:\n{stdout}\n{stderr}");
    // gdb prints frame 0 once when it opens the core (before the
    // extension's symbols are added); the backtrace comes after.
    let frame0 = stdout
        .lines()
        .rfind(|l| l.starts_with("#0"))
        .unwrap_or_else(|| panic!("no backtrace from gdb:\n{stdout}\n{stderr}"));
    assert!(
        frame0.contains("null_read") || frame0.contains("read_at"),
        "frame 0 is not the faulting function:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("null_read"), "{stdout}\n{stderr}");
    assert!(stdout.contains("ioctl"), "{stdout}\n{stderr}");

    // `--gdb` prints a command line naming the kernel, the extension and
    // the dump.
    let out = lazarus(&[
        "diagnose",
        "--gdb",
        "--symbols",
        d.symbols.to_str().unwrap(),
        d.null_read[0].to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("gdb "), "{line}");
    assert!(line.contains(&format!("-o {base:#x}")), "{line}");
    assert!(line.contains(crashtest.to_str().unwrap()), "{line}");
    assert!(
        line.trim_end().ends_with(d.null_read[0].to_str().unwrap()),
        "{line}"
    );
}

#[test]
fn diagnose_names_kind_process_extension_and_frames() {
    let d = dumps();
    let r = diagnose_json(&d.null_read[0]);
    assert_eq!(r["kind"], "null-deref", "{r:#}");
    assert_eq!(r["extension"]["name"], "crashtest", "{r:#}");
    assert_eq!(r["process"]["name"], "crash", "{r:#}");
    let frames = r["backtrace"].as_array().unwrap();
    assert!(
        frames.iter().any(|f| f["module"] == "crashtest"
            && f["function"]
                .as_str()
                .is_some_and(|n| n.contains("null_read"))),
        "{r:#}"
    );
    assert!(
        frames
            .iter()
            .any(|f| f["module"] == "kernel" && f["function"].is_string()),
        "the backtrace should reach the kernel: {r:#}"
    );
    let sig = r["signature"].as_str().unwrap();
    assert_eq!(sig.len(), 16);
    assert!(sig.bytes().all(|c| c.is_ascii_hexdigit()));
    assert!(
        r["title"]
            .as_str()
            .unwrap()
            .starts_with("null-deref in crashtest!")
    );
    assert!(
        r["faulting_instruction"]["disassembly"]
            .as_str()
            .unwrap()
            .contains("mov")
    );

    // The text report says the same.
    let out = lazarus(&[
        "diagnose",
        "--symbols",
        d.symbols.to_str().unwrap(),
        d.null_read[0].to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "null-deref",
        "\"crash\"",
        "crashtest (slot",
        sig,
        "backtrace:",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
}

#[test]
fn signatures_match_across_boots_and_differ_between_bugs() {
    let d = dumps();
    let a = diagnose_json(&d.null_read[0]);
    let b = diagnose_json(&d.null_read[1]);
    let c = diagnose_json(&d.wild_write);
    assert_ne!(a["boot_id"], b["boot_id"]);
    assert_eq!(a["signature"], b["signature"], "{a:#}\n{b:#}");
    assert_eq!(c["kind"], "wild-write", "{c:#}");
    assert_ne!(a["signature"], c["signature"]);
}

#[test]
fn malformed_dumps_exit_4_with_one_line() {
    let d = dumps();
    let data = std::fs::read(&d.null_read[0]).unwrap();
    let truncated = d.dir.join("truncated.core");
    std::fs::write(&truncated, &data[..data.len() / 2]).unwrap();
    let garbage = d.dir.join("garbage.core");
    std::fs::write(&garbage, b"not a dump at all").unwrap();
    let missing = d.dir.join("missing.core");
    for bad in [&truncated, &garbage, &missing] {
        let out = lazarus(&["diagnose", bad.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{}: {stderr}", bad.display());
        assert!(stderr.starts_with("lazarus: error: "), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(out.stdout.is_empty());
    }
}
