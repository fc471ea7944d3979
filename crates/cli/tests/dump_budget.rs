//! The data directory's dump budget on real runs: dumps are pruned right
//! after each one is written, and `.partial` dumps of an interrupted run
//! are removed when the next run starts. Needs /dev/kvm.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use lazarus_crashdb::{CrashDb, DataDir};

fn cores(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("dumps"))
        .expect("dumps")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "core"))
        .collect();
    v.sort();
    v
}

/// Boots in `dir` with `extra`, resurrects each crash in turn, powers off.
fn crash_run(dir: &Path, extra: &[&str], crashes: &[&str]) -> String {
    let mut args = vec!["--memory", "64", "--data-dir", common::path_str(dir)];
    args.extend_from_slice(extra);
    let mut g = common::boot_with(&args);
    for kind in crashes {
        g.send(&format!("crash {kind}"));
        let line = g.expect("[lazarus] resurrected after ", Duration::from_secs(120));
        assert!(!line.contains("cannot resurrect"), "{}", g.transcript);
        g.resync();
    }
    g.send("poweroff");
    let st = g.wait(Duration::from_secs(120));
    assert_eq!(st.code(), Some(0), "{}", g.transcript);
    g.transcript.clone()
}

#[test]
fn each_dump_prunes_older_ones_of_its_signature() {
    let dir = common::temp_dir("budget-per-sig");
    let t = crash_run(
        dir.path(),
        &["--dumps-per-signature", "1"],
        &["null-read", "null-read", "null-read", "divide"],
    );
    assert_eq!(t.matches("lazarus: crash ").count(), 4, "{t}");
    // One dump per signature is left; every crash keeps its row and report.
    assert_eq!(cores(dir.path()).len(), 2, "{:?}", cores(dir.path()));
    let data = DataDir::new(dir.path());
    let db = CrashDb::open(data.db_path()).expect("open");
    assert_eq!(db.crash_count().expect("count"), 4);
    let buckets = db.buckets().expect("buckets");
    let null = buckets
        .iter()
        .find(|b| b.kind == "null-deref")
        .expect("null bucket");
    assert_eq!(null.count, 3);
    let detail = db.bucket(&null.signature).expect("bucket");
    let pruned: Vec<bool> = detail.crashes.iter().map(|c| c.dump_pruned).collect();
    assert_eq!(pruned, [false, true, true], "the newest dump stays");
    assert!(detail.crashes[0].dump_exists);
    for c in &detail.crashes {
        let report = c.report_path.as_ref().expect("report path");
        assert!(report.is_file(), "reports stay: {report:?}");
    }
}

#[test]
fn each_dump_keeps_the_directory_within_its_budget() {
    let dir = common::temp_dir("budget-bytes");
    // Every dump is larger than 1 KiB: only the newest can stay, whatever
    // its signature.
    crash_run(
        dir.path(),
        &["--dump-budget", "1K"],
        &["null-read", "divide", "gp"],
    );
    let left = cores(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    let db = CrashDb::open(DataDir::new(dir.path()).db_path()).expect("open");
    let newest = db
        .buckets()
        .expect("buckets")
        .into_iter()
        .find(|b| b.kind == "general-protection")
        .expect("gp bucket");
    assert_eq!(newest.example_dump.as_ref(), Some(&left[0]));
    assert_eq!(db.crash_count().expect("count"), 3);
}

#[test]
fn partial_dumps_are_removed_when_the_next_run_starts_alone() {
    let dir = common::temp_dir("partials");
    let data = DataDir::new(dir.path());
    data.ensure().expect("ensure");
    let partial = data.dumps_dir().join("1-abc-pvpanic.core.partial");
    let done = data.dumps_dir().join("0-abc-pvpanic.core");
    std::fs::write(&done, b"a finished dump").expect("write");
    // Two runs share the directory at once, so not its default disk.
    let args = [
        "--memory",
        "64",
        "--disk",
        "none",
        "--data-dir",
        common::path_str(dir.path()),
    ];

    // A run is using the directory: the .partial may be its dump in the
    // making, so a second run leaves it.
    let mut first = common::boot_with(&args);
    std::fs::write(&partial, b"half a dump").expect("write");
    let mut second = common::boot_with(&args);
    assert!(partial.is_file(), "removed while another run was using it");
    assert!(
        !second.transcript.contains("partial dump"),
        "{}",
        second.transcript
    );
    second.send("poweroff");
    assert_eq!(second.wait(Duration::from_secs(60)).code(), Some(0));
    first.send("poweroff");
    assert_eq!(first.wait(Duration::from_secs(60)).code(), Some(0));
    assert!(partial.is_file());

    // Alone, the next run removes it, and nothing else.
    let mut third = common::boot_with(&args);
    assert!(!partial.exists(), "{}", third.transcript);
    assert!(done.is_file());
    third.wait_host_lines(
        &["lazarus: removed 1 partial dump(s) left by an interrupted run"],
        Duration::from_secs(10),
    );
    third.send("poweroff");
    assert_eq!(third.wait(Duration::from_secs(60)).code(), Some(0));
}
