//! What a device behind the transport provides.

use virtio_queue::DescriptorChain;

use crate::GuestMemory;

/// A virtio device: what its descriptor chains mean.
///
/// The transport does everything generic: registers, feature negotiation,
/// queue set-up and validation, popping chains from the available ring,
/// the used ring and interrupts. A device answers one chain at a time.
pub trait VirtioDevice: Send {
    /// The virtio device id (spec 5: 2 for a block device).
    fn device_id(&self) -> u32;

    /// The device-specific feature bits it offers. The transport adds
    /// `VIRTIO_F_VERSION_1` (bit 32) to these.
    fn features(&self) -> u64;

    /// The largest size of each virtqueue, one entry per queue; each a
    /// power of two from 1 to 32768.
    fn queue_max_sizes(&self) -> &[u16];

    /// Reads `data.len()` bytes of the configuration space at `offset`.
    /// Bytes past the end of the configuration space read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// A driver write to the configuration space; ignored by default.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    /// The driver set `DRIVER_OK` having negotiated `features`.
    fn activate(&mut self, _features: u64) {}

    /// The device was reset (by the driver writing 0 to `Status`).
    fn reset(&mut self) {}

    /// Handles one descriptor chain popped from queue `queue` (`mem` is
    /// the guest memory the chain refers to) and returns
    /// the number of bytes written into its device-writable buffers (the
    /// used ring's `len`).
    ///
    /// A request the device can answer, even with an error, is answered
    /// and returns `Ok`. An `Err` means the driver broke the ring's
    /// contract so badly that no answer is possible: the transport puts
    /// the device in `DEVICE_NEEDS_RESET` and stops.
    fn process_chain(
        &mut self,
        queue: u16,
        chain: DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> Result<u32, RingFault>;
}

/// The driver broke the virtqueue contract: the device needs a reset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingFault {
    /// The driver made a queue ready whose configuration is unusable.
    #[error("queue {queue}: invalid configuration: {reason}")]
    QueueConfig {
        /// The queue.
        queue: u16,
        /// What is wrong with it.
        reason: String,
    },
    /// `virtio-queue` refused the ring (an available index further ahead
    /// than the queue size, a ring outside guest memory, ...).
    #[error("queue {queue}: {reason}")]
    Ring {
        /// The queue.
        queue: u16,
        /// `virtio-queue`'s error.
        reason: String,
    },
    /// The chain does not end: a loop, a chain longer than the queue, a
    /// `next` index outside the table, or an invalid indirect table.
    #[error(
        "descriptor chain {head}: malformed (a loop, a chain longer than its table, \
         a next index outside the table, or an invalid indirect table)"
    )]
    BrokenChain {
        /// The chain's head index.
        head: u16,
    },
    /// A descriptor's buffer is not entirely inside guest RAM.
    #[error("descriptor chain {head}: buffer {addr:#x}+{len:#x} is not inside guest memory")]
    OutsideMemory {
        /// The chain's head index.
        head: u16,
        /// The buffer's guest-physical address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The chain has no place for the device's answer (for a block
    /// request: its last descriptor is not device-writable, or is empty).
    #[error("descriptor chain {head}: no device-writable status byte at its end")]
    NoStatus {
        /// The chain's head index.
        head: u16,
    },
    /// A guest memory access that had been checked failed all the same.
    #[error("guest memory access at {addr:#x} failed")]
    MemoryAccess {
        /// The guest-physical address.
        addr: u64,
    },
}

/// A boxed device is a device, so a hypervisor can keep devices of
/// different types behind one transport type.
impl<T: VirtioDevice + ?Sized> VirtioDevice for Box<T> {
    fn device_id(&self) -> u32 {
        (**self).device_id()
    }

    fn features(&self) -> u64 {
        (**self).features()
    }

    fn queue_max_sizes(&self) -> &[u16] {
        (**self).queue_max_sizes()
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        (**self).read_config(offset, data)
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        (**self).write_config(offset, data)
    }

    fn activate(&mut self, features: u64) {
        (**self).activate(features)
    }

    fn reset(&mut self) {
        (**self).reset()
    }

    fn process_chain(
        &mut self,
        queue: u16,
        chain: DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> Result<u32, RingFault> {
        (**self).process_chain(queue, chain, mem)
    }
}
