//! The crash database: recording, bucketing by signature, regrouping and
//! the bookkeeping of pruned dumps, over either backend.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, TransactionBehavior};
use serde::Serialize;

use crate::backend::{self, Exec, PgExec, Row, SqliteExec, path_value};
use crate::location::{DbLocation, PgUrl};
use crate::{DataDir, DbError};

pub use crate::migrations::SCHEMA_VERSION;

/// One crash as the hypervisor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCrash {
    /// The crash signature from the diagnosis; equal signatures are the
    /// same bug.
    pub signature: String,
    /// The version of the algorithm that computed `signature`
    /// (`lazarus_diagnose::SIGNATURE_VERSION`), so `regroup` knows which
    /// rows to recompute.
    pub signature_version: u32,
    /// Crash kind, e.g. "page-fault", "panic", "hang".
    pub kind: String,
    /// One-line human summary.
    pub title: String,
    /// When it crashed, in milliseconds since the Unix epoch (at most
    /// `i64::MAX`: SQL integers).
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
    /// support can open one right away even after old dumps were pruned.
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
    /// Whether `dump_path` still exists (on this host).
    pub dump_exists: bool,
    /// Whether the dump was pruned to keep the data directory in budget
    /// (the row and the report stay).
    pub dump_pruned: bool,
    /// The diagnosis report's JSON file, if it was written to one.
    pub report_path: Option<PathBuf>,
    /// The signature algorithm's version for this row.
    pub signature_version: u32,
}

/// A bucket and its crashes, most recent first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketDetail {
    /// The bucket.
    pub bucket: Bucket,
    /// Its crashes, most recent first.
    pub crashes: Vec<CrashSummary>,
}

/// A crash whose bucket changed in [`CrashDb::regroup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Moved {
    /// The crash.
    pub id: i64,
    /// Its old signature.
    pub from: String,
    /// Its new signature.
    pub to: String,
}

/// A crash whose stored report could not be read again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    /// The crash.
    pub id: i64,
    /// Why.
    pub reason: String,
}

/// What [`CrashDb::regroup`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegroupReport {
    /// The signature version rows were brought to.
    pub signature_version: u32,
    /// Rows of an older version that were recomputed.
    pub examined: u64,
    /// Rows whose signature changed (bucket moved).
    pub moved: Vec<Moved>,
    /// Rows left as they were because their report could not be read.
    pub unreadable: Vec<Unreadable>,
}

/// A crash row whose dump has not been pruned, for the pruner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpRow {
    /// The crash.
    pub id: i64,
    /// Its signature.
    pub signature: String,
    /// When it crashed.
    pub time_unix_ms: u64,
    /// The dump.
    pub dump_path: PathBuf,
}

enum Backend {
    Sqlite {
        conn: Connection,
        path: PathBuf,
    },
    Postgres {
        client: postgres::Client,
        url: PgUrl,
    },
}

/// Read or write transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Read,
    Write,
}

/// An open crash database, SQLite or PostgreSQL: every caller (the CLI,
/// the API, a dashboard) uses this one type whatever the backend.
pub struct CrashDb {
    backend: RefCell<Backend>,
    location: DbLocation,
}

impl std::fmt::Debug for CrashDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashDb")
            .field("location", &self.location)
            .finish()
    }
}

impl CrashDb {
    /// Opens the SQLite database at `path`, creating it (or its schema) if
    /// it is new. A file that is not a lazarus crash database is an error
    /// and is left exactly as it was.
    pub fn open(path: impl AsRef<Path>) -> Result<CrashDb, DbError> {
        CrashDb::open_location(&DbLocation::Sqlite(path.as_ref().to_path_buf()))
    }

