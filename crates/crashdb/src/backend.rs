//! The two backends behind [`crate::CrashDb`]: SQLite (embedded, one host)
//! and PostgreSQL (shared by many hosts). Queries are written once, with
//! `$1, $2, ...` parameters numbered in order of first use (SQLite binds
//! them by that order, PostgreSQL by number), over a tiny value type.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postgres::types::{IsNull, ToSql, Type};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use crate::DbError;
use crate::location::PgUrl;
use crate::migrations::{MIGRATIONS, SCHEMA_VERSION};

/// `PRAGMA application_id` ("LZCD"), so a lazarus SQLite database is told
/// apart from any other program's and never mistaken for one; also the
/// PostgreSQL advisory-lock key that serialises migrations.
pub(crate) const APPLICATION_ID: i64 = 0x4c5a_4344;

/// The application name in PostgreSQL's `lazarus_schema` table.
const PG_APPLICATION: &str = "lazarus-crashdb";

/// How long a reader or writer waits for the other's lock before failing:
/// the hypervisor records from a background thread while the CLI reads.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting to a PostgreSQL server may take, unless the URL
/// says (`connect_timeout`).
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A column or parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Value {
        v.map_or(Value::Null, Value::from)
    }
}

/// One result row.
pub(crate) struct Row(Vec<Value>);

impl Row {
    fn get(&self, i: usize) -> &Value {
        self.0.get(i).unwrap_or(&Value::Null)
    }
    pub fn int(&self, i: usize) -> i64 {
        match self.get(i) {
            Value::Int(v) => *v,
            _ => 0,
        }
    }
    pub fn text(&self, i: usize) -> String {
        self.opt_text(i).unwrap_or_default()
    }
    pub fn opt_text(&self, i: usize) -> Option<String> {
        match self.get(i) {
            Value::Text(s) => Some(s.clone()),
            Value::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
    pub fn is_null(&self, i: usize) -> bool {
        matches!(self.get(i), Value::Null)
    }
    /// Paths are stored as raw bytes so non-UTF-8 names survive.
    pub fn path(&self, i: usize) -> Option<PathBuf> {
        match self.get(i) {
            Value::Blob(b) => Some(bytes_path(b)),
            Value::Text(s) => Some(PathBuf::from(s)),
            _ => None,
        }
    }
}

pub(crate) fn path_value(path: Option<&Path>) -> Value {
    path.map_or(Value::Null, |p| Value::Blob(path_bytes(p)))
}

fn path_bytes(path: &Path) -> Vec<u8> {
    std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec()
}

fn bytes_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes))
}

/// Runs statements inside one transaction of either backend.
pub(crate) trait Exec {
    /// Runs a statement; returns the rows it changed.
    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;
    /// Runs a query; returns every row.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError>;
    /// For the few places the dialects differ.
    fn is_postgres(&self) -> bool;
}

/// SQLite: one connection, with the file's path for errors.
pub(crate) struct SqliteExec<'a> {
    pub conn: &'a Connection,
    pub path: &'a Path,
}

impl Exec for SqliteExec<'_> {
    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let n = self
            .conn
            .execute(
                sql,
                rusqlite::params_from_iter(params.iter().map(sqlite_value)),
            )
            .map_err(|e| sql_err(self.path, e))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let err = |e| sql_err(self.path, e);
        let mut stmt = self.conn.prepare_cached(sql).map_err(err)?;
        let n = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter().map(sqlite_value)))
            .map_err(err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                values.push(match row.get_ref(i).map_err(err)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    // No column of ours is REAL; a hand-edited one reads as 0.
                    ValueRef::Real(_) => Value::Int(0),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn is_postgres(&self) -> bool {
        false
    }
}

fn sqlite_value(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
    }
}

/// Sorts SQLite failures into "not a database" and everything else.
pub(crate) fn sql_err(path: &Path, source: rusqlite::Error) -> DbError {
    let path = path.to_path_buf();
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            DbError::NotADatabase { path, source }
        }
        _ => DbError::Sqlite { path, source },
    }
}

/// Opens a SQLite database, creating or migrating its schema.
pub(crate) fn open_sqlite(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path).map_err(|e| sql_err(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_err(path, e))?;
    // Switching a new file to WAL needs an exclusive lock, and SQLite
    // answers "busy" at once (no busy handler) when two first opens race
    // for it; retry for as long as any other lock would wait.
    let start = std::time::Instant::now();
    loop {
        match sqlite_check_or_create(&conn, path) {
            Err(DbError::Sqlite { source, .. })
                if source.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && start.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.map(|()| conn),
        }
    }
}

