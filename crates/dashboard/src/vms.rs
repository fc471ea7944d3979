//! Running VMs, read through their control API (`GET /vm`, `/recoveries`,
//! `/metrics`). A VM that does not answer is shown as unreachable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lazarus_api::{Client, LATENCY_BUCKETS};
use lazarus_api::{Metrics, RecoveryList, Status};
use serde::de::DeserializeOwned;

/// One VM as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct VmView {
    /// Its API socket.
    pub sock: PathBuf,
    /// What it answered, or why it did not.
    pub state: Result<LiveVm, String>,
}

/// What a reachable VM answered.
#[derive(Debug, Clone)]
pub struct LiveVm {
    /// `GET /vm`.
    pub status: Status,
    /// `GET /recoveries`; `None` if that request failed.
    pub recoveries: Option<RecoveryList>,
    /// `GET /metrics` (JSON); `None` if that request failed.
    pub metrics: Option<Metrics>,
}

fn get<T: DeserializeOwned>(client: &Client, path: &str) -> Result<T, String> {
    let r = client
        .request("GET", path, None)
        .map_err(|e| e.to_string())?;
    if !r.is_success() {
        return Err(format!("{path}: HTTP {}: {}", r.status, r.fault_message()));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("{path}: unreadable answer: {e}"))
}

/// Asks the VM behind `sock`; never fails, an error is part of the view.
pub fn query(sock: &Path, timeout: Duration) -> VmView {
    let client = Client::new(sock).with_timeout(timeout);
    let state = get::<Status>(&client, "/vm").map(|status| LiveVm {
        status,
        recoveries: get(&client, "/recoveries").ok(),
        metrics: get(&client, "/metrics").ok(),
    });
    VmView {
        sock: sock.to_path_buf(),
        state,
    }
}

/// Recoveries per bucket of the control API's own Prometheus histogram
/// (`lazarus_api::LATENCY_BUCKETS`, in seconds): one count per bound and
/// one more, a latency counted in the first bucket whose bound it does
/// not exceed, the last one holding everything above.
pub fn latency_histogram(latencies_us: &[u64]) -> Vec<u64> {
    let mut counts = vec![0; LATENCY_BUCKETS.len() + 1];
    for &l in latencies_us {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| l as f64 <= b * 1e6)
            .unwrap_or(LATENCY_BUCKETS.len());
        counts[i] += 1;
    }
    counts
}
