//! `GET /metrics` for Prometheus: which format the client asked for
//! (its `Accept` header), and the session's counters and histogram,
//! kept with the official Rust client (`prometheus-client`) and encoded
//! in the Prometheus text format 0.0.4 or OpenMetrics 1.0.0.

use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, text as openmetrics_text};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::types::{Metrics, VmState};

/// What `GET /metrics` answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsFormat {
    /// [`Metrics`] as JSON: no `Accept`, `*/*`, JSON, or nothing we have.
    Json,
    /// The Prometheus text exposition format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0.0 text (ends with `# EOF`).
    OpenMetrics,
}

/// `Content-Type` of the OpenMetrics answer.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl MetricsFormat {
    /// The answer's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            MetricsFormat::Json => crate::http::JSON,
            MetricsFormat::Prometheus => prometheus_text::CONTENT_TYPE,
            MetricsFormat::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }

    /// The format for an `Accept` header, by its q-values (RFC 9110,
    /// 12.5.1), as Prometheus negotiates: it sends, e.g.,
    /// `application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,
    /// application/openmetrics-text;version=0.0.1;q=0.4,
    /// text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,
    /// text/plain;version=0.0.4;q=0.2,*/*;q=0.1`.
    ///
    /// A text format is chosen only when a range names its type
    /// (`text/plain`, `text/*`, `application/openmetrics-text`) with a
    /// `version` we write or none: `*/*` alone (curl's default) keeps the
    /// JSON answer. Each format takes the q of the most specific range
    /// that matches it; the highest q wins, OpenMetrics before the
    /// Prometheus text before JSON on a tie. Anything unparsable counts as
    /// absent, so a bad header gets JSON, never an error.
    ///
    /// Hand-written (the parsing is a few lines): the HTTP crates that
    /// negotiate media types come with a whole server framework.
    pub fn negotiate(accept: Option<&str>) -> MetricsFormat {
        let Some(accept) = accept else {
            return MetricsFormat::Json;
        };
        let ranges: Vec<Range<'_>> = accept.split(',').filter_map(Range::parse).collect();
        let candidates = [
            (
                MetricsFormat::OpenMetrics,
                "application",
                "openmetrics-text",
                Some("1.0.0"),
            ),
            (MetricsFormat::Prometheus, "text", "plain", Some("0.0.4")),
            (MetricsFormat::Json, "application", "json", None),
        ];
        let mut best = (MetricsFormat::Json, 0.0f32);
        for (format, ty, sub, version) in candidates {
            let text = format != MetricsFormat::Json;
            // The most specific matching range: exact type with a
            // version, exact type, type/*, */*.
            let q = ranges
                .iter()
                .filter_map(|r| r.matches(ty, sub, version, text).map(|s| (s, r.q)))
                .max_by_key(|(specificity, _)| *specificity)
                .map(|(_, q)| q);
            if let Some(q) = q
                && q > best.1
            {
                best = (format, q);
            }
        }
        best.0
    }
}

/// One media range of an `Accept` header.
struct Range<'a> {
    ty: &'a str,
    sub: &'a str,
    version: Option<&'a str>,
    q: f32,
}

impl<'a> Range<'a> {
    fn parse(s: &'a str) -> Option<Range<'a>> {
        let mut parts = s.split(';').map(str::trim);
        let (ty, sub) = parts.next()?.split_once('/')?;
        let (ty, sub) = (ty.trim(), sub.trim());
        if ty.is_empty() || sub.is_empty() {
            return None;
        }
        let mut version = None;
        let mut q = 1.0;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "version" => version = Some(v),
                // q is 0 to 1 with at most three decimals; anything else
                // makes the range unusable.
                "q" => q = v.parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q))?,
                _ => {}
            }
        }
        Some(Range {
            ty,
            sub,
            version,
            q,
        })
    }

    /// How specifically this range matches the type (higher is more),
    /// or `None`. Text formats need their type named.
    fn matches(&self, ty: &str, sub: &str, version: Option<&str>, text: bool) -> Option<u8> {
        let ty_ok = self.ty.eq_ignore_ascii_case(ty);
        let sub_ok = self.sub.eq_ignore_ascii_case(sub);
        match (self.ty, self.sub) {
            ("*", "*") if !text => Some(0),
            (_, "*") if ty_ok => Some(1),
            _ if ty_ok && sub_ok => match (self.version, version) {
                (None, _) => Some(2),
                (Some(want), Some(have)) if want == have => Some(3),
                // A version we do not write.
                (Some(_), _) if text => None,
                (Some(_), _) => Some(2),
            },
            _ => None,
        }
    }
}