    /// Opens the database at `location`, creating or migrating its schema.
    pub fn open_location(location: &DbLocation) -> Result<CrashDb, DbError> {
        let backend = match location {
            DbLocation::Sqlite(path) => Backend::Sqlite {
                conn: backend::open_sqlite(path)?,
                path: path.clone(),
            },
            DbLocation::Postgres(url) => Backend::Postgres {
                client: backend::open_postgres(url)?,
                url: url.clone(),
            },
        };
        Ok(CrashDb {
            backend: RefCell::new(backend),
            location: location.clone(),
        })
    }

    /// Where the database lives (a PostgreSQL URL shows no password).
    pub fn location(&self) -> &DbLocation {
        &self.location
    }

    /// The SQLite file, for a SQLite database.
    pub fn path(&self) -> Option<&Path> {
        match &self.location {
            DbLocation::Sqlite(p) => Some(p),
            DbLocation::Postgres(_) => None,
        }
    }

    /// Runs `f` in one transaction: committed if it returns `Ok`, rolled
    /// back otherwise. Reads see one consistent snapshot.
    fn tx<T>(
        &self,
        mode: Mode,
        f: impl FnOnce(&mut dyn Exec) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut backend = self.backend.borrow_mut();
        match &mut *backend {
            Backend::Sqlite { conn, path } => {
                let err = |e| backend::sql_err(path, e);
                let behavior = match mode {
                    Mode::Read => TransactionBehavior::Deferred,
                    Mode::Write => TransactionBehavior::Immediate,
                };
                let tx = rusqlite::Transaction::new_unchecked(&*conn, behavior).map_err(err)?;
                let out = f(&mut SqliteExec { conn: &*conn, path })?;
                tx.commit().map_err(err)?;
                Ok(out)
            }
            Backend::Postgres { client, url } => {
                let err = |e| backend::pg_err(url, e);
                let mut tx = match mode {
                    Mode::Read => client
                        .build_transaction()
                        .isolation_level(postgres::IsolationLevel::RepeatableRead)
                        .read_only(true)
                        .start(),
                    Mode::Write => client.transaction(),
                }
                .map_err(err)?;
                let out = f(&mut PgExec { tx: &mut tx, url })?;
                tx.commit().map_err(err)?;
                Ok(out)
            }
        }
    }

    /// Records one crash and returns its id.
    pub fn record(&self, new: &NewCrash) -> Result<i64, DbError> {
        self.record_with_report(new, None)
    }

