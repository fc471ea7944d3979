//! A virtio block device for the lazarus hypervisor, backed by a raw
//! image file on the host.
//!
//! - [`DiskImage`] opens an existing raw image, or creates a missing one
//!   (sparse, [`DEFAULT_DISK_SIZE`] unless told otherwise), read-only or
//!   writable, and locks it (`flock`: exclusive when writable, shared when
//!   read-only) so that two VMs never share a writable disk: a second
//!   opener gets [`DiskError::Locked`], naming the file.
//! - [`Block`] is the device (virtio spec 1.2, 5.2): one request queue of
//!   [`QUEUE_SIZE`] entries, `IN`, `OUT`, `FLUSH` and `GET_ID` requests;
//!   any other request type is answered `VIRTIO_BLK_S_UNSUPP`.
//! - It sits behind the generic MMIO transport of `lazarus-virtio-mmio`:
//!   `MmioTransport::new(Block::new(disk), mem, irq)` ([`BlockTransport`]).
//!
//! # Every guest value is checked
//!
//! For each descriptor chain: the chain must end (no loop, no index
//! outside the table), every buffer must lie inside guest RAM (with
//! overflow checks), and the last descriptor must be device-writable and
//! hold the status byte. A chain failing these cannot be answered: the
//! device goes into `DEVICE_NEEDS_RESET` and processes nothing more until
//! the driver resets it. A chain that can be answered but asks for
//! something wrong gets `VIRTIO_BLK_S_IOERR` and touches nothing: a header
//! shorter than 16 bytes, data buffers of the wrong direction or after the
//! status, data that is not a whole number of sectors or is larger than
//! [`MAX_REQUEST_BYTES`], sectors past the end of the image (overflow
//! included), a write to a read-only image, a `GET_ID` buffer shorter than
//! 20 bytes. The image itself refuses any access outside it
//! ([`DiskError::OutOfRange`]) as a last line.
//!
//! # Synchronous, so quiescing is simple
//!
//! Requests run to completion in the thread that writes `QueueNotify`
//! (a vCPU thread): each is read, carried out on the image, answered and
//! put in the used ring before the register write returns. There is no
//! I/O thread and nothing in flight between two register accesses, so
//! `MmioTransport::pause` leaves nothing half done, and `resume` carries
//! out once what was notified meanwhile.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod device;
mod disk;
mod request;

pub use device::{Block, BlockStats};
pub use disk::{DEFAULT_DISK_SIZE, DiskError, DiskImage, DiskStats, MAX_DISK_SIZE};
pub use request::HEADER_LEN;

/// The transport with a block device behind it.
pub type BlockTransport = lazarus_virtio_mmio::MmioTransport<Block>;

/// Bytes in a sector: capacities and request offsets count in these.
pub const SECTOR_SIZE: u64 = 512;

/// Entries of the request queue (`QueueNumMax`).
pub const QUEUE_SIZE: u16 = 256;

/// Most data segments in a request (`seg_max`, offered).
pub const MAX_SEGMENTS: u32 = 128;

/// Largest data segment (`size_max`, offered): 64 KiB.
pub const MAX_SEGMENT_BYTES: u32 = 64 << 10;

/// Most data bytes a request may carry (8 MiB: `seg_max` x `size_max`);
/// a larger request is answered `VIRTIO_BLK_S_IOERR`. This bounds the time
/// one request holds the vCPU thread.
pub const MAX_REQUEST_BYTES: u64 = MAX_SEGMENTS as u64 * MAX_SEGMENT_BYTES as u64;

#[cfg(test)]
mod tests {
    /// The hypervisor shares a device between its vCPU threads, behind a
    /// mutex.
    #[test]
    fn the_transport_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<super::BlockTransport>();
    }
}
