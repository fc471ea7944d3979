//! Writing the stream off the guest's path: emitters put lines in a
//! bounded queue and never wait; one background thread writes them.
//!
//! A regular file (or a device) is opened for appending. A FIFO is opened
//! non-blocking, and only once it has a reader: until then, and while a
//! slow reader keeps the pipe full, lines wait in the queue, and when the
//! queue is full new events are dropped and counted. A reader that goes
//! away is waited for again (the line it missed goes to the next one).
//! At the end the writer gets a grace period to deliver what is queued;
//! what is still queued then is counted as dropped too.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::event::{Event, Record};

/// Events queued for the writer by default: minutes of crashes at the
/// rate the guest can crash, a few hundred KiB at most.
pub const DEFAULT_CAPACITY: usize = 1024;

/// How often a waiting writer looks at the clock and the close request.
const POLL: Duration = Duration::from_millis(50);

/// Why the stream cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The path cannot be opened for writing.
    #[error("cannot open the event stream {}: {source}", path.display())]
    Open {
        /// The path given.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the event writer: {0}")]
    Spawn(#[source] io::Error),
}

/// Counts shared by the emitters, the writer and the owner.
#[derive(Default)]
struct Shared {
    /// Set by [`EventSink::finish`]: write what is queued until `deadline`.
    closing: AtomicBool,
    deadline: Mutex<Option<Instant>>,
    written: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn out_of_time(&self) -> bool {
        self.closing.load(Ordering::Acquire)
            && self
                .deadline
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|d| Instant::now() >= d)
    }

    fn note_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

/// Emits events; cheap to clone, never blocks. A disabled log (no
/// `--events`) does nothing.
#[derive(Clone, Default)]
pub struct EventLog {
    inner: Option<Arc<LogInner>>,
}

struct LogInner {
    tx: SyncSender<Vec<u8>>,
    shared: Arc<Shared>,
}

impl EventLog {
    /// A log that drops everything silently (no stream was asked for).
    pub fn disabled() -> EventLog {
        EventLog { inner: None }
    }

    /// Whether a stream is being written.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues `record` as one line; drops it (and counts it) when the
    /// queue is full or the stream is closing.
    pub fn emit(&self, record: &Record) {
        let Some(inner) = &self.inner else {
            return;
        };
        let drop_one = || inner.shared.dropped.fetch_add(1, Ordering::Relaxed);
        if inner.shared.closing.load(Ordering::Acquire) {
            drop_one();
            return;
        }
        let Ok(mut line) = serde_json::to_vec(record) else {
            drop_one();
            return;
        };
        line.push(b'\n');
        match inner.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                drop_one();
            }
        }
    }

    /// Emits `event` of boot `boot` (`boot_id`), happening now.
    pub fn event(&self, boot_id: Option<&str>, boot: Option<u64>, event: Event) {
        self.event_at(SystemTime::now(), boot_id, boot, event);
    }

    /// Emits `event`, which happened at `at`.
    pub fn event_at(&self, at: SystemTime, boot_id: Option<&str>, boot: Option<u64>, event: Event) {
        if self.inner.is_some() {
            self.emit(&Record::new(at, boot_id, boot, event));
        }
    }

    /// Events dropped so far (queue full, or no writer any more).
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.shared.dropped.load(Ordering::Relaxed))
    }
}

/// What happened to the stream, when it is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Lines written whole.
    pub written: u64,
    /// Events lost: the queue was full (a slow or missing reader), or
    /// they were still queued when the grace period ran out.
    pub dropped: u64,
    /// The last write error, if any.
    pub last_error: Option<String>,
}

