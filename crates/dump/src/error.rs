//! Everything that can go wrong writing or reading a dump.

use std::path::PathBuf;

/// A dump could not be written, or a file is not a readable lazarus dump.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// Reading, writing or renaming a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the ELF magic.
    #[error("not an ELF file (bad magic)")]
    NotElf,
    /// An ELF file, but not ELF64 little-endian.
    #[error("not a 64-bit little-endian ELF file")]
    WrongClass,
    /// An ELF file, but not a core file (its `e_type`).
    #[error("not an ELF core file (e_type {0})")]
    NotCore(u16),
    /// A core file of another architecture (its `e_machine`).
    #[error("not an x86-64 core file (e_machine {0})")]
    WrongMachine(u16),
    /// The file ends inside the ELF or program headers.
    #[error("truncated ELF headers: need {need} bytes, the file has {len}")]
    TruncatedHeaders {
        /// Bytes the headers need.
        need: u64,
        /// Bytes in the file.
        len: u64,
    },
    /// A segment's data runs past the end of the file.
    #[error("truncated segment {index}: it ends at byte {end}, the file has {len}")]
    TruncatedSegment {
        /// Index of the program header.
        index: usize,
        /// File offset where the segment's data ends.
        end: u64,
        /// Bytes in the file.
        len: u64,
    },
    /// The headers are inconsistent (bad sizes, overflowing offsets).
    #[error("malformed ELF headers: {0}")]
    Malformed(String),
    /// A note (the note segment, a `NT_PRSTATUS` or the `LAZARUS` note)
    /// cannot be parsed.
    #[error("malformed {what} note: {reason}")]
    BadNote {
        /// Which note.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The core has no `LAZARUS` note: it was not written by lazarus.
    #[error("no LAZARUS crash note: not a lazarus dump")]
    MissingNote,
    /// The `LAZARUS` note is not a valid [`crate::CrashNote`] in JSON.
    #[error("invalid LAZARUS crash note: {0}")]
    InvalidNote(#[source] serde_json::Error),
    /// The note's `format_version` is not [`crate::FORMAT_VERSION`].
    #[error("unsupported dump format version {found} (this lazarus reads version {supported})")]
    UnsupportedVersion {
        /// The dump's version.
        found: u32,
        /// The version this crate reads.
        supported: u32,
    },
    /// More segments than a dump can hold. Nothing returns it at present:
    /// the writer drops segments beyond [`crate::MAX_SEGMENTS`] instead.
    #[error("the dump has {count} segments; at most {max} are supported")]
    TooManySegments {
        /// Program headers in the file.
        count: usize,
        /// The limit, [`crate::MAX_SEGMENTS`].
        max: usize,
    },
    /// Writing: the crash note cannot be serialised.
    #[error("cannot encode the crash note: {0}")]
    Encode(#[source] serde_json::Error),
    /// Writing: the ELF headers cannot be built (a note too large).
    #[error("cannot build the ELF headers: {0}")]
    Build(String),
    /// A read at an address no segment of the dump covers.
    #[error("address {addr:#x} is not in the dump")]
    Unmapped {
        /// The address (virtual or physical, as asked).
        addr: u64,
    },
}

impl DumpError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DumpError + '_ {
        move |source| DumpError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
