//! Save and restore of the transport and its queues, for whole-VM
//! snapshots.
//!
//! The state is plain data and, like anything read back from outside, not
//! trusted: [`MmioTransport::restore`] checks it against the device and
//! guest memory as it checks the driver's own register writes.

use virtio_queue::{Queue, QueueT};

use crate::transport::{Shadow, build_queue, status};
use crate::{MmioTransport, TransportError, VirtioDevice};

/// One queue's registers and ring positions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueRegs {
    /// `QueueNum` as written.
    pub num: u32,
    /// Descriptor table address.
    pub desc: u64,
    /// Available ring address.
    pub avail: u64,
    /// Used ring address.
    pub used: u64,
    /// `QueueReady`.
    pub ready: bool,
    /// The next available ring entry the device will read.
    pub next_avail: u16,
    /// The next used ring entry the device will write.
    pub next_used: u16,
}

/// The transport's state between two register accesses. Requests are
/// processed synchronously, so there is nothing in flight to save.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportState {
    /// Device status.
    pub status: u32,
    /// `DeviceFeaturesSel`.
    pub device_features_sel: u32,
    /// `DriverFeaturesSel`.
    pub driver_features_sel: u32,
    /// The features the driver accepted.
    pub driver_features: u64,
    /// The driver wrote non-zero feature words past bit 63.
    pub unknown_feature_words: bool,
    /// `QueueSel`.
    pub queue_sel: u32,
    /// Every queue, in order.
    pub queues: Vec<QueueRegs>,
    /// `InterruptStatus`.
    pub interrupt_status: u32,
    /// `ConfigGeneration`.
    pub config_generation: u32,
    /// Queues notified while paused and not yet processed (bit i: queue i).
    pub pending: u64,
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// The transport's state, for a snapshot (take it while paused).
    pub fn state(&self) -> TransportState {
        TransportState {
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            unknown_feature_words: self.unknown_feature_words,
            queue_sel: self.queue_sel,
            queues: self
                .queues
                .iter()
                .map(|slot| QueueRegs {
                    num: slot.shadow.num,
                    desc: slot.shadow.desc,
                    avail: slot.shadow.avail,
                    used: slot.shadow.used,
                    ready: slot.queue.ready(),
                    next_avail: slot.queue.next_avail(),
                    next_used: slot.queue.next_used(),
                })
                .collect(),
            interrupt_status: self.interrupt_status,
            config_generation: self.config_generation,
            pending: self.pending,
        }
    }

    /// Puts `state` back after checking it; on an error nothing changed.
    /// The device is reset and, if the state has `DRIVER_OK`, activated
    /// with the saved features. A paused transport stays paused.
    pub fn restore(&mut self, state: &TransportState) -> Result<(), TransportError> {
        let bad = |reason: String| TransportError::StateMismatch(reason);
        if state.queues.len() != self.queues.len() {
            return Err(bad(format!(
                "{} queues saved, the device has {}",
                state.queues.len(),
                self.queues.len()
            )));
        }
        let progress = state.status & !(status::FAILED | status::NEEDS_RESET);
        let steps = [
            0,
            status::ACKNOWLEDGE,
            status::ACKNOWLEDGE | status::DRIVER,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        ];
        if !steps.contains(&progress) {
            return Err(bad(format!("status {:#x} is not reachable", state.status)));
        }
        if state.interrupt_status & !(crate::INT_VRING | crate::INT_CONFIG) != 0 {
            return Err(bad(format!(
                "interrupt status {:#x} has unknown bits",
                state.interrupt_status
            )));
        }
        let features_ok = progress & status::FEATURES_OK != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (index, (regs, slot)) in state.queues.iter().zip(&self.queues).enumerate() {
            let shadow = Shadow {
                num: regs.num,
                desc: regs.desc,
                avail: regs.avail,
                used: regs.used,
            };
            let queue = if regs.ready {
                if !features_ok {
                    return Err(bad(format!("queue {index} is ready before FEATURES_OK")));
                }
                build_queue(
                    slot.max_size,
                    shadow,
                    regs.next_avail,
                    regs.next_used,
                    &self.mem,
                )
                .map_err(|reason| bad(format!("queue {index}: {reason}")))?
            } else {
                let mut queue = Queue::new(slot.max_size).map_err(|e| bad(e.to_string()))?;
                queue.set_next_avail(regs.next_avail);
                queue.set_next_used(regs.next_used);
                queue
            };
            queues.push((shadow, queue));
        }
        let pending_mask = if self.queues.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << self.queues.len()) - 1
        };
        if state.pending & !pending_mask != 0 {
            return Err(bad(format!(
                "pending notifications {:#x} for queues that do not exist",
                state.pending
            )));
        }

        // Checked against the saved features, not the current ones.
        let saved_features = (
            self.driver_features,
            self.unknown_feature_words,
            self.status,
        );
        self.driver_features = state.driver_features;
        self.unknown_feature_words = state.unknown_feature_words;
        if features_ok && let Err(reason) = self.check_features() {
            (
                self.driver_features,
                self.unknown_feature_words,
                self.status,
            ) = saved_features;
            return Err(bad(reason));
        }

        self.device.reset();
        self.status = state.status;
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.queue_sel = state.queue_sel;
        for (slot, (shadow, queue)) in self.queues.iter_mut().zip(queues) {
            slot.shadow = shadow;
            slot.queue = queue;
        }
        self.interrupt_status = state.interrupt_status;
        self.config_generation = state.config_generation;
        self.pending = state.pending;
        self.fault = None;
        self.refusal = None;
        if state.status & status::DRIVER_OK != 0 {
            self.device.activate(self.driver_features);
        }
        Ok(())
    }
}
