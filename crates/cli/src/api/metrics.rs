//! `GET /metrics`: exits, recoveries and their latency, crashes, and the
//! memory of the guest and the hypervisor, as JSON or for Prometheus.

use std::collections::VecDeque;

use lazarus_api::{
    BackendError, CrashMetrics, ExitMetrics, LatencyStats, MemoryMetrics, Metrics, MetricsFormat,
    RecoveryMetrics, VmState,
};
use lazarus_campaign::stats::percentile;

use crate::api::session::{ApiSession, lock, ms, vm_state};

impl ApiSession {
    /// What `GET /metrics` answers.
    pub(crate) fn metrics_now(&self) -> Result<Metrics, BackendError> {
        let recorded = self
            .crash_buckets()
            .ok()
            .map(|b| b.iter().map(|b| b.count).sum());
        let st = lock(&self.state);
        let control = st.vm.as_ref().map(|a| &a.control);
        let exits = control
            .map(|c| c.exit_counts())
            .map_or_else(ExitMetrics::default, |c| ExitMetrics {
                total: c.total(),
                by_kind: c
                    .nonzero()
                    .map(|(k, n)| (k.name().to_string(), n))
                    .collect(),
            });
        let usage = control.map(|c| c.memory_usage());
        let guest = control
            .and_then(|c| lazarus_resurrect::guest_kernel_memory(c.memory(), c.root_gpa()?).ok());
        let memory = MemoryMetrics {
            host_rss_bytes: usage
                .and_then(|u| u.host_rss_bytes)
                .or_else(lazarus_vmm::usage::host_rss_bytes),
            guest_ram_resident_bytes: usage.and_then(|u| u.guest_ram_resident_bytes),
            vmm_own_bytes: usage.and_then(|u| u.vmm_own_bytes()),
            guest_ram_bytes: control.map_or(self.memory_mib << 20, |c| c.layout().mem_size),
            guest_frames_total: guest.map(|g| g.frames_total),
            guest_frames_used: guest.map(|g| g.frames_used),
            guest_heap_size_bytes: guest.map(|g| g.heap_size_bytes),
            guest_heap_used_bytes: guest.map(|g| g.heap_used_bytes),
            guest_heap_blocks_used: guest.map(|g| g.heap_blocks_used),
        };
        Ok(Metrics {
            uptime_ms: ms(self.started.elapsed()),
            boots: st.boots,
            state: control.map_or(VmState::Stopped, |c| vm_state(c.state())),
            paused_ms: control.map_or(0, |c| ms(c.paused_total())),
            exits,
            recoveries: RecoveryMetrics {
                count: st.recovery_total,
                latency_us: latency_stats(&st.latencies_us),
            },
            crashes: CrashMetrics {
                session: st.crashes,
                recorded,
            },
            memory,
            events_dropped: self.events.is_enabled().then(|| self.events.dropped()),
        })
    }

    /// What `GET /metrics` answers Prometheus.
    pub(crate) fn metrics_text(&self, format: MetricsFormat) -> Result<String, BackendError> {
        let m = self.metrics_now()?;
        self.telemetry
            .encode(&m, format)
            .map_err(|e| BackendError::Internal(format!("encoding the metrics: {e}")))
    }
}

/// Median and 99th percentile (nearest rank) of `samples`.
fn latency_stats(samples: &VecDeque<u64>) -> LatencyStats {
    let mut v: Vec<u64> = samples.iter().copied().collect();
    v.sort_unstable();
    LatencyStats {
        samples: v.len() as u64,
        median: percentile(&v, 50.0),
        p99: percentile(&v, 99.0),
        max: v.last().copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles() {
        let empty = latency_stats(&VecDeque::new());
        assert_eq!((empty.samples, empty.median, empty.p99), (0, None, None));
        let v: VecDeque<u64> = (1..=100).rev().collect();
        let s = latency_stats(&v);
        assert_eq!((s.median, s.p99, s.max), (Some(50), Some(99), Some(100)));
        let one: VecDeque<u64> = [7].into();
        assert_eq!(latency_stats(&one).p99, Some(7));
    }
}
