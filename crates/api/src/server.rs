//! The server: a private Unix socket, an accept thread, and one short-lived
//! thread per connection (bounded in number), each answering one request.
//!
//! Nothing a client sends can stop the server or reach the VMM's threads:
//! sizes and waits are bounded (see [`Limits`]), a malformed request gets a
//! 4xx, and even a panic in the backend is contained to its connection and
//! answered with a 500.

use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::http::{Limits, Request, RequestError, Response, read_request};
use crate::router::{Backend, route};

/// How often the accept thread checks whether it should stop.
const ACCEPT_POLL_MS: i32 = 100;
/// How long a connection is drained after the response, so that closing
/// it with unread input does not reset the client before it reads.
const DRAIN: Duration = Duration::from_millis(100);
const DRAIN_BYTES: usize = 1 << 20;
/// How long a connection may sit without a whole request before a
/// newcomer at the connection limit may close it.
const EVICT_GRACE: Duration = Duration::from_millis(500);
/// The same for a refused connection: short, as the accept thread waits.
const REFUSE_DRAIN: Duration = Duration::from_millis(20);

/// How the server behaves.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Limits on each request and its answer.
    pub limits: Limits,
    /// Connections served at once. Beyond it, the one that has waited
    /// longest without sending a whole request is closed to make room; if
    /// every one is being answered, the newcomer gets a 503 at once.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_connections: 16,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The path exists and is not a socket; it is left alone.
    #[error("{}: exists and is not a socket; refusing to replace it", path.display())]
    NotASocket {
        /// The socket path asked for.
        path: PathBuf,
    },
    /// The path does not fit a Unix socket address (`sun_path`): it could
    /// be bound through a shorter name but never connected to.
    #[error(
        "{}: a socket path is at most {max} bytes, this one is {len}; use a shorter path",
        path.display()
    )]
    PathTooLong {
        /// The socket path asked for.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The longest path `connect` accepts.
        max: usize,
    },
    /// The path is a socket someone still listens on.
    #[error("{}: another process is serving on this socket", path.display())]
    InUse {
        /// The socket path asked for.
        path: PathBuf,
    },
    /// Creating, binding or configuring the socket, or starting the
    /// accept thread, failed.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The socket path asked for.
        path: PathBuf,
        /// The step that failed, in words.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> ServerError + use<> {
    let path = path.to_path_buf();
    move |source| ServerError::Io { path, what, source }
}

/// A running API server. Dropping it stops accepting and removes the
/// socket (if it is still ours).
#[derive(Debug)]
pub struct ApiServer {
    path: PathBuf,
    /// Device and inode of our socket file, so that only it is removed.
    id: (u64, u64),
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Creates the socket at `path` (mode 0600 from the start) and serves
    /// `backend` on it. `path` must not exist, or be a stale socket that
    /// nobody listens on any more (it is then replaced).
    pub fn start(
        path: &Path,
        backend: Arc<dyn Backend>,
        config: ServerConfig,
    ) -> Result<ApiServer, ServerError> {
        let listener = bind_private(path)?;
        let meta = std::fs::symlink_metadata(path).map_err(io_err(path, "reading the socket"))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err(path, "configuring the socket"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("api-accept".into())
                .spawn(move || accept_loop(&listener, &backend, &config, &stop))
                .map_err(io_err(path, "starting the accept thread"))?
        };
        Ok(ApiServer {
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting and removes the socket. Connections in progress
    /// finish on their own threads.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            warn!("the API accept thread panicked");
        }
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.id && m.file_type().is_socket());
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            warn!("removing the API socket {}: {e}", self.path.display());
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_now();
        }
    }
}

/// Binds a listening socket at `path` that is never reachable by anyone
/// but its owner: it is bound inside a fresh 0700 directory, set to 0600
/// there, and only then linked to `path` (link fails if `path` exists, so
/// a file that appeared meanwhile is never replaced).
fn bind_private(path: &Path) -> Result<UnixListener, ServerError> {
    // sockaddr_un's sun_path: 108 bytes on Linux, the last one the NUL.
    const SUN_PATH_MAX: usize = 107;
    let len = path.as_os_str().len();
    if len > SUN_PATH_MAX {
        return Err(ServerError::PathTooLong {
            path: path.into(),
            len,
            max: SUN_PATH_MAX,
        });
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => return Err(ServerError::InUse { path: path.into() }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                debug!("removing the stale API socket {}", path.display());
                std::fs::remove_file(path).map_err(io_err(path, "removing the stale socket"))?;
            }
            Err(e) => return Err(io_err(path, "checking the existing socket")(e)),
        },
        Ok(_) => return Err(ServerError::NotASocket { path: path.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path, "checking the path")(e)),
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let dir = parent.join(format!(
        ".lazarus-api.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(io_err(
            path,
            "creating a private directory beside the socket",
        ))?;
    let tmp = dir.join("s");
    let result = (|| {
        let listener = UnixListener::bind(&tmp).map_err(io_err(path, "binding the socket"))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(path, "setting the socket's mode to 0600"))?;
        std::fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                ServerError::InUse { path: path.into() }
            } else {
                io_err(path, "moving the socket into place")(e)
            }
        })?;
        Ok(listener)
    })();
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        warn!("removing {}: {e}", dir.display());
    }
    result
}

