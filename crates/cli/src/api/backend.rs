//! The session as `lazarus-api`'s backend: each request to the method of
//! [`ApiSession`] that answers it.

use lazarus_api::{
    Backend, BackendError, CrashList, DumpRequest, DumpResponse, InjectRequest, Metrics,
    MetricsFormat, RecoveryList, RequestedState, Status,
};

use crate::api::session::ApiSession;

impl Backend for ApiSession {
    fn status(&self) -> Result<Status, BackendError> {
        Ok(self.status_now())
    }

    fn recoveries(&self) -> Result<RecoveryList, BackendError> {
        Ok(self.recovery_list())
    }

    fn crashes(&self) -> Result<CrashList, BackendError> {
        self.crash_list()
    }

    fn inject(&self, req: InjectRequest) -> Result<serde_json::Value, BackendError> {
        self.inject_request(&req)
    }

    fn dump(&self, req: DumpRequest) -> Result<DumpResponse, BackendError> {
        self.dump_now(&req)
    }

    fn set_state(&self, state: RequestedState) -> Result<Status, BackendError> {
        self.set_vm_state(state)
    }

    fn metrics(&self) -> Result<Metrics, BackendError> {
        self.metrics_now()
    }

    fn metrics_text(&self, format: MetricsFormat) -> Result<String, BackendError> {
        self.metrics_text(format)
    }
}
