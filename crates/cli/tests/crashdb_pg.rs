//! Several `lazarus run` processes (hosts, each with its own data
//! directory) record their crashes in one real PostgreSQL server at the
//! same time; `lazarus crashes --crash-db` reads them back. Needs /dev/kvm
//! and PostgreSQL (`scripts/setup.sh`).

mod common;
#[path = "../../crashdb/tests/pg/mod.rs"]
mod pg;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use lazarus_crashdb::{CrashDb, DbLocation};
use pg::{PASSWORD, PgServer};

/// What each host does: the same null read twice, a panic and a general
/// protection fault (three bugs), all resurrected.
const CRASHES: [&str; 4] = ["null-read", "panic", "null-read", "gp"];
const HOSTS: usize = 3;

fn lazarus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args(args)
        .stdin(Stdio::null())
        .env_remove("LAZARUS_DATA_DIR")
        .env_remove("LAZARUS_CRASH_DB")
        .env("XDG_DATA_HOME", "/nonexistent/lazarus-test-xdg")
        .output()
        .expect("run lazarus")
}

/// One host: boots, crashes as [`CRASHES`] says, powers off; returns its
/// hypervisor output.
fn host(url: &str, data: &std::path::Path) -> String {
    let mut g = common::boot_with(&[
        "--memory",
        "64",
        "--data-dir",
        common::path_str(data),
        "--crash-db",
        url,
    ]);
    for kind in CRASHES {
        g.send(&format!("crash {kind}"));
        let line = g.expect("[lazarus] resurrected after ", Duration::from_secs(120));
        assert!(!line.contains("cannot resurrect"), "{}", g.transcript);
        g.resync();
    }
    // Power-off waits for the dumps still being written.
    let status = g.wait_after_poweroff();
    assert_eq!(status.0.code(), Some(0), "{}", status.1);
    status.1
}

trait PowerOff {
    fn wait_after_poweroff(self) -> (std::process::ExitStatus, String);
}

impl PowerOff for common::Guest {
    fn wait_after_poweroff(mut self) -> (std::process::ExitStatus, String) {
        self.send("poweroff");
        let st = self.wait(Duration::from_secs(120));
        (st, self.transcript.clone())
    }
}

