//! The SQLite database: schema, recording, and bucketing by signature.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use crate::{DataDir, DbError};

/// The schema this build writes; `PRAGMA user_version` holds it.
pub const SCHEMA_VERSION: i64 = 2;

/// `PRAGMA application_id` ("LZCD"), so a lazarus database is told apart
/// from any other program's SQLite file and never mistaken for one.
const APPLICATION_ID: i64 = 0x4c5a_4344;

/// How long a reader or writer waits for the other's lock before failing:
/// the hypervisor records from a background thread while the CLI reads.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA_V1: &str = "
CREATE TABLE crashes (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    signature    TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    title        TEXT    NOT NULL,
    time_unix_ms INTEGER NOT NULL,
    boot_id      TEXT    NOT NULL,
    extension    TEXT,
    process      TEXT,
    action       TEXT    NOT NULL,
    dump_path    BLOB,
    report_path  BLOB,
    report_json  TEXT    NOT NULL
);
CREATE INDEX crashes_by_signature ON crashes (signature, time_unix_ms);
";

/// Version 2: why a resurrection fell back to a reboot (the resurrector's
/// `Fallback::code`), so fallbacks can be counted and matched by reason.
const SCHEMA_V2: &str = "ALTER TABLE crashes ADD COLUMN fallback TEXT;";

/// One crash as the hypervisor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCrash {
    /// The crash signature from the diagnosis; equal signatures are the
    /// same bug.
    pub signature: String,
    /// Crash kind, e.g. "page-fault", "panic", "hang".
    pub kind: String,
    /// One-line human summary.
    pub title: String,
    /// When it crashed, in milliseconds since the Unix epoch (at most
    /// `i64::MAX`: SQLite integers).
    pub time_unix_ms: u64,
    /// Which boot of the guest crashed, to tell repeated crashes in one
    /// run (resurrected) from crashes after reboots.
    pub boot_id: String,
    /// The kernel extension that was executing, if any.
    pub extension: Option<String>,
    /// The offending process, e.g. "pid 4 (crash)".
    pub process: Option<String>,
    /// What the hypervisor did: "halt" | "reboot" | "resurrect" | "fallback-reboot".
    pub action: String,
    /// For "fallback-reboot": why resurrection was not safe, as a stable
    /// code (`lazarus_resurrect::Fallback::code`, e.g. "refused").
    pub fallback: Option<String>,
    /// The ELF core dump, if one was written.
    pub dump_path: Option<PathBuf>,
    /// The full diagnosis report.
    pub report_json: String,
}

/// All crashes that share one signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// The crash signature shared by the bucket's crashes.
    pub signature: String,
    /// Kind of the most recent crash in the bucket.
    pub kind: String,
    /// Title of the most recent crash in the bucket.
    pub title: String,
    /// Crashes in the bucket.
    pub count: u64,
    /// The oldest crash, in milliseconds since the Unix epoch.
    pub first_seen_unix_ms: u64,
    /// The most recent crash, in milliseconds since the Unix epoch.
    pub last_seen_unix_ms: u64,
    /// The most recent dump of this bucket that still exists on disk, so
    /// support can open one right away even after old dumps were cleaned.
    pub example_dump: Option<PathBuf>,
    /// Every extension involved in the bucket's crashes, sorted.
    pub extensions: Vec<String>,
}

/// One crash inside a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrashSummary {
    /// Row id, unique in the database; [`CrashDb::crash`] takes it.
    pub id: i64,
    /// As in [`NewCrash`].
    pub time_unix_ms: u64,
    /// As in [`NewCrash`].
    pub boot_id: String,
    /// As in [`NewCrash`].
    pub kind: String,
    /// As in [`NewCrash`].
    pub title: String,
    /// As in [`NewCrash`].
    pub extension: Option<String>,
    /// As in [`NewCrash`].
    pub process: Option<String>,
    /// As in [`NewCrash`]: "halt", "reboot", "resurrect" or
    /// "fallback-reboot".
    pub action: String,
    /// Why resurrection fell back to a reboot, if it did.
    pub fallback: Option<String>,
    /// The ELF core dump, if one was written.
    pub dump_path: Option<PathBuf>,
    /// Whether `dump_path` still exists.
    pub dump_exists: bool,
    /// The diagnosis report's JSON file, if it was written to one.
    pub report_path: Option<PathBuf>,
}

