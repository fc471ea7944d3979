//! Every crash kind of the crashtest extension, end to end: boot the real
//! guest, trigger the crash from the shell, and check what the hypervisor
//! detected and what the offline diagnosis (from the dump alone) says.

mod common;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Expect {
    crash: &'static str,
    kind: &'static str,
    /// Offending process name (None: no offender, e.g. interrupt context).
    process: Option<&'static str>,
}

const fn e(crash: &'static str, kind: &'static str, process: Option<&'static str>) -> Expect {
    Expect {
        crash,
        kind,
        process,
    }
}

fn only_report(dir: &Path) -> serde_json::Value {
    let reports: Vec<PathBuf> = std::fs::read_dir(dir.join("reports"))
        .expect("reports dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(reports.len(), 1, "expected one report, found {reports:?}");
    let text = std::fs::read_to_string(&reports[0]).expect("read report");
    serde_json::from_str(&text).expect("report is JSON")
}

fn check(x: &Expect) {
    let dir = common::temp_dir(x.crash);
    let data = common::path_str(dir.path());
    let mut g = common::boot_with(&["--memory", "64", "--on-crash", "halt", "--data-dir", data]);
    g.send(&format!("crash {}", x.crash));
    let status = g.wait(Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(3),
        "crash {} must end with exit code 3:\n{}",
        x.crash,
        g.transcript
    );

    let r = only_report(dir.path());
    assert_eq!(r["kind"], x.kind, "crash {}: report {r:#}", x.crash);
    assert_eq!(
        r["extension"]["name"], "crashtest",
        "crash {}: report {r:#}",
        x.crash
    );
    match x.process {
        Some(name) => assert_eq!(
            r["process"]["name"], name,
            "crash {}: report {r:#}",
            x.crash
        ),
        None => assert!(
            r["process"].is_null(),
            "crash {}: no offender expected: {r:#}",
            x.crash
        ),
    }
    let sig = r["signature"].as_str().unwrap_or("");
    assert!(sig.len() >= 8, "crash {}: signature {sig:?}", x.crash);
    // The dump exists and the crash database indexed it.
    let dumps = std::fs::read_dir(dir.path().join("dumps"))
        .expect("dumps")
        .count();
    assert_eq!(dumps, 1, "crash {}", x.crash);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args(["crashes", "--json", "--data-dir", data])
        .output()
        .expect("lazarus crashes");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(sig),
        "crash {}: {sig} not in the database: {listing}",
        x.crash
    );
    drop(dir);
}

macro_rules! crash_tests {
    ($($name:ident: $crash:literal => $kind:literal, $proc:expr;)*) => {
        $(
            #[test]
            fn $name() {
                check(&e($crash, $kind, $proc));
            }
        )*
    };
}

crash_tests! {
    panic: "panic" => "panic", Some("crash");
    null_pointer_read: "null-read" => "null-deref", Some("crash");
    wild_write: "wild-write" => "wild-write", Some("crash");
    general_protection: "gp" => "general-protection", Some("crash");
    invalid_opcode: "ud2" => "invalid-opcode", Some("crash");
    divide_by_zero: "divide" => "divide-error", Some("crash");
    kernel_stack_overflow: "stack-overflow" => "stack-overflow", Some("crash");
    hard_lockup: "hard-lockup" => "hard-lockup", Some("crash");
    soft_lockup: "soft-lockup" => "soft-lockup", Some("crash");
    deadlock: "deadlock" => "deadlock", Some("crash");
    double_fault: "double-fault" => "double-fault", Some("crash");
    list_corruption: "list-corruption" => "list-corruption", Some("crash");
    fault_in_interrupt_context: "timer-fault" => "irq-fault", None;
    triple_fault: "triple-fault" => "triple-fault", Some("crash");
    kvm_internal_error: "emulation-failure" => "kvm-internal-error", Some("crash");
}

#[test]
fn reboot_policy_reports_downtime_and_loses_state() {
    let dir = common::temp_dir("reboot");
    let data = common::path_str(dir.path());
    let mut g = common::boot_with(&["--memory", "64", "--on-crash", "reboot", "--data-dir", data]);
    g.cmd("kv put survivor yes");
    g.send("crash null-read");
    // The guest comes back with a fresh shell, and the downtime is told.
    let line = g.wait_host_lines(
        &["lazarus: rebooted after the crash"],
        Duration::from_secs(60),
    );
    assert!(
        line[0].contains("ms from crash to shell prompt"),
        "{line:?}"
    );
    // Resynchronise with the new shell (its prompt and our stderr line
    // race): an echo marks where the next command's output starts.
    g.send("echo resync-marker");
    g.expect("resync-marker\n", Duration::from_secs(30));
    g.expect(common::PROMPT, Duration::from_secs(30));
    // ...and the kv data is gone: a reboot loses all state.
    let out = g.cmd("kv get survivor");
    assert!(!out.contains("yes"), "state survived a reboot?\n{out}");
    assert!(g.poweroff().success());
    // The crash was still recorded.
    let r = only_report(dir.path());
    assert_eq!(r["kind"], "null-deref");
    drop(dir);
}
