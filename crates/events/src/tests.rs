//! The writer against real files and FIFOs.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::{Event, EventSink, Record};

fn event(i: u64) -> Record {
    Record::new(
        SystemTime::now(),
        Some("boot-x"),
        Some(i),
        Event::Reboot {
            cause: format!("crash {i}"),
        },
    )
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// The `boot` numbers of the lines, which must all be whole records.
fn boots(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| {
            let r: Record = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            assert_eq!(r.v, 1);
            r.boot.unwrap()
        })
        .collect()
}

/// Emits `range` on another thread; fails if emitting blocks (it must
/// never wait for the reader).
fn emit_all(log: &crate::EventLog, range: std::ops::Range<u64>) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let log = log.clone();
    std::thread::spawn(move || {
        for i in range {
            log.emit(&event(i));
        }
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("emitting blocked on a FIFO nobody reads");
}

#[test]
fn a_file_is_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    std::fs::write(&path, "earlier line\n").unwrap();
    for range in [0..3, 3..5] {
        let sink = EventSink::open(&path, 16).unwrap();
        let log = sink.log();
        for i in range.clone() {
            log.emit(&event(i));
        }
        let s = sink.finish(Duration::from_secs(5));
        assert_eq!((s.written, s.dropped), (range.count() as u64, 0));
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let rest = text.strip_prefix("earlier line\n").expect("kept");
    assert_eq!(boots(rest), [0, 1, 2, 3, 4]);
}

#[test]
fn a_path_that_cannot_be_written_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        dir.path().join("no/such/dir/events"),
        dir.path().to_path_buf(),
    ] {
        let e = EventSink::open(&bad, 16).err().expect("refused");
        assert!(e.to_string().contains(&*bad.to_string_lossy()), "{e}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_fifo_reader_gets_every_line_in_order_even_if_it_comes_late() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.fifo");
    mkfifo(&path);
    let sink = EventSink::open(&path, 256).unwrap();
    let log = sink.log();
    // Nobody reads yet: the events wait in the queue.
    for i in 0..100 {
        log.emit(&event(i));
    }
    let reader = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            std::fs::File::open(&path)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            text
        })
    };
    let s = sink.finish(Duration::from_secs(30));
    assert_eq!((s.written, s.dropped), (100, 0), "{s:?}");
    let text = reader.join().unwrap();
    assert_eq!(boots(&text), (0..100).collect::<Vec<_>>());
}

#[test]
fn a_fifo_without_reader_costs_events_not_a_stall() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.fifo");
    mkfifo(&path);
    let sink = EventSink::open(&path, 8).unwrap();
    let log = sink.log();
    // Far more than the queue holds: every emit returns, and the
    // overflow is counted (the queue's 8, and the line the writer holds
    // while it waits for a reader, are kept).
    emit_all(&log, 0..100);
    assert!(log.dropped() >= 91, "{}", log.dropped());
    let s = sink.finish(Duration::from_millis(200));
    assert_eq!((s.written, s.dropped), (0, 100), "{s:?}");
    // After the end, emitting is harmless.
    log.emit(&event(100));
    assert_eq!(log.dropped(), 101);
}

#[test]
fn a_stalled_reader_loses_the_overflow_and_gets_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.fifo");
    mkfifo(&path);
    // The reader opens the FIFO, shrinks the pipe to one page and does
    // not read until every event was emitted.
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let reader = {
        let path = path.clone();
        std::thread::spawn(move || {
            let f = std::fs::OpenOptions::new()
                .read(true)
                // Without a writer yet, a blocking open would wait.
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
                .unwrap();
            // SAFETY: fcntl on an fd `f` owns.
            let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
            assert!(
                rc >= 4096,
                "F_SETPIPE_SZ: {}",
                std::io::Error::last_os_error()
            );
            // Blocking reads from here on.
            // SAFETY: fcntl on an fd `f` owns.
            unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, 0) };
            opened_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            let mut lines = Vec::new();
            for line in BufReader::new(f).lines() {
                lines.push(line.unwrap());
            }
            lines
        })
    };
    opened_rx.recv().unwrap();
    let sink = EventSink::open(&path, 4).unwrap();
    let log = sink.log();
    emit_all(&log, 0..500);
    assert!(log.dropped() > 0, "nothing dropped");
    go_tx.send(()).unwrap();
    let s = sink.finish(Duration::from_secs(30));
    assert_eq!(s.written + s.dropped, 500, "{s:?}");
    let lines = reader.join().unwrap();
    let got = boots(&lines.join("\n"));
    assert_eq!(got.len() as u64, s.written, "{s:?}");
    // In order, with the dropped ones missing.
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    assert_eq!(got.first(), Some(&0));
}

use std::os::unix::fs::OpenOptionsExt;
