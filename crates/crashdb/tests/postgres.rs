//! The crash database on a real PostgreSQL server (see `pg/mod.rs`): the
//! schema and its versions, the same answers as SQLite, concurrent
//! writers, regrouping, and errors that never show the password.

mod pg;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use lazarus_crashdb::{CrashDb, DbError, DbLocation, NewCrash, SCHEMA_VERSION};
use pg::{PASSWORD, PgServer};

fn loc(url: &str) -> DbLocation {
    DbLocation::parse(url).expect("a PostgreSQL URL")
}

fn crash(signature: &str, time_unix_ms: u64) -> NewCrash {
    NewCrash {
        signature: signature.to_string(),
        signature_version: 2,
        kind: "page-fault".to_string(),
        title: format!("page fault ({signature} at {time_unix_ms})"),
        time_unix_ms,
        boot_id: "boot".to_string(),
        extension: Some("crashtest".to_string()),
        process: Some("pid 4 (crash)".to_string()),
        action: "resurrect".to_string(),
        fallback: None,
        dump_path: Some(format!("/nonexistent/{signature}-{time_unix_ms}.core").into()),
        report_json: "{}".to_string(),
    }
}

/// A server of the test's own, stopped when the test ends (a static one
/// would never be dropped, and outlive the tests).
fn server() -> PgServer {
    PgServer::start()
}

#[test]
fn the_schema_is_created_versioned_and_a_newer_one_refused() {
    let s = &server();
    let url = s.create_database("schema");
    let db = CrashDb::open_location(&loc(&url)).expect("open creates the schema");
    assert!(db.buckets().expect("buckets").is_empty());
    assert!(db.path().is_none());
    drop(db);
    let mut c = s.client(&url);
    let row = c
        .query_one("SELECT application, version FROM lazarus_schema", &[])
        .expect("schema row");
    assert_eq!(row.get::<_, String>(0), "lazarus-crashdb");
    assert_eq!(row.get::<_, i64>(1), SCHEMA_VERSION);
    // Opening again changes nothing.
    drop(CrashDb::open_location(&loc(&url)).expect("reopen"));
    let n: i64 = c
        .query_one("SELECT COUNT(*) FROM lazarus_schema", &[])
        .expect("count")
        .get(0);
    assert_eq!(n, 1);

    c.execute("UPDATE lazarus_schema SET version = 99", &[])
        .expect("pretend a newer lazarus");
    let err = CrashDb::open_location(&loc(&url)).expect_err("newer schema");
    assert!(
        matches!(err, DbError::NewerSchemaPostgres { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("newer than this lazarus supports"));
    assert!(!err.to_string().contains(PASSWORD), "{err}");
    let v: i64 = c
        .query_one("SELECT version FROM lazarus_schema", &[])
        .expect("version")
        .get(0);
    assert_eq!(v, 99, "a newer database is left alone");
}

#[test]
fn another_programs_tables_are_refused_and_left_alone() {
    let s = &server();
    let url = s.create_database("foreign");
    let mut c = s.client(&url);
    c.batch_execute("CREATE TABLE crashes (x INTEGER); INSERT INTO crashes VALUES (7);")
        .expect("foreign table");
    let err = CrashDb::open_location(&loc(&url)).expect_err("foreign");
    assert!(matches!(err, DbError::ForeignPostgres { .. }), "{err:?}");
    let x: i32 = c
        .query_one("SELECT x FROM crashes", &[])
        .expect("untouched")
        .get(0);
    assert_eq!(x, 7);
    let has_schema: bool = c
        .query_one("SELECT to_regclass('lazarus_schema') IS NOT NULL", &[])
        .expect("query")
        .get(0);
    assert!(!has_schema);
}

#[test]
fn both_backends_answer_the_same() {
    let s = &server();
    let url = s.create_database("same");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = CrashDb::open(dir.path().join("crashes.sqlite")).expect("sqlite");
    let pg = CrashDb::open_location(&loc(&url)).expect("postgres");
    let crashes = [
        crash("aaaa1111", 3000),
        crash("bbbb2222", 1000),
        crash("aaaa1111", 2000),
        NewCrash {
            fallback: Some("refused".into()),
            action: "fallback-reboot".into(),
            extension: None,
            dump_path: None,
            ..crash("aaaa3333", 4000)
        },
    ];
    for c in &crashes {
        let a = sqlite.record(c).expect("sqlite record");
        let b = pg.record(c).expect("pg record");
        assert_eq!(a, b, "ids count up from 1 in both");
    }
    assert_eq!(sqlite.buckets().expect("b"), pg.buckets().expect("b"));
    for sig in ["aaaa1111", "AAAA3", "bbbb"] {
        assert_eq!(
            sqlite.bucket(sig).expect("sqlite bucket"),
            pg.bucket(sig).expect("pg bucket")
        );
    }
    assert!(matches!(
        pg.bucket("aaaa").expect_err("ambiguous"),
        DbError::AmbiguousSignature { .. }
    ));
    assert_eq!(sqlite.crash(2).expect("c"), pg.crash(2).expect("c"));
    assert!(matches!(
        pg.crash(99).expect_err("none"),
        DbError::UnknownCrash(99)
    ));
    assert_eq!(pg.crash_count().expect("count"), 4);
    assert_eq!(sqlite.dump_rows().expect("r"), pg.dump_rows().expect("r"));
    pg.mark_pruned(&[1], 5).expect("mark");
    sqlite.mark_pruned(&[1], 5).expect("mark");
    assert_eq!(
        sqlite.bucket("aaaa1111").expect("b"),
        pg.bucket("aaaa1111").expect("b")
    );
    assert!(
        pg.bucket("aaaa1111")
            .expect("b")
            .crashes
            .iter()
            .any(|c| c.dump_pruned)
    );
    // Regrouping moves the same rows the same way.
    let f = |json: &str| -> Result<String, String> {
        if json == "{}" {
            Ok("cccc".to_string())
        } else {
            Err("unreadable".into())
        }
    };
    let a = sqlite.regroup(3, f).expect("regroup");
    let b = pg.regroup(3, f).expect("regroup");
    assert_eq!(a, b);
    assert_eq!(b.moved.len(), 4);
    assert_eq!(sqlite.buckets().expect("b"), pg.buckets().expect("b"));
    let buckets = pg.buckets().expect("b");
    assert_eq!(buckets.len(), 1);
    assert_eq!(buckets[0].count, 4);
    assert_eq!(buckets[0].first_seen_unix_ms, 1000);
    assert_eq!(buckets[0].last_seen_unix_ms, 4000);
}

/// Many writers, each with its own connection, record the first crashes of
/// the same new signatures at the same moment: one bucket per signature,
/// every crash counted once, no error.
#[test]
fn concurrent_writers_make_one_bucket_per_signature() {
    let s = &server();
    let url = s.create_database("race");
    drop(CrashDb::open_location(&loc(&url)).expect("create the schema"));
    const WRITERS: usize = 8;
    const ROUNDS: usize = 20;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, barrier) = (url.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let db = CrashDb::open_location(&loc(&url)).expect("open");
                let mut ids = Vec::new();
                for round in 0..ROUNDS {
                    // Everyone at once on a signature nobody has seen yet.
                    barrier.wait();
                    let sig = format!("new{round:04}");
                    let t = 1_000 + (round * WRITERS + w) as u64;
                    ids.push(db.record(&crash(&sig, t)).expect("record"));
                }
                ids
            })
        })
        .collect();
    let mut ids: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("writer"))
        .collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "every id once");
    assert_eq!(ids.len(), WRITERS * ROUNDS);

    let db = CrashDb::open_location(&loc(&url)).expect("open");
    let buckets = db.buckets().expect("buckets");
    assert_eq!(buckets.len(), ROUNDS);
    for b in &buckets {
        assert_eq!(b.count, WRITERS as u64, "{b:?}");
        let detail = db.bucket(&b.signature).expect("bucket");
        assert_eq!(detail.crashes.len(), WRITERS);
        let times: Vec<u64> = detail.crashes.iter().map(|c| c.time_unix_ms).collect();
        assert_eq!(b.first_seen_unix_ms, *times.iter().min().expect("min"));
        assert_eq!(b.last_seen_unix_ms, *times.iter().max().expect("max"));
    }
    // The bucket table agrees with the rows themselves.
    let mut c = s.client(&url);
    let per_sig: BTreeMap<String, i64> = c
        .query(
            "SELECT signature, COUNT(*) FROM crashes GROUP BY signature",
            &[],
        )
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let counted: BTreeMap<String, i64> = c
        .query("SELECT signature, count FROM buckets", &[])
        .expect("buckets")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(per_sig, counted);
}

