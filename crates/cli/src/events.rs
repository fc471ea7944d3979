//! What `lazarus run --events PATH` says about each boot, crash,
//! resurrection, fallback, reboot and dump: the [`Event`]s made from what
//! the hypervisor, the resurrector and triage report.

use std::path::Path;
use std::time::{Duration, SystemTime};

use lazarus_events::{Event, EventLog, EventSink, Summary};
use lazarus_resurrect::Recovery;
use lazarus_triage::Persisted;
use lazarus_vmm::CrashInfo;

use crate::exit::{BAD_INPUT, failure};

/// How long the writer may still deliver queued events at exit (a FIFO
/// whose reader stalls gets no longer than this).
const GRACE: Duration = Duration::from_secs(2);

/// Opens the stream of `--events`, before anything boots: a path that
/// cannot be written is bad input (exit code 4).
pub fn open(path: &Path) -> anyhow::Result<EventSink> {
    EventSink::open(path, lazarus_events::DEFAULT_CAPACITY)
        .map_err(|e| failure(BAD_INPUT, format!("--events: {e}")))
}

/// Closes the stream and says on stderr what was lost, if anything.
pub fn close(sink: EventSink) -> Summary {
    let path = sink.path().to_path_buf();
    let s = sink.finish(GRACE);
    if s.dropped > 0 {
        eprintln!(
            "lazarus: warning: {} of {} events were not written to {} (the reader was missing or too slow)",
            s.dropped,
            s.dropped + s.written,
            path.display()
        );
    }
    if let Some(e) = &s.last_error {
        eprintln!(
            "lazarus: warning: writing events to {}: {e}",
            path.display()
        );
    }
    s
}

/// When `info`'s crash was detected, on the wall clock.
fn detected_at(info: &CrashInfo) -> SystemTime {
    SystemTime::now()
        .checked_sub(info.detected_at.elapsed())
        .unwrap_or_else(SystemTime::now)
}

/// The `crash` event of `info`; `detail` is the console's account.
fn crash(info: &CrashInfo, detail: String) -> Event {
    Event::Crash {
        detector: lazarus_resurrect::detector_name(&info.kind).to_string(),
        vcpu: info.vcpu,
        rip: info.regs.map(|r| format!("{:#x}", r.rip)),
        detail,
    }
}

/// A crash that ended boot `boot`: `crash`, then `fallback` when
/// resurrection was tried and not safe.
pub fn crash_ended_boot(
    events: &EventLog,
    boot_id: &str,
    boot: u64,
    info: &CrashInfo,
    detail: &str,
) {
    if !events.is_enabled() {
        return;
    }
    let id = Some(boot_id);
    events.event_at(
        detected_at(info),
        id,
        Some(boot),
        crash(info, detail.to_string()),
    );
    if let Some((code, reason)) = crate::api::fallback_of(info) {
        events.event(
            id,
            Some(boot),
            Event::Fallback {
                reason: code.to_string(),
                detail: reason,
            },
        );
    }
}

/// A resurrection: `crash`, `resurrected`, and `extension_reset` or
/// `extension_disabled` when the repair did that to an extension.
pub fn resurrected(events: &EventLog, boot_id: &str, boot: u64, rec: &Recovery) {
    if !events.is_enabled() {
        return;
    }
    let id = Some(boot_id);
    let info = crate::api::recovery_info(rec, rec.seq, boot);
    events.event_at(
        detected_at(&rec.crash),
        id,
        Some(boot),
        crash(&rec.crash, info.crash.clone()),
    );
    let covered = (0..32u32)
        .filter(|i| rec.plan.covered_cpus & (1 << i) != 0)
        .collect();
    events.event(
        id,
        Some(boot),
        Event::Resurrected {
            kind: info.kind,
            vcpu: rec.crash.vcpu,
            pid: info.quarantined_pid,
            process: info.quarantined_name,
            extension: info.extension.clone(),
            extension_action: info.extension_action.clone(),
            symbol: info.symbol,
            latency_us: info.latency_us,
            snapshot_us: info.snapshot_us,
            repair_us: info.repair_us,
            resume_us: info.resume_us,
            code_bytes_restored: info.code_bytes_restored,
            covered_vcpus: covered,
            summary: info.summary,
        },
    );
    if let (Some(extension), Some(action)) = (info.extension, info.extension_action) {
        let slot = rec.plan.ext;
        let e = match action.as_str() {
            "disabled" => Event::ExtensionDisabled { extension, slot },
            _ => Event::ExtensionReset { extension, slot },
        };
        events.event(id, Some(boot), e);
    }
}

/// The `dump_written` event of `p`.
pub fn dump_written(p: &Persisted, on_demand: bool) -> Event {
    Event::DumpWritten {
        dump: p.dump.clone(),
        report: p.report_json.clone(),
        signature: p.signature.clone(),
        title: p.title.clone(),
        on_demand,
    }
}

/// A crash dump written in the background for one of the boots in
/// `boots` (boot id and number): the one whose id its file is named
/// after (`DataDir`: a dump is named `TIME-BOOTID-DETECTOR.core`).
pub fn dump_of_boot(events: &EventLog, p: &Persisted, boots: &[(String, u64)]) {
    let name = p
        .dump
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let boot = boots.iter().find(|(id, _)| name.contains(id.as_str()));
    events.event(
        boot.map(|b| b.0.as_str()),
        boot.map(|b| b.1),
        dump_written(p, false),
    );
}
