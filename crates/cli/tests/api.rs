//! The control API (`lazarus run --api-sock`) against a real guest under
//! KVM: the socket's mode, status and metrics, pause/resume, malformed
//! requests, injection, recoveries and on-demand dumps, and `lazarus ctl`.

mod common;
use common::Guest;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Boots with the API at `DIR/api.sock`, data in `DIR/data`, 64 MiB and
/// three vCPUs.
fn boot(name: &str) -> (Guest, PathBuf, TempDir) {
    let dir = common::temp_dir(name);
    let sock = dir.path().join("api.sock");
    let data = dir.path().join("data");
    let g = common::boot_with(&[
        "--memory",
        "64",
        "--vcpus",
        "3",
        "--api-sock",
        sock.to_str().expect("utf-8"),
        "--data-dir",
        data.to_str().expect("utf-8"),
    ]);
    (g, sock, dir)
}

/// One request; the status and the JSON body.
fn api(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let r = lazarus_api::Client::new(sock)
        .with_timeout(Duration::from_secs(60))
        .request(method, path, body.map(str::as_bytes))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&r.body)
        )
    });
    (r.status, v)
}

fn get(sock: &Path, path: &str) -> Value {
    let (status, v) = api(sock, "GET", path, None);
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

/// Sends raw bytes and returns the whole answer as text.
fn raw(sock: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The server may answer (and stop reading) before all is written.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status line's code and the JSON body of a raw answer.
fn parse_raw(answer: &str) -> (u16, Value) {
    let code = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer:?}"));
    (code, v)
}

/// Runs `lazarus ctl --api-sock SOCK ARGS...`.
fn ctl(sock: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .arg("ctl")
        .arg("--api-sock")
        .arg(sock)
        .args(args)
        .output()
        .expect("run lazarus ctl")
}

/// Polls `f` until it returns `Some`, for up to `timeout`.
fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn private_socket_status_metrics_and_ctl() {
    let (g, sock, dir) = boot("status");
    let meta = std::fs::symlink_metadata(&sock).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    // Only the socket and the data directory: no temporary left over.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["api.sock", "data"]);

    let s = get(&sock, "/");
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["boots"], 1);
    // `--vcpus` reaches the VM the API reports on.
    assert_eq!(s["vcpus"], 3);
    assert_eq!(s["memory_mib"], 64);
    assert_eq!(s["on_crash"], "resurrect");
    assert_eq!(s["recoveries"], 0);
    assert!(s["last_recovery"].is_null());
    assert!(s["uptime_ms"].as_u64().unwrap() > 0);
    assert_eq!(get(&sock, "/vm")["state"], "running");

    let m = get(&sock, "/metrics");
    assert!(m["exits"]["total"].as_u64().unwrap() > 0, "{m}");
    assert!(
        m["exits"]["by_kind"]["pio-serial"].as_u64().unwrap() > 0,
        "{m}"
    );
    assert_eq!(m["recoveries"]["count"], 0);
    assert!(m["recoveries"]["latency_us"]["median"].is_null());
    assert_eq!(m["crashes"]["session"], 0);
    assert_eq!(m["crashes"]["recorded"], 0);
    // No --events: no count of dropped events.
    assert!(m["events_dropped"].is_null(), "{m}");
    let mem = &m["memory"];
    assert!(mem["host_rss_bytes"].as_u64().unwrap() > 1 << 20, "{m}");
    assert_eq!(mem["guest_ram_bytes"], 64u64 << 20);
    // The booted guest touched some of its RAM; the hypervisor's own
    // memory is the rest of the resident set.
    let rss = mem["host_rss_bytes"].as_u64().unwrap();
    let guest_resident = mem["guest_ram_resident_bytes"].as_u64().unwrap();
    let own = mem["vmm_own_bytes"].as_u64().unwrap();
    assert!(guest_resident > 0 && guest_resident <= 64 << 20, "{m}");
    assert_eq!(own, rss.saturating_sub(guest_resident), "{m}");
    let total = mem["guest_frames_total"].as_u64().unwrap();
    let used = mem["guest_frames_used"].as_u64().unwrap();
    assert!(used > 0 && used < total, "{m}");
    assert!(mem["guest_heap_size_bytes"].as_u64().unwrap() > 0, "{m}");
    assert!(mem["guest_heap_used_bytes"].is_u64(), "{m}");
    assert!(mem["guest_heap_blocks_used"].is_u64(), "{m}");
    assert_eq!(get(&sock, "/crashes")["buckets"], serde_json::json!([]));

    // The client: pretty JSON, --json compact, distinct exit codes.
    let out = ctl(&sock, &["status"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\n  \"state\": \"running\""), "{text}");
    let out = ctl(&sock, &["--json", "metrics"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    let out = ctl(&sock, &["resume"]);
    assert_eq!(out.status.code(), Some(7), "4xx: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409"),
        "{out:?}"
    );
    let out = ctl(&dir.path().join("nothing.sock"), &["status"]);
    assert_eq!(out.status.code(), Some(6), "unreachable: {out:?}");

    // A second server on the same socket, or on a file, is refused.
    for (path, why) in [
        (sock.clone(), "another process"),
        (dir.path().join("file"), "not a socket"),
    ] {
        if !path.exists() {
            std::fs::write(&path, b"keep me").unwrap();
        }
        let out = Command::new(env!("CARGO_BIN_EXE_lazarus"))
            .args(["run", "--memory", "64", "--api-sock"])
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(4), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{out:?}"
        );
    }
    assert_eq!(std::fs::read(dir.path().join("file")).unwrap(), b"keep me");
    assert_eq!(get(&sock, "/vm")["state"], "running");

    let transcript = g.transcript.clone();
    assert!(g.poweroff().success(), "{transcript}");
    assert!(!sock.exists(), "the socket is removed at exit");
    drop(dir);
}