/// The connections being served. One still reading its request (idle or
/// slow) can be closed to make room: a client that holds every slot open
/// without asking anything cannot lock the others out, while a request
/// already being answered is never cut.
#[derive(Default)]
struct Connections {
    next_id: u64,
    list: Vec<Conn>,
}

struct Conn {
    id: u64,
    /// A handle to shut the socket down from the accept thread.
    stream: UnixStream,
    /// Still reading its request.
    reading: Arc<AtomicBool>,
    accepted: Instant,
}

fn lock(c: &Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connections {
    /// Closes the connection that has waited longest, and at least
    /// `grace`, without sending a whole request; false if there is none (a
    /// client that just connected is about to send its request).
    fn evict_oldest_reading(&mut self, grace: Duration) -> bool {
        // Oldest first: the list is in arrival order.
        let found = self
            .list
            .iter()
            .position(|c| c.accepted.elapsed() >= grace && c.reading.swap(false, Ordering::AcqRel));
        let Some(i) = found else {
            return false;
        };
        // Its slot is free at once; its thread ends as its read fails.
        let c = self.list.remove(i);
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
        debug!(
            conn = c.id,
            "closed an API connection that sent no request, to make room"
        );
        true
    }
}

fn accept_loop(
    listener: &UnixListener,
    backend: &Arc<dyn Backend>,
    config: &ServerConfig,
    stop: &AtomicBool,
) {
    let conns = Arc::new(Mutex::new(Connections::default()));
    // Long enough for any client to send its request on a local socket.
    let grace = EVICT_GRACE.min(config.limits.read_timeout / 2);
    while !stop.load(Ordering::Acquire) {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for a descriptor the listener
        // keeps open during the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, ACCEPT_POLL_MS) };
        if ready <= 0 {
            continue;
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // E.g. out of file descriptors: back off, keep serving.
                warn!("accepting an API connection: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let reading = Arc::new(AtomicBool::new(true));
        let id = {
            let mut c = lock(&conns);
            let busy = c
                .list
                .iter()
                .filter(|c| !c.reading.load(Ordering::Acquire))
                .count();
            if c.list.len() >= config.max_connections
                && (busy >= config.max_connections || !c.evict_oldest_reading(grace))
            {
                drop(c);
                refuse(stream, config.max_connections);
                continue;
            }
            let Ok(handle) = stream.try_clone() else {
                drop(c);
                refuse(stream, config.max_connections);
                continue;
            };
            c.next_id += 1;
            let id = c.next_id;
            c.list.push(Conn {
                id,
                stream: handle,
                reading: reading.clone(),
                accepted: Instant::now(),
            });
            id
        };
        let slot = Slot {
            conns: conns.clone(),
            id,
        };
        let backend = backend.clone();
        let limits = config.limits.clone();
        let spawned = std::thread::Builder::new()
            .name("api-conn".into())
            .spawn(move || {
                let _slot = slot;
                serve(stream, backend.as_ref(), &limits, &reading);
            });
        if let Err(e) = spawned {
            warn!("cannot start an API connection thread: {e}");
        }
    }
}

/// Frees a connection slot when its thread ends, even by a panic.
struct Slot {
    conns: Arc<Mutex<Connections>>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.conns).list.retain(|c| c.id != self.id);
    }
}

/// Answers 503 with a JSON message, and lets the client read it: the
/// request it sent is read first, since closing a Unix socket with unread
/// input resets the peer before it sees the answer.
fn refuse(mut stream: UnixStream, max: usize) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let r = Response::error(
        503,
        format!("too many API connections (at most {max} at once)"),
    );
    if stream.write_all(&r.to_bytes()).is_ok() {
        let _ = stream.shutdown(std::net::Shutdown::Write);
        drain(&mut stream, REFUSE_DRAIN);
    }
}