/// The open stream: its writer thread, and the [`EventLog`] that feeds it.
pub struct EventSink {
    path: PathBuf,
    log: EventLog,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Where lines go.
enum Target {
    /// Appended to, with blocking writes (on the writer's thread only).
    File(File),
    /// Non-blocking; `None` while it has no reader.
    Fifo { path: PathBuf, fd: Option<File> },
}

impl EventSink {
    /// Opens `path` (created if missing, appended to; or a FIFO) and
    /// starts the writer with a queue of `capacity` events.
    pub fn open(path: &Path, capacity: usize) -> Result<EventSink, EventsError> {
        let err = |source| EventsError::Open {
            path: path.to_path_buf(),
            source,
        };
        let is_fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
        let target = if is_fifo {
            let fd = match open_fifo(path) {
                Ok(f) => Some(f),
                // No reader yet: the writer waits for one.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => None,
                Err(e) => return Err(err(e)),
            };
            Target::Fifo {
                path: path.to_path_buf(),
                fd,
            }
        } else {
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o644)
                .open(path)
                .map_err(err)?;
            Target::File(f)
        };
        let shared = Arc::new(Shared::default());
        let (tx, rx) = sync_channel(capacity.max(1));
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("events".into())
                .spawn(move || write_loop(rx, target, &shared))
                .map_err(EventsError::Spawn)?
        };
        Ok(EventSink {
            path: path.to_path_buf(),
            log: EventLog {
                inner: Some(Arc::new(LogInner {
                    tx,
                    shared: shared.clone(),
                })),
            },
            shared,
            thread: Some(thread),
        })
    }

    /// The path being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The emitter for this stream.
    pub fn log(&self) -> EventLog {
        self.log.clone()
    }

    /// Stops taking events, gives the writer `grace` to deliver what is
    /// queued (a FIFO nobody reads gets no longer than that), and says
    /// what became of the stream.
    pub fn finish(mut self, grace: Duration) -> Summary {
        self.close(grace);
        Summary {
            written: self.shared.written.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            last_error: self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    fn close(&mut self, grace: Duration) {
        *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + grace);
        self.shared.closing.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.close(Duration::ZERO);
        }
    }
}

fn open_fifo(path: &Path) -> io::Result<File> {
    // Non-blocking: opening fails at once (ENXIO) when nobody reads, and
    // writes into a full pipe fail (EAGAIN) instead of blocking.
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// The writer thread: one line at a time, until closed and drained.
fn write_loop(rx: Receiver<Vec<u8>>, mut target: Target, shared: &Shared) {
    loop {
        let line = match rx.recv_timeout(POLL) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) if shared.closing.load(Ordering::Acquire) => break,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match write_line(&mut target, &line, shared) {
            Ok(()) => {
                shared.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(Gave::Line) => {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(Gave::Up) => {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    // Out of time: what is still queued is lost.
    let left = rx.try_iter().count() as u64;
    shared.dropped.fetch_add(left, Ordering::Relaxed);
}

/// Why a line was not written.
enum Gave {
    /// This line is lost (a write error on a file); go on with the next.
    Line,
    /// The grace period ran out: stop.
    Up,
}

fn write_line(target: &mut Target, line: &[u8], shared: &Shared) -> Result<(), Gave> {
    match target {
        Target::File(f) => f.write_all(line).map_err(|e| {
            shared.note_error(e.to_string());
            Gave::Line
        }),
        Target::Fifo { path, fd } => {
            let mut off = 0;
            while off < line.len() {
                let Some(f) = fd.as_mut() else {
                    match open_fifo(path) {
                        Ok(f) => *fd = Some(f),
                        Err(e) => {
                            if e.raw_os_error() != Some(libc::ENXIO) {
                                shared.note_error(e.to_string());
                            }
                            if shared.out_of_time() {
                                return Err(Gave::Up);
                            }
                            std::thread::sleep(POLL);
                        }
                    }
                    continue;
                };
                match f.write(&line[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if shared.out_of_time() {
                            return Err(Gave::Up);
                        }
                        wait_writable(f);
                    }
                    Err(e) => {
                        // The reader went away (EPIPE): wait for the next
                        // one, and give it the whole line.
                        if e.raw_os_error() != Some(libc::EPIPE) {
                            shared.note_error(e.to_string());
                        }
                        *fd = None;
                        off = 0;
                    }
                }
            }
            Ok(())
        }
    }
}

/// Waits until `f` can take more, for at most [`POLL`].
fn wait_writable(f: &File) {
    let mut p = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd for an fd that `f` keeps open; poll only
    // writes its `revents`.
    unsafe { libc::poll(&mut p, 1, POLL.as_millis() as libc::c_int) };
}
