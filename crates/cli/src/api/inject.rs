//! `PUT /inject`: a host-side fault from `lazarus-inject`, or one of the
//! guest's own crash tests typed into its console.

use std::str::FromStr;

use lazarus_api::{BackendError, InjectRequest};
use lazarus_campaign::CRASH_TEST;
use lazarus_inject::{FaultSpec, FaultType, InjectError, Injector, Structure};

use crate::api::session::{ApiSession, PAUSE_TIMEOUT, control_error, lock};

impl ApiSession {
    /// Injects what `req` asks for; answers the injection record.
    pub(crate) fn inject_request(
        &self,
        req: &InjectRequest,
    ) -> Result<serde_json::Value, BackendError> {
        if req.fault.trim() == CRASH_TEST {
            self.inject_crash_test(req)
        } else {
            self.inject_fault(req)
        }
    }

    /// Types `crash KIND` into the guest console: the guest's crash tool
    /// then crashes the kernel in that way through the crashtest driver.
    fn inject_crash_test(&self, req: &InjectRequest) -> Result<serde_json::Value, BackendError> {
        use lazarus_abi::dev::crashtest::KINDS;
        let names = || KINDS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ");
        let kind = req.kind.as_deref().ok_or_else(|| {
            BackendError::BadRequest(format!(
                "fault \"crash-test\" needs \"kind\", one of: {}",
                names()
            ))
        })?;
        // Only a listed kind reaches the console: never arbitrary text.
        let Some(&(name, _, what)) = KINDS.iter().find(|k| k.0 == kind) else {
            return Err(BackendError::BadRequest(format!(
                "unknown crash-test kind {kind:?}; expected one of: {}",
                names()
            )));
        };
        if let Some(ext) = req.ext.as_deref().filter(|e| *e != "crashtest") {
            return Err(BackendError::BadRequest(format!(
                "crash-test runs in the crashtest extension, not {ext:?}"
            )));
        }
        if req.structure.is_some() {
            return Err(BackendError::BadRequest(
                "\"structure\" is only for wild-write-struct".into(),
            ));
        }
        self.attached()?;
        if self.user_paused() {
            return Err(BackendError::Conflict(
                "the VM is paused; resume it before a crash test".into(),
            ));
        }
        let command = format!("crash {name}");
        self.console.push(format!("{command}\n").as_bytes());
        Ok(serde_json::json!({
            "fault": CRASH_TEST,
            "kind": name,
            "target": "crashtest",
            "detail": format!("typed `{command}` into the guest console: {what}"),
            "seed": req.seed,
        }))
    }

    /// A host-side fault from lazarus-inject, with the VM paused while the
    /// injector reads the kernel's state and writes its fault.
    fn inject_fault(&self, req: &InjectRequest) -> Result<serde_json::Value, BackendError> {
        let fault = FaultType::from_str(req.fault.trim()).map_err(|_| {
            let names: Vec<&str> = FaultType::ALL.iter().map(|f| f.name()).collect();
            BackendError::BadRequest(format!(
                "unknown fault type {:?}; expected {CRASH_TEST} or one of: {}",
                req.fault,
                names.join(", ")
            ))
        })?;
        if req.kind.is_some() {
            return Err(BackendError::BadRequest(
                "\"kind\" is only for the crash-test fault".into(),
            ));
        }
        let structure = match req.structure.as_deref() {
            None => None,
            Some(s) if fault == FaultType::WildWriteStruct => {
                Some(Structure::from_str(s).map_err(|e| BackendError::BadRequest(e.to_string()))?)
            }
            Some(_) => {
                return Err(BackendError::BadRequest(
                    "\"structure\" is only for wild-write-struct".into(),
                ));
            }
        };
        if req.ext.is_some() && !fault.targets_code() {
            return Err(BackendError::BadRequest(format!(
                "\"ext\" is only for faults in extension code, not {fault}"
            )));
        }
        let spec = FaultSpec {
            fault,
            ext: req.ext.clone(),
            structure,
        };
        let _ops = lock(&self.ops);
        let (control, _) = self.attached()?;
        let root_gpa = control.root_gpa().ok_or_else(|| {
            BackendError::Conflict("the guest kernel has not registered its state root yet".into())
        })?;
        let pause = if self.user_paused() {
            None
        } else {
            Some(control.pause(PAUSE_TIMEOUT).map_err(control_error)?)
        };
        let (result, seed, index) = match req.seed {
            Some(seed) => (
                Injector::new(seed).inject(control.memory(), root_gpa, &spec),
                seed,
                0,
            ),
            None => {
                let mut st = lock(&self.state);
                let index = st.injections;
                st.injections += 1;
                let seed = st.injector.seed();
                (
                    st.injector.inject(control.memory(), root_gpa, &spec),
                    seed,
                    index,
                )
            }
        };
        drop(pause);
        let injection = result.map_err(inject_error)?;
        let mut v = serde_json::to_value(&injection)
            .map_err(|e| BackendError::Internal(format!("encoding the injection: {e}")))?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("seed".into(), seed.into());
            obj.insert("index".into(), index.into());
        }
        Ok(v)
    }
}

fn inject_error(e: InjectError) -> BackendError {
    match e {
        InjectError::UnknownFault(_) | InjectError::UnknownStructure(_) => {
            BackendError::BadRequest(e.to_string())
        }
        InjectError::Write { .. } => BackendError::Internal(e.to_string()),
        // The guest's state does not allow it (nothing loaded, no such
        // extension, no suitable target): nothing was written.
        _ => BackendError::Conflict(e.to_string()),
    }
}
