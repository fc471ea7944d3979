//! Removes the repair image's memory slot off the critical path.
//!
//! Deleting a slot makes KVM discard its shadow page tables; with many
//! processes that costs hundreds of microseconds, which the resumed kernel
//! would otherwise wait for. The kernel's recovery entry runs in ring 0
//! with the kernel's own page tables, which never map the slot's address,
//! so the removal can overlap it. It must be finished before any user
//! process runs: the resurrector waits for it at `HC_RECOVERED`, which the
//! kernel makes on its way back to user mode, and on every other path out
//! of a repair.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;

use crate::fallback::SlotError;

/// A removal that was started and not yet waited for.
#[must_use = "the slot is only known to be gone after `wait`"]
pub struct PendingRemoval {
    done: Receiver<Result<Duration, SlotError>>,
}

impl PendingRemoval {
    /// A removal that already happened (took `took`).
    pub fn done(took: Duration) -> Self {
        let (tx, done) = channel();
        let _ = tx.send(Ok(took));
        Self { done }
    }

    /// Blocks until the slot is gone. Returns how long the removal took.
    pub fn wait(self) -> Result<Duration, SlotError> {
        self.done.recv().unwrap_or(Err(SlotError::ReaperGone))
    }
}

struct Job {
    vm_fd: Arc<VmFd>,
    region: kvm_userspace_memory_region,
    done: Sender<Result<Duration, SlotError>>,
}

/// One long-lived thread that deletes memory slots (spawning a thread per
/// repair would cost more than it saves).
pub(crate) struct SlotReaper {
    jobs: Option<Sender<Job>>,
}

impl SlotReaper {
    pub fn new() -> Self {
        let (tx, rx) = channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("slot-reaper".into())
            .spawn(move || {
                for job in rx {
                    let _ = job.done.send(delete_slot(&job.vm_fd, job.region));
                }
            });
        Self {
            // Without the thread every removal is done inline by `remove`.
            jobs: spawned.ok().map(|_| tx),
        }
    }

    /// Starts deleting `region`'s slot. Falls back to deleting it inline
    /// (already finished when this returns) if the thread is gone.
    pub fn remove(&self, vm_fd: &Arc<VmFd>, region: kvm_userspace_memory_region) -> PendingRemoval {
        let (done, rx) = channel();
        let job = Job {
            vm_fd: vm_fd.clone(),
            region,
            done,
        };
        let job = match &self.jobs {
            Some(jobs) => match jobs.send(job) {
                Ok(()) => return PendingRemoval { done: rx },
                Err(e) => e.0,
            },
            None => job,
        };
        let _ = job.done.send(delete_slot(&job.vm_fd, job.region));
        PendingRemoval { done: rx }
    }
}

fn delete_slot(vm_fd: &VmFd, region: kvm_userspace_memory_region) -> Result<Duration, SlotError> {
    let start = Instant::now();
    let remove = kvm_userspace_memory_region {
        memory_size: 0,
        ..region
    };
    // SAFETY: deleting a slot maps nothing; KVM stops using the host
    // memory behind it before the ioctl returns.
    unsafe { vm_fd.set_user_memory_region(remove) }
        .map(|()| start.elapsed())
        .map_err(|e| SlotError::Remove(e.to_string()))
}

impl Default for SlotReaper {
    fn default() -> Self {
        Self::new()
    }
}