    /// Records one crash whose report was also written to `report_path`.
    /// The crash row and its bucket's count change in one transaction; two
    /// hosts recording a new signature's first crash at once make one
    /// bucket with both (`INSERT ... ON CONFLICT`).
    pub fn record_with_report(
        &self,
        new: &NewCrash,
        report_path: Option<&Path>,
    ) -> Result<i64, DbError> {
        let time = i64::try_from(new.time_unix_ms)
            .map_err(|_| DbError::TimeOutOfRange(new.time_unix_ms))?;
        self.tx(Mode::Write, |db| {
            let rows = db.query(
                "INSERT INTO crashes (signature, kind, title, time_unix_ms, boot_id, extension,
                     process, action, dump_path, report_path, report_json, fallback,
                     signature_version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 RETURNING id",
                &[
                    new.signature.as_str().into(),
                    new.kind.as_str().into(),
                    new.title.as_str().into(),
                    time.into(),
                    new.boot_id.as_str().into(),
                    new.extension.as_deref().into(),
                    new.process.as_deref().into(),
                    new.action.as_str().into(),
                    path_value(new.dump_path.as_deref()),
                    path_value(report_path),
                    new.report_json.as_str().into(),
                    new.fallback.as_deref().into(),
                    i64::from(new.signature_version).into(),
                ],
            )?;
            let id = rows.first().map(|r| r.int(0)).unwrap_or_default();
            let (least, greatest) = if db.is_postgres() {
                ("LEAST", "GREATEST")
            } else {
                ("MIN", "MAX")
            };
            db.exec(
                &format!(
                    "INSERT INTO buckets (signature, count, first_seen_unix_ms, last_seen_unix_ms,
                         kind, title)
                     VALUES ($1, 1, $2, $2, $3, $4)
                     ON CONFLICT (signature) DO UPDATE SET
                         count = buckets.count + 1,
                         first_seen_unix_ms = {least}(buckets.first_seen_unix_ms,
                                                      excluded.first_seen_unix_ms),
                         last_seen_unix_ms = {greatest}(buckets.last_seen_unix_ms,
                                                        excluded.last_seen_unix_ms),
                         kind = CASE WHEN excluded.last_seen_unix_ms >= buckets.last_seen_unix_ms
                                THEN excluded.kind ELSE buckets.kind END,
                         title = CASE WHEN excluded.last_seen_unix_ms >= buckets.last_seen_unix_ms
                                 THEN excluded.title ELSE buckets.title END"
                ),
                &[
                    new.signature.as_str().into(),
                    time.into(),
                    new.kind.as_str().into(),
                    new.title.as_str().into(),
                ],
            )?;
            Ok(id)
        })
    }

    /// Every bucket, most recently seen first.
    pub fn buckets(&self) -> Result<Vec<Bucket>, DbError> {
        self.tx(Mode::Read, |db| {
            let rows = db.query(
                "SELECT signature, kind, title, count, first_seen_unix_ms, last_seen_unix_ms
                 FROM buckets ORDER BY last_seen_unix_ms DESC, signature",
                &[],
            )?;
            rows.iter().map(|r| bucket_of(db, r)).collect()
        })
    }

    /// The bucket whose signature is `sig_or_prefix` or uniquely starts with
    /// it (case-insensitively, like git's abbreviated hashes), with its
    /// crashes.
    pub fn bucket(&self, sig_or_prefix: &str) -> Result<BucketDetail, DbError> {
        self.tx(Mode::Read, |db| {
            let signature = resolve_signature(db, sig_or_prefix)?;
            let rows = db.query(
                "SELECT signature, kind, title, count, first_seen_unix_ms, last_seen_unix_ms
                 FROM buckets WHERE signature = $1",
                &[signature.as_str().into()],
            )?;
            let row = rows
                .first()
                .ok_or_else(|| DbError::UnknownSignature(signature.clone()))?;
            let bucket = bucket_of(db, row)?;
            let crashes = db
                .query(
                    "SELECT id, time_unix_ms, boot_id, kind, title, extension, process, action,
                         dump_path, report_path, fallback, dump_pruned_unix_ms,
                         signature_version
                     FROM crashes WHERE signature = $1
                     ORDER BY time_unix_ms DESC, id DESC",
                    &[signature.as_str().into()],
                )?
                .iter()
                .map(|r| {
                    let dump_path = r.path(8);
                    CrashSummary {
                        id: r.int(0),
                        time_unix_ms: time_column(r.int(1)),
                        boot_id: r.text(2),
                        kind: r.text(3),
                        title: r.text(4),
                        extension: r.opt_text(5),
                        process: r.opt_text(6),
                        action: r.text(7),
                        dump_exists: dump_path.as_ref().is_some_and(|p| p.is_file()),
                        dump_path,
                        report_path: r.path(9),
                        fallback: r.opt_text(10),
                        dump_pruned: !r.is_null(11),
                        signature_version: u32::try_from(r.int(12)).unwrap_or(0),
                    }
                })
                .collect();
            Ok(BucketDetail { bucket, crashes })
        })
    }

    /// The full signature that `sig_or_prefix` names (see [`CrashDb::bucket`]).
    pub fn resolve_signature(&self, sig_or_prefix: &str) -> Result<String, DbError> {
        self.tx(Mode::Read, |db| resolve_signature(db, sig_or_prefix))
    }

    /// The stored diagnosis report (JSON) of crash `id`.
    pub fn crash(&self, id: i64) -> Result<String, DbError> {
        self.tx(Mode::Read, |db| {
            db.query(
                "SELECT report_json FROM crashes WHERE id = $1",
                &[id.into()],
            )?
            .first()
            .map(|r| r.text(0))
            .ok_or(DbError::UnknownCrash(id))
        })
    }

    /// Number of crashes recorded.
    pub fn crash_count(&self) -> Result<u64, DbError> {
        self.tx(Mode::Read, |db| {
            let rows = db.query("SELECT COUNT(*) FROM crashes", &[])?;
            Ok(u64::try_from(rows.first().map(|r| r.int(0)).unwrap_or(0)).unwrap_or(0))
        })
    }

    /// Recomputes the signature of every crash recorded with a signature
    /// algorithm older than `version`, from its stored report, with
    /// `signature_of` (the diagnosis crate's; this crate does not know the
    /// algorithm). Buckets follow their crashes. Rows whose report cannot
    /// be read are left alone and listed. One transaction: readers see the
    /// old grouping or the new one, and on PostgreSQL no host records
    /// while it runs.
    pub fn regroup(
        &self,
        version: u32,
        mut signature_of: impl FnMut(&str) -> Result<String, String>,
    ) -> Result<RegroupReport, DbError> {
        self.tx(Mode::Write, |db| {
            if db.is_postgres() {
                db.exec(
                    "LOCK TABLE crashes, buckets IN SHARE ROW EXCLUSIVE MODE",
                    &[],
                )?;
            }
            let rows = db.query(
                "SELECT id, signature, report_json FROM crashes
                 WHERE signature_version < $1 ORDER BY id",
                &[i64::from(version).into()],
            )?;
            let mut report = RegroupReport {
                signature_version: version,
                examined: 0,
                moved: Vec::new(),
                unreadable: Vec::new(),
            };
            let mut touched = BTreeSet::new();
            for row in &rows {
                let (id, old) = (row.int(0), row.text(1));
                report.examined += 1;
                match signature_of(&row.text(2)) {
                    Ok(new) => {
                        db.exec(
                            "UPDATE crashes SET signature = $1, signature_version = $2
                             WHERE id = $3",
                            &[new.as_str().into(), i64::from(version).into(), id.into()],
                        )?;
                        if new != old {
                            touched.insert(old.clone());
                            touched.insert(new.clone());
                            report.moved.push(Moved {
                                id,
                                from: old,
                                to: new,
                            });
                        }
                    }
                    Err(reason) => report.unreadable.push(Unreadable { id, reason }),
                }
            }
            for sig in &touched {
                rebuild_bucket(db, sig)?;
            }
            Ok(report)
        })
    }

    /// Crash rows whose dump has not been pruned, oldest first.
    pub fn dump_rows(&self) -> Result<Vec<DumpRow>, DbError> {
        self.tx(Mode::Read, |db| {
            Ok(db
                .query(
                    "SELECT id, signature, time_unix_ms, dump_path FROM crashes
                     WHERE dump_path IS NOT NULL AND dump_pruned_unix_ms IS NULL
                     ORDER BY time_unix_ms, id",
                    &[],
                )?
                .iter()
                .filter_map(|r| {
                    Some(DumpRow {
                        id: r.int(0),
                        signature: r.text(1),
                        time_unix_ms: time_column(r.int(2)),
                        dump_path: r.path(3)?,
                    })
                })
                .collect())
        })
    }

    /// Records that the dumps of crashes `ids` were pruned at `time_unix_ms`.
    pub fn mark_pruned(&self, ids: &[i64], time_unix_ms: u64) -> Result<(), DbError> {
        let time =
            i64::try_from(time_unix_ms).map_err(|_| DbError::TimeOutOfRange(time_unix_ms))?;
        self.tx(Mode::Write, |db| {
            for &id in ids {
                db.exec(
                    "UPDATE crashes SET dump_pruned_unix_ms = $1 WHERE id = $2",
                    &[time.into(), id.into()],
                )?;
            }
            Ok(())
        })
    }
}

