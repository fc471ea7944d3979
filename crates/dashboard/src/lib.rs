//! `lazarus dashboard`: server-rendered crash-triage pages over the crash
//! database (top crashers with trends, one page per signature with the
//! example report, the gdb command and the dump) and over the control API
//! of running VMs (status, recoveries, a recovery-latency histogram).
//!
//! The server is `tiny_http`, synchronous like the rest of lazarus (no
//! async runtime to pull in for a handful of pages); the pages are `maud`
//! templates, which escape every interpolated value.

mod pages;
mod vms;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lazarus_crashdb::{CrashDb, DataDir, DbError, DbLocation};

pub use vms::{LiveVm, VmView, latency_histogram};

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The listen address is not `HOST:PORT`.
    #[error("bad listen address '{addr}': {reason}")]
    BadAddress {
        /// As given.
        addr: String,
        /// Why it is not an address.
        reason: String,
    },
    /// The address cannot be bound (in use, not ours, no permission).
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// As given.
        addr: String,
        /// The server's error.
        reason: String,
    },
}

/// What the dashboard shows.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data directory (dumps, reports, symbols), with the crash
    /// database it names (its SQLite file or a PostgreSQL URL).
    pub data: DataDir,
    /// API sockets of running VMs (`lazarus run --api-sock`).
    pub vm_socks: Vec<PathBuf>,
    /// How long one VM may take to answer one request before it is shown
    /// as unreachable.
    pub vm_timeout: Duration,
}

/// A bound dashboard; [`Dashboard::serve`] answers requests.
pub struct Dashboard {
    server: tiny_http::Server,
    config: Config,
}

/// Requests answered at once: a VM that is slow to answer must not hold
/// up every other page.
const WORKERS: usize = 4;

