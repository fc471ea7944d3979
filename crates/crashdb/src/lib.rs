//! The lazarus crash database.
//!
//! Every crash the hypervisor detects leaves a diagnosis report and usually
//! an ELF core dump. A vendor's support team does not want a pile of files:
//! it wants to know which crashes are the *same* crash, how often each one
//! happens, since when, and where an example dump is. This crate indexes
//! every report by its crash signature in a SQLite database under the
//! project's data directory, and answers those questions.
//!
//! The hypervisor records from a background thread ([`record_report`]) while
//! `lazarus crashes` reads; the SQLite database runs in WAL mode with a
//! busy timeout so the two coexist. Hosts that share crashes record them in
//! one PostgreSQL database instead ([`DbLocation::Postgres`]); [`CrashDb`]
//! is the same type, with the same queries, over either backend.
//!
//! The data directory's dumps are kept within a budget ([`prune`]).

mod backend;
mod datadir;
mod db;
mod error;
mod location;
mod migrations;
pub mod prune;

pub use datadir::{DATA_DIR_ENV, DataDir, Session};
pub use db::{
    Bucket, BucketDetail, CrashDb, CrashSummary, DumpRow, Moved, NewCrash, RegroupReport,
    SCHEMA_VERSION, Unreadable, record_and_prune, record_report,
};
pub use error::DbError;
pub use location::{DbLocation, PgUrl};
pub use prune::{PrunePolicy, PruneReport, prune_dumps};
