//! `lazarus campaign` against the real guest: a short seeded campaign
//! produces the documented JSON and recovers every crash-test fault.

mod common;

use std::process::Command;

fn campaign(args: &[&str]) -> std::process::Output {
    common::require_kvm();
    Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .arg("campaign")
        .args(args)
        .output()
        .expect("run lazarus campaign")
}

/// A fresh directory for one test's output files.
fn out_dir(test: &str) -> tempfile::TempDir {
    lazarus_testkit::temp_dir(test)
}

/// The JSON report `--json` wrote.
fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("json written")).expect("json")
}

#[test]
fn short_campaign_reports_outcomes_and_recovers_crash_tests() {
    let dir = out_dir("campaign");
    let json = dir.path().join("c.json");
    let svg = dir.path().join("c.svg");
    let out = campaign(&[
        "--faults",
        "8",
        "--seed",
        "11",
        "--types",
        "crash-test,bit-flip,wild-write-struct",
        "--quiet",
        "--json",
        json.to_str().expect("utf-8"),
        "--plot",
        svg.to_str().expect("utf-8"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("recovery latency:"), "{stdout}");
    let r = report(&json);
    assert_eq!(r["faults"], 8, "{r:#}");
    // The default vCPU count reached the VM and the report.
    assert_eq!(r["vcpus"], lazarus_vmm::config::DEFAULT_VCPUS, "{r:#}");
    for key in ["outcomes", "by_type", "latency_ms"] {
        assert!(r.get(key).is_some(), "missing {key}: {r:#}");
    }
    let total: u64 = r["outcomes"]
        .as_object()
        .expect("outcomes")
        .values()
        .map(|v| v.as_u64().expect("count"))
        .sum();
    assert_eq!(total, 8, "{r:#}");
    // Every crash-test fault crashes the kernel; each must be resurrected
    // with the survivors intact.
    let crash = &r["by_type"]["crash-test"];
    let crashes: u64 = crash
        .as_object()
        .expect("crash-test row")
        .values()
        .map(|v| v.as_u64().expect("count"))
        .sum();
    assert!(crashes > 0, "the seed drew no crash test: {r:#}");
    assert_eq!(crash["recovered"].as_u64(), Some(crashes), "{r:#}");
    assert!(
        r["latency_ms"]["median"].as_f64().is_some_and(|m| m > 0.0),
        "{r:#}"
    );
    let svg_text = std::fs::read_to_string(&svg).expect("svg written");
    assert!(svg_text.starts_with("<svg") && svg_text.contains("Recovery latency"));
    drop(dir);
}

#[test]
fn unknown_fault_type_is_a_usage_error() {
    let out = campaign(&["--faults", "1", "--types", "cosmic-ray"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown fault type \"cosmic-ray\""),
        "{stderr}"
    );
}

/// Corrupting the saved state of sleeping processes: the kernel's seal
/// check catches it before the process runs on it, and the repair
/// quarantines that process instead of letting it compute garbage. Most
/// such faults land in the sealed words (the switch context and the user
/// trap frame); none may end as silent corruption.
#[test]
fn corrupted_saved_state_is_caught_not_resumed() {
    let dir = out_dir("campaign-cs");
    let json = dir.path().join("c.json");
    let out = campaign(&[
        "--faults",
        "12",
        "--seed",
        "5",
        "--types",
        "corrupt-stack",
        "--quiet",
        "--json",
        json.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let r = report(&json);
    assert_eq!(r["outcomes"]["silent-corruption"], 0, "{r:#}");
    let caught = r["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|x| {
            x["outcome"] == "recovered"
                && x["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("resurrected after context-corruption"))
        })
        .count();
    assert!(caught > 0, "no corrupted context was caught: {r:#}");
    drop(dir);
}
