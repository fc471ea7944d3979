//! The virtio MMIO register window (virtio 1.2, 4.2.2) and the device
//! status bits (2.1).

pub const MAGIC_VALUE: u64 = 0x000;
pub const VERSION: u64 = 0x004;
pub const DEVICE_ID: u64 = 0x008;
pub const DEVICE_FEATURES: u64 = 0x010;
pub const DEVICE_FEATURES_SEL: u64 = 0x014;
pub const DRIVER_FEATURES: u64 = 0x020;
pub const DRIVER_FEATURES_SEL: u64 = 0x024;
pub const QUEUE_SEL: u64 = 0x030;
pub const QUEUE_NUM_MAX: u64 = 0x034;
pub const QUEUE_NUM: u64 = 0x038;
pub const QUEUE_READY: u64 = 0x044;
pub const QUEUE_NOTIFY: u64 = 0x050;
pub const INTERRUPT_STATUS: u64 = 0x060;
pub const INTERRUPT_ACK: u64 = 0x064;
pub const STATUS: u64 = 0x070;
pub const QUEUE_DESC_LOW: u64 = 0x080;
pub const QUEUE_DESC_HIGH: u64 = 0x084;
pub const QUEUE_DRIVER_LOW: u64 = 0x090;
pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
/// The block device's configuration: `capacity` (u64, sectors) first.
pub const CONFIG: u64 = 0x100;

/// "virt", little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// Register layout version 2 (no legacy).
pub const MMIO_VERSION: u32 = 2;
/// virtio device id of a block device.
pub const ID_BLOCK: u32 = 2;

pub const S_ACKNOWLEDGE: u32 = 1;
pub const S_DRIVER: u32 = 2;
pub const S_DRIVER_OK: u32 = 4;
pub const S_FEATURES_OK: u32 = 8;
pub const S_NEEDS_RESET: u32 = 0x40;
pub const S_FAILED: u32 = 0x80;

/// `VIRTIO_F_VERSION_1` (bit 32): required by a modern device.
pub const F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_BLK_F_RO` (bit 5): the disk is read-only.
pub const F_BLK_RO: u64 = 1 << 5;
/// `VIRTIO_BLK_F_FLUSH` (bit 9): the device takes flush requests.
pub const F_BLK_FLUSH: u64 = 1 << 9;

/// Interrupt status: configuration change (e.g. `DEVICE_NEEDS_RESET`).
pub const INT_CONFIG: u32 = 2;