impl Dashboard {
    /// Binds `addr` (`HOST:PORT`; port 0 picks a free one).
    pub fn bind(addr: &str, config: Config) -> Result<Dashboard, DashboardError> {
        let parsed: SocketAddr =
            addr.parse()
                .map_err(|e: std::net::AddrParseError| DashboardError::BadAddress {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
        let server = tiny_http::Server::http(parsed).map_err(|e| DashboardError::Bind {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Dashboard { server, config })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.server_addr().to_ip()
    }

    /// Answers requests until the process ends.
    pub fn serve(&self) {
        std::thread::scope(|s| {
            for _ in 0..WORKERS {
                s.spawn(|| {
                    while let Ok(req) = self.server.recv() {
                        self.answer(req);
                    }
                });
            }
        });
    }

    fn answer(&self, req: tiny_http::Request) {
        let reply = self.handle(req.method().as_str(), req.url());
        // tiny_http leaves the body out of an answer to HEAD itself.
        // A client that went away is no error of ours.
        let _ = match reply.body {
            Body::Html(html) => {
                let mut r = tiny_http::Response::from_data(html.into_bytes())
                    .with_status_code(reply.status);
                add_header(&mut r, "Content-Type", "text/html; charset=utf-8");
                req.respond(r)
            }
            Body::File { file, len, name } => {
                let mut r = tiny_http::Response::new(
                    tiny_http::StatusCode(200),
                    Vec::new(),
                    file,
                    Some(usize::try_from(len).unwrap_or(usize::MAX)),
                    None,
                )
                // A Content-Length, not chunks: downloads show their progress.
                .with_chunked_threshold(usize::MAX);
                add_header(&mut r, "Content-Type", DUMP_CONTENT_TYPE);
                add_header(
                    &mut r,
                    "Content-Disposition",
                    &format!("attachment; filename=\"{name}\""),
                );
                req.respond(r)
            }
        };
    }

    /// The answer to `METHOD URL` (URL as in the request line: path and
    /// query). Never panics on any input.
    pub fn handle(&self, method: &str, url: &str) -> Reply {
        if method != "GET" && method != "HEAD" {
            return error_page(
                405,
                "Method not allowed",
                "The dashboard only reads: use GET.",
            );
        }
        let path = url.split(['?', '#']).next().unwrap_or("");
        let result = match path.strip_prefix('/').unwrap_or(path) {
            "" => self.front(),
            "vms" => Ok(Reply::html(200, pages::vms_page(&self.vm_views()))),
            rest => {
                if let Some(sig) = rest.strip_prefix("signature/") {
                    self.signature(sig)
                } else if let Some(name) = rest.strip_prefix("dumps/") {
                    self.dump(name)
                } else {
                    Err(PageError::NotFound(format!("There is no page at {path}.")))
                }
            }
        };
        result.unwrap_or_else(|e| e.reply())
    }

    /// The crash database, or `None` when its SQLite file does not exist
    /// yet (no crash recorded: reading must not create it).
    fn open_db(&self) -> Result<Option<CrashDb>, PageError> {
        let location = self.config.data.crash_db();
        if let DbLocation::Sqlite(path) = &location
            && !path.is_file()
        {
            return Ok(None);
        }
        CrashDb::open_location(&location)
            .map(Some)
            .map_err(PageError::Db)
    }

    fn front(&self) -> Result<Reply, PageError> {
        let now = now_ms();
        let mut rows = Vec::new();
        if let Some(db) = self.open_db()? {
            for b in db.buckets().map_err(PageError::Db)? {
                let times: Vec<u64> = db
                    .bucket(&b.signature)
                    .map_err(PageError::Db)?
                    .crashes
                    .iter()
                    .map(|c| c.time_unix_ms)
                    .collect();
                rows.push(pages::TopRow {
                    trend: daily_counts(&times, now, TREND_DAYS),
                    bucket: b,
                });
            }
        }
        // Top crashers: most crashes first, then the most recent.
        rows.sort_by(|a, b| {
            b.bucket
                .count
                .cmp(&a.bucket.count)
                .then(b.bucket.last_seen_unix_ms.cmp(&a.bucket.last_seen_unix_ms))
        });
        Ok(Reply::html(
            200,
            pages::front_page(
                &rows,
                &self.vm_views(),
                &self.config.data.crash_db().display(),
            ),
        ))
    }

    fn signature(&self, sig: &str) -> Result<Reply, PageError> {
        if sig.is_empty()
            || sig.len() > 200
            || !sig
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(PageError::BadRequest(
                "A signature is made of letters, digits, '-' and '_'.".into(),
            ));
        }
        let Some(db) = self.open_db()? else {
            return Err(PageError::NotFound(format!(
                "No crash is recorded yet, so there is no signature {sig}."
            )));
        };
        let detail = db.bucket(sig).map_err(PageError::Db)?;
        let dumps_dir = self.config.data.dumps_dir();
        // The example: the most recent crash whose stored report reads.
        let report = detail.crashes.iter().find_map(|c| {
            let json = db.crash(c.id).ok()?;
            serde_json::from_str::<lazarus_diagnose::Report>(&json)
                .ok()
                .map(|r| (c.id, r))
        });
        // The gdb command opens the most recent dump still on disk.
        let gdb = detail
            .crashes
            .iter()
            .filter(|c| c.dump_exists)
            .find_map(|c| c.dump_path.as_deref())
            .map(|p| match lazarus_dump::Dump::open(p) {
                Ok(dump) => {
                    let store = lazarus_symbols::SymbolStore::new(self.config.data.symbols_dir());
                    Ok(lazarus_diagnose::gdb_command(&dump, &store))
                }
                Err(e) => Err(format!("{}: {e}", p.display())),
            });
        let now = now_ms();
        let times: Vec<u64> = detail.crashes.iter().map(|c| c.time_unix_ms).collect();
        Ok(Reply::html(
            200,
            pages::signature_page(&pages::SignatureView {
                detail: &detail,
                daily: daily_counts(&times, now, HISTORY_DAYS),
                report: report.as_ref().map(|(id, r)| (*id, r)),
                gdb,
                dump_link: &|p: &Path| dump_link(&dumps_dir, p),
            }),
        ))
    }

    fn dump(&self, name: &str) -> Result<Reply, PageError> {
        if !is_plain_file_name(name) {
            return Err(PageError::BadRequest(
                "A dump is named by its file name alone (letters, digits, '.', '-', '_').".into(),
            ));
        }
        let dir = self.config.data.dumps_dir();
        let gone = || {
            PageError::NotFound(format!(
                "The dump {name} is not in the data directory: it was pruned (lazarus keeps the \
                 newest dumps of each signature within the dump budget) or never written. The \
                 crash's row and report are kept."
            ))
        };
        let path = dir.join(name);
        // Belt and braces: the file must really lie in the dumps directory
        // (no symbolic link out of it).
        let (Ok(real), Ok(real_dir)) = (path.canonicalize(), dir.canonicalize()) else {
            return Err(gone());
        };
        if real.parent() != Some(real_dir.as_path()) {
            return Err(PageError::BadRequest(format!(
                "{name} is not a dump of this data directory."
            )));
        }
        let file = File::open(&real).map_err(|_| gone())?;
        let meta = file.metadata().map_err(|_| gone())?;
        if !meta.is_file() {
            return Err(gone());
        }
        Ok(Reply {
            status: 200,
            body: Body::File {
                file,
                len: meta.len(),
                name: name.to_string(),
            },
        })
    }

    fn vm_views(&self) -> Vec<VmView> {
        self.config
            .vm_socks
            .iter()
            .map(|s| vms::query(s, self.config.vm_timeout))
            .collect()
    }
}

/// The MIME type of a core file (freedesktop.org's shared MIME database).
pub const DUMP_CONTENT_TYPE: &str = "application/x-core";

/// Days in the front page's trend per signature.
pub const TREND_DAYS: usize = 14;
/// Days in a signature page's occurrences chart.
pub const HISTORY_DAYS: usize = 30;

fn add_header<R: std::io::Read>(r: &mut tiny_http::Response<R>, name: &str, value: &str) {
    if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
        r.add_header(h);
    }
}

/// The dashboard's link to `dump`, if it lies in the dumps directory.
fn dump_link(dumps_dir: &Path, dump: &Path) -> Option<String> {
    let name = dump.file_name()?.to_str()?;
    // The row may spell the directory differently (relative, a symbolic
    // link): compare where both really are.
    let real = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let inside = dump.parent().map(real) == Some(real(dumps_dir));
    (inside && is_plain_file_name(name)).then(|| format!("/dumps/{name}"))
}

/// One path component, no hidden file, nothing to decode: traversal
/// (`..`, `/`, `%2e`) cannot be spelled.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Crashes per UTC day over the `days` days ending today, oldest first.
pub fn daily_counts(times_ms: &[u64], now_ms: u64, days: usize) -> Vec<u64> {
    let today = now_ms / DAY_MS;
    let mut counts = vec![0; days];
    for &t in times_ms {
        let day = t / DAY_MS;
        if let Some(ago) = today.checked_sub(day)
            && let Ok(ago) = usize::try_from(ago)
            && ago < days
        {
            counts[days - 1 - ago] += 1;
        }
    }
    counts
}

const DAY_MS: u64 = 86_400_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The page or the file.
    pub body: Body,
}

