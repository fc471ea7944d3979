//! `lazarus crashes`: the crash database as a support engineer reads it,
//! one line per distinct crash (signature), `show` for one of them,
//! `regroup` after the signature algorithm changed, and `prune` to keep
//! the dumps within their budget.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use lazarus_crashdb::prune::{PruneReport, PrunedDump};
use lazarus_crashdb::{
    Bucket, BucketDetail, CrashDb, DataDir, DbError, DbLocation, PrunePolicy, RegroupReport,
};

use crate::exit;

const CRASHES_HELP: &str = "\
Crashes are grouped by signature: crashes with the same signature are the
same bug. SIG may be any unique prefix of a signature, as with git hashes.

With --crash-db postgres://USER:PASSWORD@HOST:PORT/DB (or LAZARUS_CRASH_DB)
crashes are read from a PostgreSQL database shared by many hosts instead of
the data directory's SQLite file; passwords are never printed.

Exit codes:
  0  success (also when no crash is recorded)
  1  internal error (e.g. the database stayed locked or could not be read)
  2  usage error
  4  unknown or ambiguous signature, bad --crash-db, or not a lazarus crash
     database (or one written by a newer lazarus)
  10  the shared crash database cannot be reached (refused, timed out,
      authentication failed)";

/// Environment variable naming the crash database when `--crash-db` is
/// not given (keeps a password off the command line, where `ps` shows it).
pub const CRASH_DB_ENV: &str = "LAZARUS_CRASH_DB";

