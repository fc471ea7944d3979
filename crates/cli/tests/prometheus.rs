//! `GET /metrics` for Prometheus against a real guest under KVM, after
//! real crashes (resurrected ones of several kinds and one that falls
//! back to a reboot): the Prometheus text format checked by Prometheus'
//! own `promtool`, OpenMetrics, the counters and the latency histogram
//! against what happened, JSON still answered by default and to a bad
//! `Accept`; and a real Prometheus server scraping the API (through a
//! TCP-to-Unix-socket relay: Prometheus scrapes TCP only) with the
//! `Accept` header it sends, read back through its query API.

mod common;
mod fallback;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fallback::{crash_and_resurrect, crash_beyond_repair};
use serde_json::Value;

/// What Prometheus 2.x sends (scrape.go's `acceptHeader`).
const PROMETHEUS_2_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// What Prometheus 3 sends by default.
const PROMETHEUS_3_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";

/// `GET /metrics` with `accept`: status, Content-Type and body.
fn scrape(sock: &Path, accept: Option<&str>) -> (u16, String, String) {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(s, "GET /metrics HTTP/1.1\r\nHost: lazarus\r\n{accept}\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head[9..12].parse().expect("a status");
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .expect("a Content-Type")
        .to_string();
    (status, ctype, body.to_string())
}

/// Runs `promtool check metrics` (Prometheus' own parser of the text
/// format, and its linter of metric names) on `text`.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed for this test (scripts/setup.sh installs it): {e}")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

/// The samples of a text exposition (already validated by promtool or
/// checked for its `# EOF`): `name{labels}` as written, and the value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            let v = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|e| panic!("{e}: {l:?}")),
            };
            (series.to_string(), v)
        })
        .collect()
}

fn get(s: &BTreeMap<String, f64>, series: &str) -> f64 {
    *s.get(series)
        .unwrap_or_else(|| panic!("no {series} in {s:#?}"))
}

/// The counters and the histogram say what happened: `latencies_us` of
/// the three resurrections (from `GET /recoveries`).
fn check_counts(s: &BTreeMap<String, f64>, latencies_us: &[u64]) {
    for (series, want) in [
        ("lazarus_crashes_total{kind=\"pvpanic\"}", 3.0),
        ("lazarus_crashes_total{kind=\"triple-fault\"}", 1.0),
        ("lazarus_resurrections_total{kind=\"null-deref\"}", 1.0),
        ("lazarus_resurrections_total{kind=\"invalid-opcode\"}", 1.0),
        ("lazarus_resurrections_total{kind=\"triple-fault\"}", 1.0),
        ("lazarus_fallbacks_total{reason=\"refused\"}", 1.0),
        ("lazarus_reboots_total{cause=\"crash\"}", 1.0),
        ("lazarus_reboots_total{cause=\"requested\"}", 0.0),
        ("lazarus_boots_total", 2.0),
        ("lazarus_recovery_latency_seconds_count", 3.0),
        ("lazarus_recovery_latency_seconds_bucket{le=\"+Inf\"}", 3.0),
        ("lazarus_vm_state{state=\"running\"}", 1.0),
        ("lazarus_vm_state{state=\"stopped\"}", 0.0),
        ("lazarus_guest_ram_bytes", (64u64 << 20) as f64),
    ] {
        assert_eq!(get(s, series), want, "{series}");
    }
    let crash_series = s
        .keys()
        .filter(|k| k.starts_with("lazarus_crashes_total"))
        .count();
    assert_eq!(crash_series, 2, "{s:#?}");
    // Each bucket holds the recoveries at most its bound (the recoveries
    // list their latency in whole microseconds: a bound can sit inside
    // one's last microsecond).
    for (series, &count) in s.iter() {
        let Some(le) = series
            .strip_prefix("lazarus_recovery_latency_seconds_bucket{le=\"")
            .and_then(|r| r.strip_suffix("\"}"))
        else {
            continue;
        };
        let le_us = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse::<f64>().unwrap() * 1e6
        };
        let surely = latencies_us
            .iter()
            .filter(|&&l| (l + 1) as f64 <= le_us)
            .count();
        let maybe = latencies_us.iter().filter(|&&l| l as f64 <= le_us).count();
        assert!(
            (surely..=maybe).contains(&(count as usize)),
            "{series} = {count}, latencies {latencies_us:?} µs"
        );
    }
    let sum = get(s, "lazarus_recovery_latency_seconds_sum");
    let listed: u64 = latencies_us.iter().sum();
    assert!(
        (sum * 1e6 - listed as f64).abs() <= 3.0,
        "sum {sum} s, listed {listed} µs"
    );
    assert!(get(s, "lazarus_host_rss_bytes") > (1 << 20) as f64);
    let managed = get(s, "lazarus_guest_kernel_memory_bytes");
    let used = get(s, "lazarus_guest_kernel_memory_used_bytes");
    assert!(used > 0.0 && used < managed, "{used} of {managed}");
}

