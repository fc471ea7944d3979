//! The crash database against real SQLite files in scratch directories.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use lazarus_crashdb::{CrashDb, DataDir, DbError, NewCrash, SCHEMA_VERSION, record_report};

/// A fresh directory unique to this test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("lazarus-crashdb-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn crash(signature: &str, time_unix_ms: u64) -> NewCrash {
    NewCrash {
        signature: signature.to_string(),
        signature_version: 2,
        kind: "page-fault".to_string(),
        title: format!("page fault in crashtest ({signature})"),
        time_unix_ms,
        boot_id: "boot-1".to_string(),
        extension: Some("crashtest".to_string()),
        process: Some("pid 4 (crash)".to_string()),
        action: "resurrect".to_string(),
        fallback: None,
        dump_path: None,
        report_json: format!("{{\"signature\":\"{signature}\",\"time\":{time_unix_ms}}}"),
    }
}

const SIG_A: &str = "aaaa1111bbbb2222cccc3333dddd4444";
const SIG_A2: &str = "aaaa1111ffff0000cccc3333dddd4444";
const SIG_B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";

#[test]
fn creates_schema_in_new_file() {
    let dir = Scratch::new("schema");
    let path = dir.path().join("crashes.sqlite");
    let db = CrashDb::open(&path).expect("open new database");
    assert!(path.is_file());
    assert_eq!(db.path(), Some(path.as_path()));
    assert!(db.buckets().expect("buckets").is_empty());
    assert_eq!(db.crash_count().expect("count"), 0);
    drop(db);

    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
}

#[test]
fn same_signature_groups_and_different_signatures_separate() {
    let dir = Scratch::new("bucketing");
    let db = CrashDb::open(dir.path().join("crashes.sqlite")).expect("open");
    let id1 = db.record(&crash(SIG_A, 1_000)).expect("record");
    let id2 = db.record(&crash(SIG_B, 2_000)).expect("record");
    let mut later = crash(SIG_A, 5_000);
    later.extension = Some("ramdisk".to_string());
    later.title = "newest title".to_string();
    later.kind = "general-protection".to_string();
    let id3 = db.record(&later).expect("record");
    let mut earliest = crash(SIG_A, 500);
    earliest.extension = None;
    let id4 = db.record(&earliest).expect("record");
    assert!(id1 < id2 && id2 < id3 && id3 < id4);
    assert_eq!(db.crash_count().expect("count"), 4);

    let buckets = db.buckets().expect("buckets");
    assert_eq!(buckets.len(), 2);
    // Most recently seen first.
    let a = &buckets[0];
    assert_eq!(a.signature, SIG_A);
    assert_eq!(a.count, 3);
    assert_eq!(a.first_seen_unix_ms, 500);
    assert_eq!(a.last_seen_unix_ms, 5_000);
    assert_eq!(a.title, "newest title");
    assert_eq!(a.kind, "general-protection");
    assert_eq!(a.extensions, vec!["crashtest", "ramdisk"]);
    assert_eq!(a.example_dump, None);
    let b = &buckets[1];
    assert_eq!(b.signature, SIG_B);
    assert_eq!(b.count, 1);
    assert_eq!((b.first_seen_unix_ms, b.last_seen_unix_ms), (2_000, 2_000));

    let detail = db.bucket(SIG_A).expect("bucket");
    assert_eq!(detail.bucket, *a);
    let ids: Vec<i64> = detail.crashes.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![id3, id1, id4], "most recent first");
    let c = &detail.crashes[1];
    assert_eq!(c.time_unix_ms, 1_000);
    assert_eq!(c.boot_id, "boot-1");
    assert_eq!(c.process.as_deref(), Some("pid 4 (crash)"));
    assert_eq!(c.action, "resurrect");
    assert_eq!(c.report_path, None);

    assert_eq!(
        db.crash(id2).expect("crash"),
        format!("{{\"signature\":\"{SIG_B}\",\"time\":2000}}")
    );
    assert!(matches!(db.crash(9999), Err(DbError::UnknownCrash(9999))));
}