/// Reads and drops what the client still sends, for at most `wait` per
/// read and [`DRAIN_BYTES`] in all.
fn drain(stream: &mut UnixStream, wait: Duration) {
    let _ = stream.set_read_timeout(Some(wait));
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < DRAIN_BYTES {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Answers one request on `stream`; `reading` goes false once the
/// request is in (from then on the connection is never evicted).
fn serve(mut stream: UnixStream, backend: &dyn Backend, limits: &Limits, reading: &AtomicBool) {
    // Accepted sockets do not inherit O_NONBLOCK on Linux; make sure.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(limits.write_timeout));
    let mut set_timeout = |s: &mut UnixStream, d: Duration| s.set_read_timeout(Some(d));
    let request = read_request(&mut stream, limits, &mut set_timeout);
    if !reading.swap(false, Ordering::AcqRel) {
        // Evicted while it read: the socket is shut down already.
        return;
    }
    let answer = respond(request, |req| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| route(req, backend)))
            .unwrap_or_else(|_| Response::error(500, "internal error while handling the request"))
    });
    let Some(response) = answer else {
        return;
    };
    if let Err(e) = stream
        .write_all(&response.to_bytes())
        .and_then(|()| stream.flush())
    {
        debug!("writing an API response: {e}");
        return;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    drain(&mut stream, DRAIN);
}

/// The answer to what [`read_request`] returned: `route`'s for a request,
/// the error response for a bad one, nothing when the client is gone.
fn respond(
    request: Result<Request, RequestError>,
    route: impl FnOnce(&Request) -> Response,
) -> Option<Response> {
    match request {
        Ok(req) => {
            debug!(method = req.method, path = req.path, "API request");
            Some(route(&req))
        }
        Err(e) => {
            debug!("bad API request: {e}");
            e.response()
        }
    }
}

