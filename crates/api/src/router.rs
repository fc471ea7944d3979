//! Routing requests to a [`Backend`], and backend errors to statuses.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::exposition::MetricsFormat;
use crate::http::{Request, Response};
use crate::types::{
    CrashList, DumpRequest, DumpResponse, InjectRequest, Metrics, RecoveryList, RequestedState,
    Status, VmStateRequest,
};

/// What the server asks of the hypervisor. Implemented by the `lazarus`
/// CLI over its running VM; every method may be called from several
/// connection threads at once.
pub trait Backend: Send + Sync + 'static {
    /// `GET /` and `GET /vm`.
    fn status(&self) -> Result<Status, BackendError>;
    /// `GET /recoveries`.
    fn recoveries(&self) -> Result<RecoveryList, BackendError>;
    /// `GET /crashes`.
    fn crashes(&self) -> Result<CrashList, BackendError>;
    /// `PUT /inject`. The injection record, as JSON (its shape is the
    /// injector's).
    fn inject(&self, req: InjectRequest) -> Result<serde_json::Value, BackendError>;
    /// `PUT /dump`: takes an on-demand dump (an empty request when the
    /// body was absent).
    fn dump(&self, req: DumpRequest) -> Result<DumpResponse, BackendError>;
    /// `PATCH /vm`. Pauses or resumes; returns the status afterwards.
    fn set_state(&self, state: RequestedState) -> Result<Status, BackendError>;
    /// `GET /metrics`, as JSON.
    fn metrics(&self) -> Result<Metrics, BackendError>;
    /// `GET /metrics` in a text format Prometheus reads (never
    /// [`MetricsFormat::Json`]). A backend without it answers 501.
    fn metrics_text(&self, format: MetricsFormat) -> Result<String, BackendError> {
        Err(BackendError::NotImplemented(format!(
            "metrics as {} are not available",
            format.content_type()
        )))
    }
}

/// Why the backend refused or failed; the variant picks the status.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// 400: the request is well-formed JSON but asks for something invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 409: not possible in the VM's current state (e.g. resume when not
    /// paused, or no VM running during a reboot).
    #[error("{0}")]
    Conflict(String),
    /// 501: this build cannot do it.
    #[error("{0}")]
    NotImplemented(String),
    /// 500: the hypervisor failed.
    #[error("{0}")]
    Internal(String),
}

impl BackendError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            BackendError::BadRequest(_) => 400,
            BackendError::Conflict(_) => 409,
            BackendError::NotImplemented(_) => 501,
            BackendError::Internal(_) => 500,
        }
    }
}

/// The API's paths and the methods each accepts.
pub const ROUTES: &[(&str, &str)] = &[
    ("/", "GET"),
    ("/vm", "GET, PATCH"),
    ("/recoveries", "GET"),
    ("/crashes", "GET"),
    ("/metrics", "GET"),
    ("/inject", "PUT"),
    ("/dump", "PUT"),
];

/// Answers one request.
pub fn route(req: &Request, backend: &dyn Backend) -> Response {
    let Some(&(_, allow)) = ROUTES.iter().find(|(p, _)| *p == req.path) else {
        let paths: Vec<&str> = ROUTES.iter().map(|r| r.0).collect();
        return Response::error(
            404,
            format!(
                "no such resource {:?}; the API has {}",
                req.path,
                paths.join(", ")
            ),
        );
    };
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/" | "/vm") => reply(backend.status()),
        ("PATCH", "/vm") => match required_body::<VmStateRequest>(req) {
            Ok(r) => reply(backend.set_state(r.state)),
            Err(resp) => resp,
        },
        ("GET", "/recoveries") => reply(backend.recoveries()),
        ("GET", "/crashes") => reply(backend.crashes()),
        ("GET", "/metrics") => match MetricsFormat::negotiate(req.accept.as_deref()) {
            MetricsFormat::Json => reply(backend.metrics()),
            format => match backend.metrics_text(format) {
                Ok(text) => Response::text(format.content_type(), text),
                Err(e) => Response::error(e.status(), e.to_string()),
            },
        },
        ("PUT", "/inject") => match required_body::<InjectRequest>(req) {
            Ok(r) => reply(backend.inject(r)),
            Err(resp) => resp,
        },
        // The body is optional: `PUT /dump` alone takes a dump.
        ("PUT", "/dump") => match optional_body::<DumpRequest>(req) {
            Ok(r) => reply(backend.dump(r.unwrap_or_default())),
            Err(resp) => resp,
        },
        _ => {
            let mut r = Response::error(
                405,
                format!("{} is not allowed on {}; use {allow}", req.method, req.path),
            );
            r.allow = Some(allow);
            r
        }
    }
}

