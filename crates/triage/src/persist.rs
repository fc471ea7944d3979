//! Writing a captured crash: the ELF core dump, its diagnosis (JSON and
//! text) and the crash-database entry.

use std::path::PathBuf;

use lazarus_crashdb::{DataDir, NewCrash};
use lazarus_dump::{DumpInput, Memory};
use lazarus_symbols::SymbolStore;

use crate::capture::{Captured, RamSource};
use crate::error::TriageError;

/// Where a crash ended up.
#[derive(Debug, Clone)]
pub struct Persisted {
    /// The ELF core dump.
    pub dump: PathBuf,
    /// The diagnosis report, JSON.
    pub report_json: PathBuf,
    /// The crash signature (its bucket in the crash database).
    pub signature: String,
    /// The report's title.
    pub title: String,
    /// The report as text.
    pub text: String,
}

/// Writes the dump, diagnoses it and records it in the crash database.
pub(crate) fn persist(
    data: &DataDir,
    symbols: &SymbolStore,
    c: Captured,
) -> Result<Persisted, TriageError> {
    let (persisted, new) = write_report(data, symbols, c)?;
    // Old dumps are pruned right after each one, so a reboot loop cannot
    // fill the disk. The crash is saved either way; a failed prune is
    // retried after the next.
    let (_, pruned) =
        lazarus_crashdb::record_and_prune(data, &new, true).map_err(TriageError::Database)?;
    if let Some(Err(e)) = pruned {
        tracing::warn!("pruning old dumps: {e}");
    }
    Ok(persisted)
}

/// Writes the dump, diagnoses it and writes the report (JSON and text);
/// returns where, and the crash-database entry to record.
pub(crate) fn write_report(
    data: &DataDir,
    symbols: &SymbolStore,
    c: Captured,
) -> Result<(Persisted, NewCrash), TriageError> {
    let stem = format!(
        "{}-{}-{}",
        c.note.time_unix_ms,
        c.note.boot_id,
        c.note
            .detector
            .replace(|ch: char| !ch.is_ascii_alphanumeric(), "_")
    );
    let dump = data.dumps_dir().join(format!("{stem}.core"));
    let memory = match &c.ram {
        // SAFETY: a shared RAM source is a crashed VM's, stopped for good.
        RamSource::Shared(ram, size) => Memory::Ram(
            unsafe { lazarus_vmm::memory::ram_bytes(ram) }
                .and_then(|b| b.get(..*size))
                .ok_or_else(|| {
                    TriageError::GuestMemory(format!("not {size} contiguous bytes from 0"))
                })?,
        ),
        // Only what the snapshot captured goes into the dump.
        RamSource::Snapshot(snap) => Memory::Captured {
            ram_size: snap.mem_size,
            ranges: snap.captured().collect(),
        },
        RamSource::Copy(ram) => Memory::Ram(ram),
    };
    let input = DumpInput {
        memory,
        note: c.note.clone(),
    };
    lazarus_dump::write_core(&dump, &input).map_err(|source| TriageError::WriteDump {
        path: dump.clone(),
        source,
    })?;
    drop(input);
    drop(c.ram);
    let parsed = lazarus_dump::Dump::open(&dump).map_err(|source| TriageError::ReadDump {
        path: dump.clone(),
        source,
    })?;
    let report = lazarus_diagnose::diagnose(&parsed, symbols)?;
    let json = serde_json::to_string_pretty(&report)?;
    let report_json = data.reports_dir().join(format!("{stem}.json"));
    std::fs::write(&report_json, &json).map_err(|source| TriageError::WriteReport {
        path: report_json.clone(),
        source,
    })?;
    let text = report.render_text();
    let _ = std::fs::write(data.reports_dir().join(format!("{stem}.txt")), &text);
    let new = NewCrash {
        signature: report.signature.clone(),
        signature_version: lazarus_diagnose::SIGNATURE_VERSION,
        kind: report.kind.as_str().to_string(),
        title: report.title.clone(),
        time_unix_ms: c.note.time_unix_ms,
        boot_id: c.note.boot_id.clone(),
        extension: report.extension.as_ref().map(|e| e.name.clone()),
        process: report
            .process
            .as_ref()
            .map(|p| format!("pid {} ({})", p.pid, p.name)),
        action: c.action.to_string(),
        fallback: c.fallback.map(str::to_string),
        dump_path: Some(dump.clone()),
        report_json: json,
    };
    let persisted = Persisted {
        dump,
        report_json,
        signature: report.signature,
        title: report.title,
        text,
    };
    Ok((persisted, new))
}