/// What an answer carries.
#[derive(Debug)]
pub enum Body {
    /// An HTML page.
    Html(String),
    /// A dump to download.
    File {
        /// Open for reading.
        file: File,
        /// Its size.
        len: u64,
        /// Its file name.
        name: String,
    },
}

impl Reply {
    fn html(status: u16, markup: maud::Markup) -> Reply {
        Reply {
            status,
            body: Body::Html(markup.into_string()),
        }
    }
}

/// Why a page cannot be shown; each is a clear page of its own status.
#[derive(Debug, thiserror::Error)]
enum PageError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Db(DbError),
}

impl PageError {
    fn reply(self) -> Reply {
        match self {
            PageError::BadRequest(m) => error_page(400, "Bad request", &m),
            PageError::NotFound(m) => error_page(404, "Not found", &m),
            PageError::Db(e @ DbError::UnknownSignature(_)) => {
                error_page(404, "No such signature", &e.to_string())
            }
            PageError::Db(e @ (DbError::AmbiguousSignature { .. } | DbError::EmptySignature)) => {
                error_page(400, "Ambiguous signature", &e.to_string())
            }
            PageError::Db(e) if e.is_unreachable() => {
                error_page(503, "Crash database unreachable", &e.to_string())
            }
            PageError::Db(e) => error_page(500, "Cannot read the crash database", &e.to_string()),
        }
    }
}

fn error_page(status: u16, title: &str, message: &str) -> Reply {
    Reply::html(status, pages::error_page(status, title, message))
}

/// `YYYY-MM-DD HH:MM:SS` UTC.
pub fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests;
