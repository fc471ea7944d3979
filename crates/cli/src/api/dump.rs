//! `PUT /dump`: an on-demand ELF core and report of the running guest.

use std::time::Instant;

use lazarus_api::{BackendError, DumpRequest, DumpResponse};
use lazarus_triage::{OnDemand, lower_priority};
use vm_memory::{Bytes, GuestAddress};

use crate::api::session::{ApiSession, PAUSE_TIMEOUT, control_error, lock};

impl ApiSession {
    /// Writes an on-demand dump of the running guest, paused only while
    /// its memory and registers are copied.
    pub(crate) fn dump_now(&self, req: &DumpRequest) -> Result<DumpResponse, BackendError> {
        let _ops = lock(&self.ops);
        let (control, boot_id) = self.attached()?;
        let size = usize::try_from(control.layout().mem_size)
            .map_err(|_| BackendError::Internal("guest RAM does not fit in memory".into()))?;
        // Fault the copy's pages in before pausing: the pause then only
        // lasts the copy itself.
        let mut ram = vec![0xa5u8; size];
        std::hint::black_box(&mut ram);
        let t0 = Instant::now();
        let own_pause;
        let vcpus = {
            let st = lock(&self.state);
            match &st.user_pause {
                Some(g) => {
                    own_pause = None;
                    g.vcpus()
                }
                None => {
                    drop(st);
                    let g = control.pause(PAUSE_TIMEOUT).map_err(control_error)?;
                    let v = g.vcpus();
                    own_pause = Some(g);
                    v
                }
            }
        };
        let copied = control.memory().read_slice(&mut ram, GuestAddress(0));
        let root_gpa = control.root_gpa();
        drop(own_pause);
        let paused = t0.elapsed();
        copied.map_err(|e| BackendError::Internal(format!("copying guest RAM: {e}")))?;
        // Writing and diagnosing is background work: the guest runs on.
        lower_priority();
        let n = vcpus.len() as u32;
        let d = OnDemand {
            ram,
            vcpus: vcpus.into_iter().map(|v| (v.id, v.regs, v.sregs)).collect(),
            root_gpa,
            reason: req.reason.clone(),
        };
        let p = self
            .dumps
            .write_on_demand(d, &boot_id)
            .map_err(|e| BackendError::Internal(format!("writing the dump: {e:#}")))?;
        eprintln!(
            "lazarus: on-demand dump {} (guest paused {:.1} ms)",
            p.dump.display(),
            paused.as_secs_f64() * 1e3
        );
        let boot = lock(&self.state).boots;
        self.events.event(
            Some(&boot_id),
            Some(boot),
            crate::events::dump_written(&p, true),
        );
        Ok(DumpResponse {
            dump: p.dump,
            report: p.report_json,
            kind: "on-demand".into(),
            title: p.title,
            paused_us: u64::try_from(paused.as_micros()).unwrap_or(u64::MAX),
            ram_bytes: size as u64,
            vcpus: n,
        })
    }
}
