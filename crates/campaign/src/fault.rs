//! One fault: inject it (from the host with `lazarus-inject`, or as a
//! crash-test kind typed into the shell), wait for it to show itself,
//! check the survivors and classify the outcome.

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use lazarus_abi::repair::EXT_ACTION_DISABLED;
use lazarus_inject::{FaultSpec, FaultType, Injection, Injector};
use lazarus_resurrect::Recovery;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::config::{CRASH_TEST, CampaignConfig};
use crate::error::CampaignError;
use crate::extclient::{EXT_REPORT_WAIT, ext_serves_again, last_ext_report};
use crate::outcome::{FaultRecord, Outcome};
use crate::session::Session;

/// The crash-test kinds a campaign triggers (the guest's `crash list`).
const CRASH_KINDS: &[&str] = &[
    "panic",
    "null-read",
    "wild-write",
    "gp",
    "ud2",
    "divide",
    "stack-overflow",
    "hard-lockup",
    "soft-lockup",
    "deadlock",
    "double-fault",
    "list-corruption",
    "timer-fault",
    "triple-fault",
    "emulation-failure",
    "corrupt-code",
    // Not crashes: the extension fails its caller (the client reports
    // it, or the kernel catches a broken contract).
    "fail-silent",
    "overlong-read",
];

/// How long a crash test has to show itself: lockups need the watchdog.
const CRASH_TEST_WAIT: Duration = Duration::from_secs(3);

/// Where the faults come from: the injector and the stream that picks
/// crash kinds.
pub(crate) struct Faults<'a> {
    pub(crate) injector: &'a mut Injector,
    pub(crate) pick: &'a mut ChaCha8Rng,
}

/// Injects fault number `n` of type `fault` and classifies what happened.
pub(crate) fn one_fault(
    s: &mut Session,
    f: Faults<'_>,
    c: &CampaignConfig,
    n: u64,
    fault: &str,
) -> Result<FaultRecord, CampaignError> {
    // Drain what came before: any stale recovery report.
    while s.recoveries.try_recv().is_ok() {}
    let mut rec = FaultRecord::new(n, fault);
    let mut injection: Option<Injection> = None;
    if fault == CRASH_TEST {
        let kind = CRASH_KINDS[f.pick.random_range(0..CRASH_KINDS.len())];
        rec.target = format!("crash {kind}");
        s.d.send(&format!("crash {kind}"));
    } else {
        let ft: FaultType = fault.parse().map_err(CampaignError::FaultType)?;
        let mut spec = FaultSpec::new(ft);
        if ft.targets_code() {
            spec = spec.with_ext(c.ext.clone());
        }
        let root = s.control.root_gpa().ok_or(CampaignError::NoStateRoot)?;
        // Inject with the vCPUs parked, so the injector reads a consistent
        // kernel state; the guard resumes them.
        let paused = s.control.pause(Duration::from_secs(1));
        let result = f.injector.inject(s.control.memory(), root, &spec);
        drop(paused);
        match result {
            Ok(inj) => {
                rec.target = inj.target.clone();
                rec.detail = inj.detail.clone();
                injection = Some(inj);
            }
            Err(e) => {
                // Nothing to inject into (e.g. the extension is being
                // reloaded): not a fault at all; say so and move on.
                rec.note = format!("not injected: {e}");
                return Ok(rec);
            }
        }
    }

    // Activation: a resurrection, or the VM thread ending (a fallback).
    let wait = if fault == CRASH_TEST {
        CRASH_TEST_WAIT
    } else {
        c.window
    };
    let mut recovery = match s.recoveries.recv_timeout(wait) {
        Ok(r) => Some(r),
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => None,
    };
    if s.finished() {
        return Ok(s.fell_back(rec));
    }
    let ext_failed = match (&recovery, &injection) {
        (None, Some(_)) => ext_failure(s, &mut recovery),
        _ => None,
    };
    if recovery.is_none()
        && let Some(inj) = &injection
    {
        // Not activated as a crash: put the bytes back while they are ours.
        if inj.is_present(s.control.memory()) {
            let _ = inj.revert(s.control.memory());
        }
    }
    // Let the workload run a little after the fault, then verify.
    if s.d.resync().is_err() {
        if s.finished() {
            return Ok(s.fell_back(rec));
        }
        rec.outcome = Outcome::Hung;
        rec.note = "the shell stopped answering".into();
        return Ok(rec);
    }
    let console = s.d.take_since_mark();
    if recovery.is_none() {
        recovery = s.recoveries.try_recv().ok();
    }
    if let Some(r) = &recovery {
        recovered(s, &mut rec, r, &c.ext)?;
    }
    let v = s.survivors(&console);
    if let Some(why) = ext_failed
        && v.responsive
        && v.corrupt.is_none()
    {
        rec.outcome = Outcome::ExtensionFailed;
        rec.note = why;
        // With the bytes back, the extension must serve its client again;
        // if the fault left its state broken, start over on a fresh VM.
        if !ext_serves_again(&mut s.d) {
            rec.note
                .push_str("; still failing after the fault was removed");
            s.broken = true;
        }
    }
    if !v.responsive {
        if s.finished() {
            return Ok(s.fell_back(rec));
        }
        rec.outcome = Outcome::Hung;
        rec.note = "the shell stopped answering".into();
    } else if let Some(why) = v.corrupt {
        rec.outcome = Outcome::SilentCorruption;
        rec.note = if rec.note.is_empty() {
            why
        } else {
            format!("{}; {why}", rec.note)
        };
    }
    s.ext_progress = last_ext_report(&s.d.take_since_mark()).unwrap_or(s.ext_progress);
    s.d.mark();
    Ok(rec)
}

