//! The lazarus control API: JSON over HTTP/1.1 on a Unix socket, in
//! Firecracker's style, and its client.
//!
//! | method and path | body | answer |
//! | --- | --- | --- |
//! | `GET /`, `GET /vm` | | [`Status`] |
//! | `PATCH /vm` | [`VmStateRequest`]: `{"state":"Paused"}` / `{"state":"Resumed"}` | [`Status`] |
//! | `GET /recoveries` | | [`RecoveryList`] |
//! | `GET /crashes` | | [`CrashList`] |
//! | `GET /metrics` | | [`Metrics`]; the Prometheus text format or OpenMetrics when `Accept` asks for it ([`MetricsFormat::negotiate`]) |
//! | `PUT /inject` | [`InjectRequest`] | the injection record |
//! | `PUT /dump` | optional [`DumpRequest`] | [`DumpResponse`] |
//!
//! Errors are `{"fault_message": "..."}` ([`ErrorBody`]) with a 4xx status
//! for anything the client got wrong (400 malformed request or body, 404
//! unknown path, 405 wrong method, 408 request too slow, 409 not possible
//! in the VM's state, 413 body too large, 431 headers too large) and a 5xx
//! only when the hypervisor itself failed (503: every connection slot is
//! busy answering; idle ones are closed to make room, see
//! [`ServerConfig::max_connections`]).
//!
//! This crate knows nothing about the VMM: the `lazarus` CLI implements
//! [`Backend`] over its running VM and starts an [`ApiServer`].

mod client;
mod exposition;
mod http;
mod router;
mod server;
mod types;

pub use client::{ApiResponse, Client, ClientError};
pub use exposition::{LATENCY_BUCKETS, MetricsFormat, Telemetry};
pub use http::Limits;
pub use router::{Backend, BackendError, ROUTES};
pub use server::{ApiServer, ServerConfig, ServerError, answer};
pub use types::*;