/// Reads one request from `stream` and answers it as the server answers a
/// connection, in-process: the response's bytes on the wire, or `None`
/// when there is nothing to answer (the client sent nothing, or reading
/// failed). For tests and the fuzzer, which need the parser and router
/// without a socket; so a panic in `backend` is not caught here (the
/// server answers it with a 500), and no read timeout is set on `stream`.
pub fn answer<S: Read + Write>(
    stream: &mut S,
    backend: &dyn Backend,
    limits: &Limits,
) -> Option<Vec<u8>> {
    let request = read_request(stream, limits, &mut |_, _| Ok(()));
    respond(request, |req| route(req, backend)).map(|r| r.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;
    use crate::router::BackendError;
    use crate::types::*;

    struct Fixed;

    impl Backend for Fixed {
        fn status(&self) -> Result<Status, BackendError> {
            Ok(Status {
                api_version: API_VERSION,
                state: VmState::Running,
                uptime_ms: 5,
                vm_uptime_ms: None,
                boots: 1,
                vcpus: 2,
                memory_mib: 64,
                on_crash: "halt".into(),
                recoveries: 0,
                last_recovery: None,
                fallbacks: 0,
                last_fallback: None,
            })
        }
        fn recoveries(&self) -> Result<RecoveryList, BackendError> {
            panic!("a backend bug");
        }
        fn crashes(&self) -> Result<CrashList, BackendError> {
            Ok(CrashList { buckets: vec![] })
        }
        fn inject(&self, _: InjectRequest) -> Result<serde_json::Value, BackendError> {
            Err(BackendError::NotImplemented("no injector".into()))
        }
        fn dump(&self, _: DumpRequest) -> Result<DumpResponse, BackendError> {
            // Slow on purpose: a connection being answered.
            std::thread::sleep(Duration::from_millis(2000));
            Err(BackendError::Conflict("no VM".into()))
        }
        fn set_state(&self, _: RequestedState) -> Result<Status, BackendError> {
            self.status()
        }
        fn metrics(&self) -> Result<Metrics, BackendError> {
            Err(BackendError::Internal("x".into()))
        }
    }

    fn start(dir: &Path, config: ServerConfig) -> (ApiServer, PathBuf) {
        let path = dir.join("api.sock");
        let server = ApiServer::start(&path, Arc::new(Fixed), config).expect("start");
        (server, path)
    }

    fn raw(path: &Path, bytes: &[u8]) -> String {
        let mut s = UnixStream::connect(path).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn socket_is_private_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (server, path) = start(dir.path(), ServerConfig::default());
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Nothing else is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A second server refuses while this one serves.
        assert!(matches!(
            ApiServer::start(&path, Arc::new(Fixed), ServerConfig::default()),
            Err(ServerError::InUse { .. })
        ));
        server.shutdown();
        assert!(!path.exists());
    }

    #[test]
    fn refuses_a_socket_path_too_long_to_connect_to() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().as_os_str().len() + 1;
        // Exactly the longest path that fits, and one byte more.
        let fits = dir.path().join("s".repeat(107 - base));
        let long = dir.path().join("s".repeat(108 - base));
        match ApiServer::start(&long, Arc::new(Fixed), ServerConfig::default()) {
            Err(
                e @ ServerError::PathTooLong {
                    len: 108, max: 107, ..
                },
            ) => {
                assert!(e.to_string().contains("at most 107 bytes"), "{e}");
            }
            other => panic!("expected PathTooLong, got {other:?}"),
        }
        assert!(!long.exists());
        let server = ApiServer::start(&fits, Arc::new(Fixed), ServerConfig::default()).unwrap();
        assert_eq!(
            Client::new(&fits)
                .request("GET", "/vm", None)
                .unwrap()
                .status,
            200
        );
        server.shutdown();
    }

    #[test]
    fn refuses_files_and_replaces_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api.sock");
        std::fs::write(&file, b"precious").unwrap();
        assert!(matches!(
            ApiServer::start(&file, Arc::new(Fixed), ServerConfig::default()),
            Err(ServerError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
        std::fs::remove_file(&file).unwrap();
        // A socket nobody listens on (its listener is gone).
        drop(UnixListener::bind(&file).unwrap());
        let (server, path) = start(dir.path(), ServerConfig::default());
        assert_eq!(
            Client::new(&path)
                .request("GET", "/vm", None)
                .unwrap()
                .status,
            200
        );
        drop(server);
        assert!(!path.exists());
    }

    #[test]
    fn serves_and_survives_bad_clients() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            limits: Limits {
                read_timeout: Duration::from_millis(2000),
                ..Limits::default()
            },
            max_connections: 4,
        };
        let (_server, path) = start(dir.path(), config);
        let c = Client::new(&path);
        let r = c.request("GET", "/", None).unwrap();
        assert_eq!(r.status, 200);
        let v: Status = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v.vcpus, 2);
        // A panicking backend call is a 500, and the server goes on.
        let r = c.request("GET", "/recoveries", None).unwrap();
        assert_eq!(r.status, 500, "{}", r.fault_message());
        assert_eq!(
            c.request("PUT", "/inject", Some(b"{\"fault\":\"x\"}"))
                .unwrap()
                .status,
            501
        );
        assert!(raw(&path, b"\x00\xff\xfe garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
        let big = format!(
            "PUT /inject HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            1 << 20
        );
        let mut body = big.into_bytes();
        body.extend(std::iter::repeat_n(b'x', 1 << 20));
        assert!(raw(&path, &body).starts_with("HTTP/1.1 413 "));
        // A client that sends half a request and waits gets a 408.
        let mut slow = UnixStream::connect(&path).unwrap();
        slow.write_all(b"GET /vm HTTP/1.1\r\n").unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = String::new();
        let _ = slow.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
        drop(slow);
        // (Its thread ends when it sees the close.)
        std::thread::sleep(Duration::from_millis(200));
        // Idle connections cannot lock others out: at the limit, the one
        // that has waited longest without a request makes room.
        // (Past the grace a new client has to send its request, within
        // the 2 s the idle ones have before their 408.)
        let mut idle: Vec<UnixStream> = (0..4)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(600));
        for _ in 0..3 {
            let r = c.request("GET", "/vm", None).unwrap();
            assert_eq!(r.status, 200, "{}", r.fault_message());
        }
        // The oldest idle one was closed to make room, with no answer (a
        // timed-out one would have had a 408).
        idle[0]
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut out = Vec::new();
        let _ = idle[0].read_to_end(&mut out);
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        drop(idle);
        std::thread::sleep(Duration::from_millis(200));
        // Every slot busy answering: a newcomer gets a 503 with a JSON
        // message it can read (no reset), and the busy ones their answers.
        let busy: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || Client::new(&path).request("PUT", "/dump", None))
            })
            .collect();
        // (Probing before they are all in would take a slot from one.)
        std::thread::sleep(Duration::from_millis(400));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let refused = loop {
            let answer = raw(&path, b"GET / HTTP/1.1\r\n\r\n");
            if answer.starts_with("HTTP/1.1 503 ") {
                break answer;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never refused: {answer}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let body = &refused[refused.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        assert!(
            v["fault_message"]
                .as_str()
                .unwrap_or("")
                .contains("too many"),
            "{v}"
        );
        for b in busy {
            assert_eq!(b.join().unwrap().unwrap().status, 409);
        }
        // Their threads end and free their slots.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while c.request("GET", "/vm", None).unwrap().status != 200 {
            assert!(std::time::Instant::now() < deadline, "slots never freed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What a client sent, and what it was answered, in memory.
    struct Pipe {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn answer_text(request: &[u8]) -> Option<String> {
        let mut pipe = Pipe {
            input: io::Cursor::new(request.to_vec()),
            output: Vec::new(),
        };
        answer(&mut pipe, &Fixed, &Limits::default())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    #[test]
    fn answers_in_process_as_the_server_does() {
        let ok = answer_text(b"GET /vm HTTP/1.1\r\n\r\n").expect("an answer");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("\"state\":\"running\""), "{ok}");
        let bad = answer_text(b"\x00\xff\xfe garbage\r\n\r\n").expect("an answer");
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
        let missing = answer_text(b"PATCH /nope HTTP/1.1\r\n\r\n").expect("an answer");
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        assert_eq!(answer_text(b""), None);
    }
}