#[test]
fn metrics_for_prometheus_after_real_crashes() {
    let dir = common::temp_dir("prometheus");
    let sock = dir.path().join("api.sock");
    let mut g = common::boot_with(&[
        "--memory",
        "64",
        "--api-sock",
        common::path_str(&sock),
        "--data-dir",
        common::path_str(&dir.path().join("data")),
    ]);
    // JSON as before: no Accept, curl's */*, and Accept headers that ask
    // for nothing we have or make no sense.
    for accept in [
        None,
        Some("*/*"),
        Some("application/json"),
        Some("image/png"),
        Some("text/plain;q=banana, ;;, /, application/openmetrics-text;version=9"),
        Some(""),
    ] {
        let (status, ctype, body) = scrape(&sock, accept);
        assert_eq!(
            (status, ctype.as_str()),
            (200, "application/json"),
            "{accept:?}: {body}"
        );
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["recoveries"]["count"], 0, "{v}");
    }
    // Before any crash the text format already parses, with no series
    // for the crash counters yet.
    let (_, _, text) = scrape(&sock, Some("text/plain"));
    promtool_check(&text);
    assert!(!text.contains("lazarus_crashes_total{"), "{text}");

    crash_beyond_repair(&mut g, &sock);
    for kind in ["null-read", "ud2", "triple-fault"] {
        crash_and_resurrect(&mut g, kind);
    }
    // Recoveries reach the API on the listener's thread, between dumps.
    let c = lazarus_api::Client::new(&sock);
    let deadline = Instant::now() + Duration::from_secs(60);
    let list: Value = loop {
        let list: Value =
            serde_json::from_slice(&c.request("GET", "/recoveries", None).unwrap().body).unwrap();
        if list["total"] == 3 || Instant::now() > deadline {
            break list;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let latencies: Vec<u64> = list["recoveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["latency_us"].as_u64().unwrap())
        .collect();
    assert_eq!(latencies.len(), 3, "{list}");

    // The Prometheus text format, 0.0.4.
    let (status, ctype, text) = scrape(&sock, Some("text/plain;version=0.0.4;q=0.2,*/*;q=0.1"));
    assert_eq!(
        (status, ctype.as_str()),
        (200, "text/plain; version=0.0.4; charset=utf-8")
    );
    promtool_check(&text);
    assert!(!text.contains("# EOF"), "{text}");
    check_counts(&samples(&text), &latencies);
    // OpenMetrics, for what Prometheus 2 and 3 send.
    for accept in [
        "application/openmetrics-text",
        PROMETHEUS_2_ACCEPT,
        PROMETHEUS_3_ACCEPT,
    ] {
        let (status, ctype, om) = scrape(&sock, Some(accept));
        assert_eq!(
            (status, ctype.as_str()),
            (
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            ),
            "{accept}"
        );
        let body = om
            .strip_suffix("# EOF\n")
            .unwrap_or_else(|| panic!("no # EOF: {om}"));
        assert!(!body.contains("# EOF"), "{om}");
        assert!(om.contains("# TYPE lazarus_crashes counter\n"), "{om}");
        assert!(
            om.contains("# UNIT lazarus_recovery_latency_seconds seconds\n"),
            "{om}"
        );
        check_counts(&samples(body), &latencies);
    }
    // JSON still agrees.
    let (_, _, json) = scrape(&sock, None);
    let m: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(m["recoveries"]["count"], 3, "{m}");
    assert_eq!(m["crashes"]["session"], 4, "{m}");

    // A real Prometheus scrapes it.
    scraped_by_prometheus(&sock, dir.path(), &latencies);

    assert!(g.cmd("run echo still alive").contains("still alive"));
    let transcript = g.transcript.clone();
    assert!(g.poweroff().success(), "{transcript}");
    drop(dir);
}

/// Relays TCP connections on 127.0.0.1 to the API's Unix socket; keeps
/// each request's head.
fn relay(sock: &Path) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (sock, seen) = (sock.to_path_buf(), heads.clone());
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { break };
            let Ok(mut unix) = UnixStream::connect(&sock) else {
                continue;
            };
            // One request per connection (the API closes after answering).
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            if unix.write_all(&head).is_ok() {
                let _ = std::io::copy(&mut unix, &mut tcp);
            }
        }
    });
    (port, heads)
}

