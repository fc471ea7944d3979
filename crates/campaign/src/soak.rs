//! Memory sampling: the guest kernel's frames and heap, and the
//! hypervisor's own memory, at intervals through a campaign, so that a
//! soak shows leaks on either side.

use std::time::{Duration, Instant};

use lazarus_vmm::VmControl;

use crate::report::MemorySample;

/// Time between two samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Takes a sample whenever the last one is [`SAMPLE_EVERY`] old.
pub(crate) struct Sampler {
    start: Instant,
    last: Option<Instant>,
    /// The samples so far.
    pub(crate) samples: Vec<MemorySample>,
}

impl Sampler {
    /// A sampler whose times count from `start`.
    pub(crate) fn new(start: Instant) -> Sampler {
        Sampler {
            start,
            last: None,
            samples: Vec::new(),
        }
    }

    /// Samples if the last sample is old enough (or there is none yet).
    pub(crate) fn maybe_sample(&mut self, control: &VmControl, faults: u64) {
        if self.last.is_none_or(|t| t.elapsed() >= SAMPLE_EVERY) {
            self.sample(control, faults);
            self.last = Some(Instant::now());
        }
    }

    /// Samples now, `faults` faults into the campaign.
    pub(crate) fn sample(&mut self, control: &VmControl, faults: u64) {
        let m = control.memory_usage();
        let guest = control
            .root_gpa()
            .and_then(|gpa| lazarus_resurrect::guest_kernel_memory(control.memory(), gpa).ok());
        self.samples.push(MemorySample {
            t_s: self.start.elapsed().as_secs_f64(),
            faults,
            host_rss_kib: m.host_rss_bytes.map(|b| b / 1024),
            guest_ram_resident_kib: m.guest_ram_resident_bytes.map(|b| b / 1024),
            vmm_own_kib: m.vmm_own_bytes().map(|b| b / 1024),
            guest_frames_used: guest.map(|g| g.frames_used),
            guest_heap_used_bytes: guest.map(|g| g.heap_used_bytes),
        });
    }
}
