//! Keeping the data directory's dumps within a budget.
//!
//! Dumps are large (the guest's RAM); a reboot loop writes one per crash.
//! After each dump is written, and on `lazarus crashes prune`, the oldest
//! dumps go: first all but the newest [`PrunePolicy::keep_per_signature`]
//! of each signature, then the oldest of all until the dumps' allocated
//! size is within [`PrunePolicy::max_dump_bytes`]. The newest dump is never
//! pruned. The crash rows and reports stay; a row records when its dump
//! was pruned.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{CrashDb, DataDir, DbError};

/// The default dump budget: 1 GiB.
pub const DEFAULT_MAX_DUMP_BYTES: u64 = 1 << 30;
/// The default number of dumps kept per signature.
pub const DEFAULT_KEEP_PER_SIGNATURE: usize = 5;

/// How many dumps to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PrunePolicy {
    /// Most bytes the data directory's dumps may occupy on disk (allocated
    /// blocks, so sparse and dense dumps are counted alike).
    pub max_dump_bytes: u64,
    /// Newest dumps kept per crash signature; 0 keeps any number.
    pub keep_per_signature: usize,
}

impl Default for PrunePolicy {
    fn default() -> Self {
        PrunePolicy {
            max_dump_bytes: DEFAULT_MAX_DUMP_BYTES,
            keep_per_signature: DEFAULT_KEEP_PER_SIGNATURE,
        }
    }
}

/// Why a dump was pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PruneReason {
    /// More than `keep_per_signature` dumps of its signature.
    PerSignature,
    /// The dumps were over the budget, and it was among the oldest.
    Budget,
}

/// One dump pruned (or, on a dry run, to be pruned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrunedDump {
    /// The dump file.
    pub path: PathBuf,
    /// Its allocated size.
    pub bytes: u64,
    /// The crash it belongs to, if it is in the database.
    pub crash_id: Option<i64>,
    /// Its signature, if it is in the database.
    pub signature: Option<String>,
    /// Why.
    pub reason: PruneReason,
}

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Nothing was removed: this is what would be.
    pub dry_run: bool,
    /// The policy applied.
    pub policy: PrunePolicy,
    /// Dumps removed (or to be).
    pub pruned: Vec<PrunedDump>,
    /// Allocated bytes of all dumps before.
    pub bytes_before: u64,
    /// Allocated bytes of the dumps left.
    pub bytes_after: u64,
    /// Dumps left.
    pub dumps_left: usize,
}

/// A dump file on disk.
struct OnDisk {
    path: PathBuf,
    bytes: u64,
    /// Crash time from its row, else the file's modification time.
    time_ms: u64,
    row: Option<(i64, String)>,
}

/// The space a file really takes: its allocated blocks (`st_blocks` is in
/// 512-byte units whatever the file system's block size).
pub fn allocated_bytes(meta: &std::fs::Metadata) -> u64 {
    meta.blocks().saturating_mul(512)
}

/// Prunes the dumps of `data` by `policy` against the crash rows in `db`.
/// Only this data directory's `dumps/*.core` files are touched (a shared
/// database holds other hosts' rows too); `.partial` files being written
/// are left alone. Dumps that no crash row names (on-demand dumps, or a
/// crash still being diagnosed) count towards the budget, but are removed
/// only when no run is using the directory: a run may be reading the dump
/// it just wrote.
pub fn prune(
    data: &DataDir,
    db: &CrashDb,
    policy: PrunePolicy,
    dry_run: bool,
) -> Result<PruneReport, DbError> {
    let alone = data.lock_exclusive()?;
    prune_with(data, db, policy, dry_run, alone.is_some())
}

