//! The control API's HTTP parser and router ([`lazarus_api::answer`]) on
//! whatever a client can send, arriving in reads of any size.
//!
//! Input: one byte for the size of each read (0: all at once), one byte
//! choosing the server's limits (the defaults, or small ones so that the
//! 413 and 431 paths are within a short input's reach), then the bytes
//! the client sends. Every answer must be well-formed HTTP/1.1 whose
//! `Content-Length` is its body's, and whose body is JSON (with a
//! `fault_message` on an error).

use std::io::{self, Read, Write};
use std::path::PathBuf;

use lazarus_api::{
    API_VERSION, Backend, BackendError, CrashList, DumpRequest, DumpResponse, InjectRequest,
    Limits, Metrics, RecoveryList, RequestedState, Status, VmState, answer,
};

/// Statuses the API may answer with (`lazarus_api`'s documentation).
const STATUSES: &[u16] = &[200, 400, 404, 405, 408, 409, 413, 431, 500, 501, 503];
/// What a server writes before the body when a client asks for it.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A connection: the client's bytes, `chunk` at most per read.
struct Conn<'a> {
    input: &'a [u8],
    chunk: usize,
    written: Vec<u8>,
}

impl Read for Conn<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.input.len());
        let (now, rest) = self.input.split_at(n);
        buf[..n].copy_from_slice(now);
        self.input = rest;
        Ok(n)
    }
}

impl Write for Conn<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A backend whose answer depends on the request alone, so that every
/// reply path (success, each error status) is reachable.
struct Fake;

fn status() -> Status {
    Status {
        api_version: API_VERSION,
        state: VmState::Running,
        uptime_ms: 1,
        vm_uptime_ms: Some(1),
        boots: 1,
        vcpus: 2,
        memory_mib: 128,
        on_crash: "resurrect".into(),
        recoveries: 0,
        last_recovery: None,
        fallbacks: 0,
        last_fallback: None,
    }
}

impl Backend for Fake {
    fn status(&self) -> Result<Status, BackendError> {
        Ok(status())
    }

    fn recoveries(&self) -> Result<RecoveryList, BackendError> {
        Ok(RecoveryList {
            total: 0,
            recoveries: Vec::new(),
        })
    }

    fn crashes(&self) -> Result<CrashList, BackendError> {
        Ok(CrashList {
            buckets: Vec::new(),
        })
    }

    fn inject(&self, req: InjectRequest) -> Result<serde_json::Value, BackendError> {
        match req.fault.len() % 3 {
            0 => Ok(serde_json::json!({ "fault": req.fault, "seed": req.seed })),
            1 => Err(BackendError::BadRequest(format!(
                "unknown fault {:?}",
                req.fault
            ))),
            _ => Err(BackendError::NotImplemented("no injector".into())),
        }
    }

    fn dump(&self, req: DumpRequest) -> Result<DumpResponse, BackendError> {
        let Some(reason) = req.reason else {
            return Err(BackendError::Conflict("no VM is running".into()));
        };
        Ok(DumpResponse {
            dump: PathBuf::from("/tmp/x.core"),
            report: PathBuf::from("/tmp/x.json"),
            kind: "on-demand".into(),
            title: reason,
            paused_us: 1,
            ram_bytes: 4096,
            vcpus: 1,
        })
    }

    fn set_state(&self, state: RequestedState) -> Result<Status, BackendError> {
        match state {
            RequestedState::Paused => Ok(Status {
                state: VmState::Paused,
                ..status()
            }),
            RequestedState::Resumed => Err(BackendError::Conflict("not paused".into())),
        }
    }

    fn metrics(&self) -> Result<Metrics, BackendError> {
        Err(BackendError::Internal("no metrics".into()))
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let [chunk, limits, request @ ..] = data else {
        return;
    };
    let chunk = match chunk {
        0 => usize::MAX,
        n => usize::from(*n),
    };
    let limits = if limits & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_head_bytes: 256,
            max_body_bytes: 128,
            ..Limits::default()
        }
    };
    let mut conn = Conn {
        input: request,
        chunk,
        written: Vec::new(),
    };
    let reply = answer(&mut conn, &Fake, &limits);
    assert!(
        conn.written.is_empty() || conn.written == CONTINUE,
        "wrote {:?} before the answer",
        String::from_utf8_lossy(&conn.written)
    );
    match reply {
        Some(bytes) => check_response(&bytes),
        // Only a client that sent nothing gets no answer.
        None => assert!(request.is_empty(), "no answer to {} bytes", request.len()),
    }
}

/// Checks that `bytes` is one whole HTTP/1.1 response with a JSON body.
fn check_response(bytes: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "not an HTTP response ({other:?}): {:?}",
            String::from_utf8_lossy(bytes)
        ),
    };
    assert_eq!(resp.version, Some(1), "not HTTP/1.1");
    let code = resp.code.unwrap_or_default();
    assert!(STATUSES.contains(&code), "unexpected status {code}");
    let body = &bytes[head..];
    let length = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok());
    assert_eq!(length, Some(body.len()), "Content-Length is not the body's");
    let json: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => panic!(
            "body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        ),
    };
    if code >= 400 {
        assert!(
            json["fault_message"].is_string(),
            "error {code} without a fault_message: {json}"
        );
    }
}
