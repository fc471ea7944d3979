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
//! `lazarus crashes` reads; the database runs in WAL mode with a busy
//! timeout so the two coexist.

mod datadir;
mod db;
mod error;

pub use datadir::{DATA_DIR_ENV, DataDir};
pub use db::{
    Bucket, BucketDetail, CrashDb, CrashSummary, NewCrash, SCHEMA_VERSION, record_report,
};
pub use error::DbError;
