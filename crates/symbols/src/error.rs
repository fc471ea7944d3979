//! Errors of the symbol store and the symbolizer.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a readable ELF file: {0}")]
    NotElf(String),
    #[error("the ELF file has no GNU build-id note")]
    NoBuildId,
    #[error("malformed initramfs: {0}")]
    Initramfs(#[source] std::io::Error),
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