/// No crash: did the extension stop working for its client instead
/// (errors, or no progress)? extclient reports every 200 ms. A
/// resurrection that shows up meanwhile lands in `recovery`.
fn ext_failure(s: &mut Session, recovery: &mut Option<Recovery>) -> Option<String> {
    let until = Instant::now() + EXT_REPORT_WAIT;
    let before = s.ext_progress;
    let mut after = None;
    while Instant::now() < until && recovery.is_none() {
        after = last_ext_report(&s.d.take_since_mark()).filter(|a| a.seq >= 2);
        if after.is_some() {
            break;
        }
        *recovery = s.recoveries.recv_timeout(Duration::from_millis(50)).ok();
    }
    if recovery.is_some() {
        return None;
    }
    match after {
        Some(a) if a.errors > before.errors || a.ok <= before.ok => Some(format!(
            "the extension failed its client without crashing: extclient ok {} -> {}, errors {} -> {}",
            before.ok, a.ok, before.errors, a.errors
        )),
        Some(_) => None,
        None => Some("extclient stopped reporting".to_string()),
    }
}

/// A resurrection: record it, restart the quarantined workload process,
/// and write the kv keys anew when their keeper was the offender.
fn recovered(
    s: &mut Session,
    rec: &mut FaultRecord,
    r: &Recovery,
    target: &str,
) -> Result<(), CampaignError> {
    rec.latency_ms = Some(r.latency.as_secs_f64() * 1e3);
    rec.note = r.summary();
    rec.outcome = Outcome::Recovered;
    s.restart_offender(r.plan.quarantined)?;
    // The target disabled after repeated crashes serves nobody: the
    // faults to come would only find it gone. They get a new VM.
    let disabled = r.plan.ext_actions.get(r.plan.ext as usize) == Some(&EXT_ACTION_DISABLED);
    if disabled && lazarus_abi::name_str(&r.plan.ext_name) == target {
        rec.note
            .push_str("; the extension is disabled: a new VM for the next fault");
        s.broken = true;
    }
    // The kv data lives in kvstore and the record of what was written in
    // the shell: when either was the offender (init restarts both), that
    // state was the offender's own and is written anew.
    if matches!(lazarus_abi::name_str(&r.plan.name), "shell" | "kvstore") {
        s.d.resync()?;
        s.fill_kv()?;
    }
    Ok(())
}
