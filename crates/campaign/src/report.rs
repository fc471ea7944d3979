//! A campaign's results: counts per outcome and fault type, the recovery
//! latency, memory samples and every fault's record. Serialized as the
//! JSON of `lazarus campaign --json` (keys `faults`, `vcpus`, `outcomes`,
//! `by_type`, `latency_ms`, ...), so field names and order are stable.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::outcome::{FaultRecord, Outcome};
use crate::stats::stats;

/// Counts per outcome name, every outcome present.
pub type OutcomeCounts = BTreeMap<&'static str, u64>;

/// The recovery latency over all resurrections, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct LatencySummary {
    /// Resurrections measured.
    pub samples: usize,
    /// Nearest-rank median (`NaN`, in JSON `null`, without samples).
    pub median: f64,
    /// Nearest-rank 99th percentile.
    pub p99: f64,
    /// Slowest resurrection.
    pub max: f64,
}

/// Memory of the guest kernel and the hypervisor at one time.
#[derive(Clone, Debug, Serialize)]
pub struct MemorySample {
    /// Seconds since the campaign started.
    pub t_s: f64,
    /// Faults injected so far.
    pub faults: u64,
    /// The hypervisor's resident set, guest RAM included.
    pub host_rss_kib: Option<u64>,
    /// Guest RAM pages resident in the hypervisor's memory.
    pub guest_ram_resident_kib: Option<u64>,
    /// The hypervisor's own memory: its RSS less the guest RAM in it.
    pub vmm_own_kib: Option<u64>,
    /// Physical frames the guest kernel has allocated.
    pub guest_frames_used: Option<u64>,
    /// Bytes in use in the guest kernel's heap.
    pub guest_heap_used_bytes: Option<u64>,
}

/// Everything a campaign found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Faults injected.
    pub faults: u64,
    /// The campaign's seed.
    pub seed: u64,
    /// The extension code faults went into.
    pub ext: String,
    /// The fault types drawn from.
    pub types: Vec<String>,
    /// vCPUs of the guest (`VmConfig::vcpus` of the first VM booted).
    pub vcpus: u32,
    /// Wall-clock duration of the campaign.
    pub duration_s: f64,
    /// VMs booted (the first one and one after every fault that needed a
    /// new guest).
    pub boots: u64,
    /// Faults per outcome.
    pub outcomes: OutcomeCounts,
    /// Faults per outcome, for each fault type.
    pub by_type: BTreeMap<String, OutcomeCounts>,
    /// Recovery latency of the resurrections.
    pub latency_ms: LatencySummary,
    /// Recovered (by resurrection) out of all activated faults.
    pub recovery_rate: f64,
    /// Memory samples over time.
    pub memory: Vec<MemorySample>,
    /// Every fault, in order.
    pub records: Vec<FaultRecord>,
}

/// What the campaign loop collected, before it is summarized.
pub(crate) struct Collected {
    pub(crate) seed: u64,
    pub(crate) ext: String,
    pub(crate) types: Vec<String>,
    pub(crate) vcpus: u32,
    pub(crate) took: Duration,
    pub(crate) boots: u64,
    pub(crate) records: Vec<FaultRecord>,
    pub(crate) memory: Vec<MemorySample>,
}

/// Every outcome with a count of 0.
fn no_outcomes() -> OutcomeCounts {
    Outcome::ALL.iter().map(|o| (o.name(), 0u64)).collect()
}

