//! The virtio 1.x MMIO transport for lazarus's virtio devices.
//!
//! [`MmioTransport`] is the register window of virtio spec 1.2, section
//! 4.2.2 ("MMIO Device Register Layout", version 2, no legacy interface):
//! magic, version, device and vendor id, feature negotiation, queue
//! set-up, notification, interrupt status and acknowledgement, the device
//! status state machine and the device's configuration space. It is
//! generic over the device behind it ([`VirtioDevice`]): the transport owns
//! the split virtqueues (rust-vmm's [`virtio_queue::Queue`]; no ring code
//! is written here), pops each descriptor chain the driver makes available
//! and hands it to the device, puts the device's answer in the used ring
//! and raises the interrupt. A device only says what a chain means.
//!
//! # The guest is not trusted
//!
//! Every register value, queue address and descriptor comes from the
//! guest. A queue whose size or rings are unusable, an available index
//! further ahead than the queue is long, a descriptor chain that loops or
//! leaves guest memory, or a chain the device cannot even answer is a
//! [`RingFault`]: the transport stops processing, sets
//! `DEVICE_NEEDS_RESET` (status bit 0x40) and, once the driver has set
//! `DRIVER_OK`, raises a configuration-change interrupt, as the spec asks
//! (2.1.2). Nothing is processed again until the driver writes 0 to
//! `Status`. Errors a device can report in its own answer (a bad request)
//! are not faults: the device answers them.
//!
//! # Synchronous processing and quiesce
//!
//! Requests are processed synchronously, in the caller's thread, when the
//! driver writes `QueueNotify`: when [`MmioTransport::write`] returns,
//! every chain the driver had made available is completed, its answer in
//! the used ring and the interrupt raised. Nothing is ever half done
//! between two calls. The hypervisor keeps the transport behind a mutex,
//! so [`MmioTransport::pause`] taking that mutex waits for a notification
//! being processed to end; from then on the device touches no guest
//! memory and raises no interrupt (notifications are remembered), until
//! [`MmioTransport::resume`] processes what was notified meanwhile.
//!
//! # Interrupts
//!
//! The transport signals an [`EventFd`](vmm_sys_util::eventfd::EventFd)
//! whenever it sets a bit in `InterruptStatus` (0x1: used buffers, 0x2:
//! configuration change); the hypervisor registers it as a KVM irqfd on an
//! IOAPIC pin. The bits stay set until the driver writes them to
//! `InterruptACK`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod device;
mod state;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod transport;

pub use device::{RingFault, VirtioDevice};
pub use state::{QueueRegs, TransportState};
pub use transport::{
    INT_CONFIG, INT_VRING, MAX_QUEUES, MMIO_MAGIC, MMIO_VERSION, MMIO_WINDOW_SIZE, MmioTransport,
    TransportError, TransportStats, VENDOR_ID, status,
};

/// Guest memory as the devices see it: the hypervisor's RAM.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// The register offsets of the MMIO window (virtio spec 1.2, 4.2.2).
pub mod regs {
    pub use virtio_bindings::virtio_mmio::{
        VIRTIO_MMIO_CONFIG as CONFIG, VIRTIO_MMIO_CONFIG_GENERATION as CONFIG_GENERATION,
        VIRTIO_MMIO_DEVICE_FEATURES as DEVICE_FEATURES,
        VIRTIO_MMIO_DEVICE_FEATURES_SEL as DEVICE_FEATURES_SEL, VIRTIO_MMIO_DEVICE_ID as DEVICE_ID,
        VIRTIO_MMIO_DRIVER_FEATURES as DRIVER_FEATURES,
        VIRTIO_MMIO_DRIVER_FEATURES_SEL as DRIVER_FEATURES_SEL,
        VIRTIO_MMIO_INTERRUPT_ACK as INTERRUPT_ACK,
        VIRTIO_MMIO_INTERRUPT_STATUS as INTERRUPT_STATUS, VIRTIO_MMIO_MAGIC_VALUE as MAGIC_VALUE,
        VIRTIO_MMIO_QUEUE_AVAIL_HIGH as QUEUE_AVAIL_HIGH,
        VIRTIO_MMIO_QUEUE_AVAIL_LOW as QUEUE_AVAIL_LOW,
        VIRTIO_MMIO_QUEUE_DESC_HIGH as QUEUE_DESC_HIGH,
        VIRTIO_MMIO_QUEUE_DESC_LOW as QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_NOTIFY as QUEUE_NOTIFY,
        VIRTIO_MMIO_QUEUE_NUM as QUEUE_NUM, VIRTIO_MMIO_QUEUE_NUM_MAX as QUEUE_NUM_MAX,
        VIRTIO_MMIO_QUEUE_READY as QUEUE_READY, VIRTIO_MMIO_QUEUE_SEL as QUEUE_SEL,
        VIRTIO_MMIO_QUEUE_USED_HIGH as QUEUE_USED_HIGH,
        VIRTIO_MMIO_QUEUE_USED_LOW as QUEUE_USED_LOW, VIRTIO_MMIO_SHM_LEN_HIGH as SHM_LEN_HIGH,
        VIRTIO_MMIO_SHM_LEN_LOW as SHM_LEN_LOW, VIRTIO_MMIO_SHM_SEL as SHM_SEL,
        VIRTIO_MMIO_STATUS as STATUS, VIRTIO_MMIO_VENDOR_ID as VENDOR_ID,
        VIRTIO_MMIO_VERSION as VERSION,
    };
}