#[test]
fn signature_prefixes_resolve_like_git() {
    let dir = Scratch::new("prefix");
    let db = CrashDb::open(dir.path().join("crashes.sqlite")).expect("open");
    for sig in [SIG_A, SIG_A2, SIG_B] {
        db.record(&crash(sig, 1)).expect("record");
    }
    // Unique prefixes, any case, and full signatures.
    assert_eq!(db.bucket("b0b").expect("unique").bucket.signature, SIG_B);
    assert_eq!(
        db.bucket("AAAA1111B").expect("case").bucket.signature,
        SIG_A
    );
    assert_eq!(db.bucket(SIG_A2).expect("full").bucket.signature, SIG_A2);
    assert_eq!(db.resolve_signature(" b0 ").expect("trimmed"), SIG_B);

    match db.bucket("aaaa1111") {
        Err(DbError::AmbiguousSignature { prefix, candidates }) => {
            assert_eq!(prefix, "aaaa1111");
            assert_eq!(candidates, vec![SIG_A, SIG_A2]);
        }
        other => panic!("expected ambiguous, got {other:?}"),
    }
    assert!(matches!(db.bucket("c0ffee"), Err(DbError::UnknownSignature(p)) if p == "c0ffee"));
    assert!(matches!(db.bucket(""), Err(DbError::EmptySignature)));
    // Longer than any signature, and a multi-byte string: no panic.
    assert!(matches!(
        db.bucket(&format!("{SIG_B}00")),
        Err(DbError::UnknownSignature(_))
    ));
    assert!(matches!(
        db.bucket("ééé"),
        Err(DbError::UnknownSignature(_))
    ));
}

#[test]
fn example_dump_is_most_recent_existing_file() {
    let dir = Scratch::new("dumps");
    let db = CrashDb::open(dir.path().join("crashes.sqlite")).expect("open");
    let old = dir.path().join("old.core");
    let mid = dir.path().join("mid.core");
    let gone = dir.path().join("gone.core");
    std::fs::write(&old, b"core").expect("write");
    std::fs::write(&mid, b"core").expect("write");
    for (time, dump) in [
        (1, Some(&old)),
        (2, Some(&mid)),
        (3, Some(&gone)),
        (4, None),
    ] {
        let mut c = crash(SIG_A, time);
        c.dump_path = dump.cloned();
        db.record(&c).expect("record");
    }
    let bucket = &db.buckets().expect("buckets")[0];
    assert_eq!(bucket.example_dump.as_deref(), Some(mid.as_path()));

    std::fs::remove_file(&mid).expect("remove");
    let detail = db.bucket(SIG_A).expect("bucket");
    assert_eq!(detail.bucket.example_dump.as_deref(), Some(old.as_path()));
    let exists: Vec<(u64, bool)> = detail
        .crashes
        .iter()
        .map(|c| (c.time_unix_ms, c.dump_exists))
        .collect();
    assert_eq!(exists, vec![(4, false), (3, false), (2, false), (1, true)]);
    assert_eq!(detail.crashes[1].dump_path.as_deref(), Some(gone.as_path()));

    std::fs::remove_file(&old).expect("remove");
    assert_eq!(db.buckets().expect("buckets")[0].example_dump, None);
}

#[test]
fn reopening_keeps_crashes() {
    let dir = Scratch::new("reopen");
    let path = dir.path().join("crashes.sqlite");
    let id = {
        let db = CrashDb::open(&path).expect("open");
        db.record(&crash(SIG_B, 42)).expect("record")
    };
    let db = CrashDb::open(&path).expect("reopen");
    assert_eq!(db.crash_count().expect("count"), 1);
    assert_eq!(db.buckets().expect("buckets")[0].signature, SIG_B);
    let id2 = db.record(&crash(SIG_B, 43)).expect("record again");
    assert!(id2 > id);
    assert_eq!(db.buckets().expect("buckets")[0].count, 2);
}

#[test]
fn reader_and_writer_coexist() {
    let dir = Scratch::new("concurrent");
    let path = dir.path().join("crashes.sqlite");
    let reader = CrashDb::open(&path).expect("open reader");
    let writer_path = path.clone();
    let writer = std::thread::spawn(move || {
        let db = CrashDb::open(&writer_path).expect("open writer");
        for t in 0..50 {
            db.record(&crash(SIG_A, t)).expect("record");
        }
    });
    for _ in 0..50 {
        reader.buckets().expect("read while writing");
    }
    writer.join().expect("writer thread");
    assert_eq!(reader.buckets().expect("buckets")[0].count, 50);
}

