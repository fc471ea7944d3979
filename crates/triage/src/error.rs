//! What can go wrong while saving a crash.

use std::path::PathBuf;

/// Why a crash could not be saved (the guest is unaffected).
#[derive(Debug, thiserror::Error)]
pub enum TriageError {
    /// The data directory cannot be created or used.
    #[error("data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: lazarus_crashdb::DbError,
    },
    /// Guest memory could not be read for the dump.
    #[error("guest memory: {0}")]
    GuestMemory(String),
    /// Writing the dump failed.
    #[error("writing {}: {source}", path.display())]
    WriteDump {
        /// The dump.
        path: PathBuf,
        /// Why.
        #[source]
        source: lazarus_dump::DumpError,
    },
    /// The dump just written could not be read back.
    #[error("reading back {}: {source}", path.display())]
    ReadDump {
        /// The dump.
        path: PathBuf,
        /// Why.
        #[source]
        source: lazarus_dump::DumpError,
    },
    /// Diagnosis failed.
    #[error("diagnosing the dump: {0}")]
    Diagnose(#[from] lazarus_diagnose::DiagnoseError),
    /// The report could not be encoded.
    #[error("encoding the report: {0}")]
    Json(#[from] serde_json::Error),
    /// The report could not be written.
    #[error("writing {}: {source}", path.display())]
    WriteReport {
        /// The report file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The crash database refused the entry.
    #[error("recording the crash in the database: {0}")]
    Database(#[source] lazarus_crashdb::DbError),
}