/// Counts the outcomes and summarizes the latencies.
pub(crate) fn summarize(c: Collected) -> Report {
    let mut outcomes = no_outcomes();
    let mut by_type: BTreeMap<String, OutcomeCounts> =
        c.types.iter().map(|t| (t.clone(), no_outcomes())).collect();
    let mut latencies = Vec::new();
    for r in &c.records {
        *outcomes.entry(r.outcome.name()).or_default() += 1;
        *by_type
            .entry(r.fault.clone())
            .or_insert_with(no_outcomes)
            .entry(r.outcome.name())
            .or_default() += 1;
        if let Some(l) = r.latency_ms {
            latencies.push(l);
        }
    }
    let st = stats(&latencies);
    let activated = c
        .records
        .iter()
        .filter(|r| r.outcome != Outcome::NotActivated)
        .count();
    let recovered = outcomes
        .get(Outcome::Recovered.name())
        .copied()
        .unwrap_or(0);
    Report {
        faults: c.records.len() as u64,
        seed: c.seed,
        ext: c.ext,
        types: c.types,
        vcpus: c.vcpus,
        duration_s: c.took.as_secs_f64(),
        boots: c.boots,
        outcomes,
        by_type,
        latency_ms: LatencySummary {
            samples: latencies.len(),
            median: st.median,
            p99: st.p99,
            max: st.max,
        },
        recovery_rate: if activated == 0 {
            f64::NAN
        } else {
            recovered as f64 / activated as f64
        },
        memory: c.memory,
        records: c.records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64, fault: &str, outcome: Outcome, latency_ms: Option<f64>) -> FaultRecord {
        FaultRecord {
            outcome,
            latency_ms,
            ..FaultRecord::new(n, fault)
        }
    }

    fn report() -> Report {
        summarize(Collected {
            seed: 3,
            ext: "ramdisk".into(),
            types: vec!["bit-flip".into(), "crash-test".into()],
            vcpus: 2,
            took: Duration::from_secs(2),
            boots: 2,
            records: vec![
                record(1, "crash-test", Outcome::Recovered, Some(2.0)),
                record(2, "bit-flip", Outcome::NotActivated, None),
                record(3, "crash-test", Outcome::Recovered, Some(1.0)),
                record(4, "bit-flip", Outcome::RecoveredByReboot, None),
            ],
            memory: Vec::new(),
        })
    }

    #[test]
    fn counts_outcomes_per_type() {
        let r = report();
        assert_eq!(r.faults, 4);
        assert_eq!(r.outcomes["recovered"], 2);
        assert_eq!(r.outcomes["not-activated"], 1);
        assert_eq!(r.outcomes["hung"], 0);
        assert_eq!(r.by_type["crash-test"]["recovered"], 2);
        assert_eq!(r.by_type["bit-flip"]["recovered-by-reboot"], 1);
        assert_eq!(r.by_type["bit-flip"].len(), Outcome::ALL.len());
        assert_eq!((r.latency_ms.samples, r.latency_ms.median), (2, 1.0));
        assert_eq!(r.latency_ms.p99, 2.0);
        assert!((r.recovery_rate - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn json_has_the_documented_keys_in_order() {
        let json = serde_json::to_string(&report()).expect("json");
        let keys = [
            "\"faults\"",
            "\"seed\"",
            "\"ext\"",
            "\"types\"",
            "\"vcpus\"",
            "\"duration_s\"",
            "\"boots\"",
            "\"outcomes\"",
            "\"by_type\"",
            "\"latency_ms\"",
            "\"recovery_rate\"",
            "\"memory\"",
            "\"records\"",
        ];
        let at: Vec<usize> = keys
            .iter()
            .map(|k| {
                json.find(k)
                    .unwrap_or_else(|| panic!("{k} missing: {json}"))
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).expect("parse");
        assert_eq!(v["latency_ms"]["median"], 1.0);
        assert_eq!(v["latency_ms"]["p99"], 2.0);
        assert_eq!(v["records"][0]["outcome"], "recovered");
        assert_eq!(v["vcpus"], 2);
    }

    #[test]
    fn nothing_activated_has_no_rate() {
        let r = summarize(Collected {
            seed: 1,
            ext: "ramdisk".into(),
            types: vec!["bit-flip".into()],
            vcpus: 1,
            took: Duration::ZERO,
            boots: 1,
            records: vec![record(1, "bit-flip", Outcome::NotActivated, None)],
            memory: Vec::new(),
        });
        assert!(r.recovery_rate.is_nan());
        assert!(r.latency_ms.median.is_nan());
    }
}
