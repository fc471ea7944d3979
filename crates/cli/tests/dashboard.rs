//! `lazarus dashboard` in a real headless Chromium, over the crash
//! database of a real `lazarus run` with real crashes, and that run's
//! control API: the pages load and show the buckets, the links work, the
//! dump downloads, the live VM appears, and a fresh crash shows up.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Guest;
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The page as Chromium rendered it (`--dump-dom`), in a fresh profile,
/// with everything that would reach for the (closed) network turned off.
fn browse(url: &str, profile: &Path) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the dashboard is tested in a real headless Chromium \
         (scripts/setup.sh installs Debian's chromium and chromium-driver)"
    );
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium {url}: {:?}", out.status);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(dom.contains("</html>"), "chromium {url}: no page: {dom}");
    dom
}

/// A raw HTTP/1.1 GET: status, head and body bytes.
fn http_get(base: &str, path: &str) -> (u16, String, Vec<u8>) {
    http(base, "GET", path)
}

fn http(base: &str, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    raw_request(
        base,
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Sends `request` as it is; the answer's status, head and body.
fn raw_request(base: &str, request: &[u8]) -> (u16, String, Vec<u8>) {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(host).expect("connect to the dashboard");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head, raw[split + 4..].to_vec())
}

/// The crash database's buckets, from `lazarus crashes --json`.
fn buckets(data: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args(["crashes", "--json", "--data-dir"])
        .arg(data)
        .output()
        .expect("lazarus crashes");
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("crashes JSON");
    v["buckets"].as_array().cloned().unwrap_or_default()
}

/// Waits until the database holds `n` crashes (rows are written after
/// the resurrection, beside the dump).
fn wait_for_crashes(data: &Path, n: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = buckets(data);
        let total: u64 = b.iter().map(|b| b["count"].as_u64().unwrap_or(0)).sum();
        if total >= n || Instant::now() > deadline {
            assert_eq!(total, n, "{b:?}");
            return b;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn crash_and_resurrect(g: &mut Guest, kind: &str) {
    g.send(&format!("crash {kind}"));
    let line = g.expect("[lazarus] resurrected after ", Duration::from_secs(30));
    assert!(!line.contains("cannot resurrect"), "{}", g.transcript);
    g.expect("\n", Duration::from_secs(5));
}

/// The front page's table row of `sig`.
fn row<'a>(dom: &'a str, sig: &str) -> &'a str {
    let at = dom
        .find(&format!("data-signature=\"{sig}\""))
        .unwrap_or_else(|| panic!("no row for {sig} on the front page: {dom}"));
    let rest = &dom[at..];
    &rest[..rest.find("</tr>").unwrap_or(rest.len())]
}

/// The value of the first `attr="..."` after `marker`.
fn attr_after<'a>(dom: &'a str, marker: &str, attr: &str) -> &'a str {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker}: {dom}"));
    let rest = &dom[at..];
    let start = rest
        .find(&format!("{attr}=\""))
        .unwrap_or_else(|| panic!("no {attr} after {marker}: {dom}"))
        + attr.len()
        + 2;
    &rest[start..start + rest[start..].find('"').expect("closing quote")]
}

/// The text of the element with `id`, tags removed.
fn element_text(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}: {dom}"));
    let rest = &dom[at..];
    let open = rest.find('>').expect("tag end") + 1;
    let end = rest[open..]
        .find("</ol>")
        .or_else(|| rest[open..].find("</pre>"))
        .unwrap_or(rest.len() - open);
    let mut text = String::new();
    let mut in_tag = false;
    for ch in rest[open..open + end].chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[test]