fn prune_with(
    data: &DataDir,
    db: &CrashDb,
    policy: PrunePolicy,
    dry_run: bool,
    orphans_too: bool,
) -> Result<PruneReport, DbError> {
    let dir = data.dumps_dir();
    let mut files = scan(&dir)?;
    let by_path: HashMap<PathBuf, (i64, String, u64)> = db
        .dump_rows()?
        .into_iter()
        .map(|r| (r.dump_path, (r.id, r.signature, r.time_unix_ms)))
        .collect();
    for f in &mut files {
        if let Some((id, sig, time)) = by_path.get(&f.path) {
            f.row = Some((*id, sig.clone()));
            f.time_ms = *time;
        }
    }
    // Newest first; ties by path so the order is stable.
    files.sort_by(|a, b| b.time_ms.cmp(&a.time_ms).then_with(|| b.path.cmp(&a.path)));
    let bytes_before: u64 = files.iter().map(|f| f.bytes).sum();
    let mut pruned: Vec<(usize, PruneReason)> = Vec::new();

    if policy.keep_per_signature > 0 {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            if let Some((_, sig)) = &f.row {
                let n = seen.entry(sig.as_str()).or_default();
                *n += 1;
                if *n > policy.keep_per_signature {
                    pruned.push((i, PruneReason::PerSignature));
                }
            }
        }
    }
    let mut total: u64 = bytes_before - pruned.iter().map(|&(i, _)| files[i].bytes).sum::<u64>();
    // Oldest first, never the newest (index 0).
    for i in (1..files.len()).rev() {
        if total <= policy.max_dump_bytes {
            break;
        }
        if pruned.iter().any(|&(j, _)| j == i) || (files[i].row.is_none() && !orphans_too) {
            continue;
        }
        total -= files[i].bytes;
        pruned.push((i, PruneReason::Budget));
    }

    let mut report = PruneReport {
        dry_run,
        policy,
        pruned: Vec::new(),
        bytes_before,
        bytes_after: total,
        dumps_left: files.len() - pruned.len(),
    };
    let mut ids = Vec::new();
    for (i, reason) in pruned {
        let f = &files[i];
        if !dry_run {
            match std::fs::remove_file(&f.path) {
                Ok(()) => {}
                // Another process pruned it first: just as good.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(DbError::Io {
                        path: f.path.clone(),
                        source,
                    });
                }
            }
            if let Some((id, _)) = &f.row {
                ids.push(*id);
            }
        }
        report.pruned.push(PrunedDump {
            path: f.path.clone(),
            bytes: f.bytes,
            crash_id: f.row.as_ref().map(|(id, _)| *id),
            signature: f.row.as_ref().map(|(_, s)| s.clone()),
            reason,
        });
    }
    if !ids.is_empty() {
        db.mark_pruned(&ids, now_ms())?;
    }
    Ok(report)
}

/// Prunes with the data directory's own policy and database; what the
/// hypervisor runs after writing each dump.
pub fn prune_dumps(data: &DataDir) -> Result<PruneReport, DbError> {
    let db = CrashDb::open_location(&data.crash_db())?;
    prune_in_session(data, &db)
}

/// Prunes by the directory's own policy from inside a run (which holds the
/// directory, so dumps no row names stay).
pub(crate) fn prune_in_session(data: &DataDir, db: &CrashDb) -> Result<PruneReport, DbError> {
    prune_with(data, db, data.prune_policy(), false, false)
}

/// Every `*.core` file in `dir` (none if it does not exist).
fn scan(dir: &Path) -> Result<Vec<OnDisk>, DbError> {
    let io = |source| DbError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "core") {
            continue;
        }
        // Gone since the listing (another pruner): skip it.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let time_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        out.push(OnDisk {
            path,
            bytes: allocated_bytes(&meta),
            time_ms,
            row: None,
        });
    }
    Ok(out)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Parses a size such as `1G`, `512M`, `64KiB` or `1048576` (bytes);
/// units are binary (K = 1024). Hand-written: four suffixes do not need a
/// dependency.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 1G, 512M, 4096)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{s:?} has an unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("x").is_err());
        assert!(parse_size("1Q").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