/// Several processes opening a database with no schema at once: one
/// creates it, the others wait and use it.
#[test]
fn concurrent_first_opens_create_one_schema() {
    let s = &server();
    let url = s.create_database("first-open");
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let (url, barrier) = (url.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let db = CrashDb::open_location(&loc(&url)).expect("open");
                db.record(&crash("same", i)).expect("record")
            })
        })
        .collect();
    for h in handles {
        h.join().expect("opener");
    }
    let db = CrashDb::open_location(&loc(&url)).expect("open");
    assert_eq!(db.crash_count().expect("count"), 6);
    assert_eq!(db.buckets().expect("b")[0].count, 6);
}

#[test]
fn connection_errors_are_clear_and_hide_the_password() {
    let server = server();
    let s = &server;
    // Wrong password.
    let url = format!(
        "postgres://{}:wrong-{PASSWORD}@127.0.0.1:{}/postgres",
        pg::USER,
        s.port
    );
    let err = CrashDb::open_location(&loc(&url)).expect_err("bad password");
    assert!(err.is_unreachable(), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(text.contains(":***@127.0.0.1"), "{text}");
    // No such database.
    let err = CrashDb::open_location(&loc(&s.url("no_such_db"))).expect_err("no database");
    assert!(err.is_unreachable(), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(PASSWORD));
    // Nothing listening.
    let url = format!("postgres://{}:{PASSWORD}@127.0.0.1:1/x", pg::USER);
    let err = CrashDb::open_location(&loc(&url)).expect_err("refused");
    assert!(err.is_unreachable(), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(PASSWORD));
    // The server goes away under an open database.
    let db = CrashDb::open_location(&loc(&s.url("postgres"))).expect("open");
    drop(server);
    let err = db.record(&crash("gone", 1)).expect_err("server stopped");
    assert!(err.is_unreachable(), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(PASSWORD));
}