/// Where recorded crashes live, and how to print them.
#[derive(Debug, Args)]
#[command(after_help = CRASHES_HELP)]
pub struct CrashesArgs {
    #[command(subcommand)]
    pub command: Option<CrashesCommand>,
    /// Data directory holding crashes.sqlite [default: $LAZARUS_DATA_DIR,
    /// else $XDG_DATA_HOME/lazarus, else ~/.local/share/lazarus].
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// The crash database: a postgres:// URL (shared by many hosts) or a
    /// SQLite file [default: $LAZARUS_CRASH_DB, else DIR/crashes.sqlite].
    #[arg(long, value_name = "URL", global = true)]
    pub crash_db: Option<String>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CrashesCommand {
    /// Show one crash signature and every crash recorded under it.
    #[command(after_help = CRASHES_HELP)]
    Show(ShowArgs),
    /// Recompute the signatures of crashes recorded by an older signature
    /// algorithm from their stored reports, and say which moved.
    #[command(after_help = CRASHES_HELP)]
    Regroup,
    /// Remove old dumps: all but the newest N per signature, then the
    /// oldest until the dumps fit the budget. Rows and reports stay.
    #[command(after_help = CRASHES_HELP)]
    Prune(PruneArgs),
}

/// The dump budget, shared by `lazarus run` and `lazarus crashes prune`.
#[derive(Debug, Clone, Args)]
pub struct BudgetArgs {
    /// Most disk space the data directory's dumps may take (allocated
    /// blocks; K, M, G, T are powers of 1024). Older dumps are pruned.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = lazarus_crashdb::prune::parse_size)]
    pub dump_budget: u64,
    /// Dumps kept per crash signature, newest first (0: no limit).
    #[arg(long, value_name = "N", default_value_t = lazarus_crashdb::prune::DEFAULT_KEEP_PER_SIGNATURE)]
    pub dumps_per_signature: usize,
}

impl BudgetArgs {
    pub fn policy(&self) -> PrunePolicy {
        PrunePolicy {
            max_dump_bytes: self.dump_budget,
            keep_per_signature: self.dumps_per_signature,
        }
    }
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The signature, or a unique prefix of it.
    #[arg(value_name = "SIG")]
    pub signature: String,
}

/// `--crash-db`, else `LAZARUS_CRASH_DB`, parsed; `None` for the data
/// directory's own SQLite file. An error never quotes the URL.
pub fn crash_db_location(flag: Option<&str>) -> anyhow::Result<Option<DbLocation>> {
    let env = std::env::var(CRASH_DB_ENV).ok().filter(|v| !v.is_empty());
    match flag.map(str::to_string).or(env) {
        None => Ok(None),
        Some(s) => DbLocation::parse(&s).map(Some).map_err(db_error),
    }
}

/// Runs `lazarus crashes [show SIG | regroup | prune]`.
pub fn run(args: &CrashesArgs) -> anyhow::Result<ExitCode> {
    let data = DataDir::resolve(args.data_dir.as_deref())
        .map_err(db_error)?
        .with_crash_db(crash_db_location(args.crash_db.as_deref())?);
    data.check().map_err(db_error)?;
    let location = data.crash_db();
    let db = match &location {
        DbLocation::Sqlite(path) => {
            // Reading must not create a database: no file simply means no
            // crashes.
            let exists = path
                .try_exists()
                .with_context(|| format!("cannot access {}", path.display()))?;
            if exists {
                Some(CrashDb::open_location(&location).map_err(db_error)?)
            } else {
                None
            }
        }
        DbLocation::Postgres(_) => Some(CrashDb::open_location(&location).map_err(db_error)?),
    };
    let out = match &args.command {
        None => {
            let buckets = match &db {
                Some(db) => db.buckets().map_err(db_error)?,
                None => Vec::new(),
            };
            list(&buckets, args.json)?
        }
        Some(CrashesCommand::Show(show)) => {
            let detail = match &db {
                Some(db) => db.bucket(&show.signature).map_err(db_error)?,
                None => {
                    return Err(db_error(DbError::UnknownSignature(
                        show.signature.trim().to_string(),
                    )));
                }
            };
            detail_text(&detail, args.json)?
        }
        Some(CrashesCommand::Regroup) => {
            let report = match &db {
                Some(db) => db
                    .regroup(lazarus_diagnose::SIGNATURE_VERSION, |json| {
                        serde_json::from_str::<lazarus_diagnose::Report>(json)
                            .map(|r| lazarus_diagnose::signature_of_report(&r))
                            .map_err(|e| format!("stored report is not readable: {e}"))
                    })
                    .map_err(db_error)?,
                None => RegroupReport {
                    signature_version: lazarus_diagnose::SIGNATURE_VERSION,
                    examined: 0,
                    moved: Vec::new(),
                    unreadable: Vec::new(),
                },
            };
            regroup_text(&report, args.json)?
        }
        Some(CrashesCommand::Prune(prune)) => {
            // Without a database every dump is an orphan, pruned by age.
            let db = match db {
                Some(db) => db,
                None => CrashDb::open_location(&location).map_err(db_error)?,
            };
            let report =
                lazarus_crashdb::prune::prune(&data, &db, prune.budget.policy(), prune.dry_run)
                    .map_err(db_error)?;
            prune_text(&report, args.json)?
        }
    };
    print(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// What `regroup` did, or its JSON.
fn regroup_text(r: &RegroupReport, json: bool) -> anyhow::Result<String> {
    if json {
        return Ok(serde_json::to_string_pretty(r)? + "\n");
    }
    let mut out = format!(
        "{} crash(es) of an older signature version recomputed to version {}; {} moved\n",
        r.examined,
        r.signature_version,
        r.moved.len()
    );
    for m in &r.moved {
        let _ = writeln!(
            out,
            "  crash {}: {} -> {}",
            m.id,
            short_signature(&m.from),
            short_signature(&m.to)
        );
    }
    for u in &r.unreadable {
        let _ = writeln!(out, "  crash {} left as it was: {}", u.id, clean(&u.reason));
    }
    Ok(out)
}

/// What `prune` did (or would do), or its JSON.
fn prune_text(r: &PruneReport, json: bool) -> anyhow::Result<String> {
    if json {
        return Ok(serde_json::to_string_pretty(r)? + "\n");
    }
    let verb = if r.dry_run { "would remove" } else { "removed" };
    let freed: u64 = r.pruned.iter().map(|p| p.bytes).sum();
    let mut out = format!(
        "{verb} {} dump(s), {}; {} dump(s) left, {} (budget {}, {} per signature)\n",
        r.pruned.len(),
        human_bytes(freed),
        r.dumps_left,
        human_bytes(r.bytes_after),
        human_bytes(r.policy.max_dump_bytes),
        r.policy.keep_per_signature,
    );
    for PrunedDump {
        path,
        bytes,
        crash_id,
        reason,
        ..
    } in &r.pruned
    {
        let why = match reason {
            lazarus_crashdb::prune::PruneReason::PerSignature => "per-signature",
            lazarus_crashdb::prune::PruneReason::Budget => "budget",
        };
        let id = crash_id.map_or("-".to_string(), |id| id.to_string());
        let _ = writeln!(
            out,
            "  {}  crash {id}  {}  ({why})",
            clean(&path.display().to_string()),
            human_bytes(*bytes)
        );
    }
    Ok(out)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The bucket table, or `{"buckets": [...]}`.
fn list(buckets: &[Bucket], json: bool) -> anyhow::Result<String> {
    if json {
        let value = serde_json::json!({ "buckets": buckets });
        return Ok(serde_json::to_string_pretty(&value)? + "\n");
    }
    if buckets.is_empty() {
        return Ok("no crashes recorded\n".to_string());
    }
    let header = [
        "SIGNATURE",
        "COUNT",
        "KIND",
        "FIRST SEEN",
        "LAST SEEN",
        "TITLE",
        "EXAMPLE DUMP",
    ];
    let rows: Vec<Vec<String>> = buckets
        .iter()
        .map(|b| {
            vec![
                short_signature(&b.signature),
                b.count.to_string(),
                clean(&b.kind),
                format_utc(b.first_seen_unix_ms),
                format_utc(b.last_seen_unix_ms),
                clean(&b.title),
                opt_path(b.example_dump.as_ref()),
            ]
        })
        .collect();
    Ok(table(&header, &rows, &[1]))
}

/// One bucket and its crashes, or `{"bucket": {...}, "crashes": [...]}`.
fn detail_text(detail: &BucketDetail, json: bool) -> anyhow::Result<String> {
    if json {
        return Ok(serde_json::to_string_pretty(detail)? + "\n");
    }
    let b = &detail.bucket;
    let extensions = if b.extensions.is_empty() {
        "-".to_string()
    } else {
        clean(&b.extensions.join(", "))
    };
    let mut out = String::new();
    for (key, value) in [
        ("signature", clean(&b.signature)),
        ("kind", clean(&b.kind)),
        ("title", clean(&b.title)),
        ("crashes", b.count.to_string()),
        ("first seen", format_utc(b.first_seen_unix_ms)),
        ("last seen", format_utc(b.last_seen_unix_ms)),
        ("extensions", extensions),
        ("example dump", opt_path(b.example_dump.as_ref())),
    ] {
        let _ = writeln!(out, "{key:<13} {value}");
    }
    out.push('\n');
    let header = [
        "ID",
        "TIME",
        "BOOT",
        "ACTION",
        "PROCESS",
        "EXTENSION",
        "DUMP",
        "REPORT",
    ];
    let rows: Vec<Vec<String>> = detail
        .crashes
        .iter()
        .map(|c| {
            let mut dump = opt_path(c.dump_path.as_ref());
            if c.dump_pruned {
                dump.push_str(" (pruned)");
            } else if c.dump_path.is_some() && !c.dump_exists {
                dump.push_str(" (missing)");
            }
            vec![
                c.id.to_string(),
                format_utc(c.time_unix_ms),
                clean(&c.boot_id),
                match &c.fallback {
                    Some(why) => format!("{} ({})", clean(&c.action), clean(why)),
                    None => clean(&c.action),
                },
                c.process.as_deref().map_or("-".to_string(), clean),
                c.extension.as_deref().map_or("-".to_string(), clean),
                dump,
                opt_path(c.report_path.as_ref()),
            ]
        })
        .collect();
    out.push_str(&table(&header, &rows, &[0]));
    Ok(out)
}

/// Left-aligned columns (right-aligned for the `numeric` ones), two spaces
/// apart; the last column is not padded so long paths do not add blanks.
fn table(header: &[&str], rows: &[Vec<String>], numeric: &[usize]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if i + 1 == row.len() {
                line.push_str(cell);
            } else if numeric.contains(&i) {
                let _ = write!(line, "{cell:>w$}");
            } else {
                let _ = write!(line, "{cell:<w$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Signatures are long hashes; 16 hex digits tell them apart in a table
/// and are accepted back by `show`.
fn short_signature(sig: &str) -> String {
    clean(&sig.chars().take(16).collect::<String>())
}

/// Report fields may carry guest-chosen text (process names, titles): no
/// control character from them reaches the terminal.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn opt_path(path: Option<&PathBuf>) -> String {
    path.map_or("-".to_string(), |p| clean(&p.display().to_string()))
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC), without a date crate.
pub fn format_utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Writes to stdout; a closed pipe (`lazarus crashes | head`) is not an
/// error worth a message.
fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// Gives bad-input errors (unknown signature, not a crash database) and an
/// unreachable shared database their exit codes; anything else is
/// internal.
pub fn db_error(e: DbError) -> anyhow::Error {
    if e.is_unreachable() {
        exit::failure(exit::DB_UNREACHABLE, e.to_string())
    } else if e.is_bad_input() {
        exit::failure(exit::BAD_INPUT, e.to_string())
    } else {
        anyhow::Error::new(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400_999), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(4_107_542_399_000), "2100-02-28T23:59:59Z");
        assert_eq!(format_utc(4_107_542_400_000), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn table_aligns_and_cleans() {
        let rows = vec![vec!["a".into(), "7".into(), "x".into()]];
        let t = table(&["NAME", "N", "LAST"], &rows, &[1]);
        assert_eq!(t, "NAME  N  LAST\na     7  x\n");
        assert_eq!(clean("evil\x1b[2Jname\n"), "evil?[2Jname?");
        assert_eq!(short_signature("0123456789abcdef0123"), "0123456789abcdef");
    }
}