/// Bounds of the recovery-latency histogram, in seconds: resurrections
/// take about a millisecond here (0.5 to 2 ms), a slow host or a big
/// snapshot tens of milliseconds, a repair near its budget seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

type Labels = Vec<(&'static str, String)>;

/// The session's counters and latency histogram, updated as crashes
/// happen (the other metrics are read from [`Metrics`] at each scrape).
/// Every method may be called from any thread.
pub struct Telemetry {
    crashes: Family<Labels, Counter>,
    resurrections: Family<Labels, Counter>,
    fallbacks: Family<Labels, Counter>,
    reboots: Family<Labels, Counter>,
    latency: Histogram,
}

impl Default for Telemetry {
    fn default() -> Self {
        let t = Telemetry {
            crashes: Family::default(),
            resurrections: Family::default(),
            fallbacks: Family::default(),
            reboots: Family::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
        };
        // Both causes are known in advance: their series start at 0, so
        // a rate over the first reboot is right.
        for cause in ["crash", "requested"] {
            drop(t.reboots.get_or_create(&vec![("cause", cause.to_string())]));
        }
        t
    }
}

impl Telemetry {
    /// A crash, resurrected or not, detected as `detector` (`pvpanic`,
    /// `triple-fault`, `watchdog`, ...).
    pub fn crash(&self, detector: &str) {
        self.crashes
            .get_or_create(&vec![("kind", detector.to_string())])
            .inc();
    }

    /// A resurrection after a crash diagnosed as `kind`, `latency` from
    /// the crash to the kernel's return to user mode.
    pub fn resurrection(&self, kind: &str, latency: Duration) {
        self.resurrections
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
        self.latency.observe(latency.as_secs_f64());
    }

    /// A crash that could not be resurrected safely (`reason`:
    /// `lazarus_resurrect::Fallback::code`).
    pub fn fallback(&self, reason: &str) {
        self.fallbacks
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// A reboot (`cause`: `crash` or `requested`).
    pub fn reboot(&self, cause: &str) {
        self.reboots
            .get_or_create(&vec![("cause", cause.to_string())])
            .inc();
    }

    /// The session's metrics in `format` (a text format; JSON is
    /// [`Metrics`] itself).
    pub fn encode(&self, m: &Metrics, format: MetricsFormat) -> Result<String, std::fmt::Error> {
        let registry = self.registry(m);
        let mut out = String::new();
        match format {
            MetricsFormat::Prometheus => prometheus_text::encode(&mut out, &registry)?,
            MetricsFormat::OpenMetrics | MetricsFormat::Json => {
                openmetrics_text::encode(&mut out, &registry)?
            }
        }
        Ok(out)
    }

    /// A registry of this scrape: the live counters, and the snapshot's
    /// figures (absent ones, e.g. guest memory before the kernel is up,
    /// are left out rather than reported as 0).
    fn registry(&self, m: &Metrics) -> Registry {
        let mut r = Registry::with_prefix("lazarus");
        r.register(
            "crashes",
            "Guest kernel crashes this session, resurrected or not, by how they were detected",
            self.crashes.clone(),
        );
        r.register(
            "resurrections",
            "Crashes resurrected this session, by the repair program's diagnosis",
            self.resurrections.clone(),
        );
        r.register(
            "fallbacks",
            "Crashes that could not be resurrected safely and fell back to a reboot, by reason",
            self.fallbacks.clone(),
        );
        r.register(
            "reboots",
            "Reboots of the guest this session, after a crash or asked for by the guest",
            self.reboots.clone(),
        );
        r.register_with_unit(
            "recovery_latency",
            "Time from a crash to the kernel's return to user mode, per resurrection",
            Unit::Seconds,
            self.latency.clone(),
        );
        r.register(
            "boots",
            "VMs booted this session (1 + reboots)",
            ConstCounter::new(m.boots),
        );
        r.register_with_unit(
            "uptime",
            "Time since lazarus run started (all boots)",
            Unit::Seconds,
            ConstGauge::new(m.uptime_ms as f64 / 1e3),
        );
        let state: Family<Labels, prometheus_client::metrics::gauge::Gauge> = Family::default();
        for (s, name) in [
            (VmState::Running, "running"),
            (VmState::Paused, "paused"),
            (VmState::Repairing, "repairing"),
            (VmState::Stopped, "stopped"),
        ] {
            state
                .get_or_create(&vec![("state", name.to_string())])
                .set(i64::from(m.state == s));
        }
        r.register(
            "vm_state",
            "1 for what the VM is doing now, 0 for the other states",
            state,
        );
        r.register_with_unit(
            "vm_paused",
            "Time the current VM spent paused",
            Unit::Seconds,
            ConstCounter::new(m.paused_ms as f64 / 1e3),
        );
        let exits: Family<Labels, Counter> = Family::default();
        for (kind, n) in &m.exits.by_kind {
            exits
                .get_or_create(&vec![("kind", kind.clone())])
                .inc_by(*n);
        }
        r.register(
            "vm_exits",
            "Guest exits of the current VM, by kind (\"interrupted\" counts kicks)",
            exits,
        );
        if let Some(n) = m.crashes.recorded {
            r.register(
                "crash_database_crashes",
                "Crashes recorded in the crash database, all sessions",
                ConstGauge::new(n),
            );
        }
        if let Some(n) = m.events_dropped {
            r.register(
                "events_dropped",
                "Events of --events lost: the queue was full (a slow or missing reader)",
                ConstCounter::new(n),
            );
        }
        let mem = &m.memory;
        let bytes: [(&str, &str, Option<u64>); 8] = [
            (
                "host_rss",
                "The hypervisor process's resident set, guest RAM included",
                mem.host_rss_bytes,
            ),
            (
                "guest_ram_resident",
                "Guest RAM resident in the hypervisor's memory",
                mem.guest_ram_resident_bytes,
            ),
            (
                "vmm_own",
                "The hypervisor's own memory: its resident set without guest RAM",
                mem.vmm_own_bytes,
            ),
            (
                "guest_ram",
                "Guest RAM configured",
                Some(mem.guest_ram_bytes),
            ),
            (
                "guest_kernel_memory",
                "Physical memory the guest kernel manages (4 KiB frames)",
                mem.guest_frames_total.map(|f| f * 4096),
            ),
            (
                "guest_kernel_memory_used",
                "Of which frames in use",
                mem.guest_frames_used.map(|f| f * 4096),
            ),
            (
                "guest_kernel_heap",
                "The guest kernel's heap size",
                mem.guest_heap_size_bytes,
            ),
            (
                "guest_kernel_heap_used",
                "Bytes the guest kernel's allocator counts as in use",
                mem.guest_heap_used_bytes,
            ),
        ];
        for (name, help, value) in bytes {
            if let Some(v) = value {
                r.register_with_unit(name, help, Unit::Bytes, ConstGauge::new(v));
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(accept: &str) -> MetricsFormat {
        MetricsFormat::negotiate(Some(accept))
    }

    #[test]
    fn negotiates_as_prometheus_scrapes() {
        use MetricsFormat::*;
        // Prometheus 3's default, and 2.x's.
        assert_eq!(
            pick(
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
                 application/openmetrics-text;version=0.0.1;q=0.4,\
                 text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,\
                 text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
            ),
            OpenMetrics
        );
        assert_eq!(
            pick(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                 text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            ),
            OpenMetrics
        );
        // scrape_protocols: [PrometheusText0.0.4].
        assert_eq!(pick("text/plain;version=0.0.4;q=0.2,*/*;q=0.1"), Prometheus);
        // Only OpenMetrics 0.0.1 or Prometheus text 1.0.0: neither is
        // written, so JSON (through */*).
        assert_eq!(
            pick("application/openmetrics-text;version=0.0.1,*/*;q=0.1"),
            Json
        );
        assert_eq!(pick("text/plain;version=1.0.0;escaping=allow-utf-8"), Json);
        // People.
        assert_eq!(MetricsFormat::negotiate(None), Json);
        assert_eq!(pick("*/*"), Json);
        assert_eq!(pick("text/plain"), Prometheus);
        assert_eq!(pick("TEXT/*"), Prometheus);
        assert_eq!(pick("application/openmetrics-text"), OpenMetrics);
        assert_eq!(pick("application/json"), Json);
        assert_eq!(pick("application/json, text/plain;q=0.9"), Json);
        assert_eq!(pick("text/plain;q=0.9, application/json"), Json);
        assert_eq!(pick("application/json;q=0.1, text/plain"), Prometheus);
        assert_eq!(pick("text/plain;q=0, */*"), Json);
        // Bad headers: JSON, never a panic.
        for bad in [
            "",
            ",,,",
            "garbage",
            "text/plain;q=2",
            "text/plain;q=x",
            "/",
            "a/",
            ";;",
            "\u{1}/\u{2}",
        ] {
            assert_eq!(pick(bad), Json, "{bad:?}");
        }
    }

    fn metrics() -> Metrics {
        serde_json::from_value(serde_json::json!({
            "uptime_ms": 1500, "boots": 2, "state": "running", "paused_ms": 0,
            "exits": {"total": 7, "by_kind": {"pio-serial": 7}},
            "recoveries": {"count": 1, "latency_us": {"samples": 1, "median": 1200, "p99": 1200, "max": 1200}},
            "crashes": {"session": 2, "recorded": 2},
            "memory": {"host_rss_bytes": 100, "guest_ram_bytes": 4096, "guest_frames_total": null,
                       "guest_frames_used": null, "guest_heap_size_bytes": null,
                       "guest_heap_used_bytes": null, "guest_heap_blocks_used": null},
        }))
        .unwrap()
    }

    #[test]
    fn encodes_both_text_formats() {
        let t = Telemetry::default();
        t.crash("pvpanic");
        t.crash("pvpanic");
        t.resurrection("null-deref", Duration::from_micros(1200));
        t.fallback("refused");
        t.reboot("crash");
        let m = metrics();
        let prom = t.encode(&m, MetricsFormat::Prometheus).unwrap();
        for line in [
            "# TYPE lazarus_crashes_total counter\n",
            "lazarus_crashes_total{kind=\"pvpanic\"} 2\n",
            "lazarus_resurrections_total{kind=\"null-deref\"} 1\n",
            "lazarus_fallbacks_total{reason=\"refused\"} 1\n",
            "lazarus_reboots_total{cause=\"crash\"} 1\n",
            "lazarus_recovery_latency_seconds_bucket{le=\"0.002\"} 1\n",
            "lazarus_recovery_latency_seconds_bucket{le=\"0.001\"} 0\n",
            "lazarus_recovery_latency_seconds_count 1\n",
            "lazarus_boots_total 2\n",
            "lazarus_vm_state{state=\"running\"} 1\n",
            "lazarus_guest_ram_bytes 4096\n",
        ] {
            assert!(prom.contains(line), "{line:?} not in:\n{prom}");
        }
        assert!(!prom.contains("# EOF"), "{prom}");
        // Absent figures are left out, not zeros.
        assert!(!prom.contains("guest_kernel_heap"), "{prom}");
        let om = t.encode(&m, MetricsFormat::OpenMetrics).unwrap();
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE lazarus_crashes counter\n"), "{om}");
        assert!(
            om.contains("# UNIT lazarus_recovery_latency_seconds seconds\n"),
            "{om}"
        );
    }
}