/// A bucket and its crashes, most recent first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketDetail {
    /// The bucket.
    pub bucket: Bucket,
    /// Its crashes, most recent first.
    pub crashes: Vec<CrashSummary>,
}

/// An open crash database.
#[derive(Debug)]
pub struct CrashDb {
    conn: Connection,
    path: PathBuf,
}

impl CrashDb {
    /// Opens the database at `path`, creating it (or its schema) if it is
    /// new. A file that is not a lazarus crash database is an error and is
    /// left exactly as it was.
    pub fn open(path: impl AsRef<Path>) -> Result<CrashDb, DbError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path).map_err(|e| sql_err(&path, e))?;
        let db = CrashDb { conn, path };
        db.conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| db.err(e))?;
        // Switching a new file to WAL needs an exclusive lock, and SQLite
        // answers "busy" at once (no busy handler) when two first opens
        // race for it; retry for as long as any other lock would wait.
        let start = std::time::Instant::now();
        loop {
            match db.check_or_create() {
                Err(DbError::Sqlite { source, .. })
                    if source.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                        && start.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other.map(|()| db),
            }
        }
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records one crash and returns its id.
    pub fn record(&self, new: &NewCrash) -> Result<i64, DbError> {
        self.record_with_report(new, None)
    }

    /// Records one crash whose report was also written to `report_path`.
    pub fn record_with_report(
        &self,
        new: &NewCrash,
        report_path: Option<&Path>,
    ) -> Result<i64, DbError> {
        let time = i64::try_from(new.time_unix_ms)
            .map_err(|_| DbError::TimeOutOfRange(new.time_unix_ms))?;
        self.conn
            .execute(
                "INSERT INTO crashes (signature, kind, title, time_unix_ms, boot_id, extension,
                     process, action, dump_path, report_path, report_json, fallback)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    new.signature,
                    new.kind,
                    new.title,
                    time,
                    new.boot_id,
                    new.extension,
                    new.process,
                    new.action,
                    new.dump_path.as_deref().map(path_bytes),
                    report_path.map(path_bytes),
                    new.report_json,
                    new.fallback,
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Every bucket, most recently seen first.
    pub fn buckets(&self) -> Result<Vec<Bucket>, DbError> {
        // One read transaction: a consistent snapshot while a writer goes on.
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let signatures: Vec<String> = {
            let mut stmt = tx
                .prepare(
                    "SELECT signature FROM crashes GROUP BY signature
                     ORDER BY MAX(time_unix_ms) DESC, signature",
                )
                .map_err(|e| self.err(e))?;
            stmt.query_map([], |row| row.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.err(e))?
        };
        let buckets = signatures
            .iter()
            .map(|sig| self.load_bucket(sig))
            .collect::<Result<_, _>>()?;
        tx.finish().map_err(|e| self.err(e))?;
        Ok(buckets)
    }

    /// The bucket whose signature is `sig_or_prefix` or uniquely starts with
    /// it (case-insensitively, like git's abbreviated hashes), with its
    /// crashes.
    pub fn bucket(&self, sig_or_prefix: &str) -> Result<BucketDetail, DbError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let signature = self.resolve_signature(sig_or_prefix)?;
        let bucket = self.load_bucket(&signature)?;
        let crashes = {
            let mut stmt = tx
                .prepare(
                    "SELECT id, time_unix_ms, boot_id, kind, title, extension, process, action,
                         dump_path, report_path, fallback
                     FROM crashes WHERE signature = ?1
                     ORDER BY time_unix_ms DESC, id DESC",
                )
                .map_err(|e| self.err(e))?;
            stmt.query_map([&signature], |row| {
                let dump_path = path_column(row.get_ref(8)?);
                Ok(CrashSummary {
                    id: row.get(0)?,
                    time_unix_ms: time_column(row.get(1)?),
                    boot_id: row.get(2)?,
                    kind: row.get(3)?,
                    title: row.get(4)?,
                    extension: row.get(5)?,
                    process: row.get(6)?,
                    action: row.get(7)?,
                    fallback: row.get(10)?,
                    dump_exists: dump_path.as_deref().is_some_and(Path::is_file),
                    dump_path,
                    report_path: path_column(row.get_ref(9)?),
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?
        };
        tx.finish().map_err(|e| self.err(e))?;
        Ok(BucketDetail { bucket, crashes })
    }

    /// The full signature that `sig_or_prefix` names: an exact match, or
    /// the only signature starting with it.
    pub fn resolve_signature(&self, sig_or_prefix: &str) -> Result<String, DbError> {
        let prefix = sig_or_prefix.trim();
        if prefix.is_empty() {
            return Err(DbError::EmptySignature);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT signature FROM crashes ORDER BY signature")
            .map_err(|e| self.err(e))?;
        let all: Vec<String> = stmt
            .query_map([], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err(e))?;
        if let Some(exact) = all.iter().find(|s| s.eq_ignore_ascii_case(prefix)) {
            return Ok(exact.clone());
        }
        let mut matches: Vec<String> = all
            .into_iter()
            .filter(|s| {
                s.as_bytes()
                    .get(..prefix.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
            })
            .collect();
        match matches.len() {
            0 => Err(DbError::UnknownSignature(prefix.to_string())),
            1 => Ok(matches.remove(0)),
            _ => Err(DbError::AmbiguousSignature {
                prefix: prefix.to_string(),
                candidates: matches,
            }),
        }
    }

    /// The stored diagnosis report (JSON) of crash `id`.
    pub fn crash(&self, id: i64) -> Result<String, DbError> {
        self.conn
            .query_row(
                "SELECT report_json FROM crashes WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or(DbError::UnknownCrash(id))
    }

    /// Number of crashes recorded.
    pub fn crash_count(&self) -> Result<u64, DbError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM crashes", [], |row| row.get(0))
            .map_err(|e| self.err(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn load_bucket(&self, signature: &str) -> Result<Bucket, DbError> {
        let (count, first, last): (i64, i64, i64) = self
            .conn
            .query_row(
                "SELECT COUNT(*), MIN(time_unix_ms), MAX(time_unix_ms)
                 FROM crashes WHERE signature = ?1",
                [signature],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(|e| self.err(e))?;
        let (kind, title): (String, String) = self
            .conn
            .query_row(
                "SELECT kind, title FROM crashes WHERE signature = ?1
                 ORDER BY time_unix_ms DESC, id DESC LIMIT 1",
                [signature],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(|e| self.err(e))?;
        let extensions: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT DISTINCT extension FROM crashes
                     WHERE signature = ?1 AND extension IS NOT NULL ORDER BY extension",
                )
                .map_err(|e| self.err(e))?;
            stmt.query_map([signature], |row| row.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| self.err(e))?
        };
        let example_dump = {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT dump_path FROM crashes
                     WHERE signature = ?1 AND dump_path IS NOT NULL
                     ORDER BY time_unix_ms DESC, id DESC",
                )
                .map_err(|e| self.err(e))?;
            let mut rows = stmt.query([signature]).map_err(|e| self.err(e))?;
            let mut found = None;
            while let Some(row) = rows.next().map_err(|e| self.err(e))? {
                let path = path_column(row.get_ref(0).map_err(|e| self.err(e))?);
                if let Some(path) = path.filter(|p| p.is_file()) {
                    found = Some(path);
                    break;
                }
            }
            found
        };
        Ok(Bucket {
            signature: signature.to_string(),
            kind,
            title,
            count: u64::try_from(count).unwrap_or(0),
            first_seen_unix_ms: time_column(first),
            last_seen_unix_ms: time_column(last),
            example_dump,
            extensions,
        })
    }

    /// Makes sure the file is ours at a schema we understand, creating the
    /// schema in an empty database. Touches nothing in a foreign file.
    fn check_or_create(&self) -> Result<(), DbError> {
        // The first read of the header: this is where a garbage file fails.
        let empty = {
            let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
            let empty = self.inspect()?;
            tx.finish().map_err(|e| self.err(e))?;
            empty
        };
        // Ours (or empty): WAL lets a reader and the writer run at once.
        // The pragma answers with the resulting mode; ignore it, since a
        // file system without shared memory keeps the rollback journal,
        // which still works, only with more waiting.
        let _: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| self.err(e))?;
        if empty {
            self.create_schema()?;
        } else {
            self.migrate()?;
        }
        Ok(())
    }

    /// Reads the header and answers whether the database is empty (to be
    /// created); an error if it is not ours or not at a schema we know.
    /// Call inside a transaction: the header and the table list must come
    /// from one snapshot, or another process creating the schema at the
    /// same moment would make the file look foreign.
    fn inspect(&self) -> Result<bool, DbError> {
        let app_id: i64 = self
            .conn
            .query_row("PRAGMA application_id", [], |row| row.get(0))
            .map_err(|e| self.err(e))?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| self.err(e))?;
        let objects: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(|e| self.err(e))?;
        let foreign = || DbError::Foreign {
            path: self.path.clone(),
        };
        if app_id == 0 && version == 0 {
            return if objects == 0 {
                Ok(true)
            } else {
                Err(foreign())
            };
        }
        if app_id != APPLICATION_ID || version < 1 {
            return Err(foreign());
        }
        if version > SCHEMA_VERSION {
            return Err(DbError::NewerSchema {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        // Older schema versions are brought up to date by `migrate`.
        Ok(false)
    }

    /// Creates the schema under a write lock, checking again inside it:
    /// another process may have created it since we looked.
    fn create_schema(&self) -> Result<(), DbError> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        if !self.inspect()? {
            return tx.finish().map_err(|e| self.err(e));
        }
        tx.execute_batch(SCHEMA_V1).map_err(|e| self.err(e))?;
        tx.execute_batch(SCHEMA_V2).map_err(|e| self.err(e))?;
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
        ))
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Brings an older schema to this build's, under a write lock
    /// (another process may be migrating at the same moment).
    fn migrate(&self) -> Result<(), DbError> {
        let version = || -> Result<i64, DbError> {
            self.conn
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .map_err(|e| self.err(e))
        };
        if version()? >= SCHEMA_VERSION {
            return Ok(());
        }
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        if version()? < 2 {
            tx.execute_batch(SCHEMA_V2).map_err(|e| self.err(e))?;
        }
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn err(&self, e: rusqlite::Error) -> DbError {
        sql_err(&self.path, e)
    }
}

/// Opens (creating) the crash database in `data` and records `new`; the
/// hypervisor calls this after each crash, from a background thread.
///
/// The crash's report file is found by the data directory's naming
/// convention ([`DataDir::report_for_dump`]) and its path stored with the
/// crash; nothing is written outside the database.
pub fn record_report(data: &DataDir, new: &NewCrash) -> Result<i64, DbError> {
    data.ensure()?;
    let db = CrashDb::open(data.db_path())?;
    let report = new
        .dump_path
        .as_deref()
        .and_then(|dump| data.report_for_dump(dump));
    db.record_with_report(new, report.as_deref())
}

/// Sorts SQLite failures into "not a database" and everything else.
fn sql_err(path: &Path, source: rusqlite::Error) -> DbError {
    let path = path.to_path_buf();
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            DbError::NotADatabase { path, source }
        }
        _ => DbError::Sqlite { path, source },
    }
}

/// Paths are stored as raw bytes so non-UTF-8 names survive the round trip.
fn path_bytes(path: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec()
    }
    #[cfg(not(unix))]
    {
        path.to_string_lossy().into_owned().into_bytes()
    }
}

fn path_column(value: ValueRef<'_>) -> Option<PathBuf> {
    let bytes = match value {
        ValueRef::Blob(b) | ValueRef::Text(b) => b,
        _ => return None,
    };
    #[cfg(unix)]
    {
        Some(PathBuf::from(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes),
        ))
    }
    #[cfg(not(unix))]
    {
        Some(PathBuf::from(String::from_utf8_lossy(bytes).into_owned()))
    }
}

/// Times were checked on the way in; a negative one can only come from a
/// hand-edited database and reads as the epoch.
fn time_column(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}