/// Makes sure the file is ours at a schema we understand, creating or
/// migrating it. Touches nothing in a foreign file.
fn sqlite_check_or_create(conn: &Connection, path: &Path) -> Result<(), DbError> {
    let err = |e| sql_err(path, e);
    // The first read of the header: this is where a garbage file fails.
    // Header and table list from one snapshot, or another process creating
    // the schema at the same moment would make the file look foreign.
    let version = {
        let tx = conn.unchecked_transaction().map_err(err)?;
        let v = sqlite_inspect(conn, path)?;
        tx.finish().map_err(err)?;
        v
    };
    // Ours (or empty): WAL lets a reader and the writer run at once. The
    // pragma answers with the resulting mode; ignore it, since a file
    // system without shared memory keeps the rollback journal, which still
    // works, only with more waiting.
    let _: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(err)?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    // Migrate under a write lock, checking again inside it: another
    // process may have done it since we looked.
    let tx =
        rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(err)?;
    let version = sqlite_inspect(conn, path)?;
    for m in MIGRATIONS.iter().filter(|m| m.version > version) {
        tx.execute_batch(m.sqlite).map_err(err)?;
    }
    tx.execute_batch(&format!(
        "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
    ))
    .map_err(err)?;
    tx.commit().map_err(err)
}

/// The schema version of the file (0: empty, to be created); an error if
/// it is not ours or newer than this build.
fn sqlite_inspect(conn: &Connection, path: &Path) -> Result<i64, DbError> {
    let err = |e| sql_err(path, e);
    let app_id: i64 = conn
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(err)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(err)?;
    let objects: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get(0))
        .map_err(err)?;
    let foreign = || DbError::Foreign {
        path: path.to_path_buf(),
    };
    if app_id == 0 && version == 0 {
        return if objects == 0 { Ok(0) } else { Err(foreign()) };
    }
    if app_id != APPLICATION_ID || version < 1 {
        return Err(foreign());
    }
    if version > SCHEMA_VERSION {
        return Err(DbError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(version)
}

/// PostgreSQL: one transaction, with the (redacted) URL for errors.
pub(crate) struct PgExec<'a, 'b> {
    pub tx: &'a mut postgres::Transaction<'b>,
    pub url: &'a PgUrl,
}

impl Exec for PgExec<'_, '_> {
    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        self.tx.execute(sql, &refs).map_err(|e| pg_err(self.url, e))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self.tx.query(sql, &refs).map_err(|e| pg_err(self.url, e))?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| pg_value(row, i))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Row)
                    .map_err(|e| pg_err(self.url, e))
            })
            .collect()
    }

    fn is_postgres(&self) -> bool {
        true
    }
}

fn pg_value(row: &postgres::Row, i: usize) -> Result<Value, postgres::Error> {
    let ty = row.columns().get(i).map(|c| c.type_().clone());
    Ok(match ty {
        Some(Type::INT8) => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::Int),
        Some(Type::INT4) => row
            .try_get::<_, Option<i32>>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into())),
        Some(Type::INT2) => row
            .try_get::<_, Option<i16>>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into())),
        Some(Type::BOOL) => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into())),
        Some(Type::BYTEA) => row
            .try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(Value::Null, Value::Blob),
        // Text, and anything else the client can read as text (an error
        // otherwise, which names the type).
        _ => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::Text),
    })
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                _ => Err(format!("an integer for a parameter of type {ty}").into()),
            },
            Value::Text(s) if <String as ToSql>::accepts(ty) => s.to_sql(ty, out),
            Value::Blob(b) if <Vec<u8> as ToSql>::accepts(ty) => b.to_sql(ty, out),
            _ => Err(format!("{self:?} for a parameter of type {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql`.
        true
    }

    postgres::types::to_sql_checked!();
}

/// A PostgreSQL failure; one that means "no usable connection" is
/// [`DbError::Unreachable`]. The password never appears in the message.
pub(crate) fn pg_err(url: &PgUrl, source: postgres::Error) -> DbError {
    // Closed, or failed on the socket; a client-side error (say, a value
    // of the wrong type) is ours, not the network's.
    let io = StdError::source(&source).is_some_and(|s| s.is::<std::io::Error>());
    if source.is_closed() || io {
        return DbError::Unreachable {
            database: url.redacted().to_string(),
            reason: scrub(url, source.to_string()),
        };
    }
    DbError::Postgres {
        database: url.redacted().to_string(),
        reason: scrub(url, error_chain(&source)),
    }
}

