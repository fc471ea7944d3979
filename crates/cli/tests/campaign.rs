//! `lazarus campaign` against the real guest: a short seeded campaign
//! produces the documented JSON and recovers every crash-test fault; one
//! against the virtio disk driver recovers the faults it activates.

mod common;

use std::process::Command;

fn campaign(args: &[&str]) -> std::process::Output {
    command(args).output().expect("run lazarus campaign")
}

/// `lazarus campaign ARGS`, for a test that needs to set more.
fn command(args: &[&str]) -> Command {
    common::require_kvm();
    let mut c = Command::new(env!("CARGO_BIN_EXE_lazarus"));
    c.arg("campaign").args(args);
    c
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

/// Faults in the virtio disk driver: extclient drives `/dev/vda` on a
/// disk the campaign made for the VM (in the temporary directory, removed
/// afterwards; the data directory's disk.img is never touched), so code
/// faults in `virtblk` are activated and recovered (a fault that leaves
/// the driver disabled, after its third crash, only costs a new VM).
#[test]
fn virtblk_campaign_injects_into_the_disk_driver_and_recovers() {
    let dir = out_dir("campaign-virtblk");
    let (data, tmp) = (dir.path().join("data"), dir.path().join("tmp"));
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let json = dir.path().join("c.json");
    let out = command(&[
        "--ext",
        "virtblk",
        "--faults",
        "10",
        "--seed",
        "3",
        "--types",
        "bit-flip,replace-instruction",
        "--quiet",
        "--json",
        json.to_str().expect("utf-8"),
    ])
    .env("LAZARUS_DATA_DIR", &data)
    .env("TMPDIR", &tmp)
    .output()
    .expect("run lazarus campaign");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("target extension virtblk"), "{stdout}");
    let r = report(&json);
    assert_eq!(r["ext"], "virtblk", "{r:#}");
    let records = r["records"].as_array().expect("records");
    assert_eq!(records.len(), 10, "{r:#}");
    for x in records {
        assert!(
            x["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("virtblk+")),
            "a fault outside virtblk: {x:#}"
        );
    }
    let activated: Vec<_> = records
        .iter()
        .filter(|x| x["outcome"] != "not-activated")
        .collect();
    assert!(!activated.is_empty(), "no fault was activated: {r:#}");
    for x in &activated {
        assert_eq!(x["outcome"], "recovered", "{x:#}");
        assert!(
            x["note"]
                .as_str()
                .is_some_and(|n| n.contains("in extension virtblk")),
            "{x:#}"
        );
    }
    assert_eq!(r["outcomes"]["recovered"], activated.len(), "{r:#}");
    assert!(stdout.contains("100.0%"), "{stdout}");
    // The VMs' disks were the campaign's own, and are gone.
    assert!(
        !data.join("disk.img").exists(),
        "the data dir's disk was used"
    );
    let left: Vec<_> = std::fs::read_dir(&tmp).expect("tmp").collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    drop(dir);
}

#[test]
fn unknown_extension_is_a_usage_error() {
    let out = campaign(&["--faults", "1", "--ext", "crashtest"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "cannot target extension \"crashtest\"; a campaign targets: ramdisk, virtblk"
        ),
        "{stderr}"
    );
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
