//! `lazarus run --events PATH` against a real guest under KVM: the
//! sequence of events and their fields for resurrected crashes of several
//! kinds, a crash that falls back to a reboot and an extension disabled,
//! written to a file and to a FIFO read by the test; a FIFO whose reader
//! never comes, or stalls, costs events, not resurrections; a bad path is
//! a clear error.

mod common;
mod fallback;

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, SystemTime};

use fallback::{crash_and_resurrect, crash_beyond_repair};
use serde_json::Value;

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

fn parse(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

/// Every line's envelope is the documented one.
fn check_envelopes(events: &[Value]) {
    for e in events {
        assert_eq!(e["v"], 1, "{e}");
        let ts = e["timestamp"].as_str().unwrap_or_else(|| panic!("{e}"));
        humantime::parse_rfc3339(ts).unwrap_or_else(|err| panic!("{err}: {e}"));
        assert!(e["event"].is_string() && e["properties"].is_object(), "{e}");
        let source = e["source"].as_str().unwrap();
        assert!(["vm", "resurrect", "triage"].contains(&source), "{e}");
        if e["event"] != "exit" {
            assert!(e["boot_id"].as_str().is_some_and(|b| !b.is_empty()), "{e}");
            assert!(e["boot"].as_u64().is_some_and(|b| b >= 1), "{e}");
        }
    }
}

fn time(e: &Value) -> SystemTime {
    humantime::parse_rfc3339(e["timestamp"].as_str().unwrap()).unwrap()
}

fn names(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_file_gets_every_event_of_crashes_resurrected_and_not() {
    let dir = common::temp_dir("events-file");
    let path = dir.path().join("events.jsonl");
    let sock = dir.path().join("api.sock");
    // Appended to: what was there stays.
    std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
    let mut g = common::boot_with(&[
        "--memory",
        "64",
        "--events",
        common::path_str(&path),
        "--api-sock",
        common::path_str(&sock),
        "--data-dir",
        common::path_str(&dir.path().join("data")),
    ]);
    // Boot 1 ends in a crash that cannot be resurrected (and an
    // on-demand dump, taken to find the kernel's state root).
    crash_beyond_repair(&mut g, &sock);
    // Boot 2: three crashes in the crashtest extension, the third of
    // which disables it.
    let lines = [
        crash_and_resurrect(&mut g, "null-read"),
        crash_and_resurrect(&mut g, "timer-fault"),
        crash_and_resurrect(&mut g, "ud2"),
    ];
    assert!(lines[2].contains(", disabled)"), "{lines:?}");
    // The API counts dropped events: none with a file.
    let r = lazarus_api::Client::new(&sock)
        .request("GET", "/metrics", None)
        .unwrap();
    let m: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(m["events_dropped"], 0, "{m}");
    let transcript = g.transcript.clone();
    assert!(g.poweroff().success(), "{transcript}");

    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.strip_prefix("{\"earlier\":true}\n").expect("appended");
    let all = parse(text);
    check_envelopes(&all);
    // Dumps are written in the background: their events come when they
    // are done. Everything else is in order.
    let (dumps, events): (Vec<&Value>, Vec<&Value>) =
        all.iter().partition(|e| e["event"] == "dump_written");
    assert_eq!(
        names(&events),
        [
            "boot",
            "crash",
            "fallback",
            "reboot",
            "boot",
            "crash",
            "resurrected",
            "extension_reset",
            "crash",
            "resurrected",
            "extension_reset",
            "crash",
            "resurrected",
            "extension_disabled",
            "exit",
        ],
        "{text}"
    );
    let boot1 = events[0]["boot_id"].as_str().unwrap();
    let boot2 = events[4]["boot_id"].as_str().unwrap();
    assert_ne!(boot1, boot2);
    for e in &events[..4] {
        assert_eq!(
            (e["boot_id"].as_str(), &e["boot"]),
            (Some(boot1), &Value::from(1)),
            "{e}"
        );
    }
    for e in &events[4..14] {
        assert_eq!(
            (e["boot_id"].as_str(), &e["boot"]),
            (Some(boot2), &Value::from(2)),
            "{e}"
        );
    }
    let p = |i: usize| &events[i]["properties"];
    assert_eq!(p(0)["vcpus"], 2);
    assert_eq!(p(0)["memory_mib"], 64);
    assert_eq!(p(0)["on_crash"], "resurrect");
    // The fallback: a pvpanic crash (a kernel oops), refused.
    assert_eq!(p(1)["detector"], "pvpanic");
    assert!(
        p(1)["rip"].as_str().unwrap().starts_with("0xffffffff8"),
        "{}",
        p(1)
    );
    assert!(
        p(1)["detail"].as_str().unwrap().contains("vCPU"),
        "{}",
        p(1)
    );
    assert_eq!(p(2)["reason"], "refused");
    assert!(
        p(2)["detail"]
            .as_str()
            .unwrap()
            .contains("process table is corrupt"),
        "{}",
        p(2)
    );
    assert_eq!(p(3)["cause"], "crash");
    // The three resurrections: kind, vCPU, process, extension, latency.
    for (i, kind, blamed) in [
        (5, "null-deref", true),
        (8, "irq-fault", false),
        (11, "invalid-opcode", true),
    ] {
        let (crash, res, ext) = (p(i), p(i + 1), p(i + 2));
        assert_eq!(events[i]["source"], "vm");
        assert_eq!(events[i + 1]["source"], "resurrect");
        assert_eq!(crash["detector"], "pvpanic", "{crash}");
        assert_eq!(res["kind"], kind, "{res}");
        assert_eq!(res["vcpu"], crash["vcpu"], "{res}");
        assert!(res["vcpu"].as_u64().unwrap() < 2);
        assert!(time(events[i]) <= time(events[i + 1]));
        if blamed {
            assert!(res["pid"].as_u64().unwrap() > 1, "{res}");
            assert_eq!(res["process"], "crash", "{res}");
        } else {
            assert!(res["pid"].is_null() && res["process"].is_null(), "{res}");
        }
        assert_eq!(res["extension"], "crashtest", "{res}");
        let latency = res["latency_us"].as_u64().unwrap();
        assert!(latency > 0, "{res}");
        for part in ["snapshot_us", "repair_us", "resume_us"] {
            assert!(res[part].as_u64().unwrap() <= latency, "{part}: {res}");
        }
        assert!(
            res["summary"]
                .as_str()
                .unwrap()
                .starts_with("resurrected after ")
        );
        assert_eq!(ext["extension"], "crashtest", "{ext}");
        assert_eq!(ext["slot"], p(7)["slot"], "one extension: {ext}");
    }
    assert_eq!(p(6)["extension_action"], "reset");
    assert_eq!(p(12)["extension_action"], "disabled");
    let exit = p(14);
    assert_eq!(exit["code"], 0, "{exit}");
    assert!(events[14]["boot_id"].is_null());

    // A dump for each crash (on its boot), and the on-demand one.
    assert_eq!(dumps.len(), 5, "{text}");
    let on_demand: Vec<_> = dumps
        .iter()
        .filter(|d| d["properties"]["on_demand"] == true)
        .collect();
    assert_eq!(on_demand.len(), 1, "{text}");
    assert_eq!(on_demand[0]["boot_id"].as_str(), Some(boot1));
    let by_boot = |id: &str| {
        dumps
            .iter()
            .filter(|d| d["properties"]["on_demand"] == false && d["boot_id"] == id)
            .count()
    };
    assert_eq!((by_boot(boot1), by_boot(boot2)), (1, 3), "{text}");
    for d in &dumps {
        let props = &d["properties"];
        assert_eq!(d["source"], "triage");
        for file in ["dump", "report"] {
            let f = PathBuf::from(props[file].as_str().unwrap());
            assert!(f.is_file(), "{file}: {d}");
        }
        assert!(
            props["signature"].as_str().is_some_and(|s| !s.is_empty()),
            "{d}"
        );
    }
    drop(dir);
}

/// Reads `path` (a FIFO) line by line on a thread, as an event consumer
/// would; each line goes to the receiver.
fn read_fifo(path: &Path) -> Receiver<String> {
    let (tx, rx) = channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open the FIFO");
        for line in BufReader::new(f).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn a_fifo_reader_gets_the_events_as_they_happen() {
    let dir = common::temp_dir("events-fifo");
    let path = dir.path().join("events.fifo");
    mkfifo(&path);
    let rx = read_fifo(&path);
    let mut g = common::boot_with(&["--memory", "64", "--events", common::path_str(&path)]);
    let next = |want: &str| -> Value {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no {want} event: {e}"));
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["event"], want, "{v}");
        v
    };
    // Live: each event arrives while the guest runs, before the next.
    let boot = next("boot");
    crash_and_resurrect(&mut g, "divide");
    let crash = next("crash");
    let res = next("resurrected");
    assert_eq!(res["properties"]["kind"], "divide-error", "{res}");
    next("extension_reset");
    let dump = next("dump_written");
    for e in [&crash, &res, &dump] {
        assert_eq!(e["boot_id"], boot["boot_id"], "{e}");
    }
    assert!(PathBuf::from(dump["properties"]["dump"].as_str().unwrap()).is_file());
    let transcript = g.transcript.clone();
    assert!(g.poweroff().success(), "{transcript}");
    let exit = next("exit");
    assert_eq!(exit["properties"]["code"], 0);
    check_envelopes(&[boot, crash, res, dump, exit]);
    // The writer closed the FIFO: the reader sees its end.
    assert!(rx.recv_timeout(Duration::from_secs(10)).is_err());
    drop(dir);
}

#[test]
fn a_fifo_without_a_reader_or_with_a_stalled_one_never_holds_up_the_guest() {
    let dir = common::temp_dir("events-noreader");
    // Nobody ever opens this one.
    let lonely = dir.path().join("lonely.fifo");
    mkfifo(&lonely);
    let mut g = common::boot_with(&["--memory", "64", "--events", common::path_str(&lonely)]);
    for kind in ["null-read", "gp"] {
        crash_and_resurrect(&mut g, kind);
    }
    g.send("poweroff");
    assert!(
        g.wait(Duration::from_secs(30)).success(),
        "{}",
        g.transcript
    );
    assert!(
        g.host.contains("events were not written to") && g.host.contains("lonely.fifo"),
        "{}",
        g.host
    );

    // This one's reader opens it, shrinks the pipe to one page, and reads
    // nothing until the guest is gone.
    let stalled = dir.path().join("stalled.fifo");
    mkfifo(&stalled);
    let (opened_tx, opened_rx) = channel();
    let (go_tx, go_rx) = channel::<()>();
    let reader = {
        let stalled = stalled.clone();
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&stalled)
                .unwrap();
            // SAFETY: fcntl on an fd `f` owns.
            let size = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
            assert!(size >= 4096, "{}", std::io::Error::last_os_error());
            // SAFETY: fcntl on an fd `f` owns: blocking reads from here on.
            unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, 0) };
            opened_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut &f, &mut text).unwrap();
            text
        })
    };
    opened_rx.recv().unwrap();
    let mut g = common::boot_with(&["--memory", "64", "--events", common::path_str(&stalled)]);
    // Three crashes make more than a page of events: the pipe fills, and
    // every resurrection still happens.
    for kind in ["null-read", "gp", "divide"] {
        crash_and_resurrect(&mut g, kind);
    }
    g.send("poweroff");
    assert!(
        g.wait(Duration::from_secs(30)).success(),
        "{}",
        g.transcript
    );
    assert!(g.host.contains("events were not written to"), "{}", g.host);
    go_tx.send(()).unwrap();
    let text = reader.join().unwrap();
    // What the reader got are whole lines, from the start.
    let got = parse(&text);
    assert!(!got.is_empty() && got[0]["event"] == "boot", "{text}");
    check_envelopes(&got);
    assert!(!got.iter().any(|e| e["event"] == "exit"), "{text}");
    drop(dir);
}

