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