#[test]
fn garbage_file_is_an_error_and_is_left_alone() {
    let dir = Scratch::new("garbage");
    let path = dir.path().join("crashes.sqlite");
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &garbage).expect("write");
    let err = CrashDb::open(&path).expect_err("garbage must not open");
    assert!(matches!(err, DbError::NotADatabase { .. }), "{err:?}");
    assert!(err.is_bad_input());
    assert!(
        err.to_string().contains("not a lazarus crash database"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        garbage,
        "file untouched"
    );

    // A short text file too.
    std::fs::write(&path, b"hello").expect("write");
    let err = CrashDb::open(&path).expect_err("text must not open");
    assert!(matches!(err, DbError::NotADatabase { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).expect("read"), b"hello");
}

#[test]
fn foreign_sqlite_database_is_an_error_and_is_left_alone() {
    let dir = Scratch::new("foreign");
    let path = dir.path().join("crashes.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
            .expect("foreign schema");
    }
    let before = std::fs::read(&path).expect("read");
    let err = CrashDb::open(&path).expect_err("foreign must not open");
    assert!(matches!(err, DbError::Foreign { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "file untouched"
    );

    // A lazarus database from the future.
    let future = dir.path().join("future.sqlite");
    drop(CrashDb::open(&future).expect("create"));
    {
        let conn = rusqlite::Connection::open(&future).expect("raw open");
        conn.execute_batch("PRAGMA user_version = 99;")
            .expect("bump");
    }
    let err = CrashDb::open(&future).expect_err("newer schema");
    assert!(
        matches!(err, DbError::NewerSchema { found: 99, .. }),
        "{err:?}"
    );
}

#[test]
fn directory_as_database_is_an_error() {
    let dir = Scratch::new("dir");
    let err = CrashDb::open(dir.path()).expect_err("a directory is no database");
    assert!(!err.to_string().is_empty());
}

#[test]
fn out_of_range_time_is_rejected() {
    let dir = Scratch::new("time");
    let db = CrashDb::open(dir.path().join("crashes.sqlite")).expect("open");
    let err = db.record(&crash(SIG_A, u64::MAX)).expect_err("too large");
    assert!(matches!(err, DbError::TimeOutOfRange(u64::MAX)));
}

#[test]
fn record_report_creates_data_dir_and_finds_report_file() {
    let dir = Scratch::new("record-report");
    let data = DataDir::new(dir.path().join("nested/lazarus"));
    data.ensure().expect("ensure");
    // The hypervisor's naming: dumps/STEM.core beside reports/STEM.json.
    let stem = "1700000000123-boot.1-pvpanic";
    let dump = data.dumps_dir().join(format!("{stem}.core"));
    let report = data.reports_dir().join(format!("{stem}.json"));
    std::fs::write(&dump, b"core").expect("write dump");
    std::fs::write(&report, b"{}").expect("write report");
    let mut new = crash(SIG_A, 1_700_000_000_123);
    new.dump_path = Some(dump.clone());
    let id = record_report(&data, &new).expect("record_report");

    // A crash without a dump, into a data directory not yet created.
    let fresh = DataDir::new(dir.path().join("fresh/lazarus"));
    let id2 = record_report(&fresh, &crash(SIG_B, 5)).expect("record_report fresh");
    for sub in [fresh.dumps_dir(), fresh.reports_dir(), fresh.symbols_dir()] {
        assert!(sub.is_dir(), "{}", sub.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(fresh.root())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    let db = CrashDb::open(data.db_path()).expect("open");
    let detail = db.bucket("aaaa").expect("bucket");
    assert_eq!(detail.crashes.len(), 1);
    assert_eq!(detail.crashes[0].id, id);
    assert_eq!(detail.crashes[0].dump_path.as_deref(), Some(dump.as_path()));
    assert!(detail.crashes[0].dump_exists);
    assert_eq!(
        detail.crashes[0].report_path.as_deref(),
        Some(report.as_path())
    );
    assert_eq!(detail.bucket.example_dump.as_deref(), Some(dump.as_path()));
    assert_eq!(db.crash(id).expect("crash"), new.report_json);

    let fresh_db = CrashDb::open(fresh.db_path()).expect("open fresh");
    let detail = fresh_db.bucket(SIG_B).expect("bucket");
    assert_eq!(detail.crashes[0].id, id2);
    assert_eq!(detail.crashes[0].report_path, None);
}

#[test]
fn report_for_dump_follows_the_stem() {
    let dir = Scratch::new("report-for-dump");
    let data = DataDir::new(dir.path());
    data.ensure().expect("ensure");
    let dump = data.dumps_dir().join("1-a.b.core");
    assert_eq!(data.report_for_dump(&dump), None);
    let txt = data.reports_dir().join("1-a.b.txt");
    std::fs::write(&txt, b"text").expect("write");
    assert_eq!(data.report_for_dump(&dump), Some(txt));
    let json = data.reports_dir().join("1-a.b.json");
    std::fs::write(&json, b"{}").expect("write");
    assert_eq!(data.report_for_dump(&dump), Some(json));
}

#[test]
fn data_dir_precedence() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    };
    let all: &[(&str, &str)] = &[
        ("LAZARUS_DATA_DIR", "/env/lazarus"),
        ("XDG_DATA_HOME", "/xdg"),
        ("HOME", "/home/u"),
    ];
    let explicit = Path::new("/explicit");
    let root = |d: DataDir| d.root().to_path_buf();
    assert_eq!(
        root(DataDir::resolve_with(Some(explicit), env(all)).expect("explicit")),
        PathBuf::from("/explicit")
    );
    assert_eq!(
        root(DataDir::resolve_with(None, env(all)).expect("env")),
        PathBuf::from("/env/lazarus")
    );
    assert_eq!(
        root(
            DataDir::resolve_with(
                None,
                env(&[
                    ("LAZARUS_DATA_DIR", ""),
                    ("XDG_DATA_HOME", "/xdg"),
                    ("HOME", "/home/u")
                ])
            )
            .expect("xdg")
        ),
        PathBuf::from("/xdg/lazarus")
    );
    assert_eq!(
        root(
            DataDir::resolve_with(
                None,
                env(&[("XDG_DATA_HOME", "relative"), ("HOME", "/home/u")])
            )
            .expect("home")
        ),
        PathBuf::from("/home/u/.local/share/lazarus")
    );
    assert!(matches!(
        DataDir::resolve_with(None, env(&[])),
        Err(DbError::NoDataDir)
    ));

    let d = DataDir::new("/d");
    assert_eq!(d.db_path(), PathBuf::from("/d/crashes.sqlite"));
    assert_eq!(d.dumps_dir(), PathBuf::from("/d/dumps"));
    assert_eq!(d.reports_dir(), PathBuf::from("/d/reports"));
    assert_eq!(d.symbols_dir(), PathBuf::from("/d/symbols"));
}

#[test]
fn concurrent_first_opens_create_one_schema() {
    let dir = Scratch::new("first-open");
    let path = dir.path().join("crashes.sqlite");
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let db = CrashDb::open(&path).expect("open");
                db.record(&crash(SIG_B, t)).expect("record");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let db = CrashDb::open(&path).expect("open");
    assert_eq!(db.buckets().expect("buckets")[0].count, 4);
}

/// A version-1 database (before fallback reasons were kept) is brought up
/// to date in place, its crashes kept, and then records fallbacks.
#[test]
fn version_1_database_is_migrated_and_keeps_its_crashes() {
    let dir = Scratch::new("migrate");
    let path = dir.path().join("crashes.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        conn.execute_batch(
            "CREATE TABLE crashes (
                id INTEGER PRIMARY KEY AUTOINCREMENT, signature TEXT NOT NULL,
                kind TEXT NOT NULL, title TEXT NOT NULL, time_unix_ms INTEGER NOT NULL,
                boot_id TEXT NOT NULL, extension TEXT, process TEXT, action TEXT NOT NULL,
                dump_path BLOB, report_path BLOB, report_json TEXT NOT NULL);
             CREATE INDEX crashes_by_signature ON crashes (signature, time_unix_ms);
             INSERT INTO crashes (signature, kind, title, time_unix_ms, boot_id, action,
                 report_json) VALUES ('aaaa1111bbbb2222cccc3333dddd4444', 'panic', 'old',
                 5, 'b', 'halt', '{}');
             PRAGMA application_id = 1280983876; PRAGMA user_version = 1;",
        )
        .expect("version-1 schema");
    }
    let db = CrashDb::open(&path).expect("open and migrate");
    assert_eq!(db.crash_count().expect("count"), 1);
    let mut c = crash(SIG_A, 10);
    c.action = "fallback-reboot".into();
    c.fallback = Some("refused".into());
    db.record(&c).expect("record with a fallback");
    let detail = db.bucket(SIG_A).expect("bucket");
    let fallbacks: Vec<Option<&str>> = detail
        .crashes
        .iter()
        .map(|c| c.fallback.as_deref())
        .collect();
    assert_eq!(fallbacks, [Some("refused"), None]);
    // The bucket made by the migration from the old rows counts the new one.
    assert_eq!(detail.bucket.count, 2);
    assert_eq!(detail.bucket.first_seen_unix_ms, 5);
    assert_eq!(detail.bucket.title, c.title);
    assert_eq!(
        detail
            .crashes
            .iter()
            .map(|c| c.signature_version)
            .collect::<Vec<_>>(),
        [2, 1],
        "rows from before versions were stored are version 1"
    );
    drop(db);
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn a_data_directory_that_is_a_file_says_so() {
    let scratch = Scratch::new("file-datadir");
    let file = scratch.path().join("data");
    std::fs::write(&file, b"not a directory").expect("write");
    let err = DataDir::new(&file)
        .ensure()
        .expect_err("a file is no data dir");
    assert!(
        matches!(&err, DbError::NotADirectory(p) if *p == file),
        "{err}"
    );
    assert!(err.is_bad_input());
    assert!(
        err.to_string().ends_with("data is not a directory"),
        "{err}"
    );
    assert!(matches!(
        DataDir::new(&file).check(),
        Err(DbError::NotADirectory(_))
    ));

    let root = scratch.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    std::fs::write(root.join("dumps"), b"").expect("write");
    let err = DataDir::new(&root).ensure().expect_err("dumps is a file");
    assert!(matches!(err, DbError::NotADirectory(_)), "{err}");
}