#[test]
fn an_events_path_that_cannot_be_written_is_refused_before_booting() {
    common::require_kvm();
    let dir = common::temp_dir("events-bad");
    for bad in [
        dir.path().join("no/such/dir/events.jsonl"),
        dir.path().to_path_buf(),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_lazarus"))
            .args(["run", "--memory", "64", "--events"])
            .arg(&bad)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .output()
            .expect("run lazarus");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{stderr}");
        assert!(
            stderr.contains("--events") && stderr.contains(&*bad.to_string_lossy()),
            "{stderr}"
        );
        // Nothing booted.
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    drop(dir);
}

#[test]
fn the_demo_writes_its_events_too() {
    common::require_kvm();
    let dir = common::temp_dir("events-demo");
    let path = dir.path().join("demo.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args(["demo", "--crashes", "2", "--events"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run lazarus demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = parse(&std::fs::read_to_string(&path).unwrap());
    check_envelopes(&all);
    let main: Vec<&Value> = all
        .iter()
        .filter(|e| !e["event"].as_str().unwrap().starts_with("extension_"))
        .collect();
    assert_eq!(
        names(&main),
        [
            "boot",
            "crash",
            "resurrected",
            "crash",
            "resurrected",
            "exit"
        ],
        "{all:#?}"
    );
    assert_eq!(main[2]["properties"]["kind"], "null-deref");
    assert_eq!(main[4]["properties"]["kind"], "deadlock");
    assert_eq!(main[5]["properties"]["code"], 0);
    drop(dir);
}
