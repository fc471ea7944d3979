//! Crash signatures: one bug, one bucket.
//!
//! Version 2 (this one) works as Mozilla's Socorro does. Frames that
//! report or propagate a crash rather than cause it (the kernel's crash
//! path, panic and assert helpers, exception entry) are left out wherever
//! they are (`siglists/irrelevant.txt`). The signature is then the first
//! frame left, plus its caller when that frame is a helper that faults
//! on behalf of its caller (`siglists/prefix.txt`: memcpy, the extension
//! API's entry points, lock acquisition, ...), and so on, up to
//! [`SIGNATURE_FRAMES`] frames. The callers further down (how the kernel
//! got there: a system call, a timer, another extension entry point) are
//! not part of it, so two paths to the same bug make one bucket. The
//! signature is the first 16 hex digits of SHA-256 over the crash kind and
//! those frames' `module!function` (no addresses, offsets or pids, which
//! change between boots).
//!
//! Version 1 hashed the top [`SIGNATURE_FRAMES`] frames after skipping the
//! leading reporting frames only; `lazarus crashes regroup` recomputes
//! the buckets of rows it made from their stored reports.

use sha2::{Digest, Sha256};

use crate::report::{CrashKind, Frame, Report};

/// The version of the algorithm; stored with every crash.
pub const SIGNATURE_VERSION: u32 = 2;

/// Most frames that make up a signature.
pub const SIGNATURE_FRAMES: usize = 5;

const IRRELEVANT: &str = include_str!("../siglists/irrelevant.txt");
const PREFIX: &str = include_str!("../siglists/prefix.txt");

/// The patterns of a list: one a line, `#` comments and blank lines left out.
fn patterns(list: &'static str) -> impl Iterator<Item = &'static str> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn matches(list: &'static str, f: &Frame) -> bool {
    f.function
        .as_deref()
        .is_some_and(|name| patterns(list).any(|p| name.starts_with(p)))
}

/// A frame that reports or propagates a crash (the irrelevant list).
pub(crate) fn is_irrelevant(f: &Frame) -> bool {
    matches(IRRELEVANT, f)
}

fn is_prefix(f: &Frame) -> bool {
    matches(PREFIX, f)
}

/// The frames that identify the bug, from the top: the reporting
/// machinery on top is skipped, and for a lockup (sampled anywhere in its
/// loop) the frames start at the offending extension's code when it is on
/// the stack. Also what the report's title names.
pub(crate) fn significant<'a>(
    kind: CrashKind,
    frames: &'a [Frame],
    ext: Option<&str>,
) -> &'a [Frame] {
    let start = frames.iter().position(|f| !is_irrelevant(f)).unwrap_or(0);
    let frames = &frames[start..];
    if kind.is_lockup()
        && let Some(ext) = ext
        && let Some(i) = frames.iter().position(|f| f.module.as_deref() == Some(ext))
    {
        return &frames[i..];
    }
    frames
}

/// The `module!function` parts hashed into the signature.
fn parts(kind: CrashKind, frames: &[Frame], ext: Option<&str>) -> Vec<String> {
    let top = significant(kind, frames, ext);
    let mut relevant = top.iter().filter(|f| !is_irrelevant(f)).peekable();
    if relevant.peek().is_none() {
        // Nothing but machinery (a crash in the crash path itself): the
        // machinery is the bug.
        return top
            .iter()
            .take(SIGNATURE_FRAMES)
            .map(Frame::location)
            .collect();
    }
    let mut out = Vec::new();
    for f in relevant {
        out.push(f.location());
        if !is_prefix(f) || out.len() == SIGNATURE_FRAMES {
            break;
        }
    }
    out
}

/// The signature of a crash: for an extension failure (the extension is
/// not on the stack: the kernel caught it after it returned, or a client
/// reported it) the extension and what it did (the last part of the
/// kernel's message), else the frames.
pub(crate) fn compute(
    kind: CrashKind,
    frames: &[Frame],
    ext: Option<&str>,
    failure_message: Option<&str>,
) -> String {
    match (ext, failure_message) {
        (Some(ext), Some(msg)) if kind == CrashKind::ExtensionFailure => {
            let why = msg.rsplit(": ").next().unwrap_or_default();
            hash(kind, [ext, why])
        }
        _ => {
            let parts = parts(kind, frames, ext);
            hash(kind, parts.iter().map(String::as_str))
        }
    }
}

/// The signature of a stored report, recomputed with this version of the
/// algorithm (`lazarus crashes regroup`).
pub fn signature_of_report(report: &Report) -> String {
    compute(
        report.kind,
        &report.backtrace,
        report.extension.as_ref().map(|e| e.name.as_str()),
        Some(report.message.as_str()),
    )
}

fn hash<'a>(kind: CrashKind, parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_str().as_bytes());
    for p in parts {
        h.update(b"\n");
        h.update(p.as_bytes());
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_are_disjoint() {
        let irrelevant: Vec<&str> = patterns(IRRELEVANT).collect();
        let prefix: Vec<&str> = patterns(PREFIX).collect();
        assert!(irrelevant.contains(&"core::panicking::"));
        assert!(prefix.contains(&"memcpy"));
        assert!(irrelevant.iter().all(|p| !p.contains(' ')));
        assert!(prefix.iter().all(|p| !p.contains(' ')));
        // The panic entry is irrelevant although the API's other entry
        // points are prefixes: the irrelevant list is applied first.
        let f = |name: &str| Frame {
            index: 0,
            address: 0,
            module: Some("kernel".into()),
            module_offset: None,
            function: Some(name.into()),
            offset: None,
            file: None,
            line: None,
            inlined: Vec::new(),
        };
        assert!(is_irrelevant(&f("lazarus_kernel::ext::api::api_panic")));
        assert!(is_prefix(&f("lazarus_kernel::ext::api::api_list_add")));
        assert!(!is_irrelevant(&f("lazarus_kernel::ext::api::api_list_add")));
    }
}
