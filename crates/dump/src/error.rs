//! Everything that can go wrong writing or reading a dump.

use std::path::PathBuf;

/// A dump could not be written, or a file is not a readable lazarus dump.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not an ELF file (bad magic)")]
    NotElf,
    #[error("not a 64-bit little-endian ELF file")]
    WrongClass,
    #[error("not an ELF core file (e_type {0})")]
    NotCore(u16),
    #[error("not an x86-64 core file (e_machine {0})")]
    WrongMachine(u16),
    #[error("truncated ELF headers: need {need} bytes, the file has {len}")]
    TruncatedHeaders { need: u64, len: u64 },
    #[error("truncated segment {index}: it ends at byte {end}, the file has {len}")]
    TruncatedSegment { index: usize, end: u64, len: u64 },
    #[error("malformed ELF headers: {0}")]
    Malformed(String),
    #[error("malformed {what} note: {reason}")]
    BadNote { what: &'static str, reason: String },
    #[error("no LAZARUS crash note: not a lazarus dump")]
    MissingNote,
    #[error("invalid LAZARUS crash note: {0}")]
    InvalidNote(#[source] serde_json::Error),
    #[error("unsupported dump format version {found} (this lazarus reads version {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("the dump has {count} segments; at most {max} are supported")]
    TooManySegments { count: usize, max: usize },
    #[error("cannot encode the crash note: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("cannot build the ELF headers: {0}")]
    Build(String),
    #[error("address {addr:#x} is not in the dump")]
    Unmapped { addr: u64 },
}

impl DumpError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DumpError + '_ {
        move |source| DumpError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
