//! The real thing: crash the real guest under KVM with `lazarus run`, take
//! the dumps it wrote itself, open them with the real gdb, and diagnose
//! them with `lazarus diagnose`. The dumps of resurrected crashes (the
//! default policy, made from the crash-time snapshot) must be as complete
//! as a halted guest's: every kernel stack, the extensions' code, the
//! whole chain down to the trap entry. Needs /dev/kvm and gdb
//! (scripts/setup.sh installs it); fails rather than skips without them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::{Guest, path_str, temp_dir};
use lazarus_symbols::SymbolStore;

/// The crash kinds dumped on the default policy, and the function each
/// faults in (`timer-fault` faults in a timer interrupt handler).
const KINDS: &[(&str, &str)] = &[
    ("null-read", "crashtest::faults::read_at"),
    ("wild-write", "crashtest::faults::wild_write"),
    ("timer-fault", "crashtest::faults::read_at"),
];

/// The dumps every test here reads, written once per test process by
/// `lazarus run` itself.
struct Dumps {
    dir: PathBuf,
    _data: [tempfile::TempDir; 3],
    /// The symbol store of each data directory (the same binaries).
    symbols: PathBuf,
    /// `(kind, dump)` of the resurrected crashes, in `KINDS` order.
    resurrected: Vec<(&'static str, PathBuf)>,
    /// A second boot's resurrected `null-read`.
    null_read_again: PathBuf,
    /// The same `null-read` on `--on-crash halt`.
    halted: PathBuf,
}

/// The dump path of the `n`th crash (from 0) `lazarus run` reported
/// having written, waiting for it.
fn dump_of(g: &mut Guest, n: usize) -> PathBuf {
    for _ in 0..600 {
        let line = g
            .host
            .lines()
            .filter(|l| l.starts_with("lazarus: crash ") && l.contains("; dump "))
            .nth(n)
            .map(str::to_string);
        if let Some(line) = line {
            let dump = line
                .split("; dump ")
                .nth(1)
                .and_then(|rest| rest.split("; report ").next())
                .unwrap_or_else(|| panic!("no dump path in {line:?}"));
            return PathBuf::from(dump);
        }
        g.settle(Duration::from_millis(100));
    }
    panic!("no dump for crash {n}:\n{}", g.transcript);
}

/// Crashes the guest with `crash KIND`, waits for the resurrection, and
/// returns the dump `lazarus run` wrote for it (the `n`th of the run).
fn crash_resurrected(g: &mut Guest, kind: &str, n: usize) -> PathBuf {
    g.send(&format!("crash {kind}"));
    g.expect("[lazarus] resurrected after ", Duration::from_secs(60));
    let dump = dump_of(g, n);
    g.resync();
    dump
}

/// Boots `lazarus run` with a data directory of its own and some load
/// (processes beyond the shell, so the crashing one is not in slot 1).
fn boot(dir: &Path, extra: &[&str]) -> Guest {
    let mut args = vec!["--data-dir", path_str(dir)];
    args.extend_from_slice(extra);
    let mut g = common::boot_with(&args);
    g.cmd("kv fill 20");
    g.cmd("run worker alpha 600 &");
    g.wait_lines(&["worker alpha: round"], Duration::from_secs(30));
    g.resync();
    g
}

fn dumps() -> &'static Dumps {
    static DUMPS: OnceLock<Dumps> = OnceLock::new();
    DUMPS.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dump_gdb");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = [temp_dir("gdb-a"), temp_dir("gdb-b"), temp_dir("gdb-c")];

        let mut g = boot(data[0].path(), &[]);
        let resurrected = KINDS
            .iter()
            .enumerate()
            .map(|(i, (kind, _))| (*kind, crash_resurrected(&mut g, kind, i)))
            .collect();
        assert!(g.poweroff().success());

        let mut g = boot(data[1].path(), &[]);
        let null_read_again = crash_resurrected(&mut g, "null-read", 0);
        assert!(g.poweroff().success());

        let mut g = boot(data[2].path(), &["--on-crash", "halt"]);
        g.send("crash null-read");
        let halted = dump_of(&mut g, 0);
        let status = g.wait(Duration::from_secs(60));
        assert_eq!(status.code(), Some(3), "halt exits with 3");