fn dashboard_in_a_real_browser() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/setup.sh (Debian's chromium)"
    );
    let dir = common::temp_dir("dashboard");
    let data = dir.path().join("data");
    let sock = dir.path().join("api.sock");
    let nobody: PathBuf = dir.path().join("nobody.sock");
    let mut g = common::boot_with(&[
        "--memory",
        "64",
        "--api-sock",
        common::path_str(&sock),
        "--data-dir",
        common::path_str(&data),
    ]);
    crash_and_resurrect(&mut g, "null-read");
    crash_and_resurrect(&mut g, "null-read");
    crash_and_resurrect(&mut g, "ud2");
    let before = wait_for_crashes(&data, 3);
    assert_eq!(before.len(), 2, "{before:?}");
    let twice = before
        .iter()
        .find(|b| b["count"] == 2)
        .unwrap_or_else(|| panic!("no bucket of two: {before:?}"));
    let sig = twice["signature"].as_str().expect("signature").to_string();
    let other = before
        .iter()
        .find(|b| b["count"] == 1)
        .and_then(|b| b["signature"].as_str())
        .expect("the ud2 bucket")
        .to_string();

    let (_server, base) = common::start_dashboard(
        &data,
        &[
            "--vm-sock",
            common::path_str(&sock),
            "--vm-sock",
            common::path_str(&nobody),
        ],
    );
    let profile = tempfile::tempdir().expect("profile dir");

    // Top crashers: both buckets, their signatures, counts and trends;
    // the bucket of two first.
    let front = browse(&base, profile.path());
    assert!(front.contains("<title>Top crashers"), "{front}");
    let r = row(&front, &sig);
    assert!(r.contains(&format!("<code>{sig}</code>")), "{r}");
    assert!(r.contains("class=\"count\">2<"), "{r}");
    assert!(
        r.contains("data-counts=\"0,0,0,0,0,0,0,0,0,0,0,0,0,2\""),
        "{r}"
    );
    // The trend's bars are drawn as 14 sibling bars, today's the tallest
    // (nested, unclosed <rect>s would draw only the first).
    assert_eq!(r.matches("<rect").count(), 14, "{r}");
    assert!(!r.contains("</rect></rect>"), "bars nested: {r}");
    let last_bar = &r[r.rfind("<rect").expect("a bar")..];
    assert!(last_bar.contains("height=\"22\""), "{last_bar}");
    assert!(row(&front, &other).contains("class=\"count\">1<"));
    assert!(
        front.find(&sig) < front.find(&other),
        "top crasher not first: {front}"
    );
    // The live VM, and the socket nobody answers.
    let vm = &front[front
        .find(&format!("data-sock=\"{}\"", sock.display()))
        .expect("the VM")..];
    assert!(vm.contains("class=\"vm-state\">running<"), "{vm}");
    assert!(vm.contains("class=\"vm-recoveries\">3<"), "{vm}");
    assert!(front.contains("class=\"vm-unreachable"), "{front}");
    let vms = browse(&format!("{base}vms"), profile.path());
    assert!(vms.contains("class=\"histogram\""), "{vms}");
    let histogram_total: u64 = vms
        .split("class=\"n\">")
        .skip(1)
        .filter_map(|s| s.split('<').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(histogram_total, 3, "{vms}");

    // The link to the signature page works and shows the report.
    let href = attr_after(&front, &format!("data-signature=\"{sig}\""), "href");
    assert_eq!(href, format!("/signature/{sig}"));
    let page = browse(
        &format!("{}{}", base.trim_end_matches('/'), href),
        profile.path(),
    );
    assert!(page.contains(&format!("Signature {sig}")), "{page}");
    let bt = element_text(&page, "backtrace");
    assert!(bt.contains("crashtest::faults::read_at"), "{bt}");
    assert!(bt.contains("syscall"), "backtrace stops early: {bt}");
    assert!(!element_text(&page, "disassembly").trim().is_empty());
    assert!(page.contains("id=\"registers\""), "{page}");
    assert!(element_text(&page, "gdb").starts_with("gdb -nx"), "{page}");
    assert_eq!(page.matches("class=\"dump\"").count(), 2, "{page}");

    // The dump downloads with its bytes.
    let dump_href = attr_after(&page, "class=\"dump\"", "href");
    let name = dump_href.strip_prefix("/dumps/").expect("a dump link");
    let (status, head, body) = http_get(&base, dump_href);
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/x-core"),
        "{head}"
    );
    let on_disk = std::fs::read(data.join("dumps").join(name)).expect("the dump on disk");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", on_disk.len())),
        "{head}"
    );
    assert!(body.len() > 4096 && body == on_disk, "{} bytes", body.len());
    assert_eq!(&body[..4], b"\x7fELF");
    // A pruned dump is a clear 404, and the page says it was pruned.
    let older = &page[page.rfind("class=\"dump\"").expect("two dumps")..];
    let older_href = attr_after(older, "class=\"dump\"", "href");
    assert_ne!(older_href, dump_href);
    assert_eq!(http_get(&base, older_href).0, 200);
    let out = Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args([
            "crashes",
            "prune",
            "--dumps-per-signature",
            "1",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .expect("lazarus crashes prune");
    assert!(out.status.success(), "{out:?}");
    let (status, _, body) = http_get(&base, older_href);
    assert_eq!(status, 404);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("was pruned"), "{body}");
    let page = browse(
        &format!("{}{}", base.trim_end_matches('/'), href),
        profile.path(),
    );
    assert_eq!(page.matches("class=\"dump\"").count(), 1, "{page}");
    assert_eq!(page.matches(">pruned<").count(), 1, "{page}");
    assert_eq!(http_get(&base, dump_href).0, 200);
    // Traversal is refused.
    let (status, _, _) = http_get(&base, "/dumps/..%2fcrashes.sqlite");
    assert_eq!(status, 400);
    let (status, _, _) = http_get(&base, "/dumps/../crashes.sqlite");
    assert!(matches!(status, 400 | 404), "{status}");
    // Only reads are served; HEAD has no body; garbage is refused and
    // the server goes on.
    assert_eq!(http(&base, "POST", "/").0, 405);
    assert_eq!(http(&base, "DELETE", dump_href).0, 405);
    let (status, _, body) = http(&base, "HEAD", "/");
    assert_eq!((status, body.len()), (200, 0));
    let long = format!("/signature/{}", "a".repeat(5000));
    assert_eq!(http_get(&base, &long).0, 400);
    assert_eq!(http_get(&base, "/signature/%00%ff").0, 400);
    let (status, _, _) = raw_request(&base, b"\x01\x02 nonsense\r\n\r\n");
    assert!((400..500).contains(&status), "{status}");
    assert_eq!(http_get(&base, "/").0, 200);

    // A fresh crash in the running VM appears after a reload.
    crash_and_resurrect(&mut g, "divide");
    let after = wait_for_crashes(&data, 4);
    let fresh = after
        .iter()
        .filter_map(|b| b["signature"].as_str())
        .find(|s| *s != sig && *s != other)
        .unwrap_or_else(|| panic!("no new bucket: {after:?}"))
        .to_string();
    assert!(!front.contains(&fresh));
    let front = browse(&base, profile.path());
    assert!(
        row(&front, &fresh).contains("class=\"count\">1<"),
        "{front}"
    );
    assert!(front.contains("class=\"vm-recoveries\">4<"), "{front}");

    let transcript = g.transcript.clone();
    assert!(g.poweroff().success(), "{transcript}");
    drop(dir);
}

/// An address that is not one, or that cannot be bound, is bad input
/// (exit 4) with one clear line.
#[test]
fn unusable_listen_addresses_exit_4() {
    let dir = common::temp_dir("dashboard-listen");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().expect("addr").to_string();
    for (addr, says) in [
        ("nonsense", "bad listen address 'nonsense'"),
        (taken.as_str(), "cannot listen on"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_lazarus"))
            .args(["dashboard", "--listen", addr, "--data-dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("lazarus dashboard");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{addr}: {err}");
        assert!(
            err.starts_with("lazarus: error: ") && err.contains(says),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
