//! The control API's backend (`lazarus run --api-sock PATH`): the session's
//! view of the VM that `run` boots (and reboots), its recoveries, the crash
//! database, pause/resume, on-demand dumps and fault injection.
//!
//! `run` attaches each new VM ([`ApiSession::attach`]) and detaches it when
//! it is gone; between the two the API answers "stopped". Operations that
//! pause the VM are serialized; reads never wait for them.
//!
//! - `server`: the socket, and removing it at exit or on a signal;
//! - `session`: the session's state, attaching VMs, status, pause/resume;
//! - `recoveries`, `crashes`, `metrics`: what `GET` answers;
//! - `inject`, `dump`: the actions that reach into the guest;
//! - `backend`: `lazarus_api::Backend` over all of them.

mod backend;
mod crashes;
mod dump;
mod inject;
mod metrics;
mod recoveries;
mod server;
mod session;

pub(crate) use recoveries::recovery_info;
pub use server::Api;
pub use session::ApiSession;
pub(crate) use session::fallback_of;