#[test]
fn pause_stops_the_guest_and_resume_restarts_it() {
    let (mut g, sock, dir) = boot("pause");
    g.cmd("run worker alpha 600 &");
    g.wait_lines(&["worker alpha: round"], Duration::from_secs(30));
    g.resync();

    let (status, v) = api(&sock, "PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
    assert_eq!((status, v["state"].as_str()), (200, Some("paused")), "{v}");
    assert_eq!(get(&sock, "/vm")["state"], "paused");
    let exits_before = get(&sock, "/metrics")["exits"]["total"].clone();
    // Output the guest wrote before the pause may still be in the pipe.
    g.settle(Duration::from_millis(300));
    // Input is queued, not answered; the worker reports every 500 ms of
    // guest time but prints nothing; the watchdog declares no hang.
    g.send("echo after-the-pause");
    let console_before = g.console.len();
    g.settle(Duration::from_millis(1500));
    assert_eq!(
        &g.console[console_before..],
        "",
        "the guest printed while paused"
    );
    let m = get(&sock, "/metrics");
    assert_eq!(
        m["exits"]["total"], exits_before,
        "guest exits while paused"
    );
    assert_eq!(m["state"], "paused");
    assert!(m["paused_ms"].as_u64().unwrap() >= 1400, "{m}");
    assert_eq!(m["recoveries"]["count"], 0, "a hang was declared: {m}");
    assert!(!g.host.contains("watchdog"), "{}", g.host);
    let (status, _) = api(&sock, "PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
    assert_eq!(status, 409, "pausing twice");

    let (status, v) = api(&sock, "PATCH", "/vm", Some(r#"{"state":"Resumed"}"#));
    assert_eq!((status, v["state"].as_str()), (200, Some("running")), "{v}");
    g.expect("after-the-pause\n", Duration::from_secs(30));
    g.expect("worker alpha: round", Duration::from_secs(30));
    let (status, v) = api(&sock, "PATCH", "/vm", Some(r#"{"state":"Resumed"}"#));
    assert_eq!(status, 409, "{v}");
    assert!(v["fault_message"].as_str().unwrap().contains("not paused"));
    g.resync();
    assert!(g.cmd("run echo still alive").contains("still alive"));
    assert_eq!(get(&sock, "/recoveries")["total"], 0);
    let transcript = g.transcript.clone();
    assert!(g.poweroff().success(), "{transcript}");
    drop(dir);
}

#[test]
fn malformed_requests_get_4xx_and_the_vm_keeps_running() {
    let (mut g, sock, dir) = boot("malformed");
    let cases: &[(&str, &str, Option<&str>, u16)] = &[
        ("PATCH", "/vm", Some("{\"state\":"), 400),
        ("PATCH", "/vm", Some(r#"{"state":"Sleeping"}"#), 400),
        (
            "PATCH",
            "/vm",
            Some(r#"{"state":"Paused","now":true}"#),
            400,
        ),
        ("PATCH", "/vm", None, 400),
        ("PUT", "/inject", Some(r#"{"fault":"meteor"}"#), 400),
        ("PUT", "/inject", Some(r#"{"fault":"crash-test"}"#), 400),
        (
            "PUT",
            "/inject",
            Some(r#"{"fault":"crash-test","kind":"ps; poweroff"}"#),
            400,
        ),
        (
            "PUT",
            "/inject",
            Some(r#"{"fault":"bit-flip","structure":"locks"}"#),
            400,
        ),
        (
            "PUT",
            "/inject",
            Some(r#"{"fault":"wild-write-struct","structure":"nope"}"#),
            400,
        ),
        ("PUT", "/dump", Some(r#"{"reason":7}"#), 400),
        ("GET", "/nowhere", None, 404),
        ("GET", "/vm/", None, 404),
        ("DELETE", "/vm", None, 405),
        ("POST", "/inject", Some("{}"), 405),
        ("GET", "/dump", None, 405),
    ];
    for &(method, path, body, want) in cases {
        let (status, v) = api(&sock, method, path, body);
        assert_eq!(status, want, "{method} {path} {body:?}: {v}");
        let msg = v["fault_message"].as_str().unwrap_or_default();
        assert!(!msg.is_empty(), "{method} {path}: {v}");
    }
    let big = format!(
        "PUT /inject HTTP/1.1\r\nContent-Length: {}\r\n\r\n{}",
        1 << 20,
        "x".repeat(1 << 20)
    );
    for (bytes, want) in [
        (big.into_bytes(), 413),
        (
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n".to_vec(),
            400,
        ),
        (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(), 400),
        (b"GET / SPDY/3\r\n\r\n".to_vec(), 400),
        (
            b"PUT /inject HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
    ] {
        let answer = raw(&sock, &bytes);
        let (code, v) = parse_raw(&answer);
        assert_eq!(code, want, "{answer:?}");
        assert!(v["fault_message"].is_string(), "{answer:?}");
    }
    let answer = raw(&sock, b"DELETE /vm HTTP/1.1\r\n\r\n");
    assert!(answer.contains("\r\nAllow: GET, PATCH\r\n"), "{answer:?}");
    // A client that connects and leaves, or sends half a line and leaves.
    drop(UnixStream::connect(&sock).unwrap());
    raw(&sock, b"GET /v");

    // Host-side injection works after all that, deterministically.
    g.cmd("insmod crashtest");
    let body = r#"{"fault":"delete-branch","ext":"crashtest","seed":11}"#;
    let (status, a) = api(&sock, "PUT", "/inject", Some(body));
    assert_eq!(status, 200, "{a}");
    assert!(
        a["target"].as_str().unwrap().starts_with("crashtest+"),
        "{a}"
    );
    assert_eq!(a["seed"], 11);
    assert_eq!(a["fault"], "delete-branch");
    assert!(a["before"].as_array().is_some_and(|b| !b.is_empty()), "{a}");
    g.cmd("rmmod crashtest");
    g.cmd("insmod crashtest");
    let (_, b) = api(&sock, "PUT", "/inject", Some(body));
    for field in ["target", "before", "after"] {
        assert_eq!(a[field], b[field], "same seed, same {field}: {a} {b}");
    }

    // The VM kept running through all of it.
    assert_eq!(get(&sock, "/vm")["state"], "running");
    assert!(g.cmd("run echo still alive").contains("still alive"));
    assert_eq!(get(&sock, "/recoveries")["total"], 0);
    let transcript = g.transcript.clone();
    assert!(g.poweroff().success(), "{transcript}");
    drop(dir);
}

#[test]
fn crash_test_injection_is_resurrected_and_listed() {
    let (mut g, sock, dir) = boot("inject");
    let (status, v) = api(
        &sock,
        "PUT",
        "/inject",
        Some(r#"{"fault":"crash-test","kind":"null-read"}"#),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["kind"], "null-read");
    g.expect(
        "[lazarus] resurrected after null-deref",
        Duration::from_secs(30),
    );
    let list = eventually(Duration::from_secs(10), || {
        let l = get(&sock, "/recoveries");
        (l["total"] == 1).then_some(l)
    })
    .expect("the recovery appears in /recoveries");
    let r = &list["recoveries"][0];
    assert_eq!(r["seq"], 0);
    assert_eq!(r["boot"], 1);
    assert_eq!(r["kind"], "null-deref", "{r}");
    assert_eq!(r["extension"], "crashtest", "{r}");
    assert_eq!(r["quarantined_name"], "crash", "{r}");
    assert!(r["quarantined_pid"].as_u64().unwrap() > 1, "{r}");
    let latency = r["latency_us"].as_u64().unwrap();
    assert!(latency > 0, "{r}");
    for part in ["snapshot_us", "repair_us", "resume_us"] {
        assert!(r[part].as_u64().unwrap() <= latency, "{part}: {r}");
    }
    let s = get(&sock, "/vm");
    assert_eq!(s["recoveries"], 1);
    assert_eq!(s["last_recovery"]["kind"], "null-deref");
    let m = get(&sock, "/metrics");
    assert_eq!(m["recoveries"]["count"], 1);
    assert_eq!(m["recoveries"]["latency_us"]["median"], latency);
    assert_eq!(m["recoveries"]["latency_us"]["p99"], latency);
    assert_eq!(m["crashes"]["session"], 1);
    // The crash database fills in the background.
    let buckets = eventually(Duration::from_secs(20), || {
        let c = get(&sock, "/crashes");
        (c["buckets"].as_array().is_some_and(|b| !b.is_empty())).then_some(c)
    })
    .expect("the crash appears in /crashes");
    assert_eq!(buckets["buckets"][0]["kind"], "null-deref", "{buckets}");
    assert_eq!(buckets["buckets"][0]["count"], 1);
    g.resync();
    assert!(g.cmd("run echo still alive").contains("still alive"));
    let transcript = g.transcript.clone();
    assert!(g.poweroff().success(), "{transcript}");
    drop(dir);
}

#[test]
fn dump_on_demand_is_readable_by_diagnose() {
    let (mut g, sock, dir) = boot("dump");
    let (status, v) = api(&sock, "PUT", "/dump", Some(r#"{"reason":"api test"}"#));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["kind"], "on-demand");
    assert_eq!(v["ram_bytes"], 64u64 << 20);
    let dump = PathBuf::from(v["dump"].as_str().unwrap());
    assert!(dump.is_file(), "{v}");
    assert!(
        PathBuf::from(v["report"].as_str().unwrap()).is_file(),
        "{v}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .arg("diagnose")
        .arg(&dump)
        .arg("--json")
        .arg("--symbols")
        .arg(dir.path().join("data/symbols"))
        .output()
        .expect("run diagnose");
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["kind"], "on-demand", "{report}");
    assert_eq!(report["detector"], "on-demand");
    assert!(report["detail"].as_str().unwrap().contains("api test"));
    assert!(
        report["registers"]["rip"].as_u64().unwrap() != 0,
        "{report}"
    );
    // Not a crash: nothing in the crash database; the guest runs on.
    assert_eq!(get(&sock, "/crashes")["buckets"], serde_json::json!([]));
    assert_eq!(get(&sock, "/vm")["state"], "running");
    // `lazarus ctl dump` too, while paused (the pause is kept).
    assert!(ctl(&sock, &["pause"]).status.success());
    let out = ctl(&sock, &["--json", "dump"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(PathBuf::from(v["dump"].as_str().unwrap()).is_file(), "{v}");
    assert_eq!(get(&sock, "/vm")["state"], "paused");
    assert!(ctl(&sock, &["resume"]).status.success());
    assert!(g.cmd("run echo still alive").contains("still alive"));
    let transcript = g.transcript.clone();
    assert!(g.poweroff().success(), "{transcript}");
    drop(dir);
}
