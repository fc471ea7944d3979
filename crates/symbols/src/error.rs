//! Errors of the symbol store and the symbolizer.

use std::path::PathBuf;

/// Why an ELF file could not be stored, found or symbolized.
#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    /// Reading or writing a file (the store or an ELF file) failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes do not parse as an object file (the parser's message).
    #[error("not a readable ELF file: {0}")]
    NotElf(String),
    /// The ELF has no (well-formed) GNU build id, so it cannot be stored
    /// or matched to a dump.
    #[error("the ELF file has no GNU build-id note")]
    NoBuildId,
    /// The initramfs is not a valid cpio (newc) archive.
    #[error("malformed initramfs: {0}")]
    Initramfs(#[source] std::io::Error),
    /// The ELF has debug info that cannot be loaded.
    #[error("unreadable DWARF debug info: {0}")]
    Dwarf(String),
}

impl SymbolError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SymbolError + '_ {
        move |source| SymbolError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
