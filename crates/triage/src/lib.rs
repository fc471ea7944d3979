//! Crash triage: what happens to every crash after the guest is stopped
//! (or resurrected). Capture the guest's memory and registers while it is
//! stopped ([`capture`], fast), then write the ELF core dump, diagnose it,
//! store the report and index it in the crash database ([`persist`], slow,
//! so it can run in the background while the guest is brought back).
//!
//! [`Triage`] serves a whole session (reboots included): it stores the
//! boot image's kernel and extensions in the symbol store once, so that
//! every dump can be symbolized offline by build id.

pub mod capture;
pub mod error;
pub mod note;
pub mod persist;
mod util;

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use lazarus_crashdb::DataDir;
use lazarus_resurrect::Recovery;
use lazarus_symbols::SymbolStore;

pub use capture::{Captured, OnDemand, RamSource, capture_crash, crash_summary};
pub use error::TriageError;
pub use note::BuildIds;
pub use persist::Persisted;
pub use util::{lower_priority, new_boot_id, unix_ms};

/// The crash dumps not written yet, by name, so that a session that ends
/// says what it waits for instead of waiting in silence.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    names: Arc<Mutex<Vec<(u64, String)>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

/// One dump in flight; it leaves the list when dropped (written, failed,
/// or its thread gone).
#[derive(Debug)]
pub struct InFlightGuard {
    list: InFlight,
    id: u64,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, String)>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a dump to be written, named `name`, until the guard drops.
    pub fn start(&self, name: String) -> InFlightGuard {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().push((id, name));
        InFlightGuard {
            list: self.clone(),
            id,
        }
    }

    /// The dumps not written yet, oldest first.
    pub fn names(&self) -> Vec<String> {
        self.lock().iter().map(|(_, n)| n.clone()).collect()
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.list.lock().retain(|(id, _)| *id != self.id);
    }
}

/// Triage for one session: the data directory, the symbol store and the
/// dumps being written in the background.
pub struct Triage {
    data: DataDir,
    symbols: SymbolStore,
    ids: BuildIds,
    in_flight: InFlight,
    background: Vec<JoinHandle<()>>,
    results_tx: Sender<Result<Persisted, TriageError>>,
    results_rx: Receiver<Result<Persisted, TriageError>>,
}

impl Triage {
    /// Stores the boot image's kernel and extensions in the symbol store,
    /// so that any dump of this session can be symbolized offline.
    pub fn new(kernel: &[u8], initramfs: &[u8], data: DataDir) -> Result<Self, TriageError> {
        data.ensure().map_err(|source| TriageError::DataDir {
            path: data.root().to_path_buf(),
            source,
        })?;
        let symbols = SymbolStore::new(data.symbols_dir());
        let ids = BuildIds::register(&symbols, kernel, initramfs);
        let (results_tx, results_rx) = channel();
        Ok(Self {
            data,
            symbols,
            ids,
            in_flight: InFlight::default(),
            background: Vec::new(),
            results_tx,
            results_rx,
        })
    }

    /// The build ids of the boot image (for dump notes).
    pub fn build_ids(&self) -> &BuildIds {
        &self.ids
    }

    /// Writes the dump, diagnoses it and records it, now.
    pub fn persist(&self, c: Captured) -> Result<Persisted, TriageError> {
        persist::persist(&self.data, &self.symbols, c)
    }

    /// The same in a background thread; results are collected by
    /// [`Triage::finished`].
    pub fn persist_in_background(&mut self, c: Captured) {
        let data = self.data.clone();
        let symbols = SymbolStore::new(self.data.symbols_dir());
        let tx = self.results_tx.clone();
        let guard = self.in_flight.start(c.note.detail.clone());
        self.background.push(std::thread::spawn(move || {
            lower_priority();
            let _ = tx.send(persist::persist(&data, &symbols, c));
            drop(guard);
        }));
    }

    /// The dumps of this session not written yet (background writes and
    /// whatever callers noted with [`InFlight::start`]).
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// Background writes not finished yet.
    pub fn pending(&self) -> usize {
        self.background.iter().filter(|h| !h.is_finished()).count()
    }

    /// A handle that other threads use to save crashes and dumps.
    pub fn background_handle(&self) -> Background {
        Background {
            data: self.data.clone(),
            ids: self.ids.clone(),
        }
    }

    /// Every background result finished so far.
    pub fn finished(&self) -> Vec<Result<Persisted, TriageError>> {
        self.results_rx.try_iter().collect()
    }

    /// Waits for background work (before the process exits); returns the
    /// results not collected yet.
    pub fn finish(&mut self) -> Vec<Result<Persisted, TriageError>> {
        for h in self.background.drain(..) {
            let _ = h.join();
        }
        self.finished()
    }
}

/// What a background thread needs to save crashes.
#[derive(Clone)]
pub struct Background {
    data: DataDir,
    ids: BuildIds,
}

impl Background {
    /// Writes an on-demand dump and its diagnosis report (kind
    /// "on-demand"), as crash dumps are written. It is not a crash, so it
    /// does not go into the crash database.
    pub fn write_on_demand(&self, d: OnDemand, boot_id: &str) -> Result<Persisted, TriageError> {
        let captured = capture::on_demand(&self.ids, d, boot_id);
        let symbols = SymbolStore::new(self.data.symbols_dir());
        persist::write_report(&self.data, &symbols, captured).map(|(p, _)| p)
    }

    /// Writes the dump, report and database entry of a resurrected crash.
    /// Runs at low priority: it must not slow the resumed guest.
    pub fn persist_recovery(&self, rec: Recovery, boot_id: &str) -> Result<Persisted, TriageError> {
        lower_priority();
        let symbols = SymbolStore::new(self.data.symbols_dir());
        let captured = capture::recovery(&self.ids, rec, boot_id);
        persist::persist(&self.data, &symbols, captured)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_in_flight_are_named_until_their_guard_drops() {
        let list = InFlight::default();
        assert!(list.names().is_empty());
        let a = list.start("null-deref (boot 1, recovery 1)".into());
        let b = list.start("wild-write (boot 1, recovery 2)".into());
        let c = list.clone().start("triple fault".into());
        assert_eq!(
            list.names(),
            [
                "null-deref (boot 1, recovery 1)",
                "wild-write (boot 1, recovery 2)",
                "triple fault"
            ]
        );
        drop(b);
        assert_eq!(
            list.names(),
            ["null-deref (boot 1, recovery 1)", "triple fault"]
        );
        // A guard dropped on another thread (the writer's) counts too.
        std::thread::spawn(move || drop(a)).join().unwrap();
        drop(c);
        assert!(list.names().is_empty());
    }
}