/// The JSON body as `T`; a missing body is a 400.
fn required_body<T: DeserializeOwned>(req: &Request) -> Result<T, Response> {
    optional_body(req)?.ok_or_else(|| {
        Response::error(
            400,
            format!("{} {} needs a JSON body", req.method, req.path),
        )
    })
}

/// The JSON body as `T`, or `None` when there is none.
fn optional_body<T: DeserializeOwned>(req: &Request) -> Result<Option<T>, Response> {
    let text = req.body.trim_ascii();
    if text.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(text)
        .map(Some)
        .map_err(|e| Response::error(400, format!("invalid JSON body: {e}")))
}

fn reply<T: Serialize>(result: Result<T, BackendError>) -> Response {
    match result {
        Ok(v) => match serde_json::to_vec(&v) {
            Ok(body) => Response::json(200, body),
            Err(e) => Response::error(500, format!("cannot encode the response: {e}")),
        },
        Err(e) => Response::error(e.status(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{API_VERSION, VmState};
    use std::sync::Mutex;

    /// Records calls; pause/resume follow Firecracker's state machine.
    #[derive(Default)]
    struct Fake {
        paused: Mutex<bool>,
        injected: Mutex<Vec<InjectRequest>>,
    }

    fn status(paused: bool) -> Status {
        Status {
            api_version: API_VERSION,
            state: if paused {
                VmState::Paused
            } else {
                VmState::Running
            },
            uptime_ms: 1,
            vm_uptime_ms: Some(1),
            boots: 1,
            vcpus: 1,
            memory_mib: 64,
            on_crash: "resurrect".into(),
            recoveries: 0,
            last_recovery: None,
            fallbacks: 0,
            last_fallback: None,
        }
    }

    impl Backend for Fake {
        fn status(&self) -> Result<Status, BackendError> {
            Ok(status(*self.paused.lock().unwrap()))
        }
        fn recoveries(&self) -> Result<RecoveryList, BackendError> {
            Ok(RecoveryList {
                total: 0,
                recoveries: vec![],
            })
        }
        fn crashes(&self) -> Result<CrashList, BackendError> {
            Ok(CrashList { buckets: vec![] })
        }
        fn inject(&self, req: InjectRequest) -> Result<serde_json::Value, BackendError> {
            if req.fault == "nope" {
                return Err(BackendError::BadRequest("unknown fault".into()));
            }
            self.injected.lock().unwrap().push(req);
            Ok(serde_json::json!({"target": "x"}))
        }
        fn dump(&self, _: DumpRequest) -> Result<DumpResponse, BackendError> {
            Err(BackendError::Internal("disk full".into()))
        }
        fn set_state(&self, state: RequestedState) -> Result<Status, BackendError> {
            let mut p = self.paused.lock().unwrap();
            match (state, *p) {
                (RequestedState::Paused, false) => *p = true,
                (RequestedState::Resumed, true) => *p = false,
                (RequestedState::Paused, true) => {
                    return Err(BackendError::Conflict("already paused".into()));
                }
                (RequestedState::Resumed, false) => {
                    return Err(BackendError::Conflict("not paused".into()));
                }
            }
            Ok(status(*p))
        }
        fn metrics(&self) -> Result<Metrics, BackendError> {
            Err(BackendError::NotImplemented("no".into()))
        }
    }

    fn call(b: &Fake, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let r = route(
            &Request {
                method: method.into(),
                path: path.into(),
                accept: None,
                body: body.as_bytes().to_vec(),
            },
            b,
        );
        let v = serde_json::from_slice(&r.body).expect("JSON body");
        (r.status, v)
    }

    #[test]
    fn routes_and_statuses() {
        let b = Fake::default();
        let (s, v) = call(&b, "GET", "/", "");
        assert_eq!((s, v["state"].as_str()), (200, Some("running")));
        assert_eq!(call(&b, "GET", "/vm", "").0, 200);
        assert_eq!(call(&b, "GET", "/recoveries", "").0, 200);
        assert_eq!(
            call(&b, "GET", "/crashes", "").1["buckets"],
            serde_json::json!([])
        );
        assert_eq!(call(&b, "GET", "/metrics", "").0, 501);
        let (s, v) = call(&b, "PUT", "/dump", "");
        assert_eq!((s, v["fault_message"].as_str()), (500, Some("disk full")));
        let (s, v) = call(&b, "GET", "/nope", "");
        assert_eq!(s, 404);
        assert!(v["fault_message"].as_str().unwrap().contains("/recoveries"));
        let r = route(
            &Request {
                method: "DELETE".into(),
                path: "/vm".into(),
                accept: None,
                body: vec![],
            },
            &b,
        );
        assert_eq!((r.status, r.allow), (405, Some("GET, PATCH")));
        assert_eq!(call(&b, "POST", "/inject", "{}").0, 405);
        assert_eq!(call(&b, "GET", "/inject", "").0, 405);
    }

    #[test]
    fn pause_resume_like_firecracker() {
        let b = Fake::default();
        assert_eq!(call(&b, "PATCH", "/vm", r#"{"state":"Resumed"}"#).0, 409);
        let (s, v) = call(&b, "PATCH", "/vm", r#"{"state":"Paused"}"#);
        assert_eq!((s, v["state"].as_str()), (200, Some("paused")));
        assert_eq!(call(&b, "PATCH", "/vm", r#"{"state":"Paused"}"#).0, 409);
        assert_eq!(call(&b, "PATCH", "/vm", r#" {"state":"Resumed"} "#).0, 200);
        for bad in [
            "",
            "{",
            r#"{"state":"paused"}"#,
            r#"{"state":"Paused","x":1}"#,
            r#"{"state":7}"#,
            "[]",
            "\u{0}\u{1}",
        ] {
            let (s, v) = call(&b, "PATCH", "/vm", bad);
            assert_eq!(s, 400, "{bad:?}");
            assert!(v["fault_message"].is_string());
        }
    }

    #[test]
    fn inject_bodies_are_strict() {
        let b = Fake::default();
        let (s, _) = call(
            &b,
            "PUT",
            "/inject",
            r#"{"fault":"bit-flip","ext":"crashtest","seed":7}"#,
        );
        assert_eq!(s, 200);
        let got = b.injected.lock().unwrap().pop().unwrap();
        assert_eq!(got.ext.as_deref(), Some("crashtest"));
        assert_eq!(got.seed, Some(7));
        let (s, v) = call(&b, "PUT", "/inject", r#"{"fault":"bit-flip","sed":7}"#);
        assert_eq!(s, 400);
        assert!(v["fault_message"].as_str().unwrap().contains("sed"), "{v}");
        assert_eq!(call(&b, "PUT", "/inject", r#"{"seed":7}"#).0, 400);
        assert_eq!(
            call(&b, "PUT", "/inject", r#"{"fault":"x","seed":-1}"#).0,
            400
        );
        assert_eq!(call(&b, "PUT", "/inject", r#"{"fault":"nope"}"#).0, 400);
        assert_eq!(call(&b, "PUT", "/dump", r#"{"why":1}"#).0, 400);
    }
}
