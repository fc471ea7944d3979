//! The client `lazarus ctl` uses: one request per connection, bounded
//! waits and sizes, any status returned to the caller.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest response head and body accepted.
const MAX_HEAD: usize = 64 << 10;
const MAX_BODY: usize = 64 << 20;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens on the socket (or it does not exist).
    #[error("cannot connect to the API socket {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why the connection failed.
        #[source]
        source: io::Error,
    },
    /// The method or path cannot be sent (not a word, spaces or control
    /// characters); nothing was sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Reading or writing the connection failed.
    #[error("talking to the API socket: {0}")]
    Io(#[from] io::Error),
    /// The whole answer did not arrive within the client's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer is not valid HTTP, is truncated or exceeds the size
    /// limits.
    #[error("malformed response from the API: {0}")]
    BadResponse(String),
}

/// An HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The body (JSON from a lazarus server), possibly empty.
    pub body: Vec<u8>,
}

impl ApiResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The server's `fault_message`, or the raw body when it has none.
    pub fn fault_message(&self) -> String {
        serde_json::from_slice::<crate::types::ErrorBody>(&self.body)
            .map(|e| e.fault_message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).trim().to_string())
    }
}

/// A client of one API socket.
#[derive(Clone, Debug)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
}

impl Client {
    /// Waits up to two minutes for an answer (a dump of a large guest
    /// takes a while).
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            timeout: Duration::from_secs(120),
        }
    }

    /// Replaces the two-minute wait for a whole answer.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends one request and returns the answer, whatever its status.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<ApiResponse, ClientError> {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ClientError::InvalidRequest(format!(
                "method {method:?} is not a word"
            )));
        }
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(ClientError::InvalidRequest(format!(
                "path {path:?} must start with / and contain no spaces or control characters"
            )));
        }
        let mut stream =
            UnixStream::connect(&self.path).map_err(|source| ClientError::Connect {
                path: self.path.clone(),
                source,
            })?;
        let deadline = Instant::now() + self.timeout;
        stream.set_write_timeout(Some(self.timeout))?;
        let body = body.unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
             Connection: close\r\n"
        );
        if !body.is_empty() || matches!(method, "PUT" | "PATCH" | "POST") {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        // A server that answers early (e.g. 413) may stop reading: its
        // answer still counts.
        let write_error = stream.write_all(&bytes).err();
        match read_response(&mut stream, deadline, self.timeout) {
            Ok(r) => Ok(r),
            Err(e) => Err(write_error.map_or(e, ClientError::Io)),
        }
    }
}

fn read_response(
    stream: &mut UnixStream,
    deadline: Instant,
    timeout: Duration,
) -> Result<ApiResponse, ClientError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp.code.unwrap_or(0);
                if (100..200).contains(&status) {
                    // 100 Continue: the real answer follows.
                    buf.drain(..len);
                    continue;
                }
                let mut length: Option<usize> = None;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok());
                        if length.is_none() {
                            return Err(ClientError::BadResponse("invalid Content-Length".into()));
                        }
                    }
                }
                let mut body = buf.split_off(len);
                if length.is_some_and(|l| l > MAX_BODY) {
                    return Err(ClientError::BadResponse("response body too large".into()));
                }
                loop {
                    if let Some(l) = length
                        && body.len() >= l
                    {
                        body.truncate(l);
                        break;
                    }
                    let n = read_some(stream, &mut chunk, deadline, timeout)?;
                    if n == 0 {
                        if length.is_some() {
                            return Err(ClientError::BadResponse("truncated body".into()));
                        }
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                    if body.len() > MAX_BODY {
                        return Err(ClientError::BadResponse("response body too large".into()));
                    }
                }
                return Ok(ApiResponse { status, body });
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(ClientError::BadResponse(e.to_string())),
        }
        if buf.len() > MAX_HEAD {
            return Err(ClientError::BadResponse("response head too large".into()));
        }
        let n = read_some(stream, &mut chunk, deadline, timeout)?;
        if n == 0 {
            return Err(ClientError::BadResponse(if buf.is_empty() {
                "the server closed the connection without answering".into()
            } else {
                "the server closed the connection mid-answer".into()
            }));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn read_some(
    stream: &mut UnixStream,
    buf: &mut [u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<usize, ClientError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout(timeout));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_requests_and_missing_sockets() {
        let c = Client::new("/nonexistent/lazarus.sock");
        assert!(matches!(
            c.request("GET", "/", None),
            Err(ClientError::Connect { .. })
        ));
        assert!(matches!(
            c.request("GET", "/a b", None),
            Err(ClientError::InvalidRequest(_))
        ));
        assert!(matches!(
            c.request("G\r\nX", "/", None),
            Err(ClientError::InvalidRequest(_))
        ));
    }

    #[test]
    fn error_bodies() {
        let r = ApiResponse {
            status: 404,
            body: br#"{"fault_message":"no such resource"}"#.to_vec(),
        };
        assert_eq!(r.fault_message(), "no such resource");
        assert!(!r.is_success());
    }
}