        Dumps {
            dir,
            symbols: data[0].path().join("symbols"),
            _data: data,
            resurrected,
            null_read_again,
            halted,
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
        path_str(&d.symbols),
        path_str(dump),
    ]);
    assert!(
        out.status.success(),
        "lazarus diagnose failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// gdb's `bt` on `dump`, with the kernel and the crashing extension's
/// symbols from the store; returns its output.
fn gdb_bt(dump: &Path) -> String {
    let d = dumps();
    let report = diagnose_json(dump);
    let store = SymbolStore::new(&d.symbols);
    let kernel = store
        .find(report["kernel_build_id"].as_str().expect("kernel build id"))
        .expect("the kernel in the store");
    let ext = &report["extension"];
    let base = ext["base"].as_u64().expect("extension base");
    let crashtest = store
        .find(ext["build_id"].as_str().expect("extension build id"))
        .expect("crashtest in the store");
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "set confirm off", "-ex"])
        .arg(format!(
            "add-symbol-file {} -o {base:#x}",
            crashtest.display()
        ))
        .args(["-ex", "bt"])
        .arg(&kernel)
        .arg(dump)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run gdb ({e}): install it (scripts/setup.sh does) to run this test")
        });
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gdb failed:\n{stdout}\n{stderr}");
    format!("{stdout}\n{stderr}")
}

#[test]
fn gdb_backtraces_of_resurrected_crashes_reach_the_trap_entry() {
    let d = dumps();
    for (kind, function) in KINDS {
        let dump = &d.resurrected.iter().find(|(k, _)| k == kind).unwrap().1;
        let out = gdb_bt(dump);
        // gdb prints frame 0 once when it opens the core (before the
        // extension's symbols are added); the backtrace comes after.
        let frames: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
        let frame0 = frames
            .iter()
            .rfind(|l| l.starts_with("#0"))
            .unwrap_or_else(|| panic!("{kind}: no backtrace from gdb:\n{out}"));
        let short = function.rsplit("::").next().unwrap();
        assert!(frame0.contains(short), "{kind}: frame 0:\n{out}");
        assert!(
            !out.contains("Cannot access memory"),
            "{kind}: the dump lacks memory the backtrace needs:\n{out}"
        );
        assert!(
            out.contains("trap_common"),
            "{kind}: the backtrace stops before the trap entry:\n{out}"
        );
        let via = match *kind {
            "timer-fault" => "timer_fault",
            _ => "syscall::dispatch",
        };
        assert!(out.contains(via), "{kind}: {via} missing:\n{out}");
    }
}

/// The functions of a report's backtrace, in order.
fn functions(report: &serde_json::Value) -> Vec<String> {
    report["backtrace"]
        .as_array()
        .expect("a backtrace")
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn diagnose_gives_the_whole_chain_and_the_faulting_instruction() {
    let d = dumps();
    for (kind, function) in KINDS {
        let dump = &d.resurrected.iter().find(|(k, _)| k == kind).unwrap().1;
        let r = diagnose_json(dump);
        let names = functions(&r);
        assert_eq!(names.first().map(String::as_str), Some(*function), "{r:#}");
        assert_eq!(
            names.last().map(String::as_str),
            Some("trap_common"),
            "{kind}: the chain must reach the trap entry: {r:#}"
        );
        let insn = &r["faulting_instruction"];
        assert!(
            insn["disassembly"]
                .as_str()
                .is_some_and(|t| !t.is_empty() && t != "(bad)"),
            "{kind}: {r:#}"
        );
        let notes = r["notes"].to_string();
        assert!(!notes.contains("not in the dump"), "{kind}: {notes}");
        // Source paths are the project's, not the build machine's.
        let top = &r["backtrace"][0];
        assert_eq!(
            top["file"], "guest/ext/crashtest/src/faults.rs",
            "{kind}: {top:#}"
        );
        for f in r["backtrace"].as_array().unwrap() {
            if let Some(file) = f["file"].as_str() {
                assert!(!file.starts_with('/'), "{kind}: absolute path {file}");
            }
        }
    }
    let irq = diagnose_json(&d.resurrected[2].1);
    assert_eq!(irq["kind"], "irq-fault", "{irq:#}");
    assert_eq!(irq["in_irq"], true, "{irq:#}");
}

#[test]
fn a_resurrected_dump_backtraces_like_a_halted_one() {
    let d = dumps();
    let resurrected = diagnose_json(&d.resurrected[0].1);
    let halted = diagnose_json(&d.halted);
    assert_eq!(functions(&resurrected), functions(&halted));
    assert!(functions(&halted).len() >= 7, "{halted:#}");
    assert_eq!(resurrected["signature"], halted["signature"]);
    assert_eq!(
        resurrected["faulting_instruction"]["disassembly"],
        halted["faulting_instruction"]["disassembly"]
    );
}

#[test]
fn dumps_hold_what_they_captured_not_all_of_ram() {
    let d = dumps();
    for (kind, dump) in &d.resurrected {
        let len = std::fs::metadata(dump).unwrap().len();
        // The default guest has 128 MiB of RAM; a snapshot holds kernel
        // memory, a few MiB at most.
        assert!(len < 8 << 20, "{kind}: a {len}-byte dump");
        let parsed = lazarus_dump::Dump::open(dump).unwrap();
        let memory = parsed.memory().expect("a memory note");
        assert_eq!(memory.ram_size, 128 << 20);
        assert!(!memory.all_ram, "{kind}");
    }
    let len = std::fs::metadata(&d.halted).unwrap().len();
    assert!(len < 64 << 20, "a halted guest's {len}-byte dump");
    let parsed = lazarus_dump::Dump::open(&d.halted).unwrap();
    assert!(parsed.memory().expect("a memory note").all_ram);
}

#[test]
fn the_gdb_command_line_names_the_kernel_the_extension_and_the_dump() {
    let d = dumps();
    let dump = &d.resurrected[0].1;
    let r = diagnose_json(dump);
    let base = r["extension"]["base"].as_u64().unwrap();
    let store = SymbolStore::new(&d.symbols);
    let crashtest = store
        .find(r["extension"]["build_id"].as_str().unwrap())
        .unwrap();
    let out = lazarus(&[
        "diagnose",
        "--gdb",
        "--symbols",
        path_str(&d.symbols),
        path_str(dump),
    ]);
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("gdb "), "{line}");
    assert!(line.contains(&format!("-o {base:#x}")), "{line}");
    assert!(line.contains(path_str(&crashtest)), "{line}");
    assert!(line.trim_end().ends_with(path_str(dump)), "{line}");
}