#[test]
fn hosts_share_one_crash_database() {
    common::require_kvm();
    let server = PgServer::start();
    let url = server.create_database("hosts");
    let dirs: Vec<tempfile::TempDir> = (0..HOSTS)
        .map(|i| common::temp_dir(&format!("pg-host{i}")))
        .collect();
    // All hosts at once: their first crashes of each new signature race.
    let transcripts: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|d| {
                let url = url.clone();
                s.spawn(move || host(&url, d.path()))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("host"))
            .collect()
    });
    for t in &transcripts {
        assert!(!t.contains(PASSWORD), "the password was printed:\n{t}");
        assert_eq!(
            t.matches("lazarus: crash ").count(),
            CRASHES.len(),
            "every crash recorded:\n{t}"
        );
        assert!(!t.contains("recording the crash"), "{t}");
    }

    let db = CrashDb::open_location(&DbLocation::parse(&url).expect("url")).expect("open");
    assert_eq!(
        db.crash_count().expect("count"),
        (HOSTS * CRASHES.len()) as u64
    );
    let buckets = db.buckets().expect("buckets");
    let by_kind: BTreeMap<String, u64> =
        buckets.iter().map(|b| (b.kind.clone(), b.count)).collect();
    let expect: BTreeMap<String, u64> = [
        ("null-deref".to_string(), 2 * HOSTS as u64),
        ("panic".to_string(), HOSTS as u64),
        ("general-protection".to_string(), HOSTS as u64),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        by_kind, expect,
        "one bucket per bug, every crash counted once"
    );
    let mut ids = BTreeSet::new();
    for b in &buckets {
        let detail = db.bucket(&b.signature).expect("bucket");
        assert_eq!(detail.crashes.len() as u64, b.count, "{b:?}");
        // Every host is in the bucket; each crash's dump is in its own
        // host's data directory.
        let hosts: BTreeSet<usize> = detail
            .crashes
            .iter()
            .map(|c| {
                let dump = c.dump_path.as_ref().expect("a dump");
                assert!(c.dump_exists, "{dump:?}");
                dirs.iter()
                    .position(|d| dump.starts_with(d.path()))
                    .expect("a host's dump")
            })
            .collect();
        assert_eq!(hosts.len(), HOSTS, "{b:?}");
        for c in &detail.crashes {
            assert!(ids.insert(c.id), "id {} twice", c.id);
            assert_eq!(c.signature_version, lazarus_diagnose::SIGNATURE_VERSION);
            // The stored report's own signature is the bucket's.
            let report: lazarus_diagnose::Report =
                serde_json::from_str(&db.crash(c.id).expect("report")).expect("JSON report");
            assert_eq!(report.signature, b.signature);
            assert_eq!(lazarus_diagnose::signature_of_report(&report), b.signature);
        }
    }
    assert_eq!(ids.len(), HOSTS * CRASHES.len());

    // The CLI reads the same, and never shows the password.
    let out = lazarus(&["crashes", "--crash-db", &url, "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let counts: BTreeMap<String, u64> = v["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| {
            (
                b["kind"].as_str().expect("kind").to_string(),
                b["count"].as_u64().expect("count"),
            )
        })
        .collect();
    assert_eq!(counts, expect);
    let null = buckets
        .iter()
        .find(|b| b.kind == "null-deref")
        .expect("null bucket");
    let out = lazarus(&["crashes", "--crash-db", &url, "show", &null.signature[..8]]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(text.matches("resurrect").count(), 2 * HOSTS, "{text}");
    assert!(!text.contains(PASSWORD));
    // Regrouping finds nothing to do: every row is of this version.
    let out = lazarus(&["crashes", "--crash-db", &url, "regroup", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["examined"], 0);

    // The dashboard serves the same buckets from the shared database.
    let front = dashboard_page(&url, dirs[0].path(), "/");
    for b in &buckets {
        assert!(
            front.contains(&b.signature),
            "{} not on the front page",
            b.signature
        );
    }
    let page = dashboard_page(
        &url,
        dirs[0].path(),
        &format!("/signature/{}", null.signature),
    );
    assert!(page.contains("read_at"), "the example backtrace: {page}");
    assert!(!front.contains(PASSWORD) && !page.contains(PASSWORD));
}

/// One page of `lazarus dashboard --crash-db URL` (status 200), by plain
/// HTTP; the browser test covers the pages themselves.
fn dashboard_page(url: &str, data: &std::path::Path, path: &str) -> String {
    use std::io::{Read, Write};
    let (server, base) = common::start_dashboard(data, &["--crash-db", url]);
    let addr = base
        .strip_prefix("http://")
        .unwrap_or(&base)
        .trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the dashboard");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut page = String::new();
    s.read_to_string(&mut page).expect("read the answer");
    drop(server);
    assert!(page.starts_with("HTTP/1.1 200"), "{path}: {page}");
    page
}

#[test]
fn run_refuses_an_unreachable_crash_db_before_booting() {
    common::require_kvm();
    let server = PgServer::start();
    let dir = common::temp_dir("pg-unreachable");
    let bad = format!(
        "postgres://{}:wrong-{PASSWORD}@127.0.0.1:{}/postgres",
        pg::USER,
        server.port
    );
    let out = lazarus(&[
        "run",
        "--memory",
        "64",
        "--data-dir",
        common::path_str(dir.path()),
        "--crash-db",
        &bad,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{stderr}");
    assert!(
        stderr.contains("cannot reach the crash database"),
        "{stderr}"
    );
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("lazarus>"));
}
