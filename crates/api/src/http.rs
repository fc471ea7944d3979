//! The HTTP/1.1 subset the API speaks: one request per connection, bodies
//! by `Content-Length` only, every size and wait bounded. Parsing is
//! httparse's; this module only enforces limits and builds responses.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// Most headers a request may carry.
const MAX_HEADERS: usize = 32;

/// Limits on one request.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Request line and headers together.
    pub max_head_bytes: usize,
    /// The body (a larger `Content-Length` is answered 413).
    pub max_body_bytes: usize,
    /// The whole request must arrive within this time.
    pub read_timeout: Duration,
    /// Longest a write of the answer may block.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: 8 << 10,
            max_body_bytes: 64 << 10,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without any query string.
    pub path: String,
    /// The `Accept` header (several are joined with commas), if any.
    pub accept: Option<String>,
    pub body: Vec<u8>,
}

/// A response about to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Methods for a 405's `Allow` header.
    pub allow: Option<&'static str>,
    /// The `Content-Type` of the body.
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// The `Content-Type` of every JSON answer.
pub const JSON: &str = "application/json";

impl Response {
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            allow: None,
            content_type: JSON,
            body,
        }
    }

    /// A 200 with a body of another type (the metrics' text formats).
    pub fn text(content_type: &'static str, body: String) -> Self {
        Self {
            status: 200,
            allow: None,
            content_type,
            body: body.into_bytes(),
        }
    }

    /// `{"fault_message": ...}` with a 4xx or 5xx status.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        let body = crate::types::ErrorBody {
            fault_message: message.into(),
        };
        // Serializing a struct of one String cannot fail.
        let body = serde_json::to_vec(&body).unwrap_or_default();
        Self::json(status, body)
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nServer: lazarus\r\nContent-Type: {}\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if let Some(allow) = self.allow {
            head.push_str(&format!("Allow: {allow}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// The reason phrase of the statuses the API uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Why a request could not be read; each maps to an error response,
/// except `Closed` (nothing to answer).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the client closed the connection without sending a request")]
    Closed,
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    #[error("request line and headers exceed {0} bytes")]
    HeadTooLarge(usize),
    #[error("request body of {got} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge { got: u64, max: usize },
    #[error("the request did not arrive within {0:?}")]
    Timeout(Duration),
    #[error("reading the request failed: {0}")]
    Io(String),
}

impl RequestError {
    /// The error response, if the client is still there to read one.
    pub fn response(&self) -> Option<Response> {
        let status = match self {
            RequestError::Closed | RequestError::Io(_) => return None,
            RequestError::Malformed(_) => 400,
            RequestError::HeadTooLarge(_) => 431,
            RequestError::BodyTooLarge { .. } => 413,
            RequestError::Timeout(_) => 408,
        };
        Some(Response::error(status, self.to_string()))
    }
}

/// Reads one request within `limits`. Sends `100 Continue` when the client
/// asks for it and the body is acceptable.
pub fn read_request<S: Read + Write>(
    stream: &mut S,
    limits: &Limits,
    set_timeout: &mut dyn FnMut(&mut S, Duration) -> io::Result<()>,
) -> Result<Request, RequestError> {
    let deadline = Instant::now() + limits.read_timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head = loop {
        match parse_head(&buf, limits)? {
            Some(head) => break head,
            None => {
                if buf.len() >= limits.max_head_bytes {
                    return Err(RequestError::HeadTooLarge(limits.max_head_bytes));
                }
            }
        }
        // Never read far past the head limit.
        let room =
            (limits.max_head_bytes + 1 - buf.len().min(limits.max_head_bytes)).min(chunk.len());
        let n = read_some(stream, &mut chunk[..room], deadline, limits, set_timeout)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                RequestError::Closed
            } else {
                RequestError::Malformed("the connection closed in the middle of the request".into())
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut body: Vec<u8> = buf.get(head.len..).unwrap_or_default().to_vec();
    let want = head.content_length;
    if head.expect_continue && body.len() < want {
        // Best effort: a client that did not wait for it is unaffected.
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    body.truncate(want);
    while body.len() < want {
        let room = (want - body.len()).min(chunk.len());
        let n = read_some(stream, &mut chunk[..room], deadline, limits, set_timeout)?;
        if n == 0 {
            return Err(RequestError::Malformed(format!(
                "the body ended after {} of {want} bytes (Content-Length)",
                body.len()
            )));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Request {
        method: head.method,
        path: head.path,
        accept: head.accept,
        body,
    })
}

fn read_some<S: Read>(
    stream: &mut S,
    buf: &mut [u8],
    deadline: Instant,
    limits: &Limits,
    set_timeout: &mut dyn FnMut(&mut S, Duration) -> io::Result<()>,
) -> Result<usize, RequestError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RequestError::Timeout(limits.read_timeout));
        }
        set_timeout(stream, left).map_err(|e| RequestError::Io(e.to_string()))?;
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(RequestError::Io(e.to_string())),
        }
    }
}

/// The request line and headers, once complete.
struct Head {
    len: usize,
    method: String,
    path: String,
    content_length: usize,
    expect_continue: bool,
    accept: Option<String>,
}

fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(RequestError::Malformed(format!(
                "more than {MAX_HEADERS} headers"
            )));
        }
        Err(e) => return Err(RequestError::Malformed(e.to_string())),
    };
    if len > limits.max_head_bytes {
        return Err(RequestError::HeadTooLarge(limits.max_head_bytes));
    }
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    if !target.starts_with('/') {
        return Err(RequestError::Malformed(format!(
            "request target {target:?} is not an absolute path"
        )));
    }
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_string();
    let mut content_length: Option<u64> = None;
    let mut expect_continue = false;
    let mut accept: Option<String> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| RequestError::Malformed("invalid Content-Length".into()))?;
            if content_length.is_some_and(|c| c != v) {
                return Err(RequestError::Malformed(
                    "conflicting Content-Length headers".into(),
                ));
            }
            content_length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(RequestError::Malformed(
                "Transfer-Encoding is not supported; send the body with Content-Length".into(),
            ));
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        } else if h.name.eq_ignore_ascii_case("accept") {
            // Not UTF-8: ignored, as an absent header (JSON is answered).
            if let Ok(v) = std::str::from_utf8(h.value) {
                match &mut accept {
                    Some(a) => {
                        a.push(',');
                        a.push_str(v);
                    }
                    None => accept = Some(v.to_string()),
                }
            }
        }
    }
    let content_length = content_length.unwrap_or(0);
    let max = limits.max_body_bytes;
    let content_length = usize::try_from(content_length)
        .ok()
        .filter(|&c| c <= max)
        .ok_or(RequestError::BodyTooLarge {
            got: content_length,
            max,
        })?;
    Ok(Some(Head {
        len,
        method,
        path,
        content_length,
        expect_continue,
        accept,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that yields `input` in chunks and records what is written.
    struct Mock {
        input: Vec<u8>,
        pos: usize,
        chunk: usize,
        written: Vec<u8>,
    }

    impl Read for Mock {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.chunk).min(self.input.len() - self.pos);
            buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl Write for Mock {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn parse(input: &[u8], chunk: usize) -> (Result<Request, RequestError>, Vec<u8>) {
        let mut m = Mock {
            input: input.to_vec(),
            pos: 0,
            chunk,
            written: Vec::new(),
        };
        let limits = Limits {
            max_head_bytes: 512,
            max_body_bytes: 64,
            ..Limits::default()
        };
        let r = read_request(&mut m, &limits, &mut |_, _| Ok(()));
        (r, m.written)
    }

    #[test]
    fn parses_requests_in_any_chunking() {
        let raw = b"PATCH /vm?x=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 18\r\n\r\n{\"state\":\"Paused\"}";
        for chunk in [1, 3, 7, 4096] {
            let (r, _) = parse(raw, chunk);
            let r = r.expect("parses");
            assert_eq!(r.method, "PATCH");
            assert_eq!(r.path, "/vm");
            assert_eq!(r.body, b"{\"state\":\"Paused\"}");
        }
        let (r, _) = parse(b"GET / HTTP/1.0\r\n\r\n", 4096);
        assert_eq!(r.expect("1.0").body, b"");
    }

    #[test]
    fn rejects_what_it_must() {
        let cases: &[(&[u8], u16)] = &[
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
                400,
            ),
            (b"GET /vm HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", 413),
            (b"PUT /inject HTTP/1.1\r\nContent-Length: 65\r\n\r\n", 413),
            (b"PUT /inject HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                b"PUT /inject HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                400,
            ),
            (
                b"PUT /inject HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                400,
            ),
            (b"GET vm HTTP/1.1\r\n\r\n", 400),
            (b"GET /vm HTTP/2.0\r\n\r\n", 400),
            (
                b"PUT /inject HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
                400,
            ),
            (b"GET /vm HTTP/1.1\r\nHost: x\r\n", 400),
        ];
        for (raw, status) in cases {
            let (r, _) = parse(raw, 4096);
            let err = r.expect_err(&String::from_utf8_lossy(raw));
            assert_eq!(
                err.response().map(|r| r.status),
                Some(*status),
                "{err} for {:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let mut big = b"GET /vm HTTP/1.1\r\nX-Pad: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 1000));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&big, 4096).0, Err(RequestError::HeadTooLarge(512)));
        let mut many = b"GET /vm HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&many, 4096).0,
            Err(RequestError::HeadTooLarge(_) | RequestError::Malformed(_))
        ));
        assert_eq!(parse(b"", 4096).0, Err(RequestError::Closed));
        assert_eq!(RequestError::Closed.response(), None);
    }

    #[test]
    fn keeps_the_accept_header() {
        let (r, _) = parse(
            b"GET /metrics HTTP/1.1\r\nAccept: text/plain;q=0.5\r\naccept: */*;q=0.1\r\n\r\n",
            4096,
        );
        let r = r.expect("parses");
        assert_eq!(r.accept.as_deref(), Some("text/plain;q=0.5,*/*;q=0.1"));
        let (r, _) = parse(b"GET /metrics HTTP/1.1\r\nAccept: \xff\xfe\r\n\r\n", 4096);
        assert_eq!(r.expect("parses").accept, None);
        let (r, _) = parse(b"GET /metrics HTTP/1.1\r\n\r\n", 4096);
        assert_eq!(r.expect("parses").accept, None);
    }

    #[test]
    fn answers_expect_continue() {
        let raw = b"PUT /dump HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}";
        // The head arrives alone (63 bytes), the body after the 100.
        let (r, written) = parse(raw, 63);
        assert_eq!(r.expect("parses").body, b"{}");
        assert_eq!(written, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn responses_are_well_formed() {
        let mut r = Response::error(405, "no");
        r.allow = Some("GET");
        let text = String::from_utf8(r.to_bytes()).expect("utf-8");
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("Allow: GET\r\n"), "{text}");
        assert!(text.contains("Content-Length: 22\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\n{\"fault_message\":\"no\"}"),
            "{text}"
        );
    }
}
