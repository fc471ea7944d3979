//! The one error type of the crash database.

use std::path::PathBuf;

/// Why a crash-database operation failed.
///
/// Callers branch on the variant: the CLI turns "not found" and "not our
/// database" into bad-input exit codes and everything else into internal
/// errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// None of `--data-dir`, `LAZARUS_DATA_DIR`, `XDG_DATA_HOME` or `HOME`
    /// gave a usable directory.
    #[error(
        "cannot find the lazarus data directory: set LAZARUS_DATA_DIR or HOME, or pass --data-dir"
    )]
    NoDataDir,

    /// The data directory (or one of its subdirectories) is something
    /// else, e.g. a file: said plainly rather than as "File exists".
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),

    /// A file-system operation on the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The file is not a SQLite database, or is a damaged one. Never
    /// "repaired" by recreating it: it may hold someone's data.
    #[error("{path} is not a lazarus crash database (corrupt or not SQLite): {source}")]
    NotADatabase {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },

    /// A healthy SQLite database that belongs to some other program.
    #[error("{path} is a SQLite database of another program, not a lazarus crash database")]
    Foreign {
        /// The database file.
        path: PathBuf,
    },

    /// Written by a newer lazarus; reading it could misinterpret it.
    #[error(
        "{path} has crash-database schema version {found}, newer than this lazarus supports ({supported})"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its schema version (`PRAGMA user_version`).
        found: i64,
        /// The newest this build reads, [`crate::SCHEMA_VERSION`].
        supported: i64,
    },

    /// Any other SQLite failure (locked past the busy timeout, disk full, ...).
    #[error("crash database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },

    /// No bucket's signature starts with this.
    #[error("no crash with signature '{0}'")]
    UnknownSignature(String),

    /// More than one signature starts with this prefix.
    #[error("signature prefix '{prefix}' is ambiguous: it matches {}", candidates.join(", "))]
    AmbiguousSignature {
        /// The prefix as given (trimmed).
        prefix: String,
        /// Every signature it matches, sorted.
        candidates: Vec<String>,
    },

    /// An empty prefix would match everything.
    #[error("empty crash signature")]
    EmptySignature,

    /// No crash has this id.
    #[error("no crash with id {0}")]
    UnknownCrash(i64),

    /// Crash times are stored as SQLite integers (i64 milliseconds).
    #[error("crash time {0} ms is out of range")]
    TimeOutOfRange(u64),

    /// `--crash-db` is not a PostgreSQL URL or a file path. The message
    /// never quotes the URL: it may hold a password.
    #[error("bad crash-database location: {reason}")]
    BadUrl {
        /// What is wrong with it.
        reason: String,
    },

    /// No usable connection to the PostgreSQL server: refused, timed out,
    /// authentication failed, the database does not exist, or the
    /// connection broke.
    #[error("cannot reach the crash database {database}: {reason}")]
    Unreachable {
        /// The URL, password hidden.
        database: String,
        /// The client's or server's reason.
        reason: String,
    },

    /// Any other PostgreSQL failure.
    #[error("crash database {database}: {reason}")]
    Postgres {
        /// The URL, password hidden.
        database: String,
        /// The server's or client's error.
        reason: String,
    },

    /// A PostgreSQL database that holds tables of the same names but is
    /// not a lazarus crash database.
    #[error("{database} is not a lazarus crash database (its tables belong to another program)")]
    ForeignPostgres {
        /// The URL, password hidden.
        database: String,
    },

    /// A PostgreSQL crash database written by a newer lazarus.
    #[error(
        "{database} has crash-database schema version {found}, newer than this lazarus supports ({supported})"
    )]
    NewerSchemaPostgres {
        /// The URL, password hidden.
        database: String,
        /// Its schema version (`lazarus_schema.version`).
        found: i64,
        /// The newest this build reads, [`crate::SCHEMA_VERSION`].
        supported: i64,
    },
}

impl DbError {
    /// True when the error is about what the user asked for or pointed at
    /// (unknown signature, not a crash database), not about this program.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            DbError::NotADatabase { .. }
                | DbError::NotADirectory(_)
                | DbError::Foreign { .. }
                | DbError::NewerSchema { .. }
                | DbError::UnknownSignature(_)
                | DbError::AmbiguousSignature { .. }
                | DbError::EmptySignature
                | DbError::UnknownCrash(_)
                | DbError::BadUrl { .. }
                | DbError::ForeignPostgres { .. }
                | DbError::NewerSchemaPostgres { .. }
        )
    }

    /// True when the shared database cannot be reached at all (the CLI's
    /// own exit code, so scripts can retry).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DbError::Unreachable { .. })
    }
}