#[test]
fn diagnose_names_kind_process_extension_and_frames() {
    let d = dumps();
    let r = diagnose_json(&d.resurrected[0].1);
    assert_eq!(r["kind"], "null-deref", "{r:#}");
    assert_eq!(r["extension"]["name"], "crashtest", "{r:#}");
    assert_eq!(r["process"]["name"], "crash", "{r:#}");
    let sig = r["signature"].as_str().unwrap();
    assert_eq!(sig.len(), 16);
    assert!(sig.bytes().all(|c| c.is_ascii_hexdigit()));
    assert!(
        r["title"]
            .as_str()
            .unwrap()
            .starts_with("null-deref in crashtest!")
    );

    // The text report says the same, with the disassembly and the
    // project-relative source line.
    let out = lazarus(&[
        "diagnose",
        "--symbols",
        path_str(&d.symbols),
        path_str(&d.resurrected[0].1),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "null-deref",
        "\"crash\"",
        "crashtest (slot",
        sig,
        "backtrace:",
        "faulting instruction:",
        "mov ",
        "(guest/ext/crashtest/src/faults.rs:",
        "trap_common",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
}

#[test]
fn signatures_match_across_boots_and_differ_between_bugs() {
    let d = dumps();
    let a = diagnose_json(&d.resurrected[0].1);
    let b = diagnose_json(&d.null_read_again);
    let c = diagnose_json(&d.resurrected[1].1);
    assert_ne!(a["boot_id"], b["boot_id"]);
    assert_eq!(a["signature"], b["signature"], "{a:#}\n{b:#}");
    assert_eq!(c["kind"], "wild-write", "{c:#}");
    assert_ne!(a["signature"], c["signature"]);
}

#[test]
fn malformed_dumps_exit_4_with_one_line() {
    let d = dumps();
    let data = std::fs::read(&d.resurrected[0].1).unwrap();
    let truncated = d.dir.join("truncated.core");
    std::fs::write(&truncated, &data[..data.len() / 2]).unwrap();
    let garbage = d.dir.join("garbage.core");
    std::fs::write(&garbage, b"not a dump at all").unwrap();
    let missing = d.dir.join("missing.core");
    for bad in [&truncated, &garbage, &missing] {
        let out = lazarus(&["diagnose", path_str(bad)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{}: {stderr}", bad.display());
        assert!(stderr.starts_with("lazarus: error: "), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(out.stdout.is_empty());
    }
}
