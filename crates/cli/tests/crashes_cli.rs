//! `lazarus crashes` against databases filled through the library in
//! scratch data directories. None of these boots a kernel.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use lazarus_crashdb::{CrashDb, DataDir, NewCrash};

/// A fresh data directory unique to this test, removed when dropped.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new(name: &str) -> Scratch {
        Scratch(lazarus_testkit::temp_dir(name))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn arg(&self) -> &str {
        lazarus_testkit::path_str(self.0.path())
    }
}

fn lazarus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        // Never fall back to the real user's data directory.
        .env_remove("LAZARUS_DATA_DIR")
        .env_remove("LAZARUS_CRASH_DB")
        .env("XDG_DATA_HOME", "/nonexistent/lazarus-test-xdg")
        .output()
        .expect("run lazarus")
}

fn stdout(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {text}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Asserts the exit code and one `lazarus: error:` line containing `needle`.
fn expect_error(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {stderr}");
    assert!(lines[0].starts_with("lazarus: error: "), "{stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr}");
}

const SIG_A: &str = "aaaa1111bbbb2222cccc3333dddd4444";
const SIG_A2: &str = "aaaa1111ffff0000cccc3333dddd4444";
const SIG_B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";

fn crash(signature: &str, time_unix_ms: u64, dump: Option<PathBuf>) -> NewCrash {
    NewCrash {
        signature: signature.to_string(),
        signature_version: lazarus_diagnose::SIGNATURE_VERSION,
        kind: "page-fault".to_string(),
        title: format!("page fault in crashtest_{}", &signature[..4]),
        time_unix_ms,
        boot_id: "boot-7".to_string(),
        extension: Some("crashtest".to_string()),
        process: Some("pid 4 (crash)".to_string()),
        action: "resurrect".to_string(),
        fallback: None,
        dump_path: dump,
        report_json: format!("{{\"signature\":\"{signature}\"}}"),
    }
}

/// SIG_A twice (one dump on disk, one gone), SIG_B once, SIG_A2 once.
fn populate(dir: &Scratch) -> DataDir {
    let data = DataDir::new(dir.path());
    data.ensure().expect("ensure");
    let dump = data.dumps_dir().join("a.core");
    std::fs::write(&dump, b"core").expect("write dump");
    let db = CrashDb::open(data.db_path()).expect("open");
    // 2023-11-14T22:13:20Z and a day later.
    db.record(&crash(SIG_A, 1_700_000_000_000, Some(dump)))
        .expect("record");
    db.record(&crash(
        SIG_A,
        1_700_086_400_000,
        Some(data.dumps_dir().join("gone.core")),
    ))
    .expect("record");
    db.record(&crash(SIG_B, 1_600_000_000_000, None))
        .expect("record");
    db.record(&crash(SIG_A2, 1_500_000_000_000, None))
        .expect("record");
    data
}

#[test]
fn lists_buckets_as_a_table() {
    let dir = Scratch::new("list");
    let data = populate(&dir);
    let text = stdout(&lazarus(&["crashes", "--data-dir", dir.arg()]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for col in [
        "SIGNATURE",
        "COUNT",
        "KIND",
        "FIRST SEEN",
        "LAST SEEN",
        "TITLE",
        "EXAMPLE DUMP",
    ] {
        assert!(lines[0].contains(col), "{col} missing: {text}");
    }
    // Most recently seen first, signatures cut to 16 hex digits.
    assert!(lines[1].starts_with("aaaa1111bbbb2222 "), "{text}");
    assert!(!lines[1].contains(SIG_A), "{text}");
    assert!(lines[2].starts_with("b0b0b0b0b0b0b0b0 "), "{text}");
    assert!(lines[3].starts_with("aaaa1111ffff0000 "), "{text}");
    let a: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(a[1], "2", "{text}");
    assert_eq!(a[2], "page-fault");
    assert_eq!(a[3], "2023-11-14T22:13:20Z");
    assert_eq!(a[4], "2023-11-15T22:13:20Z");
    let example = data.dumps_dir().join("a.core");
    assert!(
        lines[1].ends_with(example.to_str().expect("UTF-8")),
        "{text}"
    );
    assert!(lines[2].ends_with(" -"), "no dump: {text}");
}

#[test]
fn lists_buckets_as_json() {
    let dir = Scratch::new("list-json");
    populate(&dir);
    let text = stdout(&lazarus(&["crashes", "--data-dir", dir.arg(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
    let buckets = v["buckets"].as_array().expect("buckets array");
    assert_eq!(buckets.len(), 3);
    assert_eq!(buckets[0]["signature"], SIG_A);
    assert_eq!(buckets[0]["count"], 2);
    assert_eq!(buckets[0]["first_seen_unix_ms"], 1_700_000_000_000u64);
    assert_eq!(buckets[0]["last_seen_unix_ms"], 1_700_086_400_000u64);
    assert_eq!(buckets[0]["extensions"][0], "crashtest");
    assert!(
        buckets[0]["example_dump"]
            .as_str()
            .is_some_and(|p| p.ends_with("a.core"))
    );
    assert!(buckets[1]["example_dump"].is_null());
}

#[test]
fn shows_one_bucket_by_prefix() {
    let dir = Scratch::new("show");
    populate(&dir);
    let text = stdout(&lazarus(&[
        "crashes",
        "show",
        "AAAA1111B",
        "--data-dir",
        dir.arg(),
    ]));
    assert!(text.contains(SIG_A), "full signature: {text}");
    assert!(text.contains("page fault in crashtest_aaaa"), "{text}");
    assert!(text.contains("crashtest"), "{text}");
    let table: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("ID")).collect();
    assert_eq!(table.len(), 3, "header and two crashes: {text}");
    for col in ["TIME", "BOOT", "ACTION", "PROCESS", "DUMP"] {
        assert!(table[0].contains(col), "{col}: {text}");
    }
    // Newest first; its dump is gone and says so.
    assert!(table[1].contains("2023-11-15T22:13:20Z"), "{text}");
    assert!(table[1].contains("gone.core (missing)"), "{text}");
    assert!(table[1].contains("pid 4 (crash)"), "{text}");
    assert!(table[1].contains("resurrect"), "{text}");
    assert!(table[1].contains("boot-7"), "{text}");
    assert!(table[2].contains("a.core"), "{text}");
    assert!(!table[2].contains("missing"), "{text}");
}

#[test]
fn shows_one_bucket_as_json() {
    let dir = Scratch::new("show-json");
    populate(&dir);
    // Global options work before the subcommand too.
    let text = stdout(&lazarus(&[
        "crashes",
        "--json",
        "--data-dir",
        dir.arg(),
        "show",
        "b0",
    ]));
    let v: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
    assert_eq!(v["bucket"]["signature"], SIG_B);
    assert_eq!(v["bucket"]["count"], 1);
    let crashes = v["crashes"].as_array().expect("crashes array");
    assert_eq!(crashes.len(), 1);
    assert_eq!(crashes[0]["boot_id"], "boot-7");
    assert_eq!(crashes[0]["process"], "pid 4 (crash)");
    assert_eq!(crashes[0]["action"], "resurrect");
    assert!(crashes[0]["id"].is_i64());
}

#[test]
fn empty_or_missing_database_has_no_crashes() {
    let dir = Scratch::new("empty");
    let out = lazarus(&["crashes", "--data-dir", dir.arg()]);
    assert_eq!(stdout(&out), "no crashes recorded\n");
    assert!(
        !DataDir::new(dir.path()).db_path().exists(),
        "reading must not create a database"
    );

    let json = stdout(&lazarus(&["crashes", "--data-dir", dir.arg(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["buckets"].as_array().map(Vec::len), Some(0));

    drop(CrashDb::open(DataDir::new(dir.path()).db_path()).expect("create empty"));
    let out = lazarus(&["crashes", "--data-dir", dir.arg()]);
    assert_eq!(stdout(&out), "no crashes recorded\n");

    let missing = dir.path().join("does/not/exist");
    let out = lazarus(&["crashes", "--data-dir", missing.to_str().expect("UTF-8")]);
    assert_eq!(stdout(&out), "no crashes recorded\n");
}

#[test]
fn unknown_signature_is_bad_input() {
    let dir = Scratch::new("unknown");
    populate(&dir);
    let out = lazarus(&["crashes", "show", "c0ffee", "--data-dir", dir.arg()]);
    expect_error(&out, 4, "no crash with signature 'c0ffee'");

    let out = lazarus(&["crashes", "show", "aaaa1111", "--data-dir", dir.arg()]);
    expect_error(&out, 4, "ambiguous");

    let empty = Scratch::new("unknown-empty");
    let out = lazarus(&["crashes", "show", "c0ffee", "--data-dir", empty.arg()]);
    expect_error(&out, 4, "no crash with signature 'c0ffee'");
}

#[test]
fn garbage_database_is_bad_input_and_kept() {
    let dir = Scratch::new("garbage");
    let db = DataDir::new(dir.path()).db_path();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 13 + 5) as u8).collect();
    std::fs::write(&db, &garbage).expect("write");
    let out = lazarus(&["crashes", "--data-dir", dir.arg()]);
    expect_error(&out, 4, "not a lazarus crash database");
    assert_eq!(std::fs::read(&db).expect("read"), garbage);
}

#[test]
fn data_dir_comes_from_the_environment() {
    let dir = Scratch::new("env");
    populate(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args(["crashes", "--json"])
        .stdin(Stdio::null())
        .env("LAZARUS_DATA_DIR", dir.path())
        .output()
        .expect("run lazarus");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(v["buckets"].as_array().map(Vec::len), Some(3));
}

#[test]
fn missing_show_argument_is_usage_error() {
    let out = lazarus(&["crashes", "show"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn data_dir_that_is_a_file_is_bad_input() {
    let dir = Scratch::new("file-datadir");
    let file = dir.path().join("data");
    std::fs::write(&file, b"").expect("write");
    let arg = file.to_str().expect("UTF-8 path");
    let out = lazarus(&["crashes", "--data-dir", arg]);
    expect_error(&out, 4, "data is not a directory");
}

/// A dump of `kib` KiB written in full (every block allocated).
fn dense_dump(data: &DataDir, name: &str, kib: usize) -> PathBuf {
    let path = data.dumps_dir().join(name);
    std::fs::write(&path, vec![0x5au8; kib * 1024]).expect("write dump");
    path
}

fn allocated(path: &Path) -> u64 {
    lazarus_crashdb::prune::allocated_bytes(&std::fs::metadata(path).expect("stat"))
}

/// Four crashes of SIG_A and one of SIG_B, each with a 64 KiB dump and a
/// report; returns the dumps, oldest first.
fn populate_dumps(data: &DataDir) -> Vec<PathBuf> {
    data.ensure().expect("ensure");
    let db = CrashDb::open(data.db_path()).expect("open");
    let mut dumps = Vec::new();
    for (i, sig) in [SIG_A, SIG_A, SIG_B, SIG_A, SIG_A].iter().enumerate() {
        let dump = dense_dump(data, &format!("{i}.core"), 64);
        std::fs::write(data.reports_dir().join(format!("{i}.json")), b"{}").expect("report");
        db.record(&crash(
            sig,
            1_700_000_000_000 + i as u64 * 1000,
            Some(dump.clone()),
        ))
        .expect("record");
        dumps.push(dump);
    }
    dumps
}

#[test]
fn prune_keeps_the_newest_dumps_of_each_signature() {
    let dir = Scratch::new("prune-per-sig");
    let data = DataDir::new(dir.path());
    let dumps = populate_dumps(&data);
    let args = |extra: &[&str]| {
        let mut a = vec!["crashes", "prune", "--data-dir", dir.arg(), "--json"];
        a.extend_from_slice(extra);
        stdout(&lazarus(&a))
    };
    // A dry run says what would go and removes nothing.
    let dry: serde_json::Value =
        serde_json::from_str(&args(&["--dumps-per-signature", "2", "--dry-run"])).expect("JSON");
    assert_eq!(dry["dry_run"], true);
    let would: Vec<&str> = dry["pruned"]
        .as_array()
        .expect("pruned")
        .iter()
        .map(|p| p["path"].as_str().expect("path"))
        .collect();
    let oldest_a = [dumps[1].to_str().unwrap(), dumps[0].to_str().unwrap()];
    assert_eq!(would, oldest_a, "{dry:#}");
    assert!(
        dumps.iter().all(|d| d.is_file()),
        "a dry run removes nothing"
    );

    let done: serde_json::Value =
        serde_json::from_str(&args(&["--dumps-per-signature", "2"])).expect("JSON");
    assert_eq!(done["pruned"].as_array().map(Vec::len), Some(2), "{done:#}");
    assert_eq!(done["pruned"][0]["reason"], "per-signature");
    assert_eq!(done["dumps_left"], 3);
    assert!(!dumps[0].exists() && !dumps[1].exists());
    assert!(dumps[2..].iter().all(|d| d.is_file()));
    // The rows and reports stay; the rows say their dump was pruned.
    let db = CrashDb::open(data.db_path()).expect("open");
    assert_eq!(db.crash_count().expect("count"), 5);
    for i in 0..5 {
        assert!(data.reports_dir().join(format!("{i}.json")).is_file());
    }
    let show: serde_json::Value = serde_json::from_str(&stdout(&lazarus(&[
        "crashes",
        "show",
        SIG_A,
        "--data-dir",
        dir.arg(),
        "--json",
    ])))
    .expect("JSON");
    let pruned: Vec<bool> = show["crashes"]
        .as_array()
        .expect("crashes")
        .iter()
        .map(|c| c["dump_pruned"].as_bool().expect("dump_pruned"))
        .collect();
    assert_eq!(pruned, [false, false, true, true], "{show:#}");
    let text = stdout(&lazarus(&[
        "crashes",
        "show",
        SIG_A,
        "--data-dir",
        dir.arg(),
    ]));
    assert_eq!(text.matches("(pruned)").count(), 2, "{text}");
    // Nothing more to do: pruning again removes nothing.
    let again: serde_json::Value =
        serde_json::from_str(&args(&["--dumps-per-signature", "2"])).expect("JSON");
    assert_eq!(again["pruned"].as_array().map(Vec::len), Some(0));
}

#[test]
fn prune_keeps_dumps_within_the_budget_by_allocated_blocks() {
    let dir = Scratch::new("prune-budget");
    let data = DataDir::new(dir.path());
    data.ensure().expect("ensure");
    // Oldest: a dump of 1 GiB that is all holes but one block (as a
    // RAM-sized sparse dump is), then three dense 64 KiB ones, none in the
    // database (e.g. on-demand dumps): pruned by age alone.
    let sparse = data.dumps_dir().join("sparse.core");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&sparse).expect("create");
        f.set_len(1 << 30).expect("set_len");
        f.write_all_at(&[1u8; 4096], 1 << 20).expect("write");
    }
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&sparse)
        .and_then(|f| f.set_modified(old))
        .expect("age the sparse dump");
    let mut dense = Vec::new();
    for i in 0..3 {
        let d = dense_dump(&data, &format!("dense{i}.core"), 64);
        let t = old + std::time::Duration::from_secs(60 * (i + 1));
        std::fs::File::options()
            .write(true)
            .open(&d)
            .and_then(|f| f.set_modified(t))
            .expect("set mtime");
        dense.push(d);
    }
    let total: u64 = dense.iter().map(|d| allocated(d)).sum::<u64>() + allocated(&sparse);
    assert!(total < 300 * 1024, "allocated {total}");
    // Counted by blocks, 1 GiB of holes fits a 300 KiB budget.
    let fits: serde_json::Value = serde_json::from_str(&stdout(&lazarus(&[
        "crashes",
        "prune",
        "--data-dir",
        dir.arg(),
        "--json",
        "--dump-budget",
        "300K",
    ])))
    .expect("JSON");
    assert_eq!(fits["pruned"].as_array().map(Vec::len), Some(0), "{fits:#}");
    assert_eq!(fits["bytes_before"], total);
    // 100 KiB: the oldest go until the rest fit; the newest always stays.
    let text = stdout(&lazarus(&[
        "crashes",
        "prune",
        "--data-dir",
        dir.arg(),
        "--dump-budget",
        "100K",
    ]));
    assert!(text.starts_with("removed 3 dump(s)"), "{text}");
    assert!(text.contains("(budget)"), "{text}");
    assert!(!sparse.exists() && !dense[0].exists() && !dense[1].exists());
    assert!(dense[2].is_file());
    // A budget smaller than the newest dump keeps it all the same.
    let out: serde_json::Value = serde_json::from_str(&stdout(&lazarus(&[
        "crashes",
        "prune",
        "--data-dir",
        dir.arg(),
        "--json",
        "--dump-budget",
        "1K",
    ])))
    .expect("JSON");
    assert_eq!(out["pruned"].as_array().map(Vec::len), Some(0));
    assert!(dense[2].is_file());

    let out = lazarus(&[
        "crashes",
        "prune",
        "--data-dir",
        dir.arg(),
        "--dump-budget",
        "lots",
    ]);
    assert_eq!(out.status.code(), Some(2), "a bad size is a usage error");
}

/// A real report (from the guest's crash-test extension) as stored.
fn real_report(kind: &str) -> (String, lazarus_diagnose::Report) {
    let path = format!(
        "{}/../diagnose/tests/reports/{kind}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("read report");
    let report = serde_json::from_str(&text).expect("report");
    (text, report)
}

#[test]
fn regroup_moves_rows_of_an_older_signature_version() {
    let dir = Scratch::new("regroup");
    let data = DataDir::new(dir.path());
    data.ensure().expect("ensure");
    let db = CrashDb::open(data.db_path()).expect("open");
    let (null_json, null_report) = real_report("null-deref");
    let (gp_json, gp_report) = real_report("general-protection");
    let v1 = |sig: &str, json: &str, t: u64| NewCrash {
        signature_version: 1,
        report_json: json.to_string(),
        ..crash(sig, t, None)
    };
    // The same null read reached by two paths: version 1 split it in two
    // buckets (the report's own signature, and another stand-in).
    let a = db
        .record(&v1(&null_report.signature, &null_json, 1000))
        .expect("a");
    let b = db.record(&v1(SIG_B, &null_json, 2000)).expect("b");
    let c = db
        .record(&v1(&gp_report.signature, &gp_json, 3000))
        .expect("c");
    let unreadable = db.record(&v1(SIG_A2, "{not a report", 4000)).expect("d");
    // Already the current version: left alone even if it looks odd.
    let current = db.record(&crash(SIG_A, 5000, None)).expect("e");
    drop(db);

    let text = stdout(&lazarus(&[
        "crashes",
        "regroup",
        "--data-dir",
        dir.arg(),
        "--json",
    ]));
    let r: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let null_v2 = lazarus_diagnose::signature_of_report(&null_report);
    let gp_v2 = lazarus_diagnose::signature_of_report(&gp_report);
    assert_ne!(null_v2, null_report.signature);
    assert_eq!(r["signature_version"], lazarus_diagnose::SIGNATURE_VERSION);
    assert_eq!(r["examined"], 4, "{r:#}");
    let moved: Vec<(i64, &str, &str)> = r["moved"]
        .as_array()
        .expect("moved")
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().expect("id"),
                m["from"].as_str().expect("from"),
                m["to"].as_str().expect("to"),
            )
        })
        .collect();
    assert_eq!(
        moved,
        [
            (a, null_report.signature.as_str(), null_v2.as_str()),
            (b, SIG_B, null_v2.as_str()),
            (c, gp_report.signature.as_str(), gp_v2.as_str()),
        ],
        "{r:#}"
    );
    assert_eq!(r["unreadable"][0]["id"], unreadable);

    let list: serde_json::Value = serde_json::from_str(&stdout(&lazarus(&[
        "crashes",
        "--data-dir",
        dir.arg(),
        "--json",
    ])))
    .expect("JSON");
    let counts: std::collections::BTreeMap<String, u64> = list["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| {
            (
                b["signature"].as_str().unwrap().to_string(),
                b["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let expect: std::collections::BTreeMap<String, u64> = [
        (null_v2.clone(), 2),
        (gp_v2.clone(), 1),
        (SIG_A2.to_string(), 1),
        (SIG_A.to_string(), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        counts, expect,
        "the two paths share one bucket, the old ones are gone"
    );
    let db = CrashDb::open(data.db_path()).expect("open");
    let show = db.bucket(SIG_A).expect("current row's bucket");
    assert_eq!(show.crashes[0].id, current);

    // Done once: nothing of an older version is left but the unreadable row.
    let text = stdout(&lazarus(&["crashes", "regroup", "--data-dir", dir.arg()]));
    assert!(
        text.starts_with("1 crash(es) of an older signature version"),
        "{text}"
    );
    assert!(text.contains("0 moved"), "{text}");
}

#[test]
fn bad_or_unreachable_crash_db_says_so_without_the_password() {
    let dir = Scratch::new("crash-db-errors");
    let out = lazarus(&[
        "crashes",
        "--data-dir",
        dir.arg(),
        "--crash-db",
        "mysql://u:s3cret@h/d",
    ]);
    expect_error(&out, 4, "bad crash-database location");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret"));
    // Nothing listens on port 1.
    let url = "postgres://lazarus:s3cret@127.0.0.1:1/crashes?connect_timeout=5";
    let out = lazarus(&["crashes", "--data-dir", dir.arg(), "--crash-db", url]);
    expect_error(
        &out,
        10,
        "cannot reach the crash database postgres://lazarus:***@127.0.0.1:1/crashes",
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret"));
    let out = Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args(["crashes", "--data-dir", dir.arg()])
        .env(
            "LAZARUS_CRASH_DB",
            "postgres://lazarus:s3cret@127.0.0.1:1/crashes",
        )
        .stdin(Stdio::null())
        .output()
        .expect("run lazarus");
    expect_error(&out, 10, "cannot reach the crash database");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret"));
}

#[test]
fn prune_leaves_unrecorded_dumps_while_a_run_uses_the_directory() {
    let dir = Scratch::new("prune-busy");
    let data = DataDir::new(dir.path());
    data.ensure().expect("ensure");
    // No row names these: one may be a dump its run is still diagnosing.
    let old = dense_dump(&data, "old.core", 64);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .and_then(|f| {
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        })
        .expect("age it");
    let new = dense_dump(&data, "new.core", 64);
    let prune = || {
        let text = stdout(&lazarus(&[
            "crashes",
            "prune",
            "--data-dir",
            dir.arg(),
            "--json",
            "--dump-budget",
            "1K",
        ]));
        serde_json::from_str::<serde_json::Value>(&text).expect("JSON")
    };
    let session = data.start_session().expect("a run's session");
    let busy = prune();
    assert_eq!(busy["pruned"].as_array().map(Vec::len), Some(0), "{busy:#}");
    assert!(old.is_file());
    drop(session);
    let alone = prune();
    assert_eq!(
        alone["pruned"].as_array().map(Vec::len),
        Some(1),
        "{alone:#}"
    );
    assert!(!old.exists() && new.is_file());
}
