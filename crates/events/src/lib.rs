//! The event stream of `lazarus run --events PATH`: one JSON object per
//! line for each boot, crash, resurrection, fallback, reboot, extension
//! reset or disablement, dump written, and the exit, after Cloud
//! Hypervisor's event monitor (`--event-monitor path=...`): a timestamp, a
//! source, the event and its properties, plus a schema version and the
//! VM boot the event belongs to.
//!
//! Writing never delays the guest: emitters queue lines for a background
//! writer and never wait ([`EventLog::emit`]); a FIFO without a reader,
//! or with a slow one, costs dropped events (counted), never a stalled
//! resurrection. The schema is in README.md ("Event stream").

mod event;
mod writer;

pub use event::{Event, Record, SCHEMA_VERSION};
pub use writer::{DEFAULT_CAPACITY, EventLog, EventSink, EventsError, Summary};

#[cfg(test)]
mod tests;