fn bucket_of(db: &mut dyn Exec, r: &Row) -> Result<Bucket, DbError> {
    let signature = r.text(0);
    let extensions = db
        .query(
            "SELECT DISTINCT extension FROM crashes
             WHERE signature = $1 AND extension IS NOT NULL ORDER BY extension",
            &[signature.as_str().into()],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect();
    let example_dump = db
        .query(
            "SELECT dump_path FROM crashes
             WHERE signature = $1 AND dump_path IS NOT NULL AND dump_pruned_unix_ms IS NULL
             ORDER BY time_unix_ms DESC, id DESC",
            &[signature.as_str().into()],
        )?
        .iter()
        .filter_map(|r| r.path(0))
        .find(|p| p.is_file());
    Ok(Bucket {
        signature,
        kind: r.text(1),
        title: r.text(2),
        count: u64::try_from(r.int(3)).unwrap_or(0),
        first_seen_unix_ms: time_column(r.int(4)),
        last_seen_unix_ms: time_column(r.int(5)),
        example_dump,
        extensions,
    })
}

/// Makes `signature`'s bucket row match its crashes again (none: no row).
fn rebuild_bucket(db: &mut dyn Exec, signature: &str) -> Result<(), DbError> {
    db.exec(
        "DELETE FROM buckets WHERE signature = $1",
        &[signature.into()],
    )?;
    db.exec(
        "INSERT INTO buckets (signature, count, first_seen_unix_ms, last_seen_unix_ms, kind, title)
         SELECT c.signature, COUNT(*), MIN(c.time_unix_ms), MAX(c.time_unix_ms),
             (SELECT k.kind FROM crashes k WHERE k.signature = c.signature
              ORDER BY k.time_unix_ms DESC, k.id DESC LIMIT 1),
             (SELECT k.title FROM crashes k WHERE k.signature = c.signature
              ORDER BY k.time_unix_ms DESC, k.id DESC LIMIT 1)
         FROM crashes c WHERE c.signature = $1 GROUP BY c.signature",
        &[signature.into()],
    )?;
    Ok(())
}

fn resolve_signature(db: &mut dyn Exec, prefix: &str) -> Result<String, DbError> {
    let prefix = prefix.trim();
    if prefix.is_empty() {
        return Err(DbError::EmptySignature);
    }
    let all: Vec<String> = db
        .query("SELECT signature FROM buckets ORDER BY signature", &[])?
        .iter()
        .map(|r| r.text(0))
        .collect();
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

/// Opens (creating) the data directory's crash database (or the shared
/// one it names) and records `new`; the hypervisor calls this after each
/// crash, from a background thread.
///
/// The crash's report file is found by the data directory's naming
/// convention ([`DataDir::report_for_dump`]) and its path stored with the
/// crash; nothing is written outside the database.
pub fn record_report(data: &DataDir, new: &NewCrash) -> Result<i64, DbError> {
    record_and_prune(data, new, false).map(|(id, _)| id)
}

/// [`record_report`], then (with `prune`) the dump budget applied on the
/// same connection ([`crate::prune_dumps`]); a failed prune does not undo
/// the record, and is returned beside its id.
pub fn record_and_prune(
    data: &DataDir,
    new: &NewCrash,
    prune: bool,
) -> Result<(i64, Option<Result<crate::PruneReport, DbError>>), DbError> {
    data.ensure()?;
    let db = CrashDb::open_location(&data.crash_db())?;
    let report = new
        .dump_path
        .as_deref()
        .and_then(|dump| data.report_for_dump(dump));
    let id = db.record_with_report(new, report.as_deref())?;
    let pruned = prune.then(|| crate::prune::prune_in_session(data, &db));
    Ok((id, pruned))
}

/// Times were checked on the way in; a negative one can only come from a
/// hand-edited database and reads as the epoch.
fn time_column(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}
