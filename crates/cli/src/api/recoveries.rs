//! The session's resurrections: recorded as they happen, listed by
//! `GET /recoveries`; their latencies feed the metrics.

use std::time::Duration;

use lazarus_abi::repair::{EXT_ACTION_DISABLED, EXT_ACTION_RESET};
use lazarus_abi::root::NONE;
use lazarus_api::{RecoveryInfo, RecoveryList};
use lazarus_resurrect::Recovery;
use lazarus_triage::unix_ms;

use crate::api::session::{ApiSession, lock};

/// Recoveries kept for `GET /recoveries`, and latencies for the metrics.
const MAX_RECOVERIES: usize = 1000;
const MAX_LATENCIES: usize = 10_000;

/// What the API and the event stream say about a resurrection: its
/// `seq` over the session, boot `boot` (1-based).
pub(crate) fn recovery_info(rec: &Recovery, seq: u64, boot: u64) -> RecoveryInfo {
    let plan = &rec.plan;
    let ext = (plan.ext != NONE).then(|| {
        let name = lazarus_abi::name_str(&plan.ext_name);
        if name.is_empty() {
            format!("slot {}", plan.ext)
        } else {
            name.to_string()
        }
    });
    let ext_action = (plan.ext != NONE)
        .then(|| plan.ext_actions.get(plan.ext as usize).copied())
        .flatten()
        .and_then(|a| match a {
            EXT_ACTION_RESET => Some("reset".to_string()),
            EXT_ACTION_DISABLED => Some("disabled".to_string()),
            _ => None,
        });
    let symbol = lazarus_abi::name_str(&plan.symbol);
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    RecoveryInfo {
        seq,
        boot,
        boot_seq: rec.seq,
        time_unix_ms: unix_ms(),
        kind: rec.kind().to_string(),
        crash: rec.crash.summary(),
        extension: ext,
        extension_action: ext_action,
        quarantined_pid: (plan.quarantined != 0).then_some(plan.quarantined),
        quarantined_name: (plan.quarantined != 0)
            .then(|| lazarus_abi::name_str(&plan.name).to_string()),
        symbol: (!symbol.is_empty()).then(|| symbol.to_string()),
        code_bytes_restored: plan.code_bytes_restored,
        latency_us: us(rec.latency),
        snapshot_us: us(rec.snapshot_time),
        repair_us: us(rec.repair_time),
        unmap_us: us(rec.unmap_time),
        resume_us: us(rec.resume_time),
        summary: rec.summary(),
    }
}

impl ApiSession {
    /// A resurrection of boot `boot`.
    pub fn record_recovery(&self, rec: &Recovery, boot: u64) {
        self.telemetry
            .crash(lazarus_resurrect::detector_name(&rec.crash.kind));
        self.telemetry.resurrection(rec.kind(), rec.latency);
        let mut st = lock(&self.state);
        let info = recovery_info(rec, st.recovery_total, boot);
        st.recovery_total += 1;
        st.crashes += 1;
        if st.latencies_us.len() >= MAX_LATENCIES {
            st.latencies_us.pop_front();
        }
        st.latencies_us.push_back(info.latency_us);
        if st.recoveries.len() >= MAX_RECOVERIES {
            st.recoveries.pop_front();
        }
        st.recoveries.push_back(info);
    }

    /// The recoveries kept, oldest first, and how many there were.
    pub(crate) fn recovery_list(&self) -> RecoveryList {
        let st = lock(&self.state);
        RecoveryList {
            total: st.recovery_total,
            recoveries: st.recoveries.iter().cloned().collect(),
        }
    }
}