/// A free port on 127.0.0.1 (released for the caller to bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the Prometheus server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on 127.0.0.1:port; the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// The series of an instant query: labels and value.
fn query(port: u16, q: &str) -> Vec<(Value, f64)> {
    let path = format!(
        "/api/v1/query?query={}",
        q.replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
    );
    let Some(body) = http_get(port, &path) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<Value>(&body) else {
        return Vec::new();
    };
    v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| {
                    let value = s["value"][1]
                        .as_str()
                        .unwrap_or("NaN")
                        .parse()
                        .unwrap_or(f64::NAN);
                    (s["metric"].clone(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn scraped_by_prometheus(sock: &Path, dir: &Path, latencies: &[u64]) {
    let (target, heads) = relay(sock);
    let web = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: lazarus\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        ),
    )
    .unwrap();
    let tsdb: PathBuf = dir.join("tsdb");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "the prometheus server is needed for this test (scripts/setup.sh installs it): {e}"
            )
        });
    let _server = Server(child);
    // Scraped, and every resurrection is in its database.
    let deadline = Instant::now() + Duration::from_secs(60);
    let resurrections = loop {
        let up = query(web, "up{job=\"lazarus\"}");
        let r = query(web, "lazarus_resurrections_total");
        if up.first().is_some_and(|u| u.1 == 1.0) && r.len() == 3 {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the API: up = {up:?}, resurrections = {r:?}, requests {:?}",
            heads.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    for (labels, value) in &resurrections {
        assert_eq!(*value, 1.0, "{labels}");
    }
    let value = |q: &str| {
        let r = query(web, q);
        assert_eq!(r.len(), 1, "{q}: {r:?}");
        r[0].1
    };
    assert_eq!(value("lazarus_crashes_total{kind=\"pvpanic\"}"), 3.0);
    assert_eq!(value("lazarus_fallbacks_total{reason=\"refused\"}"), 1.0);
    assert_eq!(value("lazarus_reboots_total{cause=\"crash\"}"), 1.0);
    assert_eq!(value("lazarus_reboots_total{cause=\"requested\"}"), 0.0);
    assert_eq!(value("lazarus_recovery_latency_seconds_count"), 3.0);
    let sum = value("lazarus_recovery_latency_seconds_sum");
    let listed: u64 = latencies.iter().sum();
    assert!(
        (sum * 1e6 - listed as f64).abs() <= 3.0,
        "{sum} s vs {listed} µs"
    );
    assert_eq!(value("lazarus_guest_ram_bytes"), (64u64 << 20) as f64);
    // It asked for OpenMetrics first, and that is what it parsed.
    let heads = heads.lock().unwrap();
    let head = heads.first().expect("a scrape went through the relay");
    assert!(
        head.lines().any(|l| l
            .to_ascii_lowercase()
            .starts_with("accept: application/openmetrics-text")),
        "{head}"
    );
}
