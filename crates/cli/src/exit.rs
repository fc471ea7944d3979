//! Exit codes, and turning errors into one clear line.

use lazarus_vmm::ErrorKind;

pub const INTERNAL: u8 = 1;
pub const CRASHED: u8 = 3;
pub const BAD_INPUT: u8 = 4;
pub const KVM_UNAVAILABLE: u8 = 5;
/// `lazarus ctl`: no answer from the API socket (nobody listens, or the
/// connection failed or timed out).
pub const API_UNREACHABLE: u8 = 6;
/// `lazarus ctl`: the server refused the request (4xx).
pub const API_REJECTED: u8 = 7;
/// `lazarus ctl`: the server failed (5xx).
pub const API_FAILED: u8 = 8;
/// The disk image is in use by another VM (its lock is held).
pub const DISK_LOCKED: u8 = 9;
/// The shared crash database (`--crash-db postgres://...`) cannot be
/// reached: connection refused or timed out, authentication failed, no
/// such database, or the connection broke.
pub const DB_UNREACHABLE: u8 = 10;

/// An error that already knows its exit code and message.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

pub fn failure(code: u8, message: impl Into<String>) -> anyhow::Error {
    Failure {
        code,
        message: message.into(),
    }
    .into()
}

/// The exit code for an error.
pub fn code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code;
        }
        if let Some(v) = cause.downcast_ref::<lazarus_vmm::Error>() {
            return vmm_code(v);
        }
    }
    INTERNAL
}

pub fn vmm_code(e: &lazarus_vmm::Error) -> u8 {
    // The VMM cannot tell whose fault a handler's error is; the
    // resurrector's own error type can (a kernel ELF it cannot read).
    if let lazarus_vmm::Error::CrashHandler(inner) = e
        && inner
            .downcast_ref::<lazarus_resurrect::SetupError>()
            .is_some_and(|s| s.is_bad_input())
    {
        return BAD_INPUT;
    }
    match e.kind() {
        ErrorKind::KvmUnavailable => KVM_UNAVAILABLE,
        ErrorKind::BadInput => BAD_INPUT,
        ErrorKind::Internal => INTERNAL,
    }
}

/// The error and its causes on one line.
pub fn message(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        // thiserror messages often embed their source already.
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}