fn error_chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn scrub(url: &PgUrl, text: String) -> String {
    match url.password() {
        Some(p) if !p.is_empty() => text.replace(&p, "***"),
        _ => text,
    }
}

/// Connects to a PostgreSQL server and creates or migrates the schema.
pub(crate) fn open_postgres(url: &PgUrl) -> Result<postgres::Client, DbError> {
    let mut config = url.config()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(PG_CONNECT_TIMEOUT);
    }
    let mut client = config
        .connect(postgres::NoTls)
        .map_err(|e| DbError::Unreachable {
            database: url.redacted().to_string(),
            reason: scrub(url, error_chain(&e)),
        })?;
    pg_check_or_create(&mut client, url)?;
    Ok(client)
}

/// Whether a table exists in the current schema. A query of the catalog
/// rather than `to_regclass`: name lookups go through the backend's
/// catalog cache, which can still remember "no such table" from before
/// another process's migration committed (seen while waiting for the
/// migration lock), and would then call our own fresh schema foreign.
const TABLE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables
     WHERE schemaname = current_schema() AND tablename = $1)";

fn pg_check_or_create(client: &mut postgres::Client, url: &PgUrl) -> Result<(), DbError> {
    let err = |e| pg_err(url, e);
    // Fast path: the schema is there and current.
    if let Some(v) = pg_version(client, url)?
        && v == SCHEMA_VERSION
    {
        return Ok(());
    }
    let mut tx = client.transaction().map_err(err)?;
    // One migrating process at a time; the others wait here and then find
    // the work done.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPLICATION_ID])
        .map_err(err)?;
    let has = |tx: &mut postgres::Transaction<'_>, table: &str| -> Result<bool, DbError> {
        tx.query_one(TABLE_EXISTS, &[&table])
            .map(|r| r.get::<_, bool>(0))
            .map_err(err)
    };
    if !has(&mut tx, "lazarus_schema")? {
        if has(&mut tx, "crashes")? || has(&mut tx, "buckets")? {
            return Err(DbError::ForeignPostgres {
                database: url.redacted().to_string(),
            });
        }
        tx.batch_execute(
            "CREATE TABLE lazarus_schema (application TEXT NOT NULL, version BIGINT NOT NULL);",
        )
        .map_err(err)?;
        tx.execute(
            "INSERT INTO lazarus_schema (application, version) VALUES ($1, 0)",
            &[&PG_APPLICATION],
        )
        .map_err(err)?;
    }
    let version = pg_schema_row(&mut tx, url)?;
    for m in MIGRATIONS.iter().filter(|m| m.version > version) {
        tx.batch_execute(m.postgres).map_err(err)?;
    }
    tx.execute("UPDATE lazarus_schema SET version = $1", &[&SCHEMA_VERSION])
        .map_err(err)?;
    tx.commit().map_err(err)
}

/// The schema version, `None` when there is no schema table yet.
fn pg_version(client: &mut postgres::Client, url: &PgUrl) -> Result<Option<i64>, DbError> {
    let err = |e| pg_err(url, e);
    let exists: bool = client
        .query_one(TABLE_EXISTS, &[&"lazarus_schema"])
        .map_err(err)?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let mut tx = client.transaction().map_err(err)?;
    let v = pg_schema_row(&mut tx, url)?;
    tx.commit().map_err(err)?;
    Ok(Some(v))
}

/// Reads `lazarus_schema`: ours, at a version this build knows.
fn pg_schema_row(tx: &mut postgres::Transaction<'_>, url: &PgUrl) -> Result<i64, DbError> {
    let rows = tx
        .query("SELECT application, version FROM lazarus_schema", &[])
        .map_err(|e| pg_err(url, e))?;
    let foreign = || DbError::ForeignPostgres {
        database: url.redacted().to_string(),
    };
    let [row] = rows.as_slice() else {
        return Err(foreign());
    };
    let app: String = row.try_get(0).map_err(|_| foreign())?;
    let version: i64 = row.try_get(1).map_err(|_| foreign())?;
    if app != PG_APPLICATION || version < 0 {
        return Err(foreign());
    }
    if version > SCHEMA_VERSION {
        return Err(DbError::NewerSchemaPostgres {
            database: url.redacted().to_string(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(version)
}
